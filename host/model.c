/* Models: the parameter table every kind shares, loading and saving (SPEC section 3), and the
 * Soft MoE layer kind. The Vulkan path records one program per (batch, tokens) shape, once, and
 * replays it; per call only the inputs go up and the outputs come down. The ViT is models/vit.c. */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job.h"
#include "ops/expert_subset.h"
#include "ops/softmoe_layer.h"
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

/* ---- The layer kind ---- */

typedef struct smoe_layer_model {
    smoe_layer_dims dims;   /* d, n, p, h from the file; b, m of the current shape */
    smoe_arena work;        /* inputs, outputs and workspace of the current shape */
    smoe_layer_tensors t;
    int shape_b, shape_m, shape_backward;
    smoe_program forward, forward_backward;
    int have_forward, have_forward_backward;
    smoe_keep forward_keep; /* the expert-subset setting recorded into forward */
} smoe_layer_model;

static const char *const param_names[SMOE_LAYER_PARAM_COUNT] = {
    "phi", "scale", "experts.fc1.weight", "experts.fc1.bias", "experts.fc2.weight", "experts.fc2.bias",
};

const char *smoe_layer_param_name(int i)
{
    return i >= 0 && i < SMOE_LAYER_PARAM_COUNT ? param_names[i] : NULL;
}

static const char *const mixing_names[3] = {"soft", "uniform", "identity"};

const char *smoe_mixing_name(int mixing)
{
    return mixing >= SMOE_MIX_SOFT && mixing <= SMOE_MIX_IDENTITY ? mixing_names[mixing] : NULL;
}

int smoe_model_soft_routing(const smoe_model *m)
{
    smoe_vit_config c;
    if (m->kind == SMOE_MODEL_LAYER) return m->layer->dims.dispatch == SMOE_MIX_SOFT && m->layer->dims.combine == SMOE_MIX_SOFT;
    return smoe_vit_get_config(m, &c) == SMOE_OK && c.dispatch == SMOE_MIX_SOFT && c.combine == SMOE_MIX_SOFT;
}

int smoe_mixing_from_name(const char *name)
{
    for (int i = 0; i < 3 && name; i++)
        if (!strcmp(name, mixing_names[i])) return i;
    return -1;
}

static void layer_release_shape(smoe_layer_model *lm)
{
    smoe_program_destroy(&lm->forward);
    smoe_program_destroy(&lm->forward_backward);
    lm->have_forward = lm->have_forward_backward = 0;
    smoe_arena_release(&lm->work);
    lm->shape_b = lm->shape_m = lm->shape_backward = 0;
}

/* The dimensions a layer file implies, read from phi and experts.fc1.weight. */
static smoe_status layer_dims_from_file(const smoe_st_file *f, smoe_layer_dims *d, smoe_err *err)
{
    const smoe_st_tensor *phi = smoe_st_find(f, "phi"), *w1 = smoe_st_find(f, "experts.fc1.weight");
    if (!phi) return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "tensor \"phi\" is missing (expected F32 [d, n, p])");
    if (phi->ndim != 3)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "tensor \"phi\" has %d dimensions, expected 3: [d, n, p]", phi->ndim);
    if (!w1)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "tensor \"experts.fc1.weight\" is missing (expected F32 [n, h, d])");
    if (w1->ndim != 3)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "tensor \"experts.fc1.weight\" has %d dimensions, expected 3: [n, h, d]",
                         w1->ndim);
    const int64_t limit = 1 << 24;
    int64_t vals[4] = {phi->shape[0], phi->shape[1], phi->shape[2], w1->shape[1]};
    const char *names[4] = {"d (phi dim 0)", "n (phi dim 1)", "p (phi dim 2)", "h (experts.fc1.weight dim 1)"};
    for (int i = 0; i < 4; i++)
        if (vals[i] < 1 || vals[i] > limit)
            return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "layer size %s is %lld; it must be between 1 and %lld", names[i],
                             (long long)vals[i], (long long)limit);
    d->d = (int)vals[0];
    d->n = (int)vals[1];
    d->p = (int)vals[2];
    d->h = (int)vals[3];
    if ((uint64_t)d->n * d->h * d->d > (1ull << 31))
        return smoe_fail(err, SMOE_ERROR_TOO_LARGE, "the experts have %llu weights; at most 2^31 are supported",
                         (unsigned long long)d->n * d->h * d->d);
    return SMOE_OK;
}

