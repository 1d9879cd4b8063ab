/* The Soft MoE layer on Vulkan (SPEC section 1): tensors, workspace and the recording of the
 * forward and backward passes as dispatches of the shaders in shaders/. The CPU twin is
 * host/cpu/softmoe_cpu.c; tests compare the two. */
#ifndef SMOE_OPS_SOFTMOE_LAYER_H
#define SMOE_OPS_SOFTMOE_LAYER_H

#include "cpu/softmoe_cpu.h"
#include "record.h"

typedef struct smoe_layer_vk {
    /* parameters and their gradients (SPEC layouts) */
    smoe_tensor phi, scale, w1, b1, w2, b2;
    smoe_tensor g_phi, g_scale, g_w1, g_b1, g_w2, g_b2;
    /* input x, output y, and for backward dy in, dx out: [b, m, d] */
    smoe_tensor x, y, dy, dx;
    /* forward workspace, kept for backward: inverse norms of tokens [b*m] and slots [S], logits
     * P = X^ Phi^ (unscaled) [b, m, S], log-sum-exp per slot [b, S] and per token [b, m], slots
     * X~ [b, S, d], expert pre-activations [n, b*p, h], expert outputs Y~ [b, S, d] */
    smoe_tensor rinv, cinv, logits, lse_col, lse_row, slots, pre, slots_out;
    /* backward workspace */
    smoe_tensor g_slots_out, g_combine, g_pre, g_slots, g_dispatch, colsum, partial, q_x, q_phi;
} smoe_layer_vk;

/* Reserves the workspace (forward, plus backward when backward is set) in arena. */
smoe_status smoe_layer_vk_reserve(smoe_layer_vk *L, const smoe_layer_dims *d, smoe_arena *arena, int backward,
                                  smoe_err *err);

smoe_status smoe_layer_vk_record_forward(smoe_program *p, const smoe_layer_vk *L, const smoe_layer_dims *d,
                                         smoe_err *err);
/* Requires the forward pass recorded before it in the same or an earlier program. */
smoe_status smoe_layer_vk_record_backward(smoe_program *p, const smoe_layer_vk *L, const smoe_layer_dims *d,
                                          smoe_err *err);

#endif
