/* The Soft MoE layer on the CPU (docs/format.md section 1), float32, on the OpenMP threads.
 *
 * Layouts (all row-major):
 *   per sequence:  logits, D, C        [b, m, S]      (S = n*p slots, slot j = e*p + k)
 *                  Ỹ (ys)              [b, S, d]      "sequence-major": what Y = CỸ reads
 *   per expert:    X̃ (xs), A, gelu(A)  [n, b*p, ...]  "expert-major": the b*p slots of expert e
 *                                                      are one contiguous matrix, so fc1/fc2 and
 *                                                      their backward are one GEMM per expert.
 * Slots move between the two layouts with a gather/scatter copy (p*d floats per block).
 * D and C are materialised in the workspace (b*m*S floats each), with the unscaled logits X̂Φ̂
 * that G_scale needs. A fixed side of the routing ablation (dims->dispatch, dims->combine:
 * uniform or identity weights) is never formed: mix_fixed() sums or copies rows instead, the
 * logits are computed only for a soft side, and only a soft side contributes to G_L. The l2 normalisations are folded into the matmuls: X̂Φ̂ = r ⊙ (XΦ̂), and
 * the backward scales G_L by scale*r once, so that G_Φ̂ = Xᵀ(scale r ⊙ G_L) and
 * r ⊙ G_X̂ = (scale r ⊙ G_L) Φ̂ᵀ: X̂ is never formed.
 *
 * Matmuls: every product is a batch of GEMMs (one per sequence or per expert) through mm(),
 * this file's shorthand for smoe_gemm_batch (gemm.h), which picks the kernel per shape. The
 * weight gradients are written with streaming stores (they are not read again soon).
 *
 * Elementwise work (norms, softmaxes, GELU, bias sums) is in OpenMP loops; exp and tanh are
 * small branch-free approximations (a few float ulps) so that these loops vectorise.
 * Nothing process-global is changed (no thread counts, no FP modes), and nothing is allocated. */
#include "softmoe_cpu.h"
#include "expert_subset_cpu.h"
#include "common/router_noise.h"
#include "fast_math.h"
#include "gemm.h"
#include "softmoe.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------- */
/* GEMM                                                                                      */
/* ---------------------------------------------------------------------------------------- */

/* Every product here is a batch of GEMMs (gemm.h), written mm(count, M, N, K, A, B, C, ...). */
typedef smoe_gemm_mat operand;

static operand mat(const float *p, int ld, size_t stride) { return smoe_gemm_n(p, ld, stride); }
static operand mat_t(const float *p, int ld, size_t stride) { return smoe_gemm_t(p, ld, stride); }

enum {
    MM_ACCUMULATE = 1, /* C += op(A) op(B) instead of C = op(A) op(B) */
    MM_STREAM = 2      /* C is written once and not read soon (SMOE_GEMM_STREAM) */
};

/* The batch of GEMMs C_g = (or +=) op(A_g) op(B_g), g < count. pack: smoe_gemm_pack_floats(). */
static void mm(int count, int M, int N, int K, operand A, operand B, float *C, int ldc,
               size_t stride_c, int flags, float *pack)
{
    smoe_gemm_batch(count, M, N, K, 1.0f, A, B, flags & MM_ACCUMULATE ? 1.0f : 0.0f, C, ldc,
                    stride_c, flags & MM_STREAM ? SMOE_GEMM_STREAM : 0, pack);
}

/* ---------------------------------------------------------------------------------------- */
/* Workspace                                                                                 */
/* ---------------------------------------------------------------------------------------- */

/* Offsets (in floats) of every buffer in the workspace. The first group is written by forward
 * and read by backward; the second is scratch. Every offset is a multiple of 16 floats. */
typedef struct {
    size_t r;      /* [b*m]        1/|x_i| */
    size_t c;      /* [S]          1/|phi_:,j| */
    size_t phihat; /* [d, S]       Φ̂ */
    size_t l0;     /* [b*m, S]     X̂Φ̂ (the logits before scale) */
    size_t disp;   /* [b*m, S]     D */
    size_t comb;   /* [b*m, S]     C */
    size_t xs;     /* [n, b*p, d]  X̃, expert-major */
    size_t a;      /* [n, b*p, h]  fc1 pre-activation */
    size_t act;    /* [n, b*p, h]  gelu(A) */
    size_t ys;     /* [b, S, d]    Ỹ, sequence-major */
    /* scratch */
    size_t seq;    /* [b, S, d]    sequence-major slots: X̃ (fwd); G_Ỹ then G_X̃ (bwd) */
    size_t ex1;    /* [n, b*p, d]  expert-major slots: fc2 output (fwd); G_Ỹ (bwd) */
    size_t ex2;    /* [n, b*p, d]  G_X̃ (bwd) */
    size_t gh;     /* [n, b*p, h]  G_H, then G_A (bwd) */
    size_t gc;     /* [b*m, S]     G_C (bwd) */
    size_t gl;     /* [b*m, S]     G_D, then G_L, then scale*r*G_L (bwd) */
    size_t mix;    /* [b, d]       a uniform side's sum of the rows it mixes */
    /* expert-subset forward (smoe_cpu_layer_forward_keep), kp = k*p kept slots per sequence;
     * it also uses disp for D and gc for C of the kept slots [b, m, kp] */
    size_t scores; /* [b, n]       expert scores */
    size_t kept;   /* [b, n] int   the kept experts, k per sequence */
    size_t rows;   /* [b*S] int    kept slot rows (z*kp + t) grouped by expert */
    size_t row_ex; /* [b*S] int    the expert of each of those rows */
    size_t ex_at;  /* [n+1] int    where each expert's rows start */
    size_t active; /* [n] int      the experts with rows */
    size_t pack;   /* smoe_gemm_pack_floats(): GEMM packing buffers */
    size_t total;
} ws_layout;

