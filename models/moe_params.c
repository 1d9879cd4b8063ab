/* The MoE layers' parameters in a model's table, named as docs/format.md (the Soft MoE layer's
 * six, the sparse routers' five), and the names of the mixing settings in model files. */
#include <stdio.h>
#include <string.h>

#include "model_kinds.h"

static const char *const layer_param_names[SMOE_LAYER_PARAM_COUNT] = {
    "phi", "scale", "experts.fc1.weight", "experts.fc1.bias", "experts.fc2.weight", "experts.fc2.bias",
};

const char *smoe_layer_param_name(int i)
{
    return i >= 0 && i < SMOE_LAYER_PARAM_COUNT ? layer_param_names[i] : NULL;
}

smoe_status smoe_layer_add_params(smoe_model *m, const smoe_layer_dims *d, const char *prefix, smoe_err *err)
{
    const int64_t shapes[6][3] = {{d->d, d->n, d->p}, {1}, {d->n, d->h, d->d}, {d->n, d->h}, {d->n, d->d, d->h}, {d->n, d->d}};
    const int ndims[6] = {3, 0, 3, 2, 3, 2};
    const int decay[6] = {0, 0, 1, 0, 1, 0};
    smoe_status st = SMOE_OK;
    for (int i = 0; i < 6 && !st; i++) {
        char name[96];
        snprintf(name, sizeof name, "%s%s", prefix, layer_param_names[i]);
        st = smoe_model_add_param(m, name, ndims[i], shapes[i], decay[i], err);
    }
    return st;
}

void smoe_layer_bind_params(smoe_layer_tensors *t, const smoe_model *m, int first)
{
    const smoe_param *p = &m->params[first];
    t->phi = p[0].value, t->scale = p[1].value, t->w1 = p[2].value, t->b1 = p[3].value, t->w2 = p[4].value,
    t->b2 = p[5].value;
    t->g_phi = p[0].grad, t->g_scale = p[1].grad, t->g_w1 = p[2].grad, t->g_b1 = p[3].grad, t->g_w2 = p[4].grad,
    t->g_b2 = p[5].grad;
}

static const char *const sparse_param_names[5] = {
    "gate.weight", "experts.fc1.weight", "experts.fc1.bias", "experts.fc2.weight", "experts.fc2.bias",
};

smoe_status smoe_sparse_add_params(smoe_model *m, const smoe_sparse_dims *d, const char *prefix, smoe_err *err)
{
    const int64_t shapes[5][3] = {{d->n, d->d}, {d->n, d->h, d->d}, {d->n, d->h}, {d->n, d->d, d->h}, {d->n, d->d}};
    const int ndims[5] = {2, 3, 2, 3, 2};
    smoe_status st = SMOE_OK;
    for (int i = 0; i < 5 && !st; i++) {
        char name[96];
        snprintf(name, sizeof name, "%s%s", prefix, sparse_param_names[i]);
        st = smoe_model_add_param(m, name, ndims[i], shapes[i], ndims[i] == 3 || i == 0, err);
    }
    return st;
}

void smoe_sparse_bind_params(smoe_sparse_tensors *t, const smoe_model *m, int first)
{
    const smoe_param *p = &m->params[first];
    t->gate = p[0].value, t->w1 = p[1].value, t->b1 = p[2].value, t->w2 = p[3].value, t->b2 = p[4].value;
    t->g_gate = p[0].grad, t->g_w1 = p[1].grad, t->g_b1 = p[2].grad, t->g_w2 = p[3].grad, t->g_b2 = p[4].grad;
}

static const char *const mixing_names[3] = {"soft", "uniform", "identity"};

const char *smoe_mixing_name(int mixing)
{
    return mixing >= SMOE_MIX_SOFT && mixing <= SMOE_MIX_IDENTITY ? mixing_names[mixing] : NULL;
}

int smoe_mixing_from_name(const char *name)
{
    for (int i = 0; i < 3 && name; i++)
        if (!strcmp(name, mixing_names[i])) return i;
    return -1;
}
