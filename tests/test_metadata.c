/* User metadata of a model (smoe_model_set_metadata / smoe_model_get_metadata): the rules on keys
 * and values, the count limit, and the round trip through save and load (file and memory, model
 * and checkpoint, ViT and layer); a file whose own keys break the rules is refused on load. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safetensors.h"
#include "softmoe.h"
#include "test_util.h"

static const char *get(const smoe_model *m, const char *key)
{
    const char *v = (const char *)1;
    CHECK(smoe_model_get_metadata(m, key, &v) == SMOE_OK);
    return v;
}

static void rules(smoe_context *ctx, smoe_model *m)
{
    CHECK(get(m, "absent") == NULL);
    CHECK(smoe_model_set_metadata(m, "classes", "cat,dog") == SMOE_OK);
    CHECK(!strcmp(get(m, "classes"), "cat,dog"));
    CHECK(smoe_model_set_metadata(m, "classes", "ant,bee") == SMOE_OK); /* replaces */
    CHECK(!strcmp(get(m, "classes"), "ant,bee"));
    CHECK(smoe_model_set_metadata(m, "note", "") == SMOE_OK);
    CHECK(!strcmp(get(m, "note"), ""));
    CHECK(smoe_model_set_metadata(m, "note", NULL) == SMOE_OK); /* removes */
    CHECK(get(m, "note") == NULL);
    CHECK(smoe_model_set_metadata(m, "note", NULL) == SMOE_OK); /* removing an absent key */
    CHECK(smoe_model_set_metadata(m, "caf\xc3\xa9", "\xe2\x82\xac 5") == SMOE_OK); /* UTF-8 */
    CHECK(smoe_model_set_metadata(m, "softmoe.kind", "layer") == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK_MSG(strstr(smoe_last_error(ctx), "softmoe.kind") != NULL, "%s", smoe_last_error(ctx));
    CHECK(smoe_model_set_metadata(m, "softmoe.mine", "x") == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK(get(m, "softmoe.kind") == NULL); /* the library's keys are not user metadata */
    CHECK(smoe_model_set_metadata(m, "", "x") == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK(smoe_model_set_metadata(m, NULL, "x") == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK(smoe_model_set_metadata(NULL, "k", "x") == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK(smoe_model_set_metadata(m, "tab\tkey", "x") == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK(smoe_model_set_metadata(m, "bad\xc3", "x") == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK(smoe_model_set_metadata(m, "k", "bad \xff value") == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK(smoe_model_set_metadata(m, "k", "\xed\xa0\x80") == SMOE_ERROR_INVALID_ARGUMENT); /* a surrogate */
    CHECK(smoe_model_get_metadata(m, "k", NULL) == SMOE_ERROR_INVALID_ARGUMENT);
    char key[SMOE_METADATA_MAX_KEY + 2];
    memset(key, 'k', sizeof key);
    key[SMOE_METADATA_MAX_KEY] = 0;
    CHECK(smoe_model_set_metadata(m, key, "longest key") == SMOE_OK);
    key[SMOE_METADATA_MAX_KEY] = 'k', key[SMOE_METADATA_MAX_KEY + 1] = 0;
    CHECK(smoe_model_set_metadata(m, key, "x") == SMOE_ERROR_INVALID_ARGUMENT);
    char *value = malloc(SMOE_METADATA_MAX_VALUE + 2);
    CHECK(value != NULL);
    if (value) {
        memset(value, 'v', SMOE_METADATA_MAX_VALUE + 1);
        value[SMOE_METADATA_MAX_VALUE] = 0;
        CHECK(smoe_model_set_metadata(m, "long", value) == SMOE_OK);
        value[SMOE_METADATA_MAX_VALUE] = 'v', value[SMOE_METADATA_MAX_VALUE + 1] = 0;
        CHECK(smoe_model_set_metadata(m, "long", value) == SMOE_ERROR_INVALID_ARGUMENT);
        CHECK(strlen(get(m, "long")) == SMOE_METADATA_MAX_VALUE); /* a failed set changes nothing */
        free(value);
    }
}

/* Fills the model up to SMOE_METADATA_MAX_ENTRIES keys: one more is refused, replacing is not. */
static void count_limit(smoe_model *m)
{
    int have = 0;
    for (int i = 0; i < SMOE_METADATA_MAX_ENTRIES + 1; i++) {
        char k[32];
        snprintf(k, sizeof k, "key%d", i);
        if (smoe_model_set_metadata(m, k, "v") != SMOE_OK) break;
        have++;
    }
    CHECK(have > 0 && have < SMOE_METADATA_MAX_ENTRIES + 1);
    CHECK(smoe_model_set_metadata(m, "key0", "replaced") == SMOE_OK);
    CHECK(smoe_model_set_metadata(m, "one-too-many", "v") == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK(smoe_model_set_metadata(m, "key0", NULL) == SMOE_OK);
    CHECK(smoe_model_set_metadata(m, "one-too-many", "v") == SMOE_OK);
    for (int i = 0; i < SMOE_METADATA_MAX_ENTRIES + 1; i++) {
        char k[32];
        snprintf(k, sizeof k, "key%d", i);
        smoe_model_set_metadata(m, k, NULL);
    }
    CHECK(smoe_model_set_metadata(m, "one-too-many", NULL) == SMOE_OK);
}

static char *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    if (f && !fseek(f, 0, SEEK_END)) {
        long n = ftell(f);
        if (n > 0 && !fseek(f, 0, SEEK_SET) && (buf = malloc((size_t)n)) && fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        }
        *size = (size_t)(n > 0 ? n : 0);
    }
    if (f) fclose(f);
    return buf;
}

/* Saved and loaded again (from the file and from memory), the pairs come back. */
static void round_trip(smoe_context *ctx, smoe_model *m, const char *path, int with_optimizer)
{
    CHECK(smoe_model_save(m, path, with_optimizer) == SMOE_OK);
    smoe_model *back = NULL;
    CHECK_MSG(smoe_model_load_file(ctx, path, &back) == SMOE_OK, "%s", smoe_last_error(ctx));
    if (back) {
        CHECK(!strcmp(get(back, "classes"), "ant,bee"));
        CHECK(!strcmp(get(back, "caf\xc3\xa9"), "\xe2\x82\xac 5"));
        CHECK(get(back, "long") && strlen(get(back, "long")) == SMOE_METADATA_MAX_VALUE);
        CHECK(get(back, "note") == NULL);
        CHECK(get(back, "softmoe.kind") == NULL);
        smoe_model_free(back);
    }
    size_t size = 0;
    char *bytes = read_all(path, &size);
    back = NULL;
    CHECK(bytes && smoe_model_load_memory(ctx, bytes, size, &back) == SMOE_OK);
    if (back) CHECK(!strcmp(get(back, "classes"), "ant,bee"));
    smoe_model_free(back);
    free(bytes);
}

/* A file (written here with the library's writer) whose own key breaks the rules. */
static void bad_file(smoe_context *ctx, const char *golden, const char *path)
{
    smoe_st_file f;
    smoe_err err;
    if (smoe_st_read_file(golden, &f, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    smoe_st_entry *e = calloc((size_t)f.count, sizeof *e);
    smoe_st_meta *meta = calloc((size_t)f.meta_count + 1, sizeof *meta);
    for (int i = 0; e && i < f.count; i++) {
        e[i].name = f.tensors[i].name, e[i].dtype = f.tensors[i].dtype, e[i].ndim = f.tensors[i].ndim;
        memcpy(e[i].shape, f.tensors[i].shape, sizeof e[i].shape);
        e[i].data = f.tensors[i].data;
    }
    if (meta) memcpy(meta, f.meta, (size_t)f.meta_count * sizeof *meta);
    char key[] = "bell\a";
    char val[] = "x";
    if (meta) meta[f.meta_count] = (smoe_st_meta){key, val};
    CHECK(e && meta && smoe_st_write(path, e, f.count, meta, f.meta_count + 1, &err) == SMOE_OK);
    smoe_model *m = NULL;
    CHECK(smoe_model_load_file(ctx, path, &m) == SMOE_ERROR_BAD_FORMAT && m == NULL);
    CHECK_MSG(strstr(smoe_last_error(ctx), "control character") != NULL, "%s", smoe_last_error(ctx));
    free(e), free(meta);
    smoe_st_free(&f);
}

int main(int argc, char **argv)
{
    const char *golden = argc > 1 ? argv[1] : "tests/golden";
    smoe_context *ctx = NULL;
    if (smoe_context_create(&ctx) || smoe_context_open_device(ctx, "cpu")) {
        fprintf(stderr, "test_metadata: no context\n");
        return 1;
    }
    char dir[] = "/tmp/softmoe_meta_XXXXXX", path[256], layer_path[512];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    smoe_vit_config c;
    memset(&c, 0, sizeof c);
    c.image_size = 8, c.patch_size = 4, c.channels = 1, c.dim = 8, c.depth = 1, c.heads = 2, c.mlp_dim = 8;
    c.moe_layers[0] = 0, c.moe_count = 1, c.experts = 2, c.slots_per_expert = 1, c.num_classes = 3;
    smoe_model *vit = NULL;
    CHECK(smoe_vit_create(ctx, &c, 1, &vit) == SMOE_OK);
    if (vit) {
        rules(ctx, vit);
        count_limit(vit);
        round_trip(ctx, vit, path, 0);
        /* a checkpoint (with the optimizer's state) keeps them too */
        float images[2 * 64] = {0}, loss = 0;
        int32_t labels[2] = {0, 1};
        smoe_train_config cfg;
        smoe_train_config_default(&cfg);
        CHECK(smoe_vit_train_step(vit, &cfg, 2, images, labels, &loss, NULL) == SMOE_OK);
        round_trip(ctx, vit, path, 1);
    }
    snprintf(layer_path, sizeof layer_path, "%s/layer_b2_m16_d32_n4_p2_h64.model.safetensors", golden);
    smoe_model *layer = NULL;
    CHECK_MSG(smoe_model_load_file(ctx, layer_path, &layer) == SMOE_OK, "%s", smoe_last_error(ctx));
    if (layer) {
        CHECK(get(layer, "classes") == NULL);
        rules(ctx, layer);
        round_trip(ctx, layer, path, 0);
    }
    bad_file(ctx, layer_path, path);
    unlink(path);
    rmdir(dir);
    smoe_context_destroy(ctx);
    return test_finish("test_metadata");
}
