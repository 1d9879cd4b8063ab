/* Push-constant layouts shared by C (host/ops) and GLSL (shaders/): one definition each, as an
 * X-macro list of scalar fields, so the two sides cannot drift. Only 32-bit scalars are used, so
 * the std430 push-constant layout and the C struct layout agree. */
#ifndef SMOE_INTERFACE_H
#define SMOE_INTERFACE_H

/* y = alpha * x + beta * y over n floats (also the trivial shader of the foundation tests). */
#define SMOE_PUSH_AXPY(F) F(uint, n) F(float, alpha) F(float, beta)

/* Batched matmul C[z] = epilogue(op(A[z]) op(B[z])), M x N, inner size K, batch z = workgroup z.
 * Element (r, c) of a stored operand X lives at
 *     x_off + z*x_bs + (r / x_g)*x_gs + (r % x_g)*x_ld + c
 * (rows in groups of x_g with group stride x_gs: how the p slots of one expert sit in every
 * sequence of the batch; x_g = 0xffffffff for a plain matrix). */
#define SMOE_PUSH_MATMUL(F)                                                                   \
    F(uint, M) F(uint, N) F(uint, K)                                                          \
    F(uint, a_off) F(uint, a_ld) F(uint, a_bs) F(uint, a_g) F(uint, a_gs)                     \
    F(uint, b_off) F(uint, b_ld) F(uint, b_bs) F(uint, b_g) F(uint, b_gs)                     \
    F(uint, c_off) F(uint, c_ld) F(uint, c_bs) F(uint, c_g) F(uint, c_gs)                     \
    F(float, alpha) F(uint, bias_bs) F(uint, stat_bs) F(uint, rs_bs) F(uint, cs_bs)             \
    F(uint, idx_off) F(uint, idx_bs)

/* Matmul specialization constants (ids; 0-2 are the workgroup size). */
#define SMOE_MM_TRANS_A 3
#define SMOE_MM_TRANS_B 4
#define SMOE_MM_BM 5
#define SMOE_MM_BN 6
#define SMOE_MM_BK 7
#define SMOE_MM_TM 8
#define SMOE_MM_TN 9
#define SMOE_MM_A_XFORM 10
#define SMOE_MM_B_XFORM 11
#define SMOE_MM_EPI 12
#define SMOE_MM_GATHER 13
#define SMOE_MM_SPEC_COUNT 14
/* matmul_texel.comp also has: operand read as rgba32f texels (1) or r32f (0); BM, BN, BK unused */
#define SMOE_MM_VEC_A 14
#define SMOE_MM_VEC_B 15
#define SMOE_MM_VEC_C 16 /* C, aux, gelu_out, bias and colscale rows at multiples of 4 floats */
#define SMOE_MM_TEXEL_SPEC_COUNT 17

/* Operand transforms applied on load. */
#define SMOE_XFORM_NONE 0
#define SMOE_XFORM_GELU 1         /* gelu(v): expert hidden activations from pre-activations */
#define SMOE_XFORM_EXP_COL 2      /* exp(scale*v - stat[column]): dispatch weights D from logits */
#define SMOE_XFORM_EXP_ROW 3      /* exp(scale*v - stat[row]): combine weights C from logits */

/* Epilogue steps, in this order. A specialization constant: as run-time branches, repeated for
 * every output of an invocation's register tile, they make pipelines several times slower to
 * compile on CPU drivers. */
#define SMOE_EPI_ROWSCALE 1u      /* times rowscale[z*rs_bs + r] */
#define SMOE_EPI_COLSCALE 2u      /* times colscale[z*cs_bs + c] */
#define SMOE_EPI_SCALAR 4u        /* times scalar[0] */
#define SMOE_EPI_BIAS 8u          /* plus bias[z*bias_bs + c] */
#define SMOE_EPI_GELU_GRAD 16u    /* times gelu'(aux[same place as C]) */
#define SMOE_EPI_ACCUMULATE 32u   /* plus the old value of C */
#define SMOE_EPI_STORE_GELU 64u   /* and, besides C, gelu(C) at the same place in a second output */

/* Kernels that reduce rows or columns (common/util.glsl, SMOE_ROW_KERNEL): a workgroup per
 * vector (0) or an invocation per vector (1), a specialization constant of this id. */
#define SMOE_ROW_SERIAL_ID 7
#define SMOE_ROW_SPEC_COUNT 8

/* Row indirection (expert-subset inference): an index buffer idx (uint) maps a stored row or
 * column number u of batch z to idx[idx_off + z*idx_bs + u]; with SMOE_GATHER_COUNT, batch z has
 * only idx[z] rows (at most M) and workgroups past them exit at once. */
#define SMOE_GATHER_A_COL 1u      /* A's stored column (the slots kept by sequence z) */
#define SMOE_GATHER_A_ROW 2u      /* A's stored row (the slot rows routed to expert z) */
#define SMOE_GATHER_C_ROW 4u      /* C's stored row (written back to those slot rows) */
#define SMOE_GATHER_COUNT 8u      /* M of batch z is idx[z] */

/* Row-wise and column-wise reductions over a matrix [rows x cols] per batch z. */
#define SMOE_PUSH_REDUCE(F) F(uint, rows) F(uint, cols) F(uint, in_bs) F(uint, out_bs) F(uint, groups_x)
#define SMOE_AXIS_ROWS 0  /* one vector per row (contiguous) */
#define SMOE_AXIS_COLS 1  /* one vector per column (stride cols) */