static size_t carve(size_t *top, size_t count)
{
    size_t at = *top;
    *top += (count + 15) & ~(size_t)15;
    return at;
}

static ws_layout ws_plan(const smoe_layer_dims *dm)
{
    const size_t b = (size_t)dm->b, m = (size_t)dm->m, d = (size_t)dm->d, h = (size_t)dm->h;
    const size_t S = (size_t)dm->n * (size_t)dm->p;
    ws_layout w;
    size_t top = 0;
    w.r = carve(&top, b * m);
    w.c = carve(&top, S);
    w.phihat = carve(&top, d * S);
    w.l0 = carve(&top, b * m * S);
    w.disp = carve(&top, b * m * S);
    w.comb = carve(&top, b * m * S);
    w.xs = carve(&top, b * S * d);
    w.a = carve(&top, b * S * h);
    w.act = carve(&top, b * S * h);
    w.ys = carve(&top, b * S * d);
    w.seq = carve(&top, b * S * d);
    w.ex1 = carve(&top, b * S * d);
    w.ex2 = carve(&top, b * S * d);
    w.gh = carve(&top, b * S * h);
    w.gc = carve(&top, b * m * S);
    w.gl = carve(&top, b * m * S);
    w.mix = carve(&top, b * d);
    w.scores = carve(&top, b * (size_t)dm->n);
    w.kept = carve(&top, b * (size_t)dm->n);
    w.rows = carve(&top, b * S);
    w.row_ex = carve(&top, b * S);
    w.ex_at = carve(&top, (size_t)dm->n + 1);
    w.active = carve(&top, (size_t)dm->n);
    w.pack = carve(&top, smoe_gemm_pack_floats());
    w.total = top;
    return w;
}

size_t smoe_cpu_layer_workspace(const smoe_layer_dims *dims)
{
    return ws_plan(dims).total;
}

/* ---------------------------------------------------------------------------------------- */
/* Elementwise helpers                                                                       */
/* ---------------------------------------------------------------------------------------- */

/* e^x for x <= 0, with x < -87 taken as -87 (e^-87 ~ 1.6e-38: nothing next to a softmax's
 * largest term, 1). For x <= 0 a larger bit pattern is a more negative number, so the clamp is
 * an integer min, which (unlike a float comparison) does not stop vectorisation. */
static inline float exp_nonpositive(float x)
{
    const uint32_t u = float_bits(x), lim = 0xC2AE0000u; /* -87.0f */
    return exp_core(bits_float(u > lim ? lim : u));
}

/* q(u) = 1 - |tanh(u)| = 2/(e^{2|u|} + 1), without the cancellation of 1 - tanh; |u| is taken
 * <= 44 so that e^{2|u|} stays finite (q(44) ~ 1e-38). |u| is a bit operation and the clamp an
 * integer min (for u >= 0 a larger bit pattern is a larger number), so loops vectorise. */
static inline float tanh_q(float u)
{
    const uint32_t lim = 0x42300000u; /* 44.0f */
    const uint32_t ab = float_bits(u) & 0x7FFFFFFFu;
    return 2.0f / (exp_core(2.0f * bits_float(ab > lim ? lim : ab)) + 1.0f);
}

/* 1 + tanh(u) from q = tanh_q(u): q for u < 0, 2 - q otherwise (selected with bit masks). */
static inline float one_plus_tanh(float u, float q)
{
    const uint32_t neg = 0u - (float_bits(u) >> 31); /* all ones when u < 0 */
    return bits_float((float_bits(q) & neg) | (float_bits(2.0f - q) & ~neg));
}

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_C 0.044715f

/* gelu(a) = 0.5 a (1 + tanh(u)), u = sqrt(2/pi) (a + 0.044715 a^3) */
static inline float gelu(float a)
{
    const float u = GELU_K * (a + GELU_C * a * a * a);
    return 0.5f * a * one_plus_tanh(u, tanh_q(u));
}