/* The layer's parameters, named as SPEC section 1, into the model's table. */
smoe_status smoe_layer_add_params(smoe_model *m, const smoe_layer_dims *d, const char *prefix, smoe_err *err)
{
    const int64_t shapes[6][3] = {{d->d, d->n, d->p}, {1}, {d->n, d->h, d->d}, {d->n, d->h}, {d->n, d->d, d->h}, {d->n, d->d}};
    const int ndims[6] = {3, 0, 3, 2, 3, 2};
    const int decay[6] = {0, 0, 1, 0, 1, 0};
    smoe_status st = SMOE_OK;
    for (int i = 0; i < 6 && !st; i++) {
        char name[96];
        snprintf(name, sizeof name, "%s%s", prefix, param_names[i]);
        st = smoe_model_add_param(m, name, ndims[i], shapes[i], decay[i], err);
    }
    return st;
}

/* Points the layer op's parameter and gradient tensors at six table entries from first. */
void smoe_layer_bind_params(smoe_layer_tensors *t, const smoe_model *m, int first)
{
    const smoe_param *p = &m->params[first];
    t->phi = p[0].value, t->scale = p[1].value, t->w1 = p[2].value, t->b1 = p[3].value, t->w2 = p[4].value,
    t->b2 = p[5].value;
    t->g_phi = p[0].grad, t->g_scale = p[1].grad, t->g_w1 = p[2].grad, t->g_b1 = p[3].grad, t->g_w2 = p[4].grad,
    t->g_b2 = p[5].grad;
}

/* The layer's dispatch and combine weights from the metadata "softmoe.dispatch" and
 * "softmoe.combine" (absent: soft). */
static smoe_status layer_mixing_from_file(const smoe_st_file *f, smoe_layer_dims *d, smoe_err *err)
{
    const char *keys[2] = {"softmoe.dispatch", "softmoe.combine"};
    int *sides[2] = {&d->dispatch, &d->combine};
    for (int i = 0; i < 2; i++) {
        const char *name = smoe_st_get_meta(f, keys[i]);
        *sides[i] = name ? smoe_mixing_from_name(name) : SMOE_MIX_SOFT;
        if (*sides[i] < 0)
            return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "\"%s\" is \"%s\"; it must be \"soft\", \"uniform\" or \"identity\"",
                             keys[i], name);
    }
    if ((d->dispatch == SMOE_MIX_IDENTITY) != (d->combine == SMOE_MIX_IDENTITY))
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT,
                         "dispatch %s with combine %s: identity (token s to slot s and back) is set on both sides or on neither",
                         smoe_mixing_name(d->dispatch), smoe_mixing_name(d->combine));
    return SMOE_OK;
}

int smoe_layer_metadata(const smoe_model *m, smoe_st_meta meta[2])
{
    int count = 0;
    if (m->layer->dims.dispatch != SMOE_MIX_SOFT)
        meta[count++] = (smoe_st_meta){"softmoe.dispatch", (char *)smoe_mixing_name(m->layer->dims.dispatch)};
    if (m->layer->dims.combine != SMOE_MIX_SOFT)
        meta[count++] = (smoe_st_meta){"softmoe.combine", (char *)smoe_mixing_name(m->layer->dims.combine)};
    return count;
}

static smoe_status load_layer(smoe_model *m, const smoe_st_file *f, smoe_err *err)
{
    m->layer = calloc(1, sizeof *m->layer);
    if (!m->layer) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    smoe_arena_init(&m->layer->work, smoe_ctx_gpu(m->ctx), "activations");
    smoe_status st = layer_dims_from_file(f, &m->layer->dims, err);
    if (!st) st = layer_mixing_from_file(f, &m->layer->dims, err);
    if (!st) st = smoe_layer_add_params(m, &m->layer->dims, "", err);
    if (!st) st = smoe_model_check_file(m, f, 0, err);
    if (!st) st = smoe_model_commit_params(m, err);
    if (!st) st = smoe_model_read_params(m, f, err);
    return st;
}

static void model_free(smoe_model *m)
{
    if (m->layer) {
        layer_release_shape(m->layer);
        free(m->layer);
    }
    if (m->vit) smoe_vit_destroy(m->vit);
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

smoe_status smoe_model_new(smoe_context *ctx, smoe_model_kind kind, smoe_model **out, smoe_err *err)
{
    smoe_model *m = calloc(1, sizeof *m);
    if (!m) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    m->ctx = ctx;
    m->kind = kind;
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

static smoe_status load(smoe_context *ctx, const smoe_st_file *f, smoe_model **out, smoe_err *err)
{
    const char *kind = smoe_st_get_meta(f, "softmoe.kind");
    if (!kind)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "the file has no \"softmoe.kind\" in its metadata (expected \"layer\" or \"vit\")");
    int is_layer = !strcmp(kind, "layer"), is_vit = !strcmp(kind, "vit");
    if (!is_layer && !is_vit)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "unknown model kind \"%s\" (expected \"layer\" or \"vit\")", kind);
    smoe_model *m;
    smoe_status st = smoe_model_new(ctx, is_layer ? SMOE_MODEL_LAYER : SMOE_MODEL_VIT, &m, err);
    if (st) return st;
    st = is_layer ? load_layer(m, f, err) : smoe_vit_load(m, f, err);
    if (!st) st = smoe_user_meta_load(m, f, err);
    return smoe_model_finish(m, st, out, err);
}

