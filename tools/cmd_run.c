/* softmoe run: a model file on an input file (SPEC section 3), outputs to a file. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "safetensors.h"

/* Options of the commands that run a model. */
typedef struct run_opts {
    const char *model, *input, *output, *device;
    cli_keep keep;
} run_opts;

static int parse_run(int argc, char **argv, run_opts *o)
{
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        int kept = cli_keep_option(argc, argv, &i, &o->keep);
        if (kept < 0) return 2;
        if (kept) continue;
        const char **slot = NULL;
        if (!strcmp(argv[i], "--model")) slot = &o->model;
        else if (!strcmp(argv[i], "--input")) slot = &o->input;
        else if (!strcmp(argv[i], "--output")) slot = &o->output;
        else if (!strcmp(argv[i], "--device")) slot = &o->device;
        if (!slot || i + 1 >= argc) {
            fprintf(stderr, "softmoe run: %s \"%s\"\n", slot ? "missing value after" : "unknown option", argv[i]);
            return 2;
        }
        *slot = argv[++i];
    }
    if (!o->model || !o->input || !o->output) {
        fprintf(stderr, "softmoe run: --model, --input and --output are required\n");
        return 2;
    }
    return 0;
}

/* softmoe run on a layer model: x [b, m, d] (and dy) in; y (and grad.*) out. */
static int run_layer_file(smoe_context *ctx, smoe_model *model, const run_opts *o, const smoe_st_file *in)
{
    smoe_layer_shape ls;
    smoe_layer_get_shape(model, &ls);
    smoe_err err;
    const smoe_st_tensor *xt = smoe_st_find(in, "x");
    if (!xt || xt->ndim != 3 || xt->shape[2] != ls.d || xt->shape[0] < 1 || xt->shape[1] < 1 ||
        xt->shape[0] > (1 << 24) || xt->shape[1] > (1 << 24)) {
        fprintf(stderr, "softmoe run: %s: tensor \"x\" %s; expected F32 [b, m, %d]\n", o->input,
                xt ? "has the wrong shape" : "is missing", ls.d);
        return 1;
    }
    int64_t shape[3] = {xt->shape[0], xt->shape[1], ls.d};
    int b = (int)shape[0], m = (int)shape[1];
    const smoe_st_tensor *dyt = NULL;
    if (smoe_st_expect_f32(in, "x", 3, shape, &xt, &err) ||
        (smoe_st_find(in, "dy") && smoe_st_expect_f32(in, "dy", 3, shape, &dyt, &err))) {
        fprintf(stderr, "softmoe run: %s: %s\n", o->input, err.msg);
        return 1;
    }
    size_t io = (size_t)b * m * ls.d;
    size_t pcount[SMOE_LAYER_PARAM_COUNT] = {(size_t)ls.d * ls.n * ls.p, 1, (size_t)ls.n * ls.h * ls.d,
                                             (size_t)ls.n * ls.h, (size_t)ls.n * ls.d * ls.h, (size_t)ls.n * ls.d};
    int64_t pshape[SMOE_LAYER_PARAM_COUNT][3] = {{ls.d, ls.n, ls.p}, {1}, {ls.n, ls.h, ls.d},
                                                 {ls.n, ls.h}, {ls.n, ls.d, ls.h}, {ls.n, ls.d}};
    int pndim[SMOE_LAYER_PARAM_COUNT] = {3, 1, 3, 2, 3, 2};
    float *x = malloc(io * 4), *dy = dyt ? malloc(io * 4) : NULL, *y = malloc(io * 4), *dx = dyt ? malloc(io * 4) : NULL;
    float *grads[SMOE_LAYER_PARAM_COUNT] = {0};
    int rc = 1, ok = x && y && (!dyt || (dy && dx));
    for (int i = 0; i < SMOE_LAYER_PARAM_COUNT && dyt; i++) ok = ok && (grads[i] = malloc(pcount[i] * 4));
    if (!ok) {
        fprintf(stderr, "softmoe run: out of memory\n");
        goto done;
    }
    if (smoe_st_copy_f32(xt, x, &err) || (dyt && smoe_st_copy_f32(dyt, dy, &err))) {
        fprintf(stderr, "softmoe run: %s: %s\n", o->input, err.msg);
        goto done;
    }
    smoe_status st = dyt ? smoe_layer_forward_backward(model, b, m, x, dy, y, dx, grads) : smoe_layer_forward(model, b, m, x, y);
    if (st) {
        cli_fail(ctx, st, "running the layer");
        goto done;
    }
    smoe_st_entry out[2 + SMOE_LAYER_PARAM_COUNT];
    char names[SMOE_LAYER_PARAM_COUNT][128];
    int count = 0;
    out[count++] = (smoe_st_entry){"y", SMOE_F32, 3, {b, m, ls.d}, y};
    if (dyt) {
        out[count++] = (smoe_st_entry){"grad.x", SMOE_F32, 3, {b, m, ls.d}, dx};
        for (int i = 0; i < SMOE_LAYER_PARAM_COUNT; i++) {
            snprintf(names[i], sizeof names[i], "grad.%s", smoe_layer_param_name(i));
            out[count] = (smoe_st_entry){names[i], SMOE_F32, pndim[i], {0}, grads[i]};
            memcpy(out[count].shape, pshape[i], sizeof pshape[i]);
            count++;
        }
    }
    if (smoe_st_write(o->output, out, count, NULL, 0, &err)) {
        fprintf(stderr, "softmoe run: %s\n", err.msg);
        goto done;
    }
    rc = 0;
done:
    free(x), free(dy), free(y), free(dx);
    for (int i = 0; i < SMOE_LAYER_PARAM_COUNT; i++) free(grads[i]);
    return rc;
}

