/* The CPU path's one GEMM (gemm.h). Two ways to run a product:
 *
 *   OpenBLAS's cblas_sgemm, one call per item of a batch (it threads each call itself);
 *   this file's own AVX-512 kernels (x86-64 CPUs with AVX-512, checked at run time): an 8x32
 *   FMA register tile with three drivers, one OpenMP region per batch:
 *     mm_packed  A B, the general case: BLIS-style cache blocking, A packed (needs `pack`);
 *     mm_direct  A B with few rows or a short inner size (the per-expert backward products and
 *                weight gradients): B read in place, in order, no packing, no barriers;
 *     mm_dot     A Bᵀ with few rows (the per-expert X Wᵀ forward products): dot products along
 *                the weight rows, which are read once, in order.
 *
 * Which one runs is a pure function of the batch size, the shape, the transposes, alpha, beta,
 * whether pack is given and whether the CPU has AVX-512 (see choose() for the rule and why), so
 * a call rounds the same way every time. OpenBLAS also serves every CPU without AVX-512.
 *
 * No global state, no allocation; nothing process-global is changed. */
#include "gemm.h"

#include <cblas.h>
#include <stdint.h>
#include <string.h>

/* The AVX-512 kernels are chosen at run time; -DSMOE_CPU_NO_AVX512 leaves them out (cblas only). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(SMOE_CPU_NO_AVX512)
#include <immintrin.h>
#define SMOE_HAVE_AVX512_KERNEL 1
#else
#define SMOE_HAVE_AVX512_KERNEL 0
#endif

typedef smoe_gemm_mat operand;

enum {
    MM_ACCUMULATE = 1 << 8, /* C += op(A) op(B) instead of C = op(A) op(B) */
    MM_STREAM = SMOE_GEMM_STREAM, /* C is written once and not read soon: bypass the cache where possible */
    TILE_PREFETCH = 1 << 9  /* B is read in place, rows far apart: prefetch PF_ROWS ahead */
};
/* Register tile MR x NR; cache blocks MC x KC of A (packed) and KC x NC of B (packed GEMM). */
#define MR 8
#define NR 32
#define KC 256
#define MC 512
#define NC 2048
#define PACK_FLOATS ((size_t)MC * KC)
#define PF_ROWS 24     /* prefetch distance in rows of B, with TILE_PREFETCH */
#define DOT_MAX_M 32   /* A Bᵀ with at most this many rows: mm_dot */
#define DIRECT_MAX_M 16 /* A B with at most this many rows ... */
#define DIRECT_MAX_K 32 /* ... or this short an inner dimension: mm_direct */
#define DIRECT_KB 32   /* mm_direct: rows of B swept together */
#define DOT_R 8        /* dot_tile: rows of A ... */
#define DOT_J 3        /* ... and of Bᵀ per tile */

#if SMOE_HAVE_AVX512_KERNEL

/* The mr x nr corner (mr <= MR, nr <= NR) of the tile c (leading dimension ldc) = (or +=)
 * op(A) op(B) over kc, where op(A)[i][k] = a[i*ai + k*ak] (a packed panel has ai = 1,
 * ak = MR) and op(B)[k][j] = b[k*ldb + j] (a packed panel has ldb = NR). */
__attribute__((target("avx512f"))) static void tile_avx512(int kc, const float *a, int ai,
                                                           int ak, const float *b, int ldb,
                                                           float *c, int ldc, int mr, int nr,
                                                           int flags)
{
    const __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xFFFF : (1u << nr) - 1);
    const __mmask16 m1 = (__mmask16)(nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : (1u << (nr - 16)) - 1);
    const float *ar[MR]; /* rows past mr repeat row 0; their results are dropped */
    for (int i = 0; i < MR; i++) ar[i] = a + (size_t)(i < mr ? i : 0) * ai;
    __m512 c0[MR], c1[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) c0[i] = c1[i] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++) {
        const float *bk = b + (size_t)k * ldb;
        if (flags & TILE_PREFETCH) {
            const uintptr_t ahead = (uintptr_t)bk + (uintptr_t)PF_ROWS * ldb * sizeof(float);
            _mm_prefetch((const char *)ahead, _MM_HINT_T0);
            _mm_prefetch((const char *)(ahead + 64), _MM_HINT_T0);
        }
        const __m512 b0 = _mm512_maskz_loadu_ps(m0, bk), b1 = _mm512_maskz_loadu_ps(m1, bk + 16);
        const size_t kk = (size_t)k * ak;
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            const __m512 av = _mm512_set1_ps(ar[i][kk]);
            c0[i] = _mm512_fmadd_ps(av, b0, c0[i]);
            c1[i] = _mm512_fmadd_ps(av, b1, c1[i]);
        }
    }
    const int stream = (flags & MM_STREAM) && nr == NR && (uintptr_t)c % 64 == 0 && ldc % 16 == 0;
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
        if (i >= mr) break;
        float *ci = c + (size_t)i * ldc;
        if (flags & MM_ACCUMULATE) {
            c0[i] = _mm512_add_ps(c0[i], _mm512_maskz_loadu_ps(m0, ci));
            c1[i] = _mm512_add_ps(c1[i], _mm512_maskz_loadu_ps(m1, ci + 16));
        }
        if (stream) {
            _mm512_stream_ps(ci, c0[i]);
            _mm512_stream_ps(ci + 16, c1[i]);
        } else {
            _mm512_mask_storeu_ps(ci, m0, c0[i]);
            _mm512_mask_storeu_ps(ci + 16, m1, c1[i]);
        }
    }
}