/* gelu'(a) = 0.5 (1 + tanh u) + 0.5 a (1 - tanh² u) du/da, with 1 - tanh² = q (2 - q) */
static inline float gelu_grad(float a)
{
    const float u = GELU_K * (a + GELU_C * a * a * a), q = tanh_q(u);
    return 0.5f * one_plus_tanh(u, q) +
           0.5f * a * q * (2.0f - q) * GELU_K * (1.0f + 3.0f * GELU_C * a * a);
}

/* The GELU loops are the only elementwise work big enough to matter; with AVX-512 they get a
 * 16-lane clone, chosen at run time. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(SMOE_CPU_NO_AVX512)
#define VECTOR_CLONES __attribute__((target_clones("avx512f", "default")))
#else
#define VECTOR_CLONES
#endif

/* a[l] += bias[l]; act[l] = gelu(a[l]) for l < len */
VECTOR_CLONES static void bias_gelu(int len, const float *bias, float *a, float *act)
{
#pragma omp simd
    for (int l = 0; l < len; l++) {
        a[l] += bias[l];
        act[l] = gelu(a[l]);
    }
}

/* g[l] *= gelu'(a[l]) for l < len */
VECTOR_CLONES static void gelu_backward(int len, const float *a, float *g)
{
#pragma omp simd
    for (int l = 0; l < len; l++) g[l] *= gelu_grad(a[l]);
}

/* Columns of the [m, S] per-sequence matrices are processed in blocks of this many slots, so
 * that the column loops walk rows contiguously. */
#define COL_BLOCK 32

/* Copies slot blocks between the sequence-major [b, n, p, d] and expert-major [n, b, p, d]
 * layouts; to_expert selects the direction. With bias (expert-major -> sequence-major only),
 * bias[e*d + k] is added to every row of expert e. */
static void permute_slots(const smoe_layer_dims *dm, const float *src, float *dst, int to_expert,
                          const float *bias)
{
    const int b = dm->b, n = dm->n, p = dm->p, d = dm->d;
    const size_t block = (size_t)p * d;
#pragma omp parallel for collapse(2) schedule(static)
    for (int e = 0; e < n; e++)
        for (int bb = 0; bb < b; bb++) {
            const size_t seq_at = ((size_t)bb * n + e) * block; /* [b, n, p, d] */
            const size_t exp_at = ((size_t)e * b + bb) * block; /* [n, b, p, d] */
            if (to_expert) {
                memcpy(dst + exp_at, src + seq_at, block * sizeof(float));
            } else if (!bias) {
                memcpy(dst + seq_at, src + exp_at, block * sizeof(float));
            } else {
                const float *bs = bias + (size_t)e * d;
                for (int k = 0; k < p; k++) {
                    const float *s = src + exp_at + (size_t)k * d;
                    float *o = dst + seq_at + (size_t)k * d;
#pragma omp simd
                    for (int t = 0; t < d; t++) o[t] = s[t] + bs[t];
                }
            }
        }
}

