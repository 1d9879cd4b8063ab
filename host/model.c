/* Models: what every kind shares. The parameter table (checked against and read from model
 * files, docs/format.md), the public parameter accessors, and the life cycle; a kind's own part is
 * reached through m->ops (the kinds are models/). */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job.h"
#include "user_metadata.h"

/* ---- The parameter table ---- */

smoe_status smoe_model_add_param(smoe_model *m, const char *name, int ndim, const int64_t *shape, int decay,
                                 smoe_err *err)
{
    smoe_param *p = realloc(m->params, (m->param_count + 1) * sizeof *p);
    if (!p) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    m->params = p;
    p = &m->params[m->param_count++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->count = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = shape[i];
        p->count *= (size_t)shape[i];
    }
    p->decay = decay;
    return SMOE_OK;
}

size_t smoe_model_largest_param(const smoe_model *m)
{
    size_t most = 1;
    for (int i = 0; i < m->param_count; i++)
        if (m->params[i].count > most) most = m->params[i].count;
    return most;
}

int smoe_model_find_param(const smoe_model *m, const char *name)
{
    for (int i = 0; i < m->param_count; i++)
        if (!strcmp(m->params[i].name, name)) return i;
    return -1;
}

smoe_status smoe_model_commit_params(smoe_model *m, smoe_err *err)
{
    smoe_status st = SMOE_OK;
    for (int i = 0; i < m->param_count && !st; i++)
        if ((st = smoe_arena_reserve(&m->param_arena, m->params[i].count * 4, &m->params[i].value, err)))
            smoe_fail_prefix(err, st, "parameter \"%s\"", m->params[i].name);
    if (!st) st = smoe_arena_commit(&m->param_arena, err);
    return st;
}

/* Gradients live in their own arena, made on the first backward pass. */
smoe_status smoe_model_ensure_grads(smoe_model *m, smoe_err *err)
{
    if (m->grad_arena.committed) return SMOE_OK;
    smoe_status st = SMOE_OK;
    for (int i = 0; i < m->param_count && !st; i++)
        st = smoe_arena_reserve(&m->grad_arena, m->params[i].count * 4, &m->params[i].grad, err);
    if (!st) st = smoe_arena_commit(&m->grad_arena, err);
    if (st) smoe_arena_release(&m->grad_arena);
    return st;
}

static const char *const optimizer_prefix[2] = {"opt.m.", "opt.v."};

smoe_status smoe_model_check_file(const smoe_model *m, const smoe_st_file *f, int optimizer, smoe_err *err)
{
    smoe_status st = SMOE_OK;
    for (int i = 0; i < m->param_count && !st; i++) {
        const smoe_param *p = &m->params[i];
        /* a scalar (ndim 0) may be stored as [] or [1]; smoe_st_expect_f32 accepts both */
        st = smoe_st_expect_f32(f, p->name, p->ndim, p->shape, NULL, err);
        for (int k = 0; k < 2 && optimizer && !st; k++) {
            char name[128];
            snprintf(name, sizeof name, "%s%s", optimizer_prefix[k], p->name);
            st = smoe_st_expect_f32(f, name, p->ndim, p->shape, NULL, err);
        }
    }
    for (int i = 0; i < f->count && !st; i++) {
        const char *name = f->tensors[i].name;
        int known = smoe_model_find_param(m, name) >= 0, moment = 0;
        for (int k = 0; k < 2 && !known; k++)
            if (!strncmp(name, optimizer_prefix[k], 6) && smoe_model_find_param(m, name + 6) >= 0) known = moment = optimizer;
        if (!known)
            st = smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "unexpected tensor \"%s\" in the model file%s", name,
                           !moment && !strncmp(name, "opt.", 4) && !optimizer ? " (optimizer state needs \"softmoe.step\")" : "");
    }
    return st;
}

smoe_status smoe_model_read_params(smoe_model *m, const smoe_st_file *f, smoe_err *err)
{
    size_t most = smoe_model_largest_param(m);
    float *tmp = malloc(most * 4);
    smoe_status st = tmp ? SMOE_OK : smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    for (int i = 0; i < m->param_count && !st; i++) {
        st = smoe_st_copy_f32(smoe_st_find(f, m->params[i].name), tmp, err);
        if (!st) st = smoe_tensor_upload(&m->params[i].value, 0, tmp, m->params[i].count * 4, err);
    }
    free(tmp);
    return st;
}

