/* The Soft MoE layer op (docs/format.md section 1) on both paths: its tensors and workspace, and forward and
 * backward as ops (ops.h). On Vulkan they are dispatches of the shaders in shaders/; on the CPU
 * the kernels of host/cpu/softmoe_cpu.c. Tests compare the two. */
#ifndef SMOE_OPS_SOFTMOE_LAYER_H
#define SMOE_OPS_SOFTMOE_LAYER_H

#include "cpu/softmoe_cpu.h"
#include "ops/ops.h"

typedef struct smoe_layer_tensors {
    /* parameters and their gradients (docs/format.md layouts) */
    smoe_tensor phi, scale, w1, b1, w2, b2;
    smoe_tensor g_phi, g_scale, g_w1, g_b1, g_w2, g_b2;
    /* input x, output y, and for backward dy in, dx out: [b, m, d] */
    smoe_tensor x, y, dy, dx;
    /* forward workspace, kept for backward: inverse norms of tokens [b*m] and slots [S], logits
     * P = X^ Phi^ (unscaled) [b, m, S], log-sum-exp per slot [b, S] and per token [b, m], slots
     * X~ [b, S, d], expert pre-activations [n, b*p, h] and their gelu (written by the same
     * matmul: its readers then need no transform), expert outputs Y~ [b, S, d] */
    smoe_tensor rinv, cinv, logits, lse_col, lse_row, slots, pre, hidden, slots_out;
    /* backward workspace */
    smoe_tensor g_slots_out, g_combine, g_pre, g_slots, g_dispatch, colsum, partial, q_x, q_phi;
    /* a uniform dispatch or combine: the sum of the rows it mixes [b, d] (forward and backward) */
    smoe_tensor mix;
    /* the CPU path keeps its own workspace layout (softmoe_cpu.h) in one tensor instead */
    smoe_tensor cpu_ws;
    /* expert-subset inference (ops/expert_subset.h), Vulkan: scores [b, n], kept mask [b, n],
     * kept slots [b, S], per-expert rows [n + b*S] (uint), log-sum-exp over the kept slots [b, m];
     * on both paths the random draws' state [SMOE_KEEP_STATE_WORDS], which the model provides */
    smoe_tensor keep_scores, keep_mask, keep_slots, keep_rows, keep_lse, keep_state;
} smoe_layer_tensors;

/* Reserves the workspace (forward, plus backward when backward is set) in arena: the Vulkan
 * workspace on a device arena, the CPU one on a host arena. */
smoe_status smoe_layer_reserve(smoe_layer_tensors *L, const smoe_layer_dims *d, smoe_arena *arena, int backward,
                               smoe_err *err);

/* Vulkan: records the router half of the forward (token and slot norms, logits, the softmax
 * statistics of each soft side), which the expert-subset forward shares. */
smoe_status smoe_layer_record_router(smoe_program *p, const smoe_layer_tensors *L, const smoe_layer_dims *d,
                                     smoe_err *err);

/* CPU path: the parameters' host memory. */
smoe_layer_params smoe_layer_host_params(const smoe_layer_tensors *L);

/* y from x. */
smoe_status smoe_op_softmoe_forward(smoe_exec *ex, const smoe_layer_tensors *L, const smoe_layer_dims *d, smoe_err *err);
/* dx and every parameter gradient (overwritten) from dy, after the forward op on the same x. */
smoe_status smoe_op_softmoe_backward(smoe_exec *ex, const smoe_layer_tensors *L, const smoe_layer_dims *d,
                                     smoe_err *err);

#endif
