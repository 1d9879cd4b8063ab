/* The experts of every MoE layer on Vulkan, as instances of the matmul family with the expert as
 * batch index z: forward pre_e = X_e W1_eᵀ + b1_e, Y_e = gelu(pre_e) W2_eᵀ + b2_e, and its
 * backward. X, Y and their gradients are operands addressing the rows routed to each expert (the
 * Soft MoE layer's grouped slot rows, the sparse layers' plain expert buffers); pre and its
 * gradient are [n, rows, h]. Shared by ops/softmoe_layer.c and ops/sparse_moe_layer.c. */
#ifndef SMOE_OPS_EXPERTS_H
#define SMOE_OPS_EXPERTS_H

#include "ops/matmul.h"

typedef struct smoe_experts_rec {
    uint32_t n, rows, d, h;        /* experts, rows per expert, model dim, hidden */
    smoe_tensor w1, b1, w2, b2;    /* [n, h, d], [n, h], [n, d, h], [n, d] */
    smoe_tensor pre;               /* [n, rows, h] fc1 pre-activations */
    smoe_tensor hidden;            /* [n, rows, h] gelu(pre), written by fc1 beside pre: fc2 and the
                                      gradient of W2 then read it without a transform */
    smoe_mm_operand x, y;          /* the rows in, and Y out */
} smoe_experts_rec;

smoe_status smoe_record_experts_forward(smoe_program *p, const smoe_experts_rec *r, smoe_err *err);

/* Given gy = G_Y (an operand like y): g_pre [n, rows, h] (scratch), gx = G_X (an operand like x)
 * and the four weight gradients (overwritten). */
smoe_status smoe_record_experts_backward(smoe_program *p, const smoe_experts_rec *r, smoe_mm_operand gy, smoe_tensor g_pre,
                                         smoe_mm_operand gx, smoe_tensor g_w1, smoe_tensor g_b1, smoe_tensor g_w2,
                                         smoe_tensor g_b2, smoe_err *err);

/* Column sums out[z*out_bs + c] = sum_r X(z, r, c) over rows x cols per batch z, X addressed as a
 * matmul operand (ld, bs, g, gs). */
smoe_status smoe_record_colsum(smoe_program *p, smoe_tensor x, smoe_tensor out, uint32_t rows, uint32_t cols, uint32_t ld,
                               uint32_t bs, uint32_t g, uint32_t gs, uint32_t out_bs, uint32_t batch, smoe_err *err);

#endif
