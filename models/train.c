/* Training support shared by every model kind: the learning-rate schedule, AdamW defaults and
 * moments, and saving (atomic; docs/format.md) and restoring parameters with optimizer state, so
 * that a resumed run continues exactly where it stopped. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_kinds.h"
#include "user_metadata.h"

void smoe_train_config_default(smoe_train_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->lr = 1e-3f;
    cfg->min_lr = 1e-5f;
    cfg->warmup_steps = 100;
    cfg->total_steps = 1000;
    cfg->weight_decay = 0.05f;
    cfg->beta1 = 0.9f;
    cfg->beta2 = 0.999f;
    cfg->eps = 1e-8f;
    cfg->clip_norm = 1.0f;
}

float smoe_train_lr(const smoe_train_config *cfg, long step)
{
    if (step < 1) step = 1;
    if (cfg->warmup_steps > 0 && step <= cfg->warmup_steps) return cfg->lr * (float)step / (float)cfg->warmup_steps;
    long decay = cfg->total_steps - cfg->warmup_steps;
    if (decay <= 0) return cfg->lr;
    double t = (double)(step - cfg->warmup_steps) / (double)decay;
    if (t > 1) t = 1;
    return (float)(cfg->min_lr + (cfg->lr - cfg->min_lr) * 0.5 * (1.0 + cos(3.141592653589793 * t)));
}

long smoe_model_train_step_count(const smoe_model *m)
{
    return m ? m->step : 0;
}

/* The tensors of a file: each parameter (and with opt its two moments) downloaded into data. */
typedef struct save_list {
    int count, per;
    smoe_st_entry *e;
    char (*names)[128];
    float **data;
} save_list;

static void save_list_free(save_list *l)
{
    for (int i = 0; l->data && i < l->count; i++) free(l->data[i]);
    free(l->data);
    free(l->names);
    free(l->e);
}

/* Entry j = i * per + k: parameter i's value (k 0) or its moments (k 1, 2), downloaded, finite. */
static smoe_status save_entry(smoe_model *m, save_list *l, int i, int k, const char *path, smoe_err *err)
{
    const smoe_param *p = &m->params[i];
    int j = i * l->per + k;
    const smoe_tensor *t = k == 0 ? &p->value : k == 1 ? &p->m : &p->v;
    snprintf(l->names[j], sizeof l->names[j], "%s%s", k == 0 ? "" : k == 1 ? "opt.m." : "opt.v.", p->name);
    l->data[j] = malloc(p->count * 4);
    smoe_status st = l->data[j] ? SMOE_OK : smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    if (!st) st = smoe_tensor_download(t, 0, l->data[j], p->count * 4, err);
    /* never a file that loading would refuse (training that diverged writes nothing) */
    if (!st && (st = smoe_check_finite(l->data[j], p->count, l->names[j], err))) smoe_fail_prefix(err, st, "not saving %s", path);
    smoe_st_entry *e = &l->e[j];
    e->name = l->names[j];
    e->dtype = SMOE_F32;
    e->ndim = p->ndim ? p->ndim : 1; /* scalars are stored as [1], like the golden files */
    if (p->ndim) memcpy(e->shape, p->shape, sizeof p->shape);
    else e->shape[0] = 1;
    e->data = l->data[j];
    return st;
}

static smoe_status save_tensors(smoe_model *m, save_list *l, int opt, const char *path, smoe_err *err)
{
    l->per = opt ? 3 : 1;
    l->count = m->param_count * l->per;
    l->e = calloc((size_t)l->count, sizeof *l->e);
    l->names = calloc((size_t)l->count, sizeof *l->names);
    l->data = calloc((size_t)l->count, sizeof *l->data);
    if (!l->e || !l->names || !l->data) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    smoe_status st = smoe_model_settle(m, err);
    for (int i = 0; i < m->param_count && !st; i++)
        for (int k = 0; k < l->per && !st; k++) st = save_entry(m, l, i, k, path, err);
    return st;
}

