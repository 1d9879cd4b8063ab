/* What softmoe run computes: see run_model.h. */
#define _POSIX_C_SOURCE 200809L
#include "run_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static smoe_status outputs_init(run_outputs *out, int capacity, smoe_err *err)
{
    memset(out, 0, sizeof *out);
    out->entries = calloc((size_t)capacity, sizeof *out->entries);
    out->buffers = calloc((size_t)capacity, sizeof *out->buffers);
    out->names = calloc((size_t)capacity, sizeof *out->names);
    if (out->entries && out->buffers && out->names) return SMOE_OK;
    run_outputs_free(out);
    return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
}

void run_outputs_free(run_outputs *out)
{
    for (int i = 0; out->buffers && i < out->buffer_count; i++) free(out->buffers[i]);
    free(out->buffers);
    free(out->entries);
    free(out->names);
    memset(out, 0, sizeof *out);
}

/* A buffer of n floats that out owns, or NULL. */
static float *output_buffer(run_outputs *out, size_t n)
{
    float *b = malloc((n ? n : 1) * sizeof *b);
    if (b) out->buffers[out->buffer_count++] = b;
    return b;
}

/* Names an output tensor; ndim 0 is stored as [1], like the golden files. */
static void output(run_outputs *out, const char *prefix, const char *name, int ndim, const int64_t *shape,
                   const float *data)
{
    smoe_st_entry *e = &out->entries[out->count];
    snprintf(out->names[out->count], sizeof out->names[0], "%s%s", prefix, name);
    e->name = out->names[out->count];
    e->dtype = SMOE_F32;
    e->ndim = ndim ? ndim : 1;
    e->shape[0] = 1;
    for (int k = 0; k < ndim; k++) e->shape[k] = shape[k];
    e->data = data;
    out->count++;
}

/* Refuses tensors of the input other than the ones named (NULL-terminated). */
static smoe_status only(const smoe_st_file *in, const char *input, const char *const *names, const char *takes,
                        smoe_err *err)
{
    for (int i = 0; i < in->count; i++) {
        int known = 0;
        for (const char *const *n = names; *n && !known; n++) known = !strcmp(in->tensors[i].name, *n);
        if (!known)
            return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "%s: unexpected tensor \"%s\" (%s)", input, in->tensors[i].name,
                             takes);
    }
    return SMOE_OK;
}

static smoe_status library_error(smoe_context *ctx, smoe_status st, const char *what, smoe_err *err)
{
    return smoe_fail(err, st, "%s: %s (%s)", what, smoe_last_error(ctx), smoe_status_string(st));
}

/* The gradients of every parameter, after a backward pass, as grad.<name>. */
static smoe_status output_grads(smoe_context *ctx, smoe_model *model, run_outputs *out, smoe_err *err)
{
    for (int i = 0; i < smoe_model_param_count(model); i++) {
        smoe_param_info info;
        smoe_model_param_info(model, i, &info);
        float *g = output_buffer(out, info.count);
        if (!g) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
        smoe_status st = smoe_model_get_grad(model, i, g);
        if (st) return library_error(ctx, st, "reading gradients", err);
        output(out, "grad.", info.name, info.ndim, info.shape, g);
    }
    return SMOE_OK;
}

/* The shape [b, m, d] of the input's x, checked against the layer's d. */
static smoe_status layer_input_shape(const smoe_st_file *in, const char *input, int d, int64_t shape[3], smoe_err *err)
{
    const smoe_st_tensor *xt = smoe_st_find(in, "x");
    if (!xt || xt->ndim != 3 || xt->shape[2] != d || xt->shape[0] < 1 || xt->shape[1] < 1 ||
        xt->shape[0] > (1 << 24) || xt->shape[1] > (1 << 24))
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "%s: tensor \"x\" %s; expected F32 [b, m, %d]", input,
                         xt ? "has the wrong shape" : "is missing", d);
    shape[0] = xt->shape[0], shape[1] = xt->shape[1], shape[2] = d;
    return SMOE_OK;
}