/* Column sums with the matmul addressing: out[z*out_bs + c] (+)= sum_r X(z, r, c). */
#define SMOE_PUSH_COLSUM(F) F(uint, rows) F(uint, cols) F(uint, x_ld) F(uint, x_bs) F(uint, x_g) F(uint, x_gs) F(uint, out_bs)

/* Router backward: logits P [batch, m, S]. Its specialization constant 4: which sides are the
 * softmax (the others are fixed weights with no part in G_L). */
#define SMOE_PUSH_ROUTER(F) F(uint, m) F(uint, S) F(uint, groups_x)
#define SMOE_ROUTER_SOFT_DISPATCH 1u
#define SMOE_ROUTER_SOFT_COMBINE 2u


/* ---- ViT ops (host/ops/vit_ops.c) ---- */

/* Elementwise ops over n items in a 2D grid of workgroups (x count groups_x). */
/* im2col: images [b, c, H, W] -> patches [b*(H/P)*(W/P), c*P*P]; n = patch elements. */
#define SMOE_PUSH_IM2COL(F) F(uint, n) F(uint, c) F(uint, H) F(uint, W) F(uint, P) F(uint, groups_x)

/* One workgroup per row of a [rows x cols] matrix (layernorm, softmax, cross-entropy), or threads
 * over columns (layernorm parameter gradients); alpha: eps for layernorm, 1/b for cross-entropy. */
#define SMOE_PUSH_ROWS(F) F(uint, rows) F(uint, cols) F(uint, groups_x) F(float, alpha)

/* Broadcast: y[e] = alpha * x[(e / (rows*cols))*cols + e % cols] (+ y[e] when accumulate), e < n. */
#define SMOE_PUSH_BCAST(F) F(uint, n) F(uint, rows) F(uint, cols) F(float, alpha) F(uint, accumulate) F(uint, groups_x)

/* Sums over rows per batch z: y[z*cols + c] = alpha * sum_r x[(z*rows + r)*cols + c]. */
#define SMOE_PUSH_SUMROWS(F) F(uint, rows) F(uint, cols) F(float, alpha) F(uint, groups_x)

/* Sum of squares: level 0 writes one partial per workgroup into a segment of seg floats (zeros
 * after the last group); level 1 sums n partials into out[0]. */
#define SMOE_PUSH_SUMSQ(F) F(uint, n) F(uint, seg)

/* AdamW over n parameters; step and learning rate come from the state buffer {t, lr}. */
#define SMOE_PUSH_ADAMW(F) F(uint, n) F(float, beta1) F(float, beta2) F(float, eps) F(float, wd) F(float, max_norm) F(uint, groups_x) F(float, lr_mult)

/* Expert-subset inference (host/ops/expert_subset.c): k experts kept per sequence of a Soft MoE
 * layer with logits [batch, m, n*p] (expert_topk.comp), and the rows routed to each expert
 * (expert_rows.comp). */
#define SMOE_PUSH_KEEP(F) F(uint, m) F(uint, n) F(uint, p) F(uint, k) F(uint, batch) F(uint, layer) F(uint, groups_x)


#ifdef VULKAN /* GLSL compiled for Vulkan */
#define SMOE_FIELD(type, name) type name;
/* The block is named after its list (SMOE_PUSH_X): the kernel table (cmake/kernel_table.c) reads
 * that name from the SPIR-V to check the shader's push constants against C's smoe_push_x. */
#define SMOE_PUSH(list) layout(push_constant) uniform list { list(SMOE_FIELD) } pc;
#else
#include <stdint.h>
typedef uint32_t smoe_glsl_uint;
typedef int32_t smoe_glsl_int;
typedef float smoe_glsl_float;
#define SMOE_FIELD(type, name) smoe_glsl_##type name;
#define SMOE_PUSH_STRUCT(cname, list) typedef struct cname { list(SMOE_FIELD) } cname;
SMOE_PUSH_STRUCT(smoe_push_axpy, SMOE_PUSH_AXPY)
SMOE_PUSH_STRUCT(smoe_push_matmul, SMOE_PUSH_MATMUL)
SMOE_PUSH_STRUCT(smoe_push_reduce, SMOE_PUSH_REDUCE)
SMOE_PUSH_STRUCT(smoe_push_colsum, SMOE_PUSH_COLSUM)
SMOE_PUSH_STRUCT(smoe_push_router, SMOE_PUSH_ROUTER)
SMOE_PUSH_STRUCT(smoe_push_im2col, SMOE_PUSH_IM2COL)
SMOE_PUSH_STRUCT(smoe_push_rows, SMOE_PUSH_ROWS)
SMOE_PUSH_STRUCT(smoe_push_bcast, SMOE_PUSH_BCAST)
SMOE_PUSH_STRUCT(smoe_push_sumrows, SMOE_PUSH_SUMROWS)
SMOE_PUSH_STRUCT(smoe_push_sumsq, SMOE_PUSH_SUMSQ)
SMOE_PUSH_STRUCT(smoe_push_adamw, SMOE_PUSH_ADAMW)
SMOE_PUSH_STRUCT(smoe_push_keep, SMOE_PUSH_KEEP)
#endif

#endif