/* The mr x nj corner (mr <= DOT_R, nj <= DOT_J) of c = (or +=) A Btᵀ, with A [mr, K] and
 * Bt [nj, K] row-major (leading dimensions lda, ldb): dot products vectorised along K. */
__attribute__((target("avx512f"))) static void dot_tile(int K, const float *a, int lda, int mr,
                                                        const float *bt, int ldb, int nj,
                                                        float *c, int ldc, int flags)
{
    const float *ar[DOT_R], *br[DOT_J]; /* rows past mr (nj) repeat row 0 */
    for (int i = 0; i < DOT_R; i++) ar[i] = a + (size_t)(i < mr ? i : 0) * lda;
    for (int j = 0; j < DOT_J; j++) br[j] = bt + (size_t)(j < nj ? j : 0) * ldb;
    __m512 acc[DOT_R][DOT_J];
#pragma GCC unroll 8
    for (int i = 0; i < DOT_R; i++)
#pragma GCC unroll 8
        for (int j = 0; j < DOT_J; j++) acc[i][j] = _mm512_setzero_ps();
    for (int k = 0; k < K; k += 16) {
        const __mmask16 mk = (__mmask16)(K - k >= 16 ? 0xFFFF : (1u << (K - k)) - 1);
        __m512 bv[DOT_J];
#pragma GCC unroll 8
        for (int j = 0; j < DOT_J; j++) {
            bv[j] = _mm512_maskz_loadu_ps(mk, br[j] + k);
            /* the same place in the next DOT_J rows: the weights are read once, in order */
            _mm_prefetch((const char *)((uintptr_t)(br[j] + k) + (uintptr_t)DOT_J * ldb * sizeof(float)),
                         _MM_HINT_T0);
        }
#pragma GCC unroll 8
        for (int i = 0; i < DOT_R; i++) {
            const __m512 av = _mm512_maskz_loadu_ps(mk, ar[i] + k);
#pragma GCC unroll 8
            for (int j = 0; j < DOT_J; j++) acc[i][j] = _mm512_fmadd_ps(av, bv[j], acc[i][j]);
        }
    }
    float sum[DOT_R][DOT_J]; /* (constant indices keep acc in registers) */
#pragma GCC unroll 8
    for (int i = 0; i < DOT_R; i++)
#pragma GCC unroll 8
        for (int j = 0; j < DOT_J; j++) sum[i][j] = _mm512_reduce_add_ps(acc[i][j]);
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nj; j++) {
            float *cij = c + (size_t)i * ldc + j;
            *cij = flags & MM_ACCUMULATE ? *cij + sum[i][j] : sum[i][j];
        }
}

/* dst[k*MR + i] = op(A)[i0 + i][k0 + k] for i < mr, k < kc; rows mr..MR-1 are zero. */
static void pack_a(operand A, const float *a, int i0, int mr, int k0, int kc, float *dst)
{
    for (int k = 0; k < kc; k++)
        for (int i = 0; i < MR; i++)
            dst[k * MR + i] = i >= mr      ? 0.0f
                              : A.trans ? a[(size_t)(k0 + k) * A.ld + i0 + i]
                                        : a[(size_t)(i0 + i) * A.ld + k0 + k];
}

/* C_g = (or +=) op(A_g) B_g, g < count, each M x N with inner size K, B untransposed: the
 * general case. Per block of C, all threads first pack A into pack (PACK_FLOATS), then compute
 * its tiles, reading B in place. */