/* x [b, m, d] (and dy) in; y (and grad.x, grad.*) out. */
static smoe_status run_layer(smoe_context *ctx, smoe_model *model, const smoe_st_file *in, const char *input,
                             run_outputs *out, smoe_err *err)
{
    smoe_layer_shape ls;
    smoe_layer_get_shape(model, &ls);
    static const char *const names[] = {"x", "dy", NULL};
    smoe_status st = only(in, input, names, "a layer takes x [b, m, d] and dy", err);
    if (st) return st;
    const smoe_st_tensor *xt = NULL, *dyt = NULL;
    int64_t shape[3];
    st = layer_input_shape(in, input, ls.d, shape, err);
    if (st) return st;
    int b = (int)shape[0], m = (int)shape[1];
    st = smoe_st_expect_f32(in, "x", 3, shape, &xt, err);
    if (!st && smoe_st_find(in, "dy")) st = smoe_st_expect_f32(in, "dy", 3, shape, &dyt, err);
    if (st) return smoe_fail_prefix(err, st, "%s", input);
    size_t io = (size_t)b * m * ls.d;
    float *x = output_buffer(out, io), *dy = dyt ? output_buffer(out, io) : NULL;
    float *y = output_buffer(out, io), *dx = dyt ? output_buffer(out, io) : NULL;
    if (!x || !y || (dyt && (!dy || !dx))) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    st = smoe_st_copy_f32(xt, x, err);
    if (!st && dyt) st = smoe_st_copy_f32(dyt, dy, err);
    if (st) return smoe_fail_prefix(err, st, "%s", input);
    st = dyt ? smoe_layer_forward_backward(model, b, m, x, dy, y, dx, NULL) : smoe_layer_forward(model, b, m, x, y);
    if (st) return library_error(ctx, st, "running the layer", err);
    output(out, "", "y", 3, shape, y);
    if (!dyt) return SMOE_OK;
    output(out, "", "grad.x", 3, shape, dx);
    return output_grads(ctx, model, out, err);
}

/* images [b, c, H, W] (and labels [b] int32) in; logits (and loss, grad.*) out. */
static smoe_status run_vit(smoe_context *ctx, smoe_model *model, const smoe_st_file *in, const char *input,
                           run_outputs *out, smoe_err *err)
{
    smoe_vit_config c;
    smoe_vit_get_config(model, &c);
    static const char *const names[] = {"images", "labels", NULL};
    smoe_status st = only(in, input, names, "a ViT takes images [b, c, H, W] and labels", err);
    if (st) return st;
    const smoe_st_tensor *it = smoe_st_find(in, "images"), *lt = smoe_st_find(in, "labels");
    if (!it || it->ndim != 4 || it->shape[0] < 1 || it->shape[0] > 65536)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "%s: tensor \"images\" %s; expected F32 [b, %d, %d, %d]", input,
                         it ? "has the wrong shape" : "is missing", c.channels, c.image_size, c.image_size);
    int b = (int)it->shape[0];
    int64_t ishape[4] = {b, c.channels, c.image_size, c.image_size}, lshape[2] = {b, c.num_classes};
    st = smoe_st_expect_f32(in, "images", 4, ishape, &it, err);
    if (st) return smoe_fail_prefix(err, st, "%s", input);
    if (lt && (lt->dtype != SMOE_I32 || lt->ndim != 1 || lt->shape[0] != b))
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "%s: tensor \"labels\" must be I32 [%d]", input, b);
    size_t per = (size_t)c.channels * c.image_size * c.image_size;
    float *images = output_buffer(out, per * (size_t)b), *logits = output_buffer(out, (size_t)b * c.num_classes);
    int32_t *labels = lt ? (int32_t *)output_buffer(out, (size_t)b) : NULL;
    if (!images || !logits || (lt && !labels)) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    st = smoe_st_copy_f32(it, images, err);
    if (st) return smoe_fail_prefix(err, st, "%s", input);
    if (lt) memcpy(labels, lt->data, (size_t)b * 4);
    st = lt ? smoe_vit_loss_grads(model, b, images, labels, &out->loss, logits) : smoe_vit_infer(model, b, images, logits);
    if (st) return library_error(ctx, st, "running the model", err);
    output(out, "", "logits", 2, lshape, logits);
    if (!lt) return SMOE_OK;
    output(out, "", "loss", 0, NULL, &out->loss);
    return output_grads(ctx, model, out, err);
}

smoe_status run_model(smoe_context *ctx, smoe_model *model, const smoe_st_file *in, const char *input_name,
                      run_outputs *out, smoe_err *err)
{
    /* at most: the outputs, plus the inputs' copies and the gradients' buffers */
    smoe_status st = outputs_init(out, smoe_model_param_count(model) + 8, err);
    if (st) return st;
    st = smoe_model_get_kind(model) == SMOE_MODEL_VIT ? run_vit(ctx, model, in, input_name, out, err)
                                                      : run_layer(ctx, model, in, input_name, out, err);
    if (st) run_outputs_free(out);
    return st;
}