/* out[e*cols + t] = sum over the rows of expert e of mat[e][row][t] (mat is [n, rows, cols]). */
static void expert_row_sums(int n, int rows, int cols, const float *mat, float *out)
{
#pragma omp parallel for schedule(static)
    for (int e = 0; e < n; e++) {
        float *o = out + (size_t)e * cols;
        const float *src = mat + (size_t)e * rows * cols;
        for (int t = 0; t < cols; t++) o[t] = 0.0f;
        for (int r = 0; r < rows; r++) {
            const float *row = src + (size_t)r * cols;
#pragma omp simd
            for (int t = 0; t < cols; t++) o[t] += row[t];
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* The experts (shared with the sparse MoE layers, sparse_moe_cpu.c)                         */
/* ---------------------------------------------------------------------------------------- */

size_t smoe_cpu_gemm_pack_floats(void) { return smoe_gemm_pack_floats(); }

void smoe_cpu_experts_forward(int n, int M, int d, int h, const float *w1, const float *b1,
                              const float *w2, const float *xs, float *A, float *H, float *out,
                              float *pack)
{
    mm(n, M, h, d, mat(xs, d, (size_t)M * d), mat_t(w1, d, (size_t)h * d), A, h, (size_t)M * h, 0,
       pack);
#pragma omp parallel for schedule(static)
    for (int row = 0; row < n * M; row++)
        bias_gelu(h, b1 + (size_t)(row / M) * h, A + (size_t)row * h, H + (size_t)row * h);
    mm(n, M, d, h, mat(H, h, (size_t)M * h), mat_t(w2, h, (size_t)d * h), out, d, (size_t)M * d,
       0, pack);
}

void smoe_cpu_experts_backward(int n, int M, int d, int h, const float *w1, const float *w2,
                               const float *xs, const float *A, const float *H, const float *gy,
                               float *gh, float *gx, float *gw1, float *gb1, float *gw2,
                               float *gb2, float *pack)
{
    /* fc2: G_W2 = G_Ỹᵀ H, G_b2 = Σ_rows G_Ỹ, G_H = G_Ỹ W2 */
    mm(n, d, h, M, mat_t(gy, d, (size_t)M * d), mat(H, h, (size_t)M * h), gw2, h, (size_t)d * h,
       MM_STREAM, pack);
    mm(n, M, h, d, mat(gy, d, (size_t)M * d), mat(w2, h, (size_t)d * h), gh, h, (size_t)M * h, 0,
       pack);
    expert_row_sums(n, M, d, gy, gb2);

    /* G_A = G_H ⊙ gelu'(A) */
#pragma omp parallel for schedule(static)
    for (int row = 0; row < n * M; row++) gelu_backward(h, A + (size_t)row * h, gh + (size_t)row * h);
    expert_row_sums(n, M, h, gh, gb1);

    /* fc1: G_W1 = G_Aᵀ X̃, G_X̃ = G_A W1 */
    mm(n, h, d, M, mat_t(gh, h, (size_t)M * h), mat(xs, d, (size_t)M * d), gw1, d, (size_t)h * d,
       MM_STREAM, pack);
    mm(n, M, d, h, mat(gh, h, (size_t)M * h), mat(w1, d, (size_t)h * d), gx, d, (size_t)M * d, 0,
       pack);
}

/* ---------------------------------------------------------------------------------------- */
/* Forward                                                                                   */
/* ---------------------------------------------------------------------------------------- */

/* The routing a forward with a soft side starts with: r, c, Φ̂, X̂Φ̂ (in l0) and, when the
 * combine is soft, C. */
static void route(const smoe_layer_dims *dims, const smoe_layer_params *prm, const float *x,
                  float *ws, const ws_layout *w)
{
    const int soft_c = dims->combine == SMOE_MIX_SOFT;
    const int b = dims->b, m = dims->m, d = dims->d, S = dims->n * dims->p, bm = b * m;
    const float scale = prm->scale[0];
    float *r = ws + w->r, *c = ws + w->c, *phihat = ws + w->phihat, *l0 = ws + w->l0;
    float *C = ws + w->comb, *pack = ws + w->pack;

    /* r_i = 1/sqrt(|x_i|^2 + 1e-6) per token */
#pragma omp parallel for schedule(static)
    for (int i = 0; i < bm; i++) {
        const float *xi = x + (size_t)i * d;
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int k = 0; k < d; k++) ss += xi[k] * xi[k];
        r[i] = 1.0f / sqrtf(ss + 1e-6f);
    }

    /* c_j = 1/sqrt(|phi_:,j|^2 + 1e-6) per slot; Φ̂ = phi ⊙ c */
    for (int j = 0; j < S; j++) c[j] = 0.0f;
    for (int k = 0; k < d; k++)
        for (int j = 0; j < S; j++) c[j] += prm->phi[(size_t)k * S + j] * prm->phi[(size_t)k * S + j];
    for (int j = 0; j < S; j++) c[j] = 1.0f / sqrtf(c[j] + 1e-6f);
#pragma omp parallel for schedule(static)
    for (int k = 0; k < d; k++)
        for (int j = 0; j < S; j++) phihat[(size_t)k * S + j] = prm->phi[(size_t)k * S + j] * c[j];

    /* X Φ̂ for all tokens of the batch at once: [b*m, S] */
    mm(1, bm, S, d, mat(x, d, 0), mat(phihat, S, 0), l0, S, 0, 0, pack);

    /* per token: X̂Φ̂ = r_i (XΦ̂); C = softmax over the slots of L = scale X̂Φ̂ */
#pragma omp parallel for schedule(static)
    for (int i = 0; i < bm; i++) {
        float *li = l0 + (size_t)i * S, *ci = C + (size_t)i * S;
        const float ri = r[i];
        float mx = -INFINITY, sum = 0.0f;
#pragma omp simd reduction(max : mx)
        for (int j = 0; j < S; j++) {
            li[j] *= ri;
            const float v = scale * li[j];
            mx = v > mx ? v : mx;
        }
        if (!soft_c) continue;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < S; j++) {
            ci[j] = exp_nonpositive(scale * li[j] - mx);
            sum += ci[j];
        }
        const float inv = 1.0f / sum;
#pragma omp simd
        for (int j = 0; j < S; j++) ci[j] *= inv;
    }
}

/* A fixed side (SMOE_MIX_UNIFORM or SMOE_MIX_IDENTITY) applied without forming its weights, per
 * sequence z: out[z] (rows_out x d) = (or, with accumulate, +=) W in[z] (rows_in x d), where W
 * has every weight w (each output row is w times the sum of the input rows, which go through sum
 * [b, d]) or is the identity (rows_out = rows_in: a copy). The dispatch X̃ = Dᵀ X has w = 1/m, the
 * combine Y = C Ỹ w = 1/S; their backward G_Ỹ = Cᵀ G_Y and G_X = D G_X̃ the same weights. */
static void mix_fixed(int mode, int b, int rows_in, int rows_out, int d, float w, const float *in,
                      float *out, float *sum, int accumulate)
{
    if (mode == SMOE_MIX_IDENTITY) {
        const size_t n = (size_t)b * rows_in * d;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) out[i] = accumulate ? out[i] + in[i] : in[i];
        return;
    }
#pragma omp parallel for schedule(static)
    for (int z = 0; z < b; z++) {
        float *sz = sum + (size_t)z * d;
        for (int k = 0; k < d; k++) sz[k] = 0.0f;
        for (int r = 0; r < rows_in; r++) {
            const float *row = in + ((size_t)z * rows_in + r) * d;
#pragma omp simd
            for (int k = 0; k < d; k++) sz[k] += row[k];
        }
        for (int k = 0; k < d; k++) sz[k] *= w;
        for (int r = 0; r < rows_out; r++) {
            float *o = out + ((size_t)z * rows_out + r) * d;
#pragma omp simd
            for (int k = 0; k < d; k++) o[k] = accumulate ? o[k] + sz[k] : sz[k];
        }
    }
}

