/* The ViT ops (docs/format.md section 2) on the CPU, float32: the reference the Vulkan shaders are checked
 * against, and the CPU training path.
 *
 * Linear layers: one smoe_gemm per product (gemm.h), never inside an OpenMP parallel region.
 * Everything elementwise or per row is an OpenMP loop; reductions over
 * rows (bias, gamma and beta gradients) walk blocks of columns, so that every thread owns its
 * outputs and no scratch is needed.
 *
 * Attention works per (image, head) pair: products of T x T x hd, tiny for the small ViT (T = 49,
 * hd = 32), fused with the softmax. A GEMM call per pair would run single-threaded (OpenBLAS
 * threads only large products) and cannot be spread over the pairs (no GEMM call inside an
 * OpenMP region). So the pairs are an OpenMP loop and the products blocked vectorised loops:
 * measured on one thread, as fast as a GEMM per pair forward and faster backward, and they scale
 * with the threads where the GEMM calls do not. The forward writes the probabilities straight
 * into att; the backward needs no scratch (see smoe_cpu_attention_backward).
 *
 * exp (softmax, GELU) is a vectorisable polynomial, accurate to ~4 float ulps; libm's expf and
 * tanhf do not vectorise (a GELU with tanhf measured an order of magnitude slower).
 *
 * No global state, no printing, no allocation. */
#include "vit_cpu.h"
#include "fast_math.h"
#include "gemm.h"

#include <math.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Columns per block in the reductions over rows. */
#define COL_BLOCK 64

/* ---------------------------------------------------------------------------------------- */
/* Linear                                                                                    */
/* ---------------------------------------------------------------------------------------- */

void smoe_cpu_linear_forward(int rows, int in, int out, const float *x, const float *w, const float *b, float *y)
{
    if (rows <= 0 || out <= 0) return;
    if (in <= 0) { /* empty product: y = b (or 0) */
#pragma omp parallel for schedule(static)
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < out; j++) y[(size_t)r * out + j] = b ? b[j] : 0.0f;
        return;
    }
    if (b) {
#pragma omp parallel for schedule(static)
        for (int r = 0; r < rows; r++) memcpy(y + (size_t)r * out, b, (size_t)out * sizeof(float));
    }
    smoe_gemm(0, 1, rows, out, in, 1.0f, x, in, w, in, b ? 1.0f : 0.0f, y, out, NULL);
}

/* db[j] (+)= sum over rows of dy[r, j], parallel over blocks of columns. */
static void column_sums(int rows, int cols, const float *dy, float *db, int accumulate)
{
    const int nblk = (cols + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int jb = 0; jb < nblk; jb++) {
        const int j0 = jb * COL_BLOCK, nj = cols - j0 < COL_BLOCK ? cols - j0 : COL_BLOCK;
        double acc[COL_BLOCK];
        for (int t = 0; t < nj; t++) acc[t] = 0.0;
        for (int r = 0; r < rows; r++) {
            const float *row = dy + (size_t)r * cols + j0;
#pragma omp simd
            for (int t = 0; t < nj; t++) acc[t] += row[t];
        }
        for (int t = 0; t < nj; t++) db[j0 + t] = (float)(accumulate ? db[j0 + t] + acc[t] : acc[t]);
    }
}

void smoe_cpu_linear_backward(int rows, int in, int out, const float *x, const float *w, const float *dy, float *dx,
                              float *dw, float *db, int accumulate)
{
    const float beta = accumulate ? 1.0f : 0.0f;
    if (rows <= 0 || out <= 0 || in <= 0) { /* some product is empty: clear what is overwritten */
        if (!accumulate) {
            if (dx && rows > 0 && in > 0) memset(dx, 0, (size_t)rows * in * sizeof(float));
            if (in > 0 && out > 0) memset(dw, 0, (size_t)out * in * sizeof(float));
        }
        if (db && out > 0) column_sums(rows > 0 ? rows : 0, out, dy, db, accumulate);
        return;
    }
    /* dx [rows, in] = dy [rows, out] W [out, in] */
    if (dx) smoe_gemm(0, 0, rows, in, out, 1.0f, dy, out, w, in, beta, dx, in, NULL);
    /* dw [out, in] = dy^T x */
    smoe_gemm(1, 0, out, in, rows, 1.0f, dy, out, x, in, beta, dw, in, NULL);
    if (db) column_sums(rows, out, dy, db, accumulate);
}

