/* Expert-subset inference (Chung et al., "Beyond Parameter Count: Implicit Bias in Soft Mixture
 * of Experts", arXiv 2409.00879): the Soft MoE layer forward keeping k experts per sequence, as
 * an op on both paths (the rule is smoe_keep in layer_types.h). It saves the work: the
 * dispatch, the expert matmuls and the combine run over the kept slots only.
 *
 * Vulkan, 10 dispatches: the router of the plain forward (4), the choice of the kept experts per
 * sequence (shaders/expert_topk.comp) and the list of the rows routed to each expert
 * (shaders/expert_rows.comp), then
 * the dispatch over the kept slots, fc1 and fc2 over each expert's kept rows and the combine over
 * the kept slots (shaders/matmul.comp with a row indirection, 4). Everything is sized for the
 * worst case and decided on the device, so the program is recorded once per setting; expert
 * matmul workgroups past an expert's row count exit at once. */
#ifndef SMOE_OPS_EXPERT_SUBSET_H
#define SMOE_OPS_EXPERT_SUBSET_H

#include "ops/softmoe_layer.h"

/* 32-bit words of the random draws' state tensor: {seed low, seed high, call, unused}. */
#define SMOE_KEEP_STATE_WORDS 4

/* Whether keep runs the subset forward for a layer of n experts (1 <= k <= n; the model never
 * stores k = n, which means all, but tests use it to run the subset machinery on every expert). */
static inline int smoe_keep_active(const smoe_keep *keep, int n)
{
    return keep && keep->k > 0 && keep->k <= n;
}

/* Reserves the Vulkan index buffers of the subset forward in a device arena (nothing on a host
 * arena: the CPU path uses its own workspace). keep_state is not reserved here. */
smoe_status smoe_keep_reserve(smoe_layer_tensors *L, const smoe_layer_dims *d, smoe_arena *a, smoe_err *err);

/* Writes the state of the random draws {seed, call} into state (a tensor of
 * SMOE_KEEP_STATE_WORDS words). */
smoe_status smoe_keep_write_state(uint64_t seed, uint32_t call, const smoe_tensor *state, smoe_err *err);

/* y from x keeping keep->k experts per sequence; the plain forward (smoe_op_softmoe_forward)
 * when keep drops nothing. layer numbers the layer in its model, for its own random draws; with
 * keep->random, L->keep_state must hold the state. Inference only: the workspace is left unfit
 * for smoe_op_softmoe_backward. */
smoe_status smoe_op_softmoe_forward_keep(smoe_exec *ex, const smoe_layer_tensors *L, const smoe_layer_dims *d,
                                         const smoe_keep *keep, uint32_t layer, smoe_err *err);

#endif
