/* The Soft MoE layer kind (docs/format.md): a model file holding one layer, run forward or
 * forward and backward on a batch of token sequences. Its work is ops (ops/softmoe_layer.h) run
 * by the model's executor: on Vulkan recorded once per (batch, tokens) shape and replayed; per
 * call only the inputs go up and the outputs come down. */
#include <stdlib.h>
#include <string.h>

#include "model_kinds.h"
#include "ops/expert_subset.h"

enum { LAYER_PLAN = 0, MODE_FORWARD = 0, MODE_FORWARD_BACKWARD = 1 };

typedef struct smoe_layer_model {
    smoe_layer_dims dims;   /* d, n, p, h from the file; b, m of the current shape */
    smoe_arena work;        /* inputs, outputs and workspace of the current shape */
    smoe_layer_tensors t;
    int shape_b, shape_m, shape_backward;
} smoe_layer_model;

static smoe_layer_model *layer_of(const smoe_model *m) { return m->impl; }

static void layer_release_shape(smoe_model *m)
{
    smoe_layer_model *lm = layer_of(m);
    smoe_executor_forget_plan(&m->exec, LAYER_PLAN);
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

/* "softmoe.dispatch" and "softmoe.combine" where they are not soft. */
static int layer_metadata(const smoe_model *m, smoe_st_meta *meta, int max, char *buf, size_t size)
{
    (void)buf, (void)size;
    const smoe_layer_model *lm = layer_of(m);
    int count = 0;
    if (lm->dims.dispatch != SMOE_MIX_SOFT && count < max)
        meta[count++] = (smoe_st_meta){"softmoe.dispatch", (char *)smoe_mixing_name(lm->dims.dispatch)};
    if (lm->dims.combine != SMOE_MIX_SOFT && count < max)
        meta[count++] = (smoe_st_meta){"softmoe.combine", (char *)smoe_mixing_name(lm->dims.combine)};
    return count;
}

static smoe_status layer_load(smoe_model *m, const smoe_st_file *f, smoe_err *err)
{
    smoe_layer_model *lm = calloc(1, sizeof *lm);
    if (!lm) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    m->impl = lm;
    smoe_arena_init(&lm->work, smoe_ctx_gpu(m->ctx), "activations");
    smoe_status st = layer_dims_from_file(f, &lm->dims, err);
    if (!st) st = layer_mixing_from_file(f, &lm->dims, err);
    if (!st) st = smoe_layer_add_params(m, &lm->dims, "", err);
    if (!st) st = smoe_model_check_file(m, f, 0, err);
    if (!st) st = smoe_model_commit_params(m, err);
    if (!st) st = smoe_model_read_params(m, f, err);
    return st;
}

static void layer_destroy(smoe_model *m)
{
    if (!m->impl) return;
    layer_release_shape(m);
    free(m->impl);
    m->impl = NULL;
}

static int layer_soft_experts(const smoe_model *m) { return layer_of(m)->dims.n; }

static int layer_soft_routing(const smoe_model *m)
{
    const smoe_layer_model *lm = layer_of(m);
    return lm->dims.dispatch == SMOE_MIX_SOFT && lm->dims.combine == SMOE_MIX_SOFT;
}

const smoe_model_kind_ops smoe_layer_kind = {
    "layer", SMOE_MODEL_LAYER, layer_load, layer_metadata, layer_destroy, layer_soft_experts, layer_soft_routing,
};

smoe_status smoe_layer_get_shape(const smoe_model *m, smoe_layer_shape *s)
{
    if (!m || !s || m->kind != SMOE_MODEL_LAYER) return SMOE_ERROR_INVALID_ARGUMENT;
    const smoe_layer_model *lm = layer_of(m);
    s->d = lm->dims.d;
    s->n = lm->dims.n;
    s->p = lm->dims.p;
    s->h = lm->dims.h;
    return SMOE_OK;
}

/* ---- Running the layer ---- */

/* Reserves the work arena of shape (b, m) in its tensors. */
static smoe_status reserve_shape(smoe_model *md, int backward, smoe_err *err)
{
    smoe_layer_model *lm = layer_of(md);
    smoe_arena *a = &lm->work;
    uint64_t io = (uint64_t)lm->dims.b * lm->dims.m * lm->dims.d * 4;
    smoe_layer_tensors *t = &lm->t;
    smoe_layer_bind_params(t, md, 0);
    smoe_status st = smoe_arena_reserve(a, io, &t->x, err);
    if (!st) st = smoe_arena_reserve(a, io, &t->y, err);
    if (!st) st = smoe_arena_reserve(a, SMOE_KEEP_STATE_WORDS * 4, &t->keep_state, err);
    if (backward) {
        if (!st) st = smoe_arena_reserve(a, io, &t->dy, err);
        if (!st) st = smoe_arena_reserve(a, io, &t->dx, err);
    }
    if (!st) st = smoe_layer_reserve(t, &lm->dims, a, backward, err);
    if (!st) st = smoe_arena_commit(a, err);
    return st;
}

/* Makes the work arena (and so the recorded programs) fit shape (b, m). */
static smoe_status ensure_shape(smoe_model *md, int b, int m, int backward, smoe_err *err)
{
    smoe_layer_model *lm = layer_of(md);
    if (lm->shape_b == b && lm->shape_m == m && lm->shape_backward >= backward && lm->work.committed) return SMOE_OK;
    if (backward) {
        smoe_status st = smoe_model_ensure_grads(md, err);
        if (st) return st;
    }
    layer_release_shape(md);
    lm->dims.b = b;
    lm->dims.m = m;
    smoe_status st = reserve_shape(md, backward, err);
    if (st) {
        layer_release_shape(md);
        return smoe_fail_prefix(err, st, "batch %d x %d tokens", b, m);
    }
    lm->shape_b = b;
    lm->shape_m = m;
    lm->shape_backward = backward;
    return SMOE_OK;
}

/* The layer's work as ops. Forward alone keeps the experts the model's setting says; with
 * backward, all. */
static smoe_status layer_ops(smoe_exec *ex, const smoe_exec_request *rq, smoe_err *err)
{
    smoe_model *md = rq->user;
    smoe_layer_model *lm = layer_of(md);
    if (rq->mode == MODE_FORWARD) return smoe_op_softmoe_forward_keep(ex, &lm->t, &lm->dims, &md->keep, 0, err);
    smoe_status st = smoe_op_softmoe_forward(ex, &lm->t, &lm->dims, err);
    if (!st) st = smoe_op_softmoe_backward(ex, &lm->t, &lm->dims, err);
    return st;
}

/* Runs the layer's ops; the forward program is recorded again when the expert-subset setting
 * changed. */
static smoe_status execute(smoe_model *md, int backward, smoe_err *err)
{
    smoe_keep_key key = smoe_keep_program_key(&md->keep);
    smoe_exec_request rq = {LAYER_PLAN, backward ? MODE_FORWARD_BACKWARD : MODE_FORWARD,
                            backward ? NULL : &key, backward ? 0 : sizeof key, layer_ops, md};
    int started;
    return smoe_executor_run(&md->exec, &rq, &started, err);
}

/* The arguments of a layer call, before anything runs. */
static smoe_status check_call(smoe_model *md, int b, int m, const float *x, const float *y)
{
    smoe_context *ctx = md ? md->ctx : NULL;
    if (!md) return SMOE_ERROR_INVALID_ARGUMENT;
    if (md->kind != SMOE_MODEL_LAYER) return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "the model is not a layer");
    if (b < 1 || m < 1 || b > (1 << 24) || m > (1 << 24))
        return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "batch %d and tokens %d must be at least 1", b, m);
    if (!x || !y) return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "x and y must not be NULL");
    const smoe_layer_model *lm = layer_of(md);
    if (lm->dims.dispatch == SMOE_MIX_IDENTITY && (int64_t)lm->dims.n * lm->dims.p != m)
        return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT,
                             "identity dispatch and combine give each token its own slot: %d tokens for %d * %d slots", m,
                             lm->dims.n, lm->dims.p);
    return SMOE_OK;
}