smoe_status smoe_model_save(smoe_model *m, const char *path, int with_optimizer)
{
    if (!m || !path) return m ? smoe_ctx_fail(m->ctx, SMOE_ERROR_INVALID_ARGUMENT, "NULL path") : SMOE_ERROR_INVALID_ARGUMENT;
    smoe_err err = {{0}};
    int opt = with_optimizer && m->opt_arena.committed;
    save_list l = {0};
    smoe_status st = save_tensors(m, &l, opt, path, &err);
    char buf[2048] = "", step[32];
    smoe_st_meta meta[4] = {{"softmoe.kind", (char *)m->ops->name}};
    int meta_count = 1 + m->ops->metadata(m, meta + 1, 2, buf, sizeof buf);
    if (opt) {
        snprintf(step, sizeof step, "%ld", m->step);
        meta[meta_count++] = (smoe_st_meta){"softmoe.step", step};
    }
    if (!st) st = smoe_user_meta_write(m, path, l.e, l.count, meta, meta_count, &err);
    save_list_free(&l);
    return smoe_ctx_error(m->ctx, st, &err);
}

/* AdamW moments, zero, on the first training step (or as loaded from a checkpoint). */
smoe_status smoe_model_ensure_optimizer(smoe_model *m, smoe_err *err)
{
    if (m->opt_arena.committed) return SMOE_OK;
    smoe_status st = SMOE_OK;
    size_t most = smoe_model_largest_param(m);
    for (int i = 0; i < m->param_count && !st; i++) {
        st = smoe_arena_reserve(&m->opt_arena, m->params[i].count * 4, &m->params[i].m, err);
        if (!st) st = smoe_arena_reserve(&m->opt_arena, m->params[i].count * 4, &m->params[i].v, err);
    }
    if (!st) st = smoe_arena_commit(&m->opt_arena, err);
    float *zero = st ? NULL : calloc(most, 4);
    if (!st && !zero) st = smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    for (int i = 0; i < m->param_count && !st; i++) {
        st = smoe_tensor_upload(&m->params[i].m, 0, zero, m->params[i].count * 4, err);
        if (!st) st = smoe_tensor_upload(&m->params[i].v, 0, zero, m->params[i].count * 4, err);
    }
    free(zero);
    if (st) smoe_arena_release(&m->opt_arena);
    return st;
}

smoe_status smoe_model_read_optimizer(smoe_model *m, const smoe_st_file *f, smoe_err *err)
{
    const char *step = smoe_st_get_meta(f, "softmoe.step");
    if (!step) return SMOE_OK; /* a model without optimizer state */
    char *end = NULL;
    errno = 0;
    long long s = strtoll(step, &end, 10);
    /* the limit keeps step + 1 within any long */
    if (!*step || *end || errno || s < 0 || s > 2147483646)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "softmoe.step \"%s\" is not a step count (0 to 2147483646)", step);
    smoe_status st = smoe_model_ensure_optimizer(m, err);
    size_t most = smoe_model_largest_param(m);
    float *tmp = st ? NULL : malloc(most * 4);
    if (!st && !tmp) st = smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    for (int i = 0; i < m->param_count && !st; i++) {
        smoe_param *p = &m->params[i];
        for (int k = 0; k < 2 && !st; k++) {
            char name[128];
            snprintf(name, sizeof name, "%s%s", k ? "opt.v." : "opt.m.", p->name);
            const smoe_st_tensor *t;
            st = smoe_st_expect_f32(f, name, p->ndim, p->shape, &t, err);
            if (!st) st = smoe_st_copy_f32(t, tmp, err);
            if (!st) st = smoe_tensor_upload(k ? &p->v : &p->m, 0, tmp, p->count * 4, err);
        }
    }
    free(tmp);
    if (!st) m->step = (long)s;
    return st;
}
