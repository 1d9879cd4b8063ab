/* The sparse MoE layers (Tokens Choice, Experts Choice; maths in cpu/sparse_moe_cpu.h) as ops on
 * both paths (ops.h): their tensors and workspace, forward and backward. On Vulkan the routing is
 * shaders (gates and top-K, segmented bitonic sorts in shared memory or, for groups too long for
 * it, in global memory, rank and capacity assignment) that fill per-expert slot tables read by
 * the dispatch, the experts (ops/experts.h, the Soft MoE layer's matmuls) and the combine; a
 * training step stays one recorded program with nothing read back in between. On the CPU path
 * the kernels of cpu/sparse_moe_cpu.c. */
#ifndef SMOE_OPS_SPARSE_MOE_LAYER_H
#define SMOE_OPS_SPARSE_MOE_LAYER_H

#include "cpu/sparse_moe_cpu.h"
#include "ops/ops.h"

typedef struct smoe_sparse_tensors {
    /* parameters and their gradients: gate.weight [n, d], the experts as the Soft MoE layer's */
    smoe_tensor gate, w1, b1, w2, b2;
    smoe_tensor g_gate, g_w1, g_b1, g_w2, g_b2;
    /* input x, output y, and for backward dy in, dx out: [b*m, d] */
    smoe_tensor x, y, dy, dx;
    /* [>= 1] float: the training step, the noise's counter (the ViT's optimizer state {t, lr};
     * a float counts steps exactly up to 2^24) */
    smoe_tensor step;
    /* workspace, as smoe_sparse_host names it (aux [1] is the auxiliary loss) */
    smoe_tensor aux, logits, gates, probs, thresh, topk_e, topk_g, slot_token, slot_gate, tok_slot, stats, group_loss;
    smoe_tensor xs, pre, out, g_out, g_pre, g_xs, dlogits;
    smoe_tensor keys1, vals1, keys2, vals2; /* Vulkan: sort keys and values */
    smoe_tensor act;                        /* gelu(pre) (on Vulkan written by fc1 beside pre) */
    smoe_tensor sort, pack;                 /* CPU path: sort words, GEMM packing */
} smoe_sparse_tensors;

/* Checks dims: a clear message for what a layer cannot be. */
smoe_status smoe_sparse_check(const smoe_sparse_dims *d, smoe_err *err);

/* Reserves the workspace (forward, plus backward when backward is set) in arena: the Vulkan
 * workspace on a device arena, the CPU one on a host arena. */
smoe_status smoe_sparse_reserve(smoe_sparse_tensors *L, const smoe_sparse_dims *d, smoe_arena *arena, int backward,
                                smoe_err *err);

/* y (and for Tokens Choice in modes >= SMOE_ROUTE_GRADS the auxiliary loss aux) from x. */
smoe_status smoe_op_sparse_forward(smoe_exec *ex, const smoe_sparse_tensors *L, const smoe_sparse_dims *d, int mode,
                                   smoe_err *err);
/* dx and every gradient (overwritten) from dy, after the forward op in the same mode, of
 * sum(y * dy) + aux. */
smoe_status smoe_op_sparse_backward(smoe_exec *ex, const smoe_sparse_tensors *L, const smoe_sparse_dims *d, int mode,
                                    smoe_err *err);

#endif
