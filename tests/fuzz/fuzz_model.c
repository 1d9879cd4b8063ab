/* libFuzzer target: model files (docs/format.md section 3) through smoe_model_load_memory on the CPU path,
 * i.e. the safetensors parser, the metadata, the ViT configuration, the parameter table and the
 * optimizer state of checkpoints. A refused file must leave a documented status, a message and no
 * model; an accepted one must describe itself consistently, give its parameters back, and (when
 * small enough to be quick) run a forward pass, and a ViT a backward pass too. */
#include "fuzz.h"

static void exercise(smoe_context *ctx, smoe_model *m)
{
    int n = smoe_model_param_count(m);
    size_t most = 1, total = 0;
    for (int i = 0; i < n; i++) {
        smoe_param_info info;
        FUZZ_ASSERT(smoe_model_param_info(m, i, &info) == SMOE_OK && info.name && info.ndim >= 0 && info.ndim <= 4,
                    "parameter %d", i);
        size_t count = 1;
        for (int k = 0; k < info.ndim; k++) count *= (size_t)info.shape[k];
        FUZZ_ASSERT(count == info.count, "parameter %s: %zu elements, count %zu", info.name, count, info.count);
        if (info.count > most) most = info.count;
        total += info.count;
    }
    float *buf = malloc(most * 4);
    for (int i = 0; i < n; i++) FUZZ_ASSERT(smoe_model_get_param(m, i, buf) == SMOE_OK, "%s", smoe_last_error(ctx));
    free(buf);
    if (total > (1u << 18)) return;
    if (smoe_model_get_kind(m) == SMOE_MODEL_LAYER) {
        smoe_layer_shape s;
        FUZZ_ASSERT(smoe_layer_get_shape(m, &s) == SMOE_OK, "layer shape");
        enum { b = 1, tokens = 3 };
        size_t io = (size_t)b * tokens * s.d;
        float *x = calloc(io, 4), *y = malloc(io * 4);
        for (size_t i = 0; i < io; i++) x[i] = (float)(i % 7) * 0.25f - 0.75f;
        smoe_status st = smoe_layer_forward(m, b, tokens, x, y);
        FUZZ_ASSERT(st == SMOE_OK, "layer forward: %s", smoe_last_error(ctx));
        free(x), free(y);
        return;
    }
    smoe_vit_config c;
    FUZZ_ASSERT(smoe_vit_get_config(m, &c) == SMOE_OK, "config");
    long tokens = (long)(c.image_size / c.patch_size) * (c.image_size / c.patch_size);
    size_t per = (size_t)c.channels * c.image_size * c.image_size;
    if (tokens * tokens * c.heads > (1 << 16) || tokens * c.dim > (1 << 16) || per > (1 << 16)) return;
    float *images = malloc(per * 4), *logits = malloc((size_t)c.num_classes * 4), loss;
    for (size_t i = 0; i < per; i++) images[i] = (float)(i % 5) * 0.25f;
    int32_t label = c.num_classes - 1;
    smoe_status st = smoe_vit_infer(m, 1, images, logits);
    FUZZ_ASSERT(st == SMOE_OK, "inference: %s", smoe_last_error(ctx));
    st = smoe_vit_loss_grads(m, 1, images, &label, &loss, logits);
    FUZZ_ASSERT(st == SMOE_OK, "gradients: %s", smoe_last_error(ctx));
    free(images), free(logits);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    smoe_context *ctx = fuzz_context();
    size_t n;
    uint8_t *img = fuzz_image(data, size, &n);
    smoe_model *m = (smoe_model *)&m;
    smoe_status st = smoe_model_load_memory(ctx, img, n, &m);
    free(img);
    if (st) {
        FUZZ_ASSERT(m == NULL, "a failed load returned a model");
        fuzz_check_failure(ctx, st, "loading");
        return 0;
    }
    FUZZ_ASSERT(m && ctx->model_count == 1, "a loaded model is not registered");
    exercise(ctx, m);
    smoe_model_free(m);
    FUZZ_ASSERT(ctx->model_count == 0, "a freed model is still registered");
    return 0;
}