static void mm_packed(int count, int M, int N, int K, operand A, operand B, float *C, int ldc,
                      size_t stride_c, int flags, float *pack)
{
    float *pa = pack;
    const int nkb = (K + KC - 1) / KC, kstep = (K + nkb - 1) / nkb; /* even K blocks */
    if (nkb > 1) flags &= ~MM_STREAM; /* C is read again for the next K block */
    flags |= TILE_PREFETCH;
#pragma omp parallel
    for (int g = 0; g < count; g++) {
        const float *a = A.p + g * A.stride, *b = B.p + g * B.stride;
        float *cg = C + g * stride_c;
        for (int k0 = 0; k0 < K; k0 += kstep) {
            const int kc = K - k0 < kstep ? K - k0 : kstep;
            const int fl = k0 > 0 ? flags | MM_ACCUMULATE : flags;
            for (int i0 = 0; i0 < M; i0 += MC) {
                const int mc = M - i0 < MC ? M - i0 : MC, npa = (mc + MR - 1) / MR;
                for (int j0 = 0; j0 < N; j0 += NC) {
                    const int nc = N - j0 < NC ? N - j0 : NC, npb = (nc + NR - 1) / NR;
                    const int npack = j0 == 0 ? npa : 0; /* A once per (k0, i0) */
#pragma omp for schedule(static)
                    for (int ip = 0; ip < npack; ip++) {
                        const int in = mc - ip * MR < MR ? mc - ip * MR : MR;
                        pack_a(A, a, i0 + ip * MR, in, k0, kc, pa + (size_t)ip * kc * MR);
                    }
#pragma omp for collapse(2) schedule(static)
                    for (int jp = 0; jp < npb; jp++)
                        for (int ip = 0; ip < npa; ip++) {
                            const int in = mc - ip * MR < MR ? mc - ip * MR : MR;
                            const int jn = nc - jp * NR < NR ? nc - jp * NR : NR;
                            const float *ap = pa + (size_t)ip * kc * MR;
                            const float *bp = b + (size_t)k0 * B.ld + j0 + jp * NR;
                            tile_avx512(kc, ap, 1, MR, bp, B.ld,
                                        cg + (size_t)(i0 + ip * MR) * ldc + j0 + jp * NR, ldc, in,
                                        jn, fl);
                        }
                }
            }
        }
        if (flags & MM_STREAM) _mm_sfence(); /* every thread orders its own streaming stores */
    }
}

/* C_g = (or +=) op(A_g) B_g, B untransposed, with few rows (the per-expert G_Ỹ W2 and G_A W1)
 * or a short inner dimension (the per-expert weight gradients G_Ỹᵀ H and G_Aᵀ X̃): nothing is
 * packed (the tile reads A and B in place) and threads never wait for each other before the
 * end. Each thread takes whole items and sweeps B by DIRECT_KB full rows at a time, so that B
 * (the weights) is read once, in order, with software prefetch ahead. */
static void mm_direct(int count, int M, int N, int K, operand A, operand B, float *C, int ldc,
                      size_t stride_c, int flags)
{
    const int ai = A.trans ? 1 : A.ld, ak = A.trans ? A.ld : 1;
    const int nch = count >= 8 ? 1 : (N + 511) / 512; /* split N when there are few items */
    const int chunk = (N + nch - 1) / nch;
    if (K > DIRECT_KB) flags &= ~MM_STREAM; /* C is read again for the next rows of B */
    flags |= TILE_PREFETCH;
#pragma omp parallel
    {
#pragma omp for collapse(2) schedule(static)
        for (int g = 0; g < count; g++)
            for (int ch = 0; ch < nch; ch++) {
                const float *a = A.p + g * A.stride, *b = B.p + g * B.stride;
                float *cg = C + g * stride_c;
                const int j_end = (ch + 1) * chunk < N ? (ch + 1) * chunk : N;
                for (int i0 = 0; i0 < M; i0 += MR)
                    for (int k0 = 0; k0 < K; k0 += DIRECT_KB) {
                        const int kc = K - k0 < DIRECT_KB ? K - k0 : DIRECT_KB;
                        const int fl = k0 > 0 ? flags | MM_ACCUMULATE : flags;
                        for (int j0 = ch * chunk; j0 < j_end; j0 += NR)
                            tile_avx512(kc, a + (size_t)i0 * ai + (size_t)k0 * ak, ai, ak,
                                        b + (size_t)k0 * B.ld + j0, B.ld,
                                        cg + (size_t)i0 * ldc + j0, ldc,
                                        M - i0 < MR ? M - i0 : MR,
                                        j_end - j0 < NR ? j_end - j0 : NR, fl);
                    }
            }
        if (flags & MM_STREAM) _mm_sfence();
    }
}

