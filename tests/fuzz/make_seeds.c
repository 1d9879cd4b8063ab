/* Writes the generated part of the seed corpus (tests/fuzz/corpus/{model,input}): tiny models and
 * inputs made by the library itself, each as a file and in the readable form the fuzz targets
 * also take (fuzz.h). Run by hand when the formats change: fuzz_make_seeds tests/fuzz/corpus. */
#define _POSIX_C_SOURCE 200809L
#include "fuzz.h"
#include "safetensors.h"

static const char *dir;

static void write_file(const char *sub, const char *name, const uint8_t *data, size_t size)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s/%s", dir, sub, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f)) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

/* The file, and its readable form: header, NUL, data. */
static void write_both(const char *sub, const char *name, const uint8_t *img, size_t size)
{
    char file[256];
    snprintf(file, sizeof file, "%s.safetensors", name);
    write_file(sub, file, img, size);
    uint64_t length = 0;
    for (int i = 7; i >= 0; i--) length = length << 8 | img[i];
    size_t head = (size_t)length, data_at = 8 + (size_t)length;
    while (head && img[8 + head - 1] == ' ') head--; /* the writer's padding */
    uint8_t *readable = malloc(size);
    memcpy(readable, img + 8, head);
    readable[head] = 0;
    memcpy(readable + head + 1, img + data_at, size - data_at);
    snprintf(file, sizeof file, "%s.readable", name);
    write_file(sub, file, readable, head + 1 + size - data_at);
    free(readable);
}

static void save_model(smoe_model *m, const char *name, int with_optimizer)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/model/%s.safetensors", dir, name);
    if (smoe_model_save(m, path, with_optimizer)) abort();
    smoe_st_file f;
    smoe_err err;
    if (smoe_st_read_file(path, &f, &err)) abort();
    write_both("model", name, f.buffer, f.size);
    smoe_st_free(&f);
}

static void serialize(const char *sub, const char *name, const smoe_st_entry *e, int count, const smoe_st_meta *meta,
                      int meta_count)
{
    uint8_t *img;
    size_t size;
    smoe_err err;
    if (smoe_st_serialize(e, count, meta, meta_count, &img, &size, &err)) abort();
    write_both(sub, name, img, size);
    free(img);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_make_seeds CORPUS_DIR\n");
        return 2;
    }
    dir = argv[1];
    smoe_context *ctx = fuzz_context();
    /* ViTs of four 2x2 patches, dim 4: one with a Soft MoE block (and a checkpoint of it after a
     * training step), one dense. */
    smoe_vit_config c = {.image_size = 4, .patch_size = 2, .channels = 1, .dim = 4, .depth = 2, .heads = 2,
                         .mlp_dim = 8, .moe_layers = {1}, .moe_count = 1, .experts = 2, .slots_per_expert = 1,
                         .num_classes = 3};
    smoe_model *m = NULL;
    if (smoe_vit_create(ctx, &c, 1, &m)) abort();
    save_model(m, "vit_moe", 0);
    float images[2 * 16], loss;
    for (int i = 0; i < 32; i++) images[i] = (float)(i % 9) / 8.0f;
    int32_t labels[2] = {0, 2};
    smoe_train_config tc;
    smoe_train_config_default(&tc);
    if (smoe_vit_train_step(m, &tc, 2, images, labels, &loss, NULL)) abort();
    save_model(m, "vit_moe_checkpoint", 1);
    smoe_model_free(m);
    c.moe_count = 0;
    if (smoe_vit_create(ctx, &c, 2, &m)) abort();
    save_model(m, "vit_dense", 0);
    smoe_model_free(m);

    /* A layer with d 4, n 2, p 1, h 3. */
    static float phi[8], scale = 1.5f, w1[24], b1[6], w2[24], b2[8];
    for (int i = 0; i < 24; i++) w1[i] = w2[i] = (float)((i * 7) % 11 - 5) / 10.0f;
    for (int i = 0; i < 8; i++) phi[i] = (float)(i - 4) / 4.0f;
    smoe_st_entry layer[6] = {
        {"phi", SMOE_F32, 3, {4, 2, 1}, phi},  {"scale", SMOE_F32, 1, {1}, &scale},
        {"experts.fc1.weight", SMOE_F32, 3, {2, 3, 4}, w1}, {"experts.fc1.bias", SMOE_F32, 2, {2, 3}, b1},
        {"experts.fc2.weight", SMOE_F32, 3, {2, 4, 3}, w2}, {"experts.fc2.bias", SMOE_F32, 2, {2, 4}, b2},
    };
    smoe_st_meta kind = {"softmoe.kind", "layer"};
    serialize("model", "layer", layer, 6, &kind, 1);

    /* Inputs of the fixed models of fuzz_input: the golden layer (d 16) and the golden ViT (1x8x8). */
    static float x[2 * 16], dy[2 * 16], im[2 * 64];
    for (int i = 0; i < 32; i++) x[i] = dy[i] = (float)(i % 5) / 4.0f - 0.5f;
    for (int i = 0; i < 128; i++) im[i] = (float)(i % 17) / 16.0f;
    smoe_st_entry lin[2] = {{"x", SMOE_F32, 3, {1, 2, 16}, x}, {"dy", SMOE_F32, 3, {1, 2, 16}, dy}};
    serialize("input", "layer_x_dy", lin, 2, NULL, 0);
    serialize("input", "layer_x", lin, 1, NULL, 0);
    smoe_st_entry vin[2] = {{"images", SMOE_F32, 4, {2, 1, 8, 8}, im}, {"labels", SMOE_I32, 1, {2}, labels}};
    serialize("input", "vit_images_labels", vin, 2, NULL, 0);
    serialize("input", "vit_images", vin, 1, NULL, 0);
    smoe_context_destroy(ctx);
    return 0;
}
