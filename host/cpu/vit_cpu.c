/* The ViT ops (SPEC section 2) on the CPU, float32: the reference the Vulkan shaders are checked
 * against, and the CPU training path.
 *
 * Matmuls of the Linear layers go through OpenBLAS's cblas_sgemm (one call per product; OpenBLAS
 * threads it). cblas is never called inside an OpenMP parallel region. Everything elementwise or
 * per row is an OpenMP loop. Reductions over rows (bias and LayerNorm parameter gradients) walk
 * blocks of columns, so that every thread owns its outputs and no scratch is needed.
 *
 * Attention works on one (image, head) pair at a time: T x T scores with inner size hd. These
 * products are tiny (T = 49, hd = 32 for the small ViT), so they are plain vectorised loops run
 * in parallel over the (image, head) pairs with OpenMP; a cblas_sgemm per pair (768 calls per
 * forward) measured slower (see the test's timings). The forward writes the probabilities
 * straight into att; the backward goes row by row of each pair and needs no scratch (see
 * smoe_cpu_attention_backward).
 *
 * No global state, no printing, no allocation. */
#include "vit_cpu.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

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
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, x, in, w, in, b ? 1.0f : 0.0f, y,
                out);
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
    if (dx) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, in, out, 1.0f, dy, out, w, in, beta, dx, in);
    /* dw [out, in] = dy^T x */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, rows, 1.0f, dy, out, x, in, beta, dw, in);
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
/* Attention                                                                                 */
/* ---------------------------------------------------------------------------------------- */

static inline float dot(int n, const float *a, const float *b)
{
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int k = 0; k < n; k++) s += a[k] * b[k];
    return s;
}

static inline void axpy(int n, float alpha, const float *x, float *y)
{
#pragma omp simd
    for (int k = 0; k < n; k++) y[k] += alpha * x[k];
}

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
                float mx = -INFINITY, sum = 0.0f;
                for (int j = 0; j < T; j++) {
                    ai[j] = scale * dot(hd, qi, k + (size_t)j * ld);
                    mx = fmaxf(mx, ai[j]);
                }
                for (int j = 0; j < T; j++) {
                    ai[j] = expf(ai[j] - mx);
                    sum += ai[j];
                }
                const float inv = 1.0f / sum;
                float *oi = out + ((size_t)bi * T + i) * dim + (size_t)h * hd;
                for (int t = 0; t < hd; t++) oi[t] = 0.0f;
                for (int j = 0; j < T; j++) {
                    ai[j] *= inv;
                    axpy(hd, ai[j], v + (size_t)j * ld, oi);
                }
            }
        }
}

/* Per (image, head), with P = att, O = P V:
 *   dV = P^T dO;  dP = dO V^T;  dS = P ⊙ (dP - rowsum(P ⊙ dP));  dQ = dS K s;  dK = dS^T Q s
 * (s = 1/sqrt(hd)). rowsum(P ⊙ dP)_i = dO_i · O_i, so each row first rebuilds O_i = sum_j P_ij V_j
 * in its dQ_i slot of dqkv (hd floats that are overwritten next), and then one pass over j does
 * dP_ij, dS_ij and all three accumulations: no T x T (or even T) scratch. */
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
            float *dq = dqkv + base, *dk = dq + dim, *dv = dq + 2 * dim;
            const float *a = att + ((size_t)bi * heads + h) * T * T;
            for (int j = 0; j < T; j++)
                for (int t = 0; t < hd; t++) dk[(size_t)j * ld + t] = dv[(size_t)j * ld + t] = 0.0f;
            for (int i = 0; i < T; i++) {
                const float *ai = a + (size_t)i * T, *qi = q + (size_t)i * ld;
                const float *doi = dout + ((size_t)bi * T + i) * dim + (size_t)h * hd;
                float *dqi = dq + (size_t)i * ld;
                for (int t = 0; t < hd; t++) dqi[t] = 0.0f;
                for (int j = 0; j < T; j++) axpy(hd, ai[j], v + (size_t)j * ld, dqi); /* O_i */
                const float rs = dot(hd, doi, dqi);
                for (int t = 0; t < hd; t++) dqi[t] = 0.0f;
                for (int j = 0; j < T; j++) {
                    const float *kj = k + (size_t)j * ld, *vj = v + (size_t)j * ld;
                    const float ds = ai[j] * (dot(hd, doi, vj) - rs) * scale;
                    axpy(hd, ds, kj, dqi);
                    axpy(hd, ds, qi, dk + (size_t)j * ld);
                    axpy(hd, ai[j], doi, dv + (size_t)j * ld);
                }
            }
        }
}

/* ---------------------------------------------------------------------------------------- */
/* GELU, mean pool                                                                           */
/* ---------------------------------------------------------------------------------------- */

#define GELU_C 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_A 0.044715f

void smoe_cpu_gelu_forward(size_t n, const float *x, float *y)
{
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        const float a = x[i];
        y[i] = 0.5f * a * (1.0f + tanhf(GELU_C * (a + GELU_A * a * a * a)));
    }
}

void smoe_cpu_gelu_backward(size_t n, const float *x, const float *dy, float *dx)
{
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        const float a = x[i], th = tanhf(GELU_C * (a + GELU_A * a * a * a));
        const float dudx = GELU_C * (1.0f + 3.0f * GELU_A * a * a);
        dx[i] = dy[i] * (0.5f * (1.0f + th) + 0.5f * a * (1.0f - th * th) * dudx);
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
    double s = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : s)
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

void smoe_cpu_adamw(size_t n, float *p, const float *grad, float *m, float *v, float lr, float beta1, float beta2,
                    float eps, float wd, float grad_scale, int t)
{
    const float inv_bc1 = (float)(1.0 / (1.0 - pow((double)beta1, t)));
    const float inv_bc2 = (float)(1.0 / (1.0 - pow((double)beta2, t)));
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        const float g = grad[i] * grad_scale;
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        p[i] -= lr * (wd * p[i] + (mi * inv_bc1) / (sqrtf(vi * inv_bc2) + eps));
    }
}