/* dst = the softmax over the m tokens of scale*src, per column, for each of the b [m, cols]
 * matrices of src and dst (which may be the same). */
static void softmax_columns(int b, int m, int cols, float scale, const float *src, float *dst)
{
    const int nblk = (cols + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for collapse(2) schedule(static)
    for (int bb = 0; bb < b; bb++)
        for (int jb = 0; jb < nblk; jb++) {
            const int j0 = jb * COL_BLOCK, nj = cols - j0 < COL_BLOCK ? cols - j0 : COL_BLOCK;
            const float *lb = src + (size_t)bb * m * cols + j0;
            float *db = dst + (size_t)bb * m * cols + j0;
            float mx[COL_BLOCK], sum[COL_BLOCK];
            for (int t = 0; t < nj; t++) mx[t] = -INFINITY, sum[t] = 0.0f;
            for (int i = 0; i < m; i++)
#pragma omp simd
                for (int t = 0; t < nj; t++) {
                    const float v = scale * lb[(size_t)i * cols + t];
                    mx[t] = v > mx[t] ? v : mx[t];
                }
            for (int i = 0; i < m; i++)
#pragma omp simd
                for (int t = 0; t < nj; t++) {
                    const float e = exp_nonpositive(scale * lb[(size_t)i * cols + t] - mx[t]);
                    db[(size_t)i * cols + t] = e;
                    sum[t] += e;
                }
            for (int t = 0; t < nj; t++) sum[t] = 1.0f / sum[t];
            for (int i = 0; i < m; i++)
#pragma omp simd
                for (int t = 0; t < nj; t++) db[(size_t)i * cols + t] *= sum[t];
        }
}

void smoe_cpu_layer_forward(const smoe_layer_dims *dims, const smoe_layer_params *prm,
                            const float *x, float *y, float *ws)
{
    const int b = dims->b, m = dims->m, d = dims->d, n = dims->n, h = dims->h;
    const int S = n * dims->p, M = b * dims->p; /* M: rows per expert */
    const ws_layout w = ws_plan(dims);
    float *l0 = ws + w.l0, *D = ws + w.disp, *C = ws + w.comb, *xs = ws + w.xs, *A = ws + w.a;
    float *H = ws + w.act, *ys = ws + w.ys, *seq = ws + w.seq, *ex1 = ws + w.ex1, *pack = ws + w.pack;
    float *sum = ws + w.mix;
    const int soft_d = dims->dispatch == SMOE_MIX_SOFT, soft_c = dims->combine == SMOE_MIX_SOFT;

    if (soft_d || soft_c) route(dims, prm, x, ws, &w);
    /* X̃ = Dᵀ X per sequence (sequence-major), then gathered expert-major; a soft D is the softmax
     * over the tokens of each sequence, per slot column */
    if (soft_d) {
        softmax_columns(b, m, S, prm->scale[0], l0, D);
        mm(b, S, d, m, mat_t(D, S, (size_t)m * S), mat(x, d, (size_t)m * d), seq, d, (size_t)S * d,
           0, pack);
    } else {
        mix_fixed(dims->dispatch, b, m, S, d, 1.0f / (float)m, x, seq, sum, 0);
    }
    permute_slots(dims, seq, xs, 1, NULL);

    /* per expert: A = X̃ W1ᵀ + b1, H = gelu(A), then fc2 (without its bias) */
    smoe_cpu_experts_forward(n, M, d, h, prm->w1, prm->b1, prm->w2, xs, A, H, ex1, pack);

    /* Ỹ = fc2 output + b2, sequence-major; Y = C Ỹ per sequence */
    permute_slots(dims, ex1, ys, 0, prm->b2);
    if (soft_c)
        mm(b, m, d, S, mat(C, S, (size_t)m * S), mat(ys, d, (size_t)S * d), y, d, (size_t)m * d, 0,
           pack);
    else
        mix_fixed(dims->combine, b, S, m, d, 1.0f / (float)S, ys, y, sum, 0);
}

/* The expert-subset forward: the full layer's steps, each over the kept slots only. Kept slot t
 * (t < kp) of sequence z is slot kept[z*k + t/p]*p + t%p; the kept slots' rows are grouped by
 * expert (expert-major, sequences in order) for one GEMM per expert that has any. */
void smoe_cpu_layer_forward_keep(const smoe_layer_dims *dims, const smoe_layer_params *prm,
                                 const float *x, float *y, float *ws, const smoe_keep *keep,
                                 const uint32_t state[3], uint32_t layer)
{
    const int b = dims->b, m = dims->m, d = dims->d, n = dims->n, p = dims->p, h = dims->h;
    const int S = n * p, k = keep->k, kp = k * p, R = b * kp; /* R: kept slot rows in all */
    const float scale = prm->scale[0];
    const ws_layout w = ws_plan(dims);
    float *l0 = ws + w.l0, *C = ws + w.comb, *Dk = ws + w.disp, *Ck = ws + w.gc, *xk = ws + w.seq;
    float *xs = ws + w.xs, *A = ws + w.a, *H = ws + w.act, *ex1 = ws + w.ex1, *ys = ws + w.ys;
    float *scores = ws + w.scores, *pack = ws + w.pack;
    int *kept = (int *)(ws + w.kept), *rows = (int *)(ws + w.rows), *row_ex = (int *)(ws + w.row_ex);
    int *ex_at = (int *)(ws + w.ex_at), *active = (int *)(ws + w.active);

    route(dims, prm, x, ws, &w);

    /* the experts each sequence keeps */
    if (keep->random) {
        for (int z = 0; z < b; z++)
            for (int e = 0; e < n; e++)
                /* state = {seed low word, seed high word, call}; the same draws as expert_topk.comp */
                scores[(size_t)z * n + e] = smoe_rn_subset_score(state[0], state[1], state[2], layer, (uint32_t)z, (uint32_t)e);
    } else {
        smoe_keep_scores(b, m, n, p, C, scores);
    }
    smoe_keep_top(b, n, k, scores, kept);
#define KEPT_SLOT(z, t) (kept[(size_t)(z) * k + (t) / p] * p + (t) % p)

    /* D over the kept slots: their logit columns, then the softmax over the tokens in place;
     * X̃ of the kept slots [b, kp, d] */
#pragma omp parallel for schedule(static)
    for (int zi = 0; zi < b * m; zi++)
        for (int t = 0; t < kp; t++) Dk[(size_t)zi * kp + t] = l0[(size_t)zi * S + KEPT_SLOT(zi / m, t)];
    softmax_columns(b, m, kp, scale, Dk, Dk);
    mm(b, kp, d, m, mat_t(Dk, kp, (size_t)m * kp), mat(x, d, (size_t)m * d), xk, d, (size_t)kp * d,
       0, pack);

    /* rows grouped by expert, and X̃ gathered in that order */
    for (int e = 0; e <= n; e++) ex_at[e] = 0;
    for (int i = 0; i < b * k; i++) ex_at[kept[i] + 1] += p;
    for (int e = 0; e < n; e++) ex_at[e + 1] += ex_at[e];
    for (int z = 0; z < b; z++)
        for (int t = 0; t < kp; t++) {
            const int e = kept[(size_t)z * k + t / p];
            const int r = ex_at[e]++; /* advanced here, restored below */
            rows[r] = z * kp + t;
            row_ex[r] = e;
        }
    for (int e = n; e > 0; e--) ex_at[e] = ex_at[e - 1];
    ex_at[0] = 0;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < R; r++) memcpy(xs + (size_t)r * d, xk + (size_t)rows[r] * d, (size_t)d * sizeof(float));

    /* per expert with rows: A = X̃ W1ᵀ + b1, H = gelu(A), fc2 */
    int count = 0;
    for (int e = 0; e < n; e++)
        if (ex_at[e + 1] > ex_at[e]) active[count++] = e;
    smoe_gemm_groups(count, active, ex_at, b * p, h, d, xs, prm->w1, A, pack);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < R; r++)
        bias_gelu(h, prm->b1 + (size_t)row_ex[r] * h, A + (size_t)r * h, H + (size_t)r * h);
    smoe_gemm_groups(count, active, ex_at, b * p, d, h, H, prm->w2, ex1, pack);

    /* Ỹ of the kept slots = fc2 output + b2, back in sequence order [b, kp, d] */
