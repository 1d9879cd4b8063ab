/* Models: loading (SPEC section 3), parameters on the context's device, and running the Soft MoE
 * layer on either path. The Vulkan path records one program per (batch, tokens) shape, once, and
 * replays it; per call only the input goes up and the outputs come down. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "context.h"
#include "cpu/softmoe_cpu.h"
#include "ops/softmoe_layer.h"
#include "safetensors.h"

struct smoe_model {
    smoe_context *ctx;
    smoe_model_kind kind;
    smoe_layer_dims dims;   /* d, n, p, h from the file; b, m of the current shape */
    smoe_arena params;      /* parameters, uploaded once */
    smoe_arena work;        /* inputs, outputs, gradients and workspace of the current shape */
    smoe_layer_tensors t;        /* tensor handles (host memory on the CPU path) */
    int shape_b, shape_m, shape_backward;
    smoe_program forward, forward_backward;
    int have_forward, have_forward_backward;
};

static const char *const param_names[SMOE_LAYER_PARAM_COUNT] = {
    "phi", "scale", "experts.fc1.weight", "experts.fc1.bias", "experts.fc2.weight", "experts.fc2.bias",
};

const char *smoe_layer_param_name(int i)
{
    return i >= 0 && i < SMOE_LAYER_PARAM_COUNT ? param_names[i] : NULL;
}

/* Shapes of the parameters, and their tensors, in param_names order. */
static void param_shapes(const smoe_layer_dims *d, int ndim[6], int64_t shape[6][3])
{
    memset(shape, 0, 6 * 3 * sizeof(int64_t));
    ndim[0] = 3, shape[0][0] = d->d, shape[0][1] = d->n, shape[0][2] = d->p;
    ndim[1] = 0;
    ndim[2] = 3, shape[2][0] = d->n, shape[2][1] = d->h, shape[2][2] = d->d;
    ndim[3] = 2, shape[3][0] = d->n, shape[3][1] = d->h;
    ndim[4] = 3, shape[4][0] = d->n, shape[4][1] = d->d, shape[4][2] = d->h;
    ndim[5] = 2, shape[5][0] = d->n, shape[5][1] = d->d;
}

static uint64_t shape_count(int ndim, const int64_t *shape)
{
    uint64_t c = 1;
    for (int i = 0; i < ndim; i++) c *= (uint64_t)shape[i];
    return c;
}

static smoe_tensor *param_tensor(smoe_layer_tensors *t, int i)
{
    smoe_tensor *p[6] = {&t->phi, &t->scale, &t->w1, &t->b1, &t->w2, &t->b2};
    return p[i];
}

static smoe_tensor *grad_tensor(smoe_layer_tensors *t, int i)
{
    smoe_tensor *p[6] = {&t->g_phi, &t->g_scale, &t->g_w1, &t->g_b1, &t->g_w2, &t->g_b2};
    return p[i];
}

static void release_shape(smoe_model *m)
{
    smoe_program_destroy(&m->forward);
    smoe_program_destroy(&m->forward_backward);
    m->have_forward = m->have_forward_backward = 0;
    smoe_arena_release(&m->work);
    m->shape_b = m->shape_m = m->shape_backward = 0;
}

void smoe_model_destroy_internal(smoe_model *m)
{
    if (!m) return;
    release_shape(m);
    smoe_arena_release(&m->params);
    smoe_ctx_remove_model(m->ctx, m);
    free(m);
}

void smoe_model_free(smoe_model *m)
{
    smoe_model_destroy_internal(m);
}

smoe_model_kind smoe_model_get_kind(const smoe_model *m)
{
    return m->kind;
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
        return smoe_fail(err, SMOE_ERROR_TOO_LARGE, "the experts have %llu weights each layer; at most 2^31 are supported",
                         (unsigned long long)d->n * d->h * d->d);
    return SMOE_OK;
}

static smoe_status load_layer(smoe_model *m, const smoe_st_file *f, smoe_err *err)
{
    smoe_status st = layer_dims_from_file(f, &m->dims, err);
    if (st) return st;
    int ndim[6];
    int64_t shape[6][3];
    param_shapes(&m->dims, ndim, shape);
    const smoe_st_tensor *src[6];
    for (int i = 0; i < 6; i++)
        if ((st = smoe_st_expect_f32(f, param_names[i], ndim[i], shape[i], &src[i], err))) return st;
    for (int i = 0; i < f->count; i++) {
        int known = 0;
        for (int j = 0; j < 6; j++) known |= !strcmp(f->tensors[i].name, param_names[j]);
        if (!known)
            return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "unexpected tensor \"%s\" in a layer model file", f->tensors[i].name);
    }
    smoe_arena_init(&m->params, smoe_ctx_gpu(m->ctx), "parameters");
    for (int i = 0; i < 6 && !st; i++)
        st = smoe_arena_reserve(&m->params, shape_count(ndim[i], shape[i]) * 4, param_tensor(&m->t, i), err);
    if (!st) st = smoe_arena_commit(&m->params, err);
    for (int i = 0; i < 6 && !st; i++) {
        smoe_tensor *t = param_tensor(&m->t, i);
        float *tmp = malloc(t->bytes ? t->bytes : 4);
        if (!tmp) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory loading \"%s\"", param_names[i]);
        st = smoe_st_copy_f32(src[i], tmp, err);
        if (!st) st = smoe_tensor_upload(t, 0, tmp, t->bytes, err);
        free(tmp);
    }
    return st;
}