/* Downloads y, and after backward dx and the gradients asked for. */
static smoe_status collect(smoe_model *md, size_t io, float *y, float *dx, float *const grads[6], int backward,
                           smoe_err *err)
{
    const smoe_layer_tensors *t = &layer_of(md)->t;
    smoe_status st = smoe_tensor_download(&t->y, 0, y, io * 4, err);
    if (!st && backward && dx) st = smoe_tensor_download(&t->dx, 0, dx, io * 4, err);
    for (int i = 0; i < 6 && !st && backward; i++)
        if (grads && grads[i]) st = smoe_tensor_download(&md->params[i].grad, 0, grads[i], md->params[i].count * 4, err);
    return st;
}

static smoe_status run_layer(smoe_model *md, int b, int m, const float *x, const float *dy, float *y, float *dx,
                             float *const grads[6])
{
    smoe_status st = check_call(md, b, m, x, y);
    if (st) return st;
    smoe_layer_model *lm = layer_of(md);
    int backward = dy != NULL;
    size_t io = (size_t)b * m * lm->dims.d;
    smoe_err err = {{0}};
    st = backward ? smoe_model_check_all_experts(md, &err) : SMOE_OK;
    if (!st) st = smoe_check_finite(x, io, "x", &err);
    if (!st && backward) st = smoe_check_finite(dy, io, "dy", &err);
    if (!st) st = smoe_model_settle(md, &err);
    if (!st) st = ensure_shape(md, b, m, backward, &err);
    if (st) return smoe_ctx_error(md->ctx, st, &err);
    st = smoe_tensor_upload(&lm->t.x, 0, x, io * 4, &err);
    if (!st && backward) st = smoe_tensor_upload(&lm->t.dy, 0, dy, io * 4, &err);
    if (!st && !backward) st = smoe_model_keep_state(md, &lm->t.keep_state, &err);
    if (!st) st = execute(md, backward, &err);
    if (!st) st = collect(md, io, y, dx, grads, backward, &err);
    return smoe_ctx_error(md->ctx, st, &err);
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