static smoe_status check_ctx(smoe_context *ctx, smoe_model **out)
{
    if (!ctx) return SMOE_ERROR_INVALID_ARGUMENT;
    if (!out) return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "NULL output pointer");
    *out = NULL;
    if (!ctx->opened) return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "no device opened (smoe_context_open_device)");
    return SMOE_OK;
}

smoe_status smoe_model_load_file(smoe_context *ctx, const char *path, smoe_model **out)
{
    smoe_status st = check_ctx(ctx, out);
    if (st) return st;
    if (!path) return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "NULL path");
    smoe_err err = {{0}};
    smoe_st_file f;
    st = smoe_st_read_file(path, &f, &err);
    if (!st) {
        st = load(ctx, &f, out, &err);
        if (st) smoe_fail_prefix(&err, st, "%s", path);
        smoe_st_free(&f);
    }
    return smoe_ctx_error(ctx, st, &err);
}

smoe_status smoe_model_load_memory(smoe_context *ctx, const void *data, size_t size, smoe_model **out)
{
    smoe_status st = check_ctx(ctx, out);
    if (st) return st;
    if (!data && size) return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "NULL data");
    smoe_err err = {{0}};
    smoe_st_file f;
    st = smoe_st_parse(data, size, &f, &err);
    if (!st) {
        st = load(ctx, &f, out, &err);
        smoe_st_free(&f);
    }
    return smoe_ctx_error(ctx, st, &err);
}

smoe_status smoe_layer_get_shape(const smoe_model *m, smoe_layer_shape *s)
{
    if (!m || !s || m->kind != SMOE_MODEL_LAYER) return SMOE_ERROR_INVALID_ARGUMENT;
    s->d = m->layer->dims.d;
    s->n = m->layer->dims.n;
    s->p = m->layer->dims.p;
    s->h = m->layer->dims.h;
    return SMOE_OK;
}

/* ---- Running the layer ---- */

/* Makes the work arena (and, on Vulkan, the recorded programs) fit shape (b, m). */
static smoe_status ensure_shape(smoe_model *md, int b, int m, int backward, smoe_err *err)
{
    smoe_layer_model *lm = md->layer;
    if (lm->shape_b == b && lm->shape_m == m && lm->shape_backward >= backward && lm->work.committed) return SMOE_OK;
    if (backward) {
        smoe_status st = smoe_model_ensure_grads(md, err);
        if (st) return st;
    }
    layer_release_shape(lm);
    lm->dims.b = b;
    lm->dims.m = m;
    smoe_arena *a = &lm->work;
    uint64_t io = (uint64_t)b * m * lm->dims.d * 4;
    smoe_status st = SMOE_OK;
    smoe_layer_tensors *t = &lm->t;
    smoe_layer_bind_params(t, md, 0);
    if (!st) st = smoe_arena_reserve(a, io, &t->x, err);
    if (!st) st = smoe_arena_reserve(a, io, &t->y, err);
    if (!st) st = smoe_arena_reserve(a, SMOE_KEEP_STATE_WORDS * 4, &t->keep_state, err);
    if (backward) {
        if (!st) st = smoe_arena_reserve(a, io, &t->dy, err);
        if (!st) st = smoe_arena_reserve(a, io, &t->dx, err);
    }
    if (!st) st = smoe_layer_reserve(t, &lm->dims, a, backward, err);
    if (!st) st = smoe_arena_commit(a, err);
    if (st) {
        layer_release_shape(lm);
        return smoe_fail_prefix(err, st, "batch %d x %d tokens", b, m);
    }
    lm->shape_b = b;
    lm->shape_m = m;
    lm->shape_backward = backward;
    return SMOE_OK;
}

/* The layer's work as ops: run now on the CPU path, recorded once on Vulkan. Forward alone keeps
 * the experts the model's setting says; with backward, all. */
static smoe_status layer_ops(smoe_exec *ex, smoe_model *md, int backward, smoe_err *err)
{
    smoe_layer_model *lm = md->layer;
    if (!backward) return smoe_op_softmoe_forward_keep(ex, &lm->t, &lm->dims, &md->keep, 0, err);
    smoe_status st = smoe_op_softmoe_forward(ex, &lm->t, &lm->dims, err);
    if (!st) st = smoe_op_softmoe_backward(ex, &lm->t, &lm->dims, err);
    return st;
}

/* Runs the layer's ops: on Vulkan, records them into a program the first time (again when the
 * expert-subset setting changed), then replays it. */