#pragma omp parallel for schedule(static)
    for (int r = 0; r < R; r++) {
        const float *src = ex1 + (size_t)r * d, *bias = prm->b2 + (size_t)row_ex[r] * d;
        float *o = ys + (size_t)rows[r] * d;
#pragma omp simd
        for (int t = 0; t < d; t++) o[t] = src[t] + bias[t];
    }

    /* the kept slots' combine weights: C itself, or renormalised over them per token, from the
     * logits (a log-sum-exp over the kept slots) so that no sum of small weights underflows */
#pragma omp parallel for schedule(static)
    for (int zi = 0; zi < b * m; zi++) {
        const float *li = l0 + (size_t)zi * S, *ci = C + (size_t)zi * S;
        float *ck = Ck + (size_t)zi * kp;
        const int z = zi / m;
        if (!keep->renormalize) {
            for (int t = 0; t < kp; t++) ck[t] = ci[KEPT_SLOT(z, t)];
            continue;
        }
        float mx = -INFINITY, sum = 0.0f;
        for (int t = 0; t < kp; t++) {
            const float v = scale * li[KEPT_SLOT(z, t)];
            mx = v > mx ? v : mx;
        }
        for (int t = 0; t < kp; t++) sum += exp_nonpositive(scale * li[KEPT_SLOT(z, t)] - mx);
        const float lse = mx + logf(sum);
        for (int t = 0; t < kp; t++) ck[t] = exp_nonpositive(scale * li[KEPT_SLOT(z, t)] - lse);
    }