/* ---------------------------------------------------------------------------------------- */
/* Patches                                                                                   */
/* ---------------------------------------------------------------------------------------- */

void smoe_cpu_im2col(int b, int c, int H, int W, int P, const float *images, float *patches)
{
    const int ph = H / P, pw = W / P, npatch = b * ph * pw, cols = c * P * P;
#pragma omp parallel for schedule(static)
    for (int row = 0; row < npatch; row++) {
        const int bi = row / (ph * pw), py = (row / pw) % ph, px = row % pw;
        float *dst = patches + (size_t)row * cols;
        for (int ch = 0; ch < c; ch++)
            for (int i = 0; i < P; i++) {
                const float *src = images + (((size_t)bi * c + ch) * H + (size_t)py * P + i) * W + (size_t)px * P;
                memcpy(dst + ((size_t)ch * P + i) * P, src, (size_t)P * sizeof(float));
            }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* LayerNorm                                                                                 */
/* ---------------------------------------------------------------------------------------- */

#define LN_EPS 1e-6

void smoe_cpu_layernorm_forward(int rows, int d, const float *x, const float *gamma, const float *beta, float *y,
                                float *mean, float *rstd)
{
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * d;
        float *yr = y + (size_t)r * d;
        double s = 0.0, ss = 0.0; /* two passes, in double: cheap next to the row's traffic */
#pragma omp simd reduction(+ : s)
        for (int k = 0; k < d; k++) s += xr[k];
        const double mu = s / d;
#pragma omp simd reduction(+ : ss)
        for (int k = 0; k < d; k++) ss += (xr[k] - mu) * (xr[k] - mu);
        const float m = (float)mu, rs = (float)(1.0 / sqrt(ss / d + LN_EPS));
        mean[r] = m;
        rstd[r] = rs;
#pragma omp simd
        for (int k = 0; k < d; k++) yr[k] = (xr[k] - m) * rs * gamma[k] + beta[k];
    }
}

void smoe_cpu_layernorm_backward(int rows, int d, const float *x, const float *gamma, const float *mean,
                                 const float *rstd, const float *dy, float *dx, float *dgamma, float *dbeta)
{
    /* dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy gamma, xhat = (x - mean) rstd */
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * d, *dyr = dy + (size_t)r * d;
        float *dxr = dx + (size_t)r * d;
        const float m = mean[r], rs = rstd[r];
        float sg = 0.0f, sgx = 0.0f;
#pragma omp simd reduction(+ : sg, sgx)
        for (int k = 0; k < d; k++) {
            const float g = dyr[k] * gamma[k];
            sg += g;
            sgx += g * (xr[k] - m) * rs;
        }
        const float mg = sg / d, mgx = sgx / d;
#pragma omp simd
        for (int k = 0; k < d; k++) dxr[k] = rs * (dyr[k] * gamma[k] - mg - (xr[k] - m) * rs * mgx);
    }
    /* dgamma = sum_rows dy xhat, dbeta = sum_rows dy */
    const int nblk = (d + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int jb = 0; jb < nblk; jb++) {
        const int j0 = jb * COL_BLOCK, nj = d - j0 < COL_BLOCK ? d - j0 : COL_BLOCK;
        double ag[COL_BLOCK], ab[COL_BLOCK];
        for (int t = 0; t < nj; t++) ag[t] = ab[t] = 0.0;
        for (int r = 0; r < rows; r++) {
            const float *xr = x + (size_t)r * d + j0, *dyr = dy + (size_t)r * d + j0;
            const float m = mean[r], rs = rstd[r];
#pragma omp simd
            for (int t = 0; t < nj; t++) {
                ag[t] += dyr[t] * ((xr[t] - m) * rs);
                ab[t] += dyr[t];
            }
        }
        for (int t = 0; t < nj; t++) {
            dgamma[j0 + t] = (float)ag[t];
            dbeta[j0 + t] = (float)ab[t];
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* exp                                                                                       */
/* ---------------------------------------------------------------------------------------- */

/* e^x with |x| clamped to 87 (e^-87 ~ 1.6e-38, e^87 ~ 6e37: both finite and normal). The clamp
 * is an integer min on the magnitude bits: a float comparison would stop GCC vectorising. */
static inline float exp_clamped(float x)
{
    const uint32_t u = float_bits(x), sign = u & 0x80000000u, mag = u & 0x7FFFFFFFu, lim = 0x42AE0000u; /* 87.0f */
    return exp_core(bits_float(sign | (mag > lim ? lim : mag)));
}

/* ---------------------------------------------------------------------------------------- */
/* Attention                                                                                 */
/* ---------------------------------------------------------------------------------------- */

/* The products of one (image, head) pair are T x T x hd with T and hd small (49 and 32 for the
 * small ViT), so they are done in blocks of 4 x 4 (query rows x key rows): four independent dot
 * products per pass over hd (one would be bound by the latency of its single accumulator), and
 * one read-modify-write of an hd-vector per four terms instead of one per term. Blocks at the
 * edge (T not a multiple of 4) repeat the last row with zero weight. */
#define AB 4

/* out[c] = x . y_c, c < 4 */
static inline void dot4(int n, const float *x, const float *y0, const float *y1, const float *y2, const float *y3,
                        float *out)
{
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (int k = 0; k < n; k++) {
        const float xk = x[k];
        s0 += xk * y0[k];
        s1 += xk * y1[k];
        s2 += xk * y2[k];
        s3 += xk * y3[k];
    }
    out[0] = s0, out[1] = s1, out[2] = s2, out[3] = s3;
}

/* y += sum_c w[c] x_c, c < 4 */
static inline void axpy4(int n, const float *w, const float *x0, const float *x1, const float *x2, const float *x3,
                         float *y)
{
    const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
#pragma omp simd
    for (int k = 0; k < n; k++) y[k] += w0 * x0[k] + w1 * x1[k] + w2 * x2[k] + w3 * x3[k];
}

static inline int imin(int a, int b) { return a < b ? a : b; }

void smoe_cpu_attention_forward(int b, int T, int dim, int heads, const float *qkv, float *att, float *out)
{
    const int hd = dim / heads, ld = 3 * dim;
    const float scale = (float)(1.0 / sqrt((double)hd));
#pragma omp parallel for collapse(2) schedule(static)
    for (int bi = 0; bi < b; bi++)
        for (int h = 0; h < heads; h++) {
            const float *q = qkv + (size_t)bi * T * ld + (size_t)h * hd, *k = q + dim, *v = q + 2 * dim;
            float *a = att + ((size_t)bi * heads + h) * T * T;
            for (int i = 0; i < T; i++) {
                const float *qi = q + (size_t)i * ld;
                float *ai = a + (size_t)i * T;
                /* scores, four keys at a time (the last block repeats key T-1) */
                for (int j0 = 0; j0 < T; j0 += AB) {
                    const float *kc[AB];
                    float s[AB];
                    for (int c = 0; c < AB; c++) kc[c] = k + (size_t)imin(j0 + c, T - 1) * ld;
                    dot4(hd, qi, kc[0], kc[1], kc[2], kc[3], s);
                    for (int c = 0; c < AB && j0 + c < T; c++) ai[j0 + c] = scale * s[c];
                }
                float mx = -INFINITY, sum = 0.0f;
                for (int j = 0; j < T; j++) mx = fmaxf(mx, ai[j]);
#pragma omp simd reduction(+ : sum)
                for (int j = 0; j < T; j++) {
                    ai[j] = exp_clamped(ai[j] - mx);
                    sum += ai[j];
                }
                const float inv = 1.0f / sum;
#pragma omp simd
                for (int j = 0; j < T; j++) ai[j] *= inv;
                /* out_i = sum_j P_ij V_j */
                float *oi = out + ((size_t)bi * T + i) * dim + (size_t)h * hd;
                for (int t = 0; t < hd; t++) oi[t] = 0.0f;
                for (int j0 = 0; j0 < T; j0 += AB) {
                    const float *vc[AB];
                    float w[AB];
                    for (int c = 0; c < AB; c++) {
                        vc[c] = v + (size_t)imin(j0 + c, T - 1) * ld;
                        w[c] = j0 + c < T ? ai[j0 + c] : 0.0f;
                    }
                    axpy4(hd, w, vc[0], vc[1], vc[2], vc[3], oi);
                }
            }
        }
}

/* Per (image, head), with P = att, O = P V, s = 1/sqrt(hd):
 *   dV = P^T dO;  dP = dO V^T;  dS = P ⊙ (dP - rowsum(P ⊙ dP));  dQ = dS K s;  dK = dS^T Q s.
 * rowsum(P ⊙ dP)_i = dO_i · O_i: each block of rows first rebuilds O_i = sum_j P_ij V_j in its dQ_i
 * slot of dqkv (hd floats that are cleared right after), so that dS is formed block by block
 * without a T x T (or even T) scratch. */
void smoe_cpu_attention_backward(int b, int T, int dim, int heads, const float *qkv, const float *att,
                                 const float *dout, float *dqkv)
{
    const int hd = dim / heads, ld = 3 * dim;
    const float scale = (float)(1.0 / sqrt((double)hd));
#pragma omp parallel for collapse(2) schedule(static)
    for (int bi = 0; bi < b; bi++)
        for (int h = 0; h < heads; h++) {
            const size_t base = (size_t)bi * T * ld + (size_t)h * hd;
            const float *q = qkv + base, *k = q + dim, *v = q + 2 * dim;
            const float *dO = dout + (size_t)bi * T * dim + (size_t)h * hd;
            float *dq = dqkv + base, *dk = dq + dim, *dv = dq + 2 * dim;
            const float *a = att + ((size_t)bi * heads + h) * T * T;
            for (int j = 0; j < T; j++)
                for (int t = 0; t < hd; t++)
                    dq[(size_t)j * ld + t] = dk[(size_t)j * ld + t] = dv[(size_t)j * ld + t] = 0.0f;
            for (int i0 = 0; i0 < T; i0 += AB) {
                const int ni = imin(AB, T - i0);
                const float *qr[AB], *dor[AB];
                float *dqr[AB], rs[AB];
                for (int r = 0; r < AB; r++) {
                    const int i = imin(i0 + r, T - 1);
                    qr[r] = q + (size_t)i * ld;
                    dor[r] = dO + (size_t)i * dim;
                    dqr[r] = dq + (size_t)i * ld;
                }
                /* rs_i = dO_i . O_i, with O_i built in (and then cleared from) dQ_i */
                for (int r = 0; r < ni; r++) {
                    const float *ai = a + (size_t)(i0 + r) * T;
                    for (int j0 = 0; j0 < T; j0 += AB) {
                        const float *vc[AB];
                        float w[AB];
                        for (int c = 0; c < AB; c++) {
                            vc[c] = v + (size_t)imin(j0 + c, T - 1) * ld;
                            w[c] = j0 + c < T ? ai[j0 + c] : 0.0f;
                        }
                        axpy4(hd, w, vc[0], vc[1], vc[2], vc[3], dqr[r]);
                    }
                    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
                    for (int t = 0; t < hd; t++) sum += dor[r][t] * dqr[r][t];
                    rs[r] = sum;
                    for (int t = 0; t < hd; t++) dqr[r][t] = 0.0f;
                }
                for (int j0 = 0; j0 < T; j0 += AB) {
                    const int nj = imin(AB, T - j0);
                    const float *kc[AB], *vc[AB];
                    float *dkc[AB], *dvc[AB];
                    for (int c = 0; c < AB; c++) {
                        const int j = imin(j0 + c, T - 1);
                        kc[c] = k + (size_t)j * ld;
                        vc[c] = v + (size_t)j * ld;
                        dkc[c] = dk + (size_t)j * ld;
                        dvc[c] = dv + (size_t)j * ld;
                    }
                    /* ds[r][c] = P (dP - rs) s and p[r][c] = P, zero outside the T x T block */
                    float ds[AB][AB], p[AB][AB], dsT[AB][AB], pT[AB][AB];
                    for (int r = 0; r < AB; r++) {
                        float dp[AB];
                        dot4(hd, dor[r], vc[0], vc[1], vc[2], vc[3], dp);
                        for (int c = 0; c < AB; c++) {
                            const int in = r < ni && c < nj;
                            p[r][c] = in ? a[(size_t)(i0 + r) * T + j0 + c] : 0.0f;
                            ds[r][c] = in ? p[r][c] * (dp[c] - rs[r]) * scale : 0.0f;
                            pT[c][r] = p[r][c];
                            dsT[c][r] = ds[r][c];
                        }
                    }
                    for (int r = 0; r < ni; r++) axpy4(hd, ds[r], kc[0], kc[1], kc[2], kc[3], dqr[r]);
                    for (int c = 0; c < nj; c++) {
                        axpy4(hd, dsT[c], qr[0], qr[1], qr[2], qr[3], dkc[c]);
                        axpy4(hd, pT[c], dor[0], dor[1], dor[2], dor[3], dvc[c]);
                    }
                }
            }
        }
}

/* ---------------------------------------------------------------------------------------- */
/* GELU, mean pool                                                                           */
/* ---------------------------------------------------------------------------------------- */

#define GELU_C 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_A 0.044715f

/* Elementwise loops over n floats run as OpenMP blocks of this many, each an `omp simd` loop
 * (GCC does not vectorise these bodies as one `parallel for simd` over a size_t). */
#define EW_BLOCK 4096

/* 0.5 a (1 + tanh(u)) = a sigmoid(2u) = a / (1 + e^(-2u)), u = c (a + 0.044715 a^3): no
 * cancellation in 1 + tanh(u) for negative a, and one vectorisable exp. */
void smoe_cpu_gelu_forward(size_t n, const float *x, float *y)
{
    const size_t nblk = (n + EW_BLOCK - 1) / EW_BLOCK;
#pragma omp parallel for schedule(static)
    for (size_t blk = 0; blk < nblk; blk++) {
        const float *xb = x + blk * EW_BLOCK;
        float *yb = y + blk * EW_BLOCK;
        const int len = n - blk * EW_BLOCK < EW_BLOCK ? (int)(n - blk * EW_BLOCK) : EW_BLOCK;
#pragma omp simd
        for (int i = 0; i < len; i++) {
            const float a = xb[i];
            yb[i] = a / (1.0f + exp_clamped(-2.0f * GELU_C * (a + GELU_A * a * a * a)));
        }
    }
}

/* d/da [a s(2u)] = s + 2 a s (1 - s) u', with s = 1 / (1 + e), 1 - s = e s, e = e^(-2u). */
void smoe_cpu_gelu_backward(size_t n, const float *x, const float *dy, float *dx)
{
    const size_t nblk = (n + EW_BLOCK - 1) / EW_BLOCK;
#pragma omp parallel for schedule(static)
    for (size_t blk = 0; blk < nblk; blk++) {
        const size_t o = blk * EW_BLOCK;
        const int len = n - o < EW_BLOCK ? (int)(n - o) : EW_BLOCK;
#pragma omp simd
        for (int i = 0; i < len; i++) {
            const float a = x[o + i];
            const float e = exp_clamped(-2.0f * GELU_C * (a + GELU_A * a * a * a));
            const float s = 1.0f / (1.0f + e);
            const float du = GELU_C * (1.0f + 3.0f * GELU_A * a * a);
            dx[o + i] = dy[o + i] * (s + 2.0f * a * s * (e * s) * du);
        }
    }
}

void smoe_cpu_meanpool_forward(int b, int T, int d, const float *x, float *y)
{
    const float inv = 1.0f / (float)T;
#pragma omp parallel for schedule(static)
    for (int bi = 0; bi < b; bi++) {
        float *yr = y + (size_t)bi * d;
        for (int k = 0; k < d; k++) yr[k] = 0.0f;
        for (int t = 0; t < T; t++) {
            const float *xr = x + ((size_t)bi * T + t) * d;
#pragma omp simd
            for (int k = 0; k < d; k++) yr[k] += xr[k];
        }
#pragma omp simd
        for (int k = 0; k < d; k++) yr[k] *= inv;
    }
}

void smoe_cpu_meanpool_backward(int b, int T, int d, const float *dy, float *dx)
{
    const float inv = 1.0f / (float)T;
#pragma omp parallel for collapse(2) schedule(static)
    for (int bi = 0; bi < b; bi++)
        for (int t = 0; t < T; t++) {
            const float *dyr = dy + (size_t)bi * d;
            float *dxr = dx + ((size_t)bi * T + t) * d;
#pragma omp simd
            for (int k = 0; k < d; k++) dxr[k] = dyr[k] * inv;
        }
}

/* ---------------------------------------------------------------------------------------- */
/* Loss, optimizer                                                                           */
/* ---------------------------------------------------------------------------------------- */

float smoe_cpu_cross_entropy_forward(int b, int classes, const float *logits, const int32_t *labels, float *probs)
{
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (int i = 0; i < b; i++) {
        const float *l = logits + (size_t)i * classes;
        float *p = probs + (size_t)i * classes;
        float mx = -INFINITY;
        for (int c = 0; c < classes; c++) mx = fmaxf(mx, l[c]);
        double sum = 0.0;
        for (int c = 0; c < classes; c++) {
            p[c] = expf(l[c] - mx);
            sum += p[c];
        }
        const float inv = (float)(1.0 / sum);
        for (int c = 0; c < classes; c++) p[c] *= inv;
        /* -log softmax(l)[label] = log(sum) - (l[label] - mx) */
        total += log(sum) - ((double)l[labels[i]] - mx);
    }
    return b > 0 ? (float)(total / b) : 0.0f;
}

void smoe_cpu_cross_entropy_backward(int b, int classes, const float *probs, const int32_t *labels, float *dlogits)
{
    const float inv = 1.0f / (float)b;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < b; i++) {
        const float *p = probs + (size_t)i * classes;
        float *g = dlogits + (size_t)i * classes;
        for (int c = 0; c < classes; c++) g[c] = p[c] * inv;
        g[labels[i]] = (p[labels[i]] - 1.0f) * inv;
    }
}

double smoe_cpu_sum_squares(size_t n, const float *x)
{
    const size_t nblk = (n + EW_BLOCK - 1) / EW_BLOCK;
    double s = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : s)
    for (size_t blk = 0; blk < nblk; blk++) {
        const size_t o = blk * EW_BLOCK;
        const int len = n - o < EW_BLOCK ? (int)(n - o) : EW_BLOCK;
        double sb = 0.0;
#pragma omp simd reduction(+ : sb)
        for (int i = 0; i < len; i++) sb += (double)x[o + i] * x[o + i];
        s += sb;
    }
    return s;
}

/* AdamW on elements [i0, i1). The SSE2 path (every x86-64) does exactly the scalar operations in
 * the same order, 4 lanes at a time: GCC does not vectorise sqrtf itself, because of errno. */
static void adamw_range(size_t i0, size_t i1, float *p, const float *grad, float *m, float *v, float lr, float beta1,
                        float beta2, float eps, float wd, float grad_scale, float inv_bc1, float inv_bc2)
{
    size_t i = i0;
#if defined(__SSE2__)
    const __m128 b1 = _mm_set1_ps(beta1), c1 = _mm_set1_ps(1.0f - beta1), b2 = _mm_set1_ps(beta2),
                 c2 = _mm_set1_ps(1.0f - beta2), gs = _mm_set1_ps(grad_scale), bc1 = _mm_set1_ps(inv_bc1),
                 bc2 = _mm_set1_ps(inv_bc2), ep = _mm_set1_ps(eps), wdv = _mm_set1_ps(wd), lrv = _mm_set1_ps(lr);
    for (; i + 4 <= i1; i += 4) {
        const __m128 g = _mm_mul_ps(_mm_loadu_ps(grad + i), gs);
        const __m128 mi = _mm_add_ps(_mm_mul_ps(b1, _mm_loadu_ps(m + i)), _mm_mul_ps(c1, g));
        const __m128 vi = _mm_add_ps(_mm_mul_ps(b2, _mm_loadu_ps(v + i)), _mm_mul_ps(_mm_mul_ps(c2, g), g));
        _mm_storeu_ps(m + i, mi);
        _mm_storeu_ps(v + i, vi);
        const __m128 den = _mm_add_ps(_mm_sqrt_ps(_mm_mul_ps(vi, bc2)), ep);
        const __m128 pi = _mm_loadu_ps(p + i);
        const __m128 upd = _mm_add_ps(_mm_mul_ps(wdv, pi), _mm_div_ps(_mm_mul_ps(mi, bc1), den));
        _mm_storeu_ps(p + i, _mm_sub_ps(pi, _mm_mul_ps(lrv, upd)));
    }
#endif
    for (; i < i1; i++) {
        const float g = grad[i] * grad_scale;
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] - lr * (wd * p[i] + (mi * inv_bc1) / (sqrtf(vi * inv_bc2) + eps));
    }
}

void smoe_cpu_adamw(size_t n, float *p, const float *grad, float *m, float *v, float lr, float beta1, float beta2,
                    float eps, float wd, float grad_scale, int t)
{
    const float inv_bc1 = (float)(1.0 / (1.0 - pow((double)beta1, t)));
    const float inv_bc2 = (float)(1.0 / (1.0 - pow((double)beta2, t)));
    const size_t nblk = (n + EW_BLOCK - 1) / EW_BLOCK;
#pragma omp parallel for schedule(static)
    for (size_t blk = 0; blk < nblk; blk++) {
        const size_t i0 = blk * EW_BLOCK, i1 = n - i0 < EW_BLOCK ? n : i0 + EW_BLOCK;
        adamw_range(i0, i1, p, grad, m, v, lr, beta1, beta2, eps, wd, grad_scale, inv_bc1, inv_bc2);
    }
}