static smoe_status execute(smoe_model *md, int backward, smoe_err *err)
{
    smoe_layer_model *lm = md->layer;
    if (!lm->work.gpu) {
        smoe_exec ex = {NULL, NULL};
        return layer_ops(&ex, md, backward, err);
    }
    if (!backward && lm->have_forward && !smoe_keep_same_program(&lm->forward_keep, &md->keep)) {
        smoe_program_destroy(&lm->forward);
        lm->have_forward = 0;
    }
    smoe_program *p = backward ? &lm->forward_backward : &lm->forward;
    int *have = backward ? &lm->have_forward_backward : &lm->have_forward;
    if (!*have) {
        smoe_status st = smoe_program_begin(lm->work.gpu, p, err);
        smoe_exec ex = {lm->work.gpu, p};
        if (!st) st = layer_ops(&ex, md, backward, err);
        if (!st) st = smoe_program_end(p, err);
        if (st) {
            smoe_program_destroy(p);
            return st;
        }
        *have = 1;
        if (!backward) lm->forward_keep = md->keep;
    }
    return smoe_program_run(p, err);
}

smoe_status smoe_model_settle(smoe_model *m, smoe_err *err)
{
    if (m->kind == SMOE_MODEL_VIT) return smoe_vit_settle(m, err);
    smoe_status st = smoe_program_wait(&m->layer->forward, err);
    if (!st) st = smoe_program_wait(&m->layer->forward_backward, err);
    return st;
}

smoe_status smoe_check_finite(const float *v, size_t n, const char *name, smoe_err *err)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return smoe_fail(err, SMOE_ERROR_NOT_FINITE, "%s[%zu] is %s", name, i, isnan(v[i]) ? "NaN" : "infinite");
    return SMOE_OK;
}

static smoe_status run_layer(smoe_model *md, int b, int m, const float *x, const float *dy, float *y, float *dx,
                             float *const grads[6])
{
    smoe_context *ctx = md ? md->ctx : NULL;
    if (!md) return SMOE_ERROR_INVALID_ARGUMENT;
    if (md->kind != SMOE_MODEL_LAYER) return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "the model is not a layer");
    if (b < 1 || m < 1 || b > (1 << 24) || m > (1 << 24))
        return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "batch %d and tokens %d must be at least 1", b, m);
    if (!x || !y) return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "x and y must not be NULL");
    smoe_layer_model *lm = md->layer;
    if (lm->dims.dispatch == SMOE_MIX_IDENTITY && (int64_t)lm->dims.n * lm->dims.p != m)
        return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT,
                             "identity dispatch and combine give each token its own slot: %d tokens for %d * %d slots", m,
                             lm->dims.n, lm->dims.p);
    int backward = dy != NULL;
    size_t io = (size_t)b * m * lm->dims.d;
    smoe_err err = {{0}};
    smoe_status st = backward ? smoe_model_check_all_experts(md, &err) : SMOE_OK;
    if (!st) st = smoe_check_finite(x, io, "x", &err);
    if (!st && backward) st = smoe_check_finite(dy, io, "dy", &err);
    if (!st) st = smoe_model_settle(md, &err);
    if (!st) st = ensure_shape(md, b, m, backward, &err);
    if (st) return smoe_ctx_error(ctx, st, &err);
    smoe_layer_tensors *t = &lm->t;
    st = smoe_tensor_upload(&t->x, 0, x, io * 4, &err);
    if (!st && backward) st = smoe_tensor_upload(&t->dy, 0, dy, io * 4, &err);
    if (!st && !backward) st = smoe_model_keep_state(md, &t->keep_state, &err);
    if (!st) st = execute(md, backward, &err);
    if (!st) st = smoe_tensor_download(&t->y, 0, y, io * 4, &err);
    if (!st && backward && dx) st = smoe_tensor_download(&t->dx, 0, dx, io * 4, &err);
    for (int i = 0; i < 6 && !st && backward; i++)
        if (grads && grads[i]) st = smoe_tensor_download(&md->params[i].grad, 0, grads[i], md->params[i].count * 4, &err);
    return smoe_ctx_error(ctx, st, &err);
}

smoe_status smoe_layer_forward(smoe_model *model, int b, int m, const float *x, float *y)
{
    return run_layer(model, b, m, x, NULL, y, NULL, NULL);
}

smoe_status smoe_layer_forward_backward(smoe_model *model, int b, int m, const float *x, const float *dy, float *y,
                                        float *dx, float *const grads[SMOE_LAYER_PARAM_COUNT])
{
    if (model && !dy) return smoe_ctx_fail(model->ctx, SMOE_ERROR_INVALID_ARGUMENT, "dy must not be NULL");
    return run_layer(model, b, m, x, dy, y, dx, grads);
}