#undef KEPT_SLOT

    /* Y = C Ỹ per sequence, over the kept slots */
    mm(b, m, d, kp, mat(Ck, kp, (size_t)m * kp), mat(ys, d, (size_t)kp * d), y, d, (size_t)m * d,
       0, pack);
}

/* ---------------------------------------------------------------------------------------- */
/* Backward                                                                                  */
/* ---------------------------------------------------------------------------------------- */

/* g = D ⊙ (g − colsum(D ⊙ g)) in place, per sequence and slot column: the backward of the
 * softmax over the m tokens (the dispatch half of G_L), for the b [m, cols] matrices of D and g. */
static void softmax_columns_backward(int b, int m, int cols, const float *D, float *g)
{
    const int nblk = (cols + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for collapse(2) schedule(static)
    for (int bb = 0; bb < b; bb++)
        for (int jb = 0; jb < nblk; jb++) {
            const int j0 = jb * COL_BLOCK, nj = cols - j0 < COL_BLOCK ? cols - j0 : COL_BLOCK;
            const float *db = D + (size_t)bb * m * cols + j0;
            float *gb = g + (size_t)bb * m * cols + j0;
            float cs[COL_BLOCK];
            for (int t = 0; t < nj; t++) cs[t] = 0.0f;
            for (int i = 0; i < m; i++)
#pragma omp simd
                for (int t = 0; t < nj; t++) cs[t] += db[(size_t)i * cols + t] * gb[(size_t)i * cols + t];
            for (int i = 0; i < m; i++)
#pragma omp simd
                for (int t = 0; t < nj; t++)
                    gb[(size_t)i * cols + t] = db[(size_t)i * cols + t] * (gb[(size_t)i * cols + t] - cs[t]);
        }
}

void smoe_cpu_layer_backward(const smoe_layer_dims *dims, const smoe_layer_params *prm,
                             const float *x, const float *dy, float *ws, float *dx,
                             const smoe_layer_grads *grads)
{
    const int b = dims->b, m = dims->m, d = dims->d, n = dims->n, p = dims->p, h = dims->h;
    const int S = n * p, bm = b * m, M = b * p;
    const float scale = prm->scale[0];
    const ws_layout w = ws_plan(dims);
    const float *r = ws + w.r, *c = ws + w.c, *phihat = ws + w.phihat, *l0 = ws + w.l0;
    const float *D = ws + w.disp, *C = ws + w.comb, *xs = ws + w.xs, *A = ws + w.a;
    const float *H = ws + w.act, *ys = ws + w.ys;
    float *seq = ws + w.seq, *gy_e = ws + w.ex1, *gx_e = ws + w.ex2, *gh = ws + w.gh;
    float *gc = ws + w.gc, *gl = ws + w.gl, *sum = ws + w.mix, *pack = ws + w.pack;
    const int soft_d = dims->dispatch == SMOE_MIX_SOFT, soft_c = dims->combine == SMOE_MIX_SOFT;

    /* G_C = G_Y Ỹᵀ (a soft C only) and G_Ỹ = Cᵀ G_Y per sequence; G_Ỹ gathered expert-major */
    if (soft_c) {
        mm(b, m, S, d, mat(dy, d, (size_t)m * d), mat_t(ys, d, (size_t)S * d), gc, S,
           (size_t)m * S, 0, pack);
        mm(b, S, d, m, mat_t(C, S, (size_t)m * S), mat(dy, d, (size_t)m * d), seq, d,
           (size_t)S * d, 0, pack);
    } else {
        mix_fixed(dims->combine, b, m, S, d, 1.0f / (float)S, dy, seq, sum, 0);
    }
    permute_slots(dims, seq, gy_e, 1, NULL);

    /* the experts' backward: every expert gradient and G_X̃; G_X̃ scattered sequence-major */
    smoe_cpu_experts_backward(n, M, d, h, prm->w1, prm->w2, xs, A, H, gy_e, gh, gx_e, grads->w1,
                              grads->b1, grads->w2, grads->b2, pack);
    permute_slots(dims, gx_e, seq, 0, NULL);

    /* Neither side soft: the logits play no part, G_X = D G_X̃ alone */
    if (!soft_d && !soft_c) {
        memset(grads->phi, 0, sizeof(float) * (size_t)dims->d * S);
        grads->scale[0] = 0.0f;
        mix_fixed(dims->dispatch, b, S, m, d, 1.0f / (float)m, seq, dx, sum, 0);
        return;
    }

    /* G_D = X G_X̃ᵀ per sequence (a soft D only) */
    if (soft_d)
        mm(b, m, S, d, mat(x, d, (size_t)m * d), mat_t(seq, d, (size_t)S * d), gl, S,
           (size_t)m * S, 0, pack);
    else
        memset(gl, 0, sizeof(float) * (size_t)bm * S);

    /* G_L, first the dispatch half (a soft D only) */
    if (soft_d) softmax_columns_backward(b, m, S, D, gl);

    /* ... then the combine half C ⊙ (G_C − rowsum(C ⊙ G_C)) per token (a soft C only);
     * G_scale = Σ G_L ⊙ X̂Φ̂; and gl becomes G' = scale r ⊙ G_L, so that G_Φ̂ = Xᵀ G' and
     * r ⊙ G_X̂ = G' Φ̂ᵀ. */
    double gscale = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : gscale)
    for (int i = 0; i < bm; i++) {
        const float *ci = C + (size_t)i * S, *gci = gc + (size_t)i * S, *li = l0 + (size_t)i * S;
        float *gli = gl + (size_t)i * S;
        float rs = 0.0f, gs = 0.0f;
        if (soft_c) { /* C and G_C are not formed otherwise */
#pragma omp simd reduction(+ : rs)
            for (int j = 0; j < S; j++) rs += ci[j] * gci[j];
#pragma omp simd
            for (int j = 0; j < S; j++) gli[j] += ci[j] * (gci[j] - rs);
        }
        const float sr = scale * r[i];
#pragma omp simd reduction(+ : gs)
        for (int j = 0; j < S; j++) {
            gs += gli[j] * li[j];
            gli[j] *= sr;
        }
        gscale += gs;
    }
    grads->scale[0] = (float)gscale;

    /* G_phi = l2back(G_Φ̂) per slot column, with G_Φ̂ = Xᵀ G':
     * G_phi_:,j = c_j G_Φ̂_:,j − c_j³ phi_:,j (phi_:,j · G_Φ̂_:,j) */
    mm(1, d, S, bm, mat_t(x, d, 0), mat(gl, S, 0), grads->phi, S, 0, 0, pack);
#pragma omp parallel for schedule(static)
    for (int j = 0; j < S; j++) {
        float *g = grads->phi + j;
        const float *ph = prm->phi + j;
        float dot = 0.0f;
        for (int k = 0; k < d; k++) dot += ph[(size_t)k * S] * g[(size_t)k * S];
        const float cj = c[j], f = cj * cj * cj * dot;
        for (int k = 0; k < d; k++) g[(size_t)k * S] = cj * g[(size_t)k * S] - f * ph[(size_t)k * S];
    }

    /* G_X = l2back(G_X̂) + D G_X̃. With Q = G' Φ̂ᵀ = r ⊙ G_X̂, the l2 backward of token i is
     * Q_i − r_i² x_i (x_i · Q_i). */
    mm(1, bm, d, S, mat(gl, S, 0), mat_t(phihat, S, 0), dx, d, 0, 0, pack);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < bm; i++) {
        const float *xi = x + (size_t)i * d;
        float *q = dx + (size_t)i * d;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int k = 0; k < d; k++) dot += xi[k] * q[k];
        const float f = r[i] * r[i] * dot;
#pragma omp simd
        for (int k = 0; k < d; k++) q[k] -= f * xi[k];
    }
    if (soft_d)
        mm(b, m, d, S, mat(D, S, (size_t)m * S), mat(seq, d, (size_t)S * d), dx, d, (size_t)m * d,
           MM_ACCUMULATE, pack);
    else
        mix_fixed(dims->dispatch, b, S, m, d, 1.0f / (float)m, seq, dx, sum, 1);
}
