/* Training support shared by every model kind: the learning-rate schedule, AdamW defaults, and
 * saving (atomic) and restoring parameters with optimizer state, so that a resumed run continues
 * exactly where it stopped. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
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

smoe_status smoe_model_save(smoe_model *m, const char *path, int with_optimizer)
{
    if (!m || !path) return m ? smoe_ctx_fail(m->ctx, SMOE_ERROR_INVALID_ARGUMENT, "NULL path") : SMOE_ERROR_INVALID_ARGUMENT;
    smoe_err err = {{0}};
    int opt = with_optimizer && m->opt_arena.committed;
    int per = opt ? 3 : 1;
    int count = m->param_count * per;
    smoe_st_entry *e = calloc((size_t)count, sizeof *e);
    char (*names)[128] = calloc((size_t)count, sizeof *names);
    float **data = calloc((size_t)count, sizeof *data);
    smoe_status st = e && names && data ? SMOE_OK : smoe_fail(&err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    if (!st) st = smoe_model_settle(m, &err);
    for (int i = 0; i < m->param_count && !st; i++) {
        const smoe_param *p = &m->params[i];
        for (int k = 0; k < per && !st; k++) {
            int j = i * per + k;
            const smoe_tensor *t = k == 0 ? &p->value : k == 1 ? &p->m : &p->v;
            snprintf(names[j], sizeof names[j], "%s%s", k == 0 ? "" : k == 1 ? "opt.m." : "opt.v.", p->name);
            data[j] = malloc(p->count * 4);
            if (!data[j]) st = smoe_fail(&err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
            if (!st) st = smoe_tensor_download(t, 0, data[j], p->count * 4, &err);
            /* never a file that loading would refuse (training that diverged writes nothing) */
            if (!st && (st = smoe_check_finite(data[j], p->count, names[j], &err)))
                smoe_fail_prefix(&err, st, "not saving %s", path);
            e[j].name = names[j];
            e[j].dtype = SMOE_F32;
            e[j].ndim = p->ndim ? p->ndim : 1; /* scalars are stored as [1], like the golden files */
            if (p->ndim) memcpy(e[j].shape, p->shape, sizeof p->shape);
            else e[j].shape[0] = 1;
            e[j].data = data[j];
        }
    }
    char config[2048] = "", step[32];
    smoe_st_meta meta[4] = {{"softmoe.kind", m->kind == SMOE_MODEL_VIT ? "vit" : "layer"}, {"softmoe.config", config}};
    int meta_count = 1;
    if (m->kind == SMOE_MODEL_VIT) {
        smoe_vit_metadata(m, config, sizeof config);
        meta_count = 2;
    } else {
        meta_count += smoe_layer_metadata(m, meta + 1);
    }
    if (opt) {
        snprintf(step, sizeof step, "%ld", m->step);
        meta[meta_count++] = (smoe_st_meta){"softmoe.step", step};
    }
    if (!st) st = smoe_user_meta_write(m, path, e, count, meta, meta_count, &err);
    for (int i = 0; data && i < count; i++) free(data[i]);
    free(data);
    free(names);
    free(e);
    return smoe_ctx_error(m->ctx, st, &err);
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
