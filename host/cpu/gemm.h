/* The CPU path's one GEMM: every matrix product of the CPU ops goes through here, and gemm.c
 * picks how to run it (its own AVX-512 kernels or OpenBLAS) from the shape. Row-major
 * throughout, like cblas_sgemm with CblasRowMajor. Never call it inside an OpenMP parallel
 * region: it opens its own, or calls OpenBLAS, which threads itself on the same OpenMP pool. */
#ifndef SMOE_CPU_GEMM_H
#define SMOE_CPU_GEMM_H

#include <stddef.h>

/* One operand of a batch of GEMMs: item g is the matrix at p + g*stride, with leading dimension
 * ld, used transposed when trans is set. */
typedef struct smoe_gemm_mat {
    const float *p;
    int ld, trans;
    size_t stride;
} smoe_gemm_mat;

static inline smoe_gemm_mat smoe_gemm_n(const float *p, int ld, size_t stride)
{
    return (smoe_gemm_mat){p, ld, 0, stride};
}

static inline smoe_gemm_mat smoe_gemm_t(const float *p, int ld, size_t stride)
{
    return (smoe_gemm_mat){p, ld, 1, stride};
}

/* A hint: C is written once and not read again soon, so it may bypass the cache. */
#define SMOE_GEMM_STREAM 1

/* Floats of the scratch buffer `pack` below. */
size_t smoe_gemm_pack_floats(void);

/* C_g = alpha op(A_g) op(B_g) + beta C_g for g < count, each M x N with inner size K, C_g at
 * C + g*stride_c with leading dimension ldc. pack: smoe_gemm_pack_floats() floats of scratch,
 * or NULL (then the shapes that need packing run on OpenBLAS). The kernel chosen, and so the
 * rounding, depends only on count, the sizes, the transposes, alpha, beta, whether pack is NULL
 * and whether the CPU has AVX-512: the same call gives the same bits every time. */
void smoe_gemm_batch(int count, int M, int N, int K, float alpha, smoe_gemm_mat A,
                     smoe_gemm_mat B, float beta, float *C, int ldc, size_t stride_c, int flags,
                     float *pack);

/* One product, cblas_sgemm's arguments (row-major): C = alpha op(A) op(B) + beta C. */
void smoe_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
               int lda, const float *B, int ldb, float beta, float *C, int ldc, float *pack);

/* C rows = A rows W_eᵀ over groups of rows of different sizes: for g < count, expert
 * e = group[g] owns rows rows_at[e]..rows_at[e+1] of A [rows, K] and C [rows, N]; W is
 * [n, N, K]. max_rows bounds every group's rows. The groups run as a batch of count would, so
 * that with count = n groups of max_rows rows each the results equal smoe_gemm_batch's over the
 * n experts bit for bit. */
void smoe_gemm_groups(int count, const int *group, const int *rows_at, int max_rows, int N, int K,
                      const float *A, const float *W, float *C, float *pack);

#endif