int smoe_model_param_count(const smoe_model *m)
{
    return m ? m->param_count : 0;
}

smoe_status smoe_model_param_info(const smoe_model *m, int i, smoe_param_info *info)
{
    if (!m || !info || i < 0 || i >= m->param_count) return SMOE_ERROR_INVALID_ARGUMENT;
    const smoe_param *p = &m->params[i];
    info->name = p->name;
    info->ndim = p->ndim;
    memcpy(info->shape, p->shape, sizeof info->shape);
    info->count = p->count;
    return SMOE_OK;
}

static smoe_status copy_out(smoe_model *m, int i, float *out, int grad)
{
    if (!m) return SMOE_ERROR_INVALID_ARGUMENT;
    if (i < 0 || i >= m->param_count || !out)
        return smoe_ctx_fail(m->ctx, SMOE_ERROR_INVALID_ARGUMENT, "no parameter %d (the model has %d)", i, m->param_count);
    const smoe_tensor *t = grad ? &m->params[i].grad : &m->params[i].value;
    if (!t->arena || !t->arena->committed)
        return smoe_ctx_fail(m->ctx, SMOE_ERROR_INVALID_ARGUMENT, "no gradients yet: run a backward pass first");
    smoe_err err = {{0}};
    smoe_status st = smoe_model_settle(m, &err);
    if (!st) st = smoe_tensor_download(t, 0, out, t->bytes, &err);
    return smoe_ctx_error(m->ctx, st, &err);
}

smoe_status smoe_model_get_param(smoe_model *m, int i, float *out) { return copy_out(m, i, out, 0); }
smoe_status smoe_model_get_grad(smoe_model *m, int i, float *out) { return copy_out(m, i, out, 1); }

/* ---- Life cycle ---- */

static void model_free(smoe_model *m)
{
    if (m->ops && m->ops->destroy) m->ops->destroy(m);
    smoe_executor_destroy(&m->exec);
    smoe_user_meta_free(m);
    smoe_arena_release(&m->opt_arena);
    smoe_arena_release(&m->grad_arena);
    smoe_arena_release(&m->param_arena);
    free(m->params);
    free(m);
}

void smoe_model_destroy_internal(smoe_model *m)
{
    if (!m) return;
    if (m->job) smoe_job_detach(m->job); /* waits for its work: nothing may run on freed buffers */
    smoe_ctx_remove_model(m->ctx, m);
    model_free(m);
}

void smoe_model_free(smoe_model *m)
{
    smoe_model_destroy_internal(m);
}

smoe_model_kind smoe_model_get_kind(const smoe_model *m)
{
    return m->kind;
}

smoe_status smoe_model_new(smoe_context *ctx, const smoe_model_kind_ops *ops, smoe_model **out, smoe_err *err)
{
    smoe_model *m = calloc(1, sizeof *m);
    if (!m) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    m->ctx = ctx;
    m->ops = ops;
    m->kind = ops->kind;
    smoe_executor_init(&m->exec, smoe_ctx_gpu(ctx));
    smoe_arena_init(&m->param_arena, smoe_ctx_gpu(ctx), "parameters");
    smoe_arena_init(&m->grad_arena, smoe_ctx_gpu(ctx), "gradients");
    smoe_arena_init(&m->opt_arena, smoe_ctx_gpu(ctx), "optimizer state");
    *out = m;
    return SMOE_OK;
}

/* Registers a finished model with its context, or frees it on failure. */
smoe_status smoe_model_finish(smoe_model *m, smoe_status st, smoe_model **out, smoe_err *err)
{
    if (!st && smoe_ctx_add_model(m->ctx, m)) st = smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    if (st) {
        model_free(m);
        return st;
    }
    *out = m;
    return SMOE_OK;
}

smoe_status smoe_model_settle(smoe_model *m, smoe_err *err)
{
    return smoe_executor_settle(&m->exec, err);
}

smoe_status smoe_check_finite(const float *v, size_t n, const char *name, smoe_err *err)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return smoe_fail(err, SMOE_ERROR_NOT_FINITE, "%s[%zu] is %s", name, i, isnan(v[i]) ? "NaN" : "infinite");
    return SMOE_OK;
}