/* softmoe run on a ViT: images [b, c, H, W] (and labels [b] int32) in; logits (and loss and
 * grad.*) out. */
static int run_vit_file(smoe_context *ctx, smoe_model *model, const run_opts *o, const smoe_st_file *in)
{
    smoe_vit_config c;
    smoe_vit_get_config(model, &c);
    smoe_err err;
    const smoe_st_tensor *it = smoe_st_find(in, "images");
    if (!it || it->ndim != 4 || it->shape[0] < 1 || it->shape[0] > 65536) {
        fprintf(stderr, "softmoe run: %s: tensor \"images\" %s; expected F32 [b, %d, %d, %d]\n", o->input,
                it ? "has the wrong shape" : "is missing", c.channels, c.image_size, c.image_size);
        return 1;
    }
    int b = (int)it->shape[0];
    int64_t ishape[4] = {b, c.channels, c.image_size, c.image_size};
    if (smoe_st_expect_f32(in, "images", 4, ishape, &it, &err)) {
        fprintf(stderr, "softmoe run: %s: %s\n", o->input, err.msg);
        return 1;
    }
    const smoe_st_tensor *lt = smoe_st_find(in, "labels");
    if (lt && (lt->dtype != SMOE_I32 || lt->ndim != 1 || lt->shape[0] != b)) {
        fprintf(stderr, "softmoe run: %s: tensor \"labels\" must be I32 [%d]\n", o->input, b);
        return 1;
    }
    size_t per = (size_t)c.channels * c.image_size * c.image_size;
    int np = smoe_model_param_count(model);
    float *images = malloc(per * (size_t)b * 4), *logits = malloc((size_t)b * c.num_classes * 4);
    int32_t *labels = lt ? malloc((size_t)b * 4) : NULL;
    float **grads = calloc((size_t)np, sizeof *grads);
    smoe_st_entry *out = calloc((size_t)np + 2, sizeof *out);
    char (*names)[128] = calloc((size_t)np, sizeof *names);
    int rc = 1, count = 0;
    float loss = 0;
    if (!images || !logits || (lt && !labels) || !grads || !out || !names) {
        fprintf(stderr, "softmoe run: out of memory\n");
        goto done;
    }
    if (smoe_st_copy_f32(it, images, &err)) {
        fprintf(stderr, "softmoe run: %s: %s\n", o->input, err.msg);
        goto done;
    }
    if (lt) memcpy(labels, lt->data, (size_t)b * 4);
    smoe_status st = lt ? smoe_vit_loss_grads(model, b, images, labels, &loss, logits) : smoe_vit_infer(model, b, images, logits);
    if (st) {
        cli_fail(ctx, st, "running the model");
        goto done;
    }
    out[count++] = (smoe_st_entry){"logits", SMOE_F32, 2, {b, c.num_classes}, logits};
    if (lt) {
        out[count++] = (smoe_st_entry){"loss", SMOE_F32, 1, {1}, &loss};
        for (int i = 0; i < np; i++) {
            smoe_param_info info;
            smoe_model_param_info(model, i, &info);
            grads[i] = malloc(info.count * 4);
            if (!grads[i] || smoe_model_get_grad(model, i, grads[i])) {
                fprintf(stderr, "softmoe run: reading gradients: %s\n", smoe_last_error(ctx));
                goto done;
            }
            snprintf(names[i], sizeof names[i], "grad.%s", info.name);
            out[count] = (smoe_st_entry){names[i], SMOE_F32, info.ndim ? info.ndim : 1, {1}, grads[i]};
            for (int k = 0; k < info.ndim; k++) out[count].shape[k] = info.shape[k];
            count++;
        }
    }
    if (smoe_st_write(o->output, out, count, NULL, 0, &err)) {
        fprintf(stderr, "softmoe run: %s\n", err.msg);
        goto done;
    }
    rc = 0;
done:
    for (int i = 0; grads && i < np; i++) free(grads[i]);
    free(grads), free(out), free(names), free(images), free(logits), free(labels);
    return rc;
}

int cmd_run(int argc, char **argv)
{
    run_opts o;
    int rc = parse_run(argc, argv, &o);
    if (rc) return rc;
    smoe_err err;
    smoe_st_file in;
    if (smoe_st_read_file(o.input, &in, &err)) {
        fprintf(stderr, "softmoe run: %s\n", err.msg);
        return 1;
    }
    smoe_context *ctx = cli_open(o.device);
    if (!ctx) {
        smoe_st_free(&in);
        return 1;
    }
    smoe_model *model = NULL;
    int kept, experts;
    smoe_status st = smoe_model_load_file(ctx, o.model, &model);
    if (st) rc = cli_fail(ctx, st, "loading the model");
    else if (cli_keep_apply(ctx, model, &o.keep, &kept, &experts)) rc = 1;
    else if (kept < experts && (smoe_st_find(&in, "dy") || smoe_st_find(&in, "labels"))) {
        fprintf(stderr, "softmoe run: --keep-experts is for inference, but %s has \"%s\" for gradients, which need all experts\n",
                o.input, smoe_st_find(&in, "dy") ? "dy" : "labels");
        rc = 1;
    } else if (smoe_model_get_kind(model) == SMOE_MODEL_VIT) rc = run_vit_file(ctx, model, &o, &in);
    else rc = run_layer_file(ctx, model, &o, &in);
    smoe_st_free(&in);
    return cli_close(ctx, rc);
}