/* C_g = (or +=) A_g B_gᵀ (A and B both row-major, contiguous along K) with few rows of A (the
 * per-expert X Wᵀ): packing the transposed weights would cost more than the arithmetic. Each
 * weight row is read once per DOT_R rows of A, in order. */
static void mm_dot(int count, int M, int N, int K, operand A, operand B, float *C, int ldc,
                   size_t stride_c, int flags)
{
    const int nj = (N + DOT_J - 1) / DOT_J;
#pragma omp parallel for collapse(2) schedule(static)
    for (int g = 0; g < count; g++)
        for (int jt = 0; jt < nj; jt++) {
            const int j0 = jt * DOT_J, jn = N - j0 < DOT_J ? N - j0 : DOT_J;
            const float *bt = B.p + g * B.stride + (size_t)j0 * B.ld;
            for (int i0 = 0; i0 < M; i0 += DOT_R)
                dot_tile(K, A.p + g * A.stride + (size_t)i0 * A.ld, A.ld,
                         M - i0 < DOT_R ? M - i0 : DOT_R, bt, B.ld, jn,
                         C + g * stride_c + (size_t)i0 * ldc + j0, ldc, flags);
        }
}

/* mm_dot over groups of rows of different sizes (the expert-subset forward's kept rows of each
 * expert): for g < count, rows rows_at[e]..rows_at[e+1] of A and C times item e = group[g] of B,
 * all in one parallel region. */
static void mm_dot_groups(int count, const int *group, const int *rows_at, int N, int K, operand A,
                          operand B, float *C, int ldc)
{
    const int nj = (N + DOT_J - 1) / DOT_J;
#pragma omp parallel for collapse(2) schedule(static)
    for (int g = 0; g < count; g++)
        for (int jt = 0; jt < nj; jt++) {
            const int e = group[g], end = rows_at[e + 1];
            const int j0 = jt * DOT_J, jn = N - j0 < DOT_J ? N - j0 : DOT_J;
            const float *bt = B.p + e * B.stride + (size_t)j0 * B.ld;
            for (int i0 = rows_at[e]; i0 < end; i0 += DOT_R)
                dot_tile(K, A.p + (size_t)i0 * A.ld, A.ld, end - i0 < DOT_R ? end - i0 : DOT_R, bt,
                         B.ld, jn, C + (size_t)i0 * ldc + j0, ldc, 0);
        }
}

#endif /* SMOE_HAVE_AVX512_KERNEL */


/* ---------------------------------------------------------------------------------------- */
/* The choice                                                                                */
/* ---------------------------------------------------------------------------------------- */

typedef enum { GEMM_BLAS, GEMM_PACKED, GEMM_DIRECT, GEMM_DOT } strategy;

/* The rule, from measuring both ways on the CPU ops' own shapes (each product alone, then the
 * layer and ViT benchmarks):
 *   - a batch of several products (the Soft MoE layer's per-sequence and per-expert GEMMs) runs
 *     on the own kernels: one parallel region for the whole batch, B read in place, where
 *     OpenBLAS packs and threads per call; faster by far on the per-expert products of few rows,
 *     level or ahead on the larger A B items;
 *   - a single product (batched == 0: the ViT's linear layers, the layer's routing logits and
 *     their gradients, thousands of rows) runs on OpenBLAS: ahead or level on nearly every such
 *     shape (in sum ahead), and it needs no pack buffer;
 *   - in a batch, A Bᵀ with up to DOT_MAX_M rows: mm_dot; A Bᵀ with more rows: OpenBLAS (the own
 *     kernels would have to pack Bᵀ with gathers; OpenBLAS measured ahead or level there); A B
 *     with up to DIRECT_MAX_M rows or an inner size up to DIRECT_MAX_K: mm_direct; otherwise
 *     mm_packed;
 *   - alpha other than 1, beta other than 0 or 1, no AVX-512, or no pack buffer where packing is
 *     needed: OpenBLAS. */
