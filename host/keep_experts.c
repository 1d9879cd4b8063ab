/* Expert-subset inference: the model's setting (smoe_model_set_keep_experts and friends) and the
 * two rules the model kinds apply with it (gradients need all experts; random draws advance per
 * inference call). What a kind has to say (its experts, its routing) comes from its table,
 * m->ops. The layer maths is ops/expert_subset.c. */
#include "model.h"
#include "ops/expert_subset.h"

static smoe_status set_keep(smoe_model *m, int k, int renormalize, int random, uint64_t seed)
{
    if (!m) return SMOE_ERROR_INVALID_ARGUMENT;
    if (k < 0)
        return smoe_ctx_fail(m->ctx, SMOE_ERROR_INVALID_ARGUMENT, "keep %d experts: k must be at least 0 (0: all)", k);
    if (renormalize != 0 && renormalize != 1)
        return smoe_ctx_fail(m->ctx, SMOE_ERROR_INVALID_ARGUMENT, "renormalize is %d; it must be 0 or 1", renormalize);
    if (m->job)
        return smoe_ctx_fail(m->ctx, SMOE_ERROR_INVALID_ARGUMENT,
                             "the model has an unfinished job (smoe_vit_infer_async): wait for it or free it first");
    int n = m->ops->soft_experts(m);
    if (k > 0 && !n)
        return smoe_ctx_fail(m->ctx, SMOE_ERROR_INVALID_ARGUMENT, "keep %d experts: the model has no Soft MoE layer", k);
    if (k > 0 && k < n && !m->ops->soft_routing(m))
        return smoe_ctx_fail(m->ctx, SMOE_ERROR_INVALID_ARGUMENT,
                             "keep %d experts: experts are scored by their softmax combine weights, but this model's Soft "
                             "MoE layers have a uniform or identity dispatch or combine",
                             k);
    int some = k > 0 && k < n; /* otherwise all experts: the plain layer */
    m->keep = (smoe_keep){some ? k : 0, some ? renormalize : 0, some ? random : 0, some ? seed : 0};
    m->keep_calls = 0;
    return SMOE_OK;
}

smoe_status smoe_model_set_keep_experts(smoe_model *model, int k, int renormalize)
{
    return set_keep(model, k, renormalize, 0, 0);
}

smoe_status smoe_model_set_random_experts(smoe_model *model, int k, int renormalize, uint64_t seed)
{
    return set_keep(model, k, renormalize, 1, seed);
}

smoe_status smoe_model_get_keep_experts(const smoe_model *model, int *k, int *renormalize, int *random)
{
    if (!model) return SMOE_ERROR_INVALID_ARGUMENT;
    if (k) *k = model->keep.k;
    if (renormalize) *renormalize = model->keep.renormalize;
    if (random) *random = model->keep.random;
    return SMOE_OK;
}

smoe_status smoe_model_check_all_experts(const smoe_model *m, smoe_err *err)
{
    if (!m->keep.k) return SMOE_OK;
    return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT,
                     "gradients need all experts, but the model keeps %d per input (smoe_model_set_keep_experts): "
                     "set k = 0 first",
                     m->keep.k);
}

smoe_status smoe_model_keep_state(smoe_model *m, const smoe_tensor *state, smoe_err *err)
{
    if (!m->keep.random) return SMOE_OK;
    smoe_status st = smoe_keep_write_state(m->keep.seed, m->keep_calls, state, err);
    if (!st) m->keep_calls++;
    return st;
}