static smoe_status load(smoe_context *ctx, const smoe_st_file *f, smoe_model **out, smoe_err *err)
{
    const char *kind = smoe_st_get_meta(f, "softmoe.kind");
    if (!kind)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "the file has no \"softmoe.kind\" in its metadata (expected \"layer\" or \"vit\")");
    if (!strcmp(kind, "vit"))
        return smoe_fail(err, SMOE_ERROR_UNSUPPORTED, "ViT model files are not supported by this version of softmoe yet");
    if (strcmp(kind, "layer"))
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "unknown model kind \"%s\" (expected \"layer\" or \"vit\")", kind);
    smoe_model *m = calloc(1, sizeof *m);
    if (!m) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    m->ctx = ctx;
    m->kind = SMOE_MODEL_LAYER;
    smoe_arena_init(&m->params, smoe_ctx_gpu(ctx), "parameters");
    smoe_arena_init(&m->work, smoe_ctx_gpu(ctx), "activations");
    smoe_status st = load_layer(m, f, err);
    if (!st) st = smoe_ctx_add_model(ctx, m) ? smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory") : SMOE_OK;
    if (st) {
        smoe_arena_release(&m->params);
        free(m);
        return st;
    }
    *out = m;
    return SMOE_OK;
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
    s->d = m->dims.d;
    s->n = m->dims.n;
    s->p = m->dims.p;
    s->h = m->dims.h;
    return SMOE_OK;
}

/* ---- Running the layer ---- */

/* Makes the work arena (and, on Vulkan, the recorded programs) fit shape (b, m). */
static smoe_status ensure_shape(smoe_model *md, int b, int m, int backward, smoe_err *err)
{
    if (md->shape_b == b && md->shape_m == m && md->shape_backward >= backward && md->work.committed) return SMOE_OK;
    release_shape(md);
    md->dims.b = b;
    md->dims.m = m;
    smoe_arena *a = &md->work;
    uint64_t io = (uint64_t)b * m * md->dims.d * 4;
    smoe_status st = SMOE_OK;
    smoe_layer_tensors *t = &md->t;
    if (!st) st = smoe_arena_reserve(a, io, &t->x, err);
    if (!st) st = smoe_arena_reserve(a, io, &t->y, err);
    if (backward) {
        if (!st) st = smoe_arena_reserve(a, io, &t->dy, err);
        if (!st) st = smoe_arena_reserve(a, io, &t->dx, err);
        for (int i = 0; i < 6 && !st; i++) st = smoe_arena_reserve(a, param_tensor(t, i)->bytes, grad_tensor(t, i), err);
    }
    if (!st) st = smoe_layer_reserve(t, &md->dims, a, backward, err);
    if (!st) st = smoe_arena_commit(a, err);
    if (st) {
        release_shape(md);
        return smoe_fail_prefix(err, st, "batch %d x %d tokens", b, m);
    }
    md->shape_b = b;
    md->shape_m = m;
    md->shape_backward = backward;
    return SMOE_OK;
}

/* The layer's work as ops: run now on the CPU path, recorded once on Vulkan. */
static smoe_status layer_ops(smoe_exec *ex, smoe_model *md, int backward, smoe_err *err)
{
    smoe_status st = smoe_op_softmoe_forward(ex, &md->t, &md->dims, err);
    if (!st && backward) st = smoe_op_softmoe_backward(ex, &md->t, &md->dims, err);
    return st;
}

/* Runs the layer's ops: on Vulkan, records them into a program the first time, then replays it. */
static smoe_status execute(smoe_model *md, int backward, smoe_err *err)
{
    if (!md->work.gpu) {
        smoe_exec ex = {NULL, NULL};
        return layer_ops(&ex, md, backward, err);
    }
    smoe_program *p = backward ? &md->forward_backward : &md->forward;
    int *have = backward ? &md->have_forward_backward : &md->have_forward;
    if (*have) return smoe_program_run(p, err);
    smoe_status st = smoe_program_begin(md->work.gpu, p, err);
    smoe_exec ex = {md->work.gpu, p};
    if (!st) st = layer_ops(&ex, md, backward, err);
    if (!st) st = smoe_program_end(p, err);
    if (st) {
        smoe_program_destroy(p);
        return st;
    }
    *have = 1;
    return smoe_program_run(p, err);
}

static smoe_status check_finite(const float *v, size_t n, const char *name, smoe_err *err)
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
    int backward = dy != NULL;
    size_t io = (size_t)b * m * md->dims.d;
    smoe_err err = {{0}};
    smoe_status st = check_finite(x, io, "x", &err);
    if (!st && backward) st = check_finite(dy, io, "dy", &err);
    if (!st) st = ensure_shape(md, b, m, backward, &err);
    if (st) return smoe_ctx_error(ctx, st, &err);
    smoe_layer_tensors *t = &md->t;
    st = smoe_tensor_upload(&t->x, 0, x, io * 4, &err);
    if (!st && backward) st = smoe_tensor_upload(&t->dy, 0, dy, io * 4, &err);
    if (!st) st = execute(md, backward, &err);
    if (!st) st = smoe_tensor_download(&t->y, 0, y, io * 4, &err);
    if (!st && backward && dx) st = smoe_tensor_download(&t->dx, 0, dx, io * 4, &err);
    for (int i = 0; i < 6 && !st && backward; i++)
        if (grads && grads[i]) st = smoe_tensor_download(grad_tensor(t, i), 0, grads[i], grad_tensor(t, i)->bytes, &err);
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