static strategy choose(int batched, int M, int K, operand A, operand B, float alpha, float beta,
                       const float *pack)
{
#if SMOE_HAVE_AVX512_KERNEL
    if (!batched || alpha != 1.0f || (beta != 0.0f && beta != 1.0f) ||
        !__builtin_cpu_supports("avx512f"))
        return GEMM_BLAS;
    if (B.trans) return !A.trans && M <= DOT_MAX_M ? GEMM_DOT : GEMM_BLAS;
    if (M <= DIRECT_MAX_M || K <= DIRECT_MAX_K) return GEMM_DIRECT;
    return pack ? GEMM_PACKED : GEMM_BLAS;
#else
    (void)batched, (void)M, (void)K, (void)A, (void)B, (void)alpha, (void)beta, (void)pack;
    return GEMM_BLAS;
#endif
}

/* C_g = beta C_g (an empty inner product); beta 0 clears, as cblas does. */
static void scale_c(int count, int M, int N, float beta, float *C, int ldc, size_t stride_c)
{
    for (int g = 0; g < count; g++)
        for (int i = 0; i < M; i++) {
            float *ci = C + g * stride_c + (size_t)i * ldc;
            for (int j = 0; j < N; j++) ci[j] = beta == 0.0f ? 0.0f : beta * ci[j];
        }
}

static void run(strategy s, int count, int M, int N, int K, float alpha, operand A, operand B,
                float beta, float *C, int ldc, size_t stride_c, int flags, float *pack)
{
#if SMOE_HAVE_AVX512_KERNEL
    flags &= MM_STREAM;
    if (beta == 1.0f) flags |= MM_ACCUMULATE;
    switch (s) {
    case GEMM_DOT: mm_dot(count, M, N, K, A, B, C, ldc, stride_c, flags); return;
    case GEMM_DIRECT: mm_direct(count, M, N, K, A, B, C, ldc, stride_c, flags); return;
    case GEMM_PACKED: mm_packed(count, M, N, K, A, B, C, ldc, stride_c, flags, pack); return;
    case GEMM_BLAS: break;
    }
#else
    (void)s, (void)flags, (void)pack;
#endif
    for (int g = 0; g < count; g++)
        cblas_sgemm(CblasRowMajor, A.trans ? CblasTrans : CblasNoTrans,
                    B.trans ? CblasTrans : CblasNoTrans, M, N, K, alpha, A.p + g * A.stride, A.ld,
                    B.p + g * B.stride, B.ld, beta, C + g * stride_c, ldc);
}

/* ---------------------------------------------------------------------------------------- */
/* Entry points                                                                              */
/* ---------------------------------------------------------------------------------------- */

size_t smoe_gemm_pack_floats(void) { return PACK_FLOATS; }

void smoe_gemm_batch(int count, int M, int N, int K, float alpha, smoe_gemm_mat A,
                     smoe_gemm_mat B, float beta, float *C, int ldc, size_t stride_c, int flags,
                     float *pack)
{
    if (count <= 0 || M <= 0 || N <= 0) return;
    if (K <= 0) {
        scale_c(count, M, N, beta, C, ldc, stride_c);
        return;
    }
    run(choose(count > 1, M, K, A, B, alpha, beta, pack), count, M, N, K, alpha, A, B, beta, C, ldc,
        stride_c, flags, pack);
}

void smoe_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
               int lda, const float *B, int ldb, float beta, float *C, int ldc, float *pack)
{
    smoe_gemm_batch(1, M, N, K, alpha, (operand){A, lda, trans_a != 0, 0},
                    (operand){B, ldb, trans_b != 0, 0}, beta, C, ldc, 0, 0, pack);
}

void smoe_gemm_groups(int count, const int *group, const int *rows_at, int max_rows, int N, int K,
                      const float *A, const float *W, float *C, float *pack)
{
    const operand a = smoe_gemm_n(A, K, 0), w = smoe_gemm_t(W, K, (size_t)N * K);
#if SMOE_HAVE_AVX512_KERNEL
    if (choose(count > 1, max_rows, K, a, w, 1.0f, 0.0f, pack) == GEMM_DOT) {
        mm_dot_groups(count, group, rows_at, N, K, a, w, C, N);
        return;
    }
#endif
    (void)max_rows;
    /* each group as an item of a batch of count, as in the full layer's batch of n experts */
    for (int g = 0; g < count; g++) {
        const int e = group[g], r0 = rows_at[e], rows = rows_at[e + 1] - r0;
        const operand ag = smoe_gemm_n(a.p + (size_t)r0 * K, K, 0);
        const operand wg = smoe_gemm_t(w.p + (size_t)e * N * K, K, 0);
        run(choose(count > 1, rows, K, ag, wg, 1.0f, 0.0f, pack), 1, rows, N, K, 1.0f, ag, wg, 0.0f,
            C + (size_t)r0 * N, N, 0, 0, pack);
    }
}
