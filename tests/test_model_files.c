/* Malformed model and input files, one case per rule of docs/format.md section 3 beyond the safetensors
 * layer (test_safetensors covers that): each variant of the golden layer and ViT (a tensor missing,
 * one too many, another dtype, a shape that disagrees with the configuration, NaN or Inf in a
 * weight, configuration values zero, negative, absurdly large or inconsistent, optimizer state
 * without its step and the reverse) is refused by smoe_model_load_memory with the expected status
 * and a message naming what is wrong, keeps no model and holds no memory, on the CPU path and on
 * Vulkan; a configuration claiming gigabytes in a small file is refused before anything is
 * allocated. Saving refuses NaN or Inf parameters and leaves the file as it was. Input files are
 * checked the same way through run_model (tools/run_model.c). Last,
 * `softmoe run` (argv[2]) on some of these files exits non-zero with the message on stderr and
 * writes no output file. */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "model.h"
#include "run_model.h"
#include "safetensors.h"
#include "test_vk.h"

enum { MAX_TENSORS = 160 }; /* the golden ViT's checkpoint has 102 */

static const char *golden_dir, *cli;
static char tmpdir[64];

/* A file to change: the golden file's entries and metadata, copied so that they can be edited. */
typedef struct variant {
    smoe_st_file src;
    smoe_st_entry e[MAX_TENSORS];
    void *owned[MAX_TENSORS];
    int count;
    smoe_st_meta meta[4];
    char values[4][1024];
    int meta_count;
} variant;

/* From a golden file, or from the file at an absolute path. */
static int start(variant *v, const char *golden_name)
{
    memset(v, 0, sizeof *v);
    char path[4096];
    smoe_err err;
    if (golden_name[0] == '/') snprintf(path, sizeof path, "%s", golden_name);
    else snprintf(path, sizeof path, "%s/%s", golden_dir, golden_name);
    if (smoe_st_read_file(path, &v->src, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return 0;
    }
    CHECK_MSG(v->src.count <= MAX_TENSORS, "%s: too many tensors", golden_name);
    for (int i = 0; i < v->src.count && i < MAX_TENSORS; i++) {
        const smoe_st_tensor *t = &v->src.tensors[i];
        v->e[v->count++] = (smoe_st_entry){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(v->e[i].shape, t->shape, sizeof t->shape);
    }
    for (int i = 0; i < v->src.meta_count && i < 4; i++) {
        snprintf(v->values[i], sizeof v->values[i], "%s", v->src.meta[i].value);
        v->meta[v->meta_count++] = (smoe_st_meta){v->src.meta[i].key, v->values[i]};
    }
    return 1;
}

static void finish(variant *v)
{
    for (int i = 0; i < MAX_TENSORS; i++) free(v->owned[i]);
    smoe_st_free(&v->src);
}

static smoe_st_entry *entry(variant *v, const char *name)
{
    for (int i = 0; i < v->count; i++)
        if (!strcmp(v->e[i].name, name)) return &v->e[i];
    CHECK_MSG(0, "no tensor %s to change", name);
    return NULL;
}

static void drop(variant *v, const char *name)
{
    smoe_st_entry *e = entry(v, name);
    if (e) *e = v->e[--v->count];
}

/* A writable copy of a tensor's data. */
static float *own(variant *v, smoe_st_entry *e, size_t bytes)
{
    int i = (int)(e - v->e);
    float *copy = malloc(bytes ? bytes : 4);
    memcpy(copy, e->data, bytes);
    free(v->owned[i]);
    v->owned[i] = copy;
    e->data = copy;
    return copy;
}

static size_t count_of(const smoe_st_entry *e)
{
    size_t n = 1;
    for (int k = 0; k < e->ndim; k++) n *= (size_t)e->shape[k];
    return n;
}

static void set_value(variant *v, const char *name, size_t at, float value)
{
    smoe_st_entry *e = entry(v, name);
    if (e) own(v, e, count_of(e) * 4)[at] = value;
}

/* The same values as F64. */
static void to_f64(variant *v, const char *name)
{
    smoe_st_entry *e = entry(v, name);
    if (!e) return;
    size_t n = count_of(e);
    double *d = malloc(n * 8);
    for (size_t i = 0; i < n; i++) d[i] = ((const float *)e->data)[i];
    int i = (int)(e - v->e);
    free(v->owned[i]);
    v->owned[i] = d;
    e->data = d;
    e->dtype = SMOE_F64;
}

static void add(variant *v, const char *name, int ndim, const int64_t *shape)
{
    smoe_st_entry *e = &v->e[v->count++];
    *e = (smoe_st_entry){name, SMOE_F32, ndim, {0}, NULL};
    memcpy(e->shape, shape, (size_t)ndim * sizeof *shape);
    e->data = calloc(count_of(e), 4);
    v->owned[v->count - 1] = (void *)e->data;
}

static void meta(variant *v, const char *key, const char *value)
{
    for (int i = 0; i < v->meta_count; i++)
        if (!strcmp(v->meta[i].key, key)) {
            if (!value) {
                v->meta[i] = v->meta[--v->meta_count];
                memcpy(v->values[i], v->values[v->meta_count], sizeof v->values[i]);
                v->meta[i].value = v->values[i];
            } else {
                snprintf(v->values[i], sizeof v->values[i], "%s", value);
            }
            return;
        }
    if (!value) return;
    snprintf(v->values[v->meta_count], sizeof v->values[0], "%s", value);
    v->meta[v->meta_count] = (smoe_st_meta){(char *)key, v->values[v->meta_count]};
    v->meta_count++;
}

static uint8_t *image(const variant *v, size_t *size)
{
    uint8_t *img = NULL;
    smoe_err err;
    CHECK_MSG(smoe_st_serialize(v->e, v->count, v->meta, v->meta_count, &img, size, &err) == SMOE_OK, "%s", err.msg);
    return img;
}

/* Loads the variant on ctx expecting status and a message with every word. */
static void expect_load(smoe_context *ctx, const variant *v, smoe_status status, const char *word, const char *word2,
                        const char *what)
{
    size_t size;
    uint8_t *img = image(v, &size);
    if (!img) return;
    smoe_model *m = (smoe_model *)&m;
    smoe_status st = smoe_model_load_memory(ctx, img, size, &m);
    const char *msg = smoe_last_error(ctx);
    const char *device = smoe_ctx_gpu(ctx) ? "vulkan" : "cpu";
    CHECK_MSG(st == status, "%s, %s: %s, expected %s (%s)", device, what, smoe_status_string(st), smoe_status_string(status),
              msg);
    CHECK_MSG(strstr(msg, word) && (!word2 || strstr(msg, word2)), "%s, %s: the message \"%s\" lacks \"%s\"%s%s", device,
              what, msg, word, word2 ? " or " : "", word2 ? word2 : "");
    if (st == SMOE_OK) {
        CHECK_MSG(m && ctx->model_count == 1, "%s, %s: no model", device, what);
        smoe_model_free(m);
    }
    CHECK_MSG(st == SMOE_OK || (m == NULL && ctx->model_count == 0), "%s, %s: a model was kept", device, what);
    if (smoe_ctx_gpu(ctx))
        CHECK_MSG(ctx->gpu.memory_count == 0, "%s, %s: %u allocations of device memory left", device, what,
                  ctx->gpu.memory_count);
    free(img);
}

/* One case: v made from file, changed by edit, then loaded expecting status and the words. */
#define CASE(file, edit, status, word, word2, what)          \
    do {                                                     \
        if (start(&v, file)) {                               \
            edit;                                            \
            expect_load(ctx, &v, status, word, word2, what); \
            finish(&v);                                      \
        }                                                    \
    } while (0)

static const char *const vit_config =
    "{\"image_size\": 8, \"patch_size\": 4, \"channels\": 1, \"dim\": 32, \"depth\": 2, \"heads\": 2, \"mlp_dim\": 64, "
    "\"moe_layers\": [1], \"experts\": 4, \"slots_per_expert\": 1, \"num_classes\": 5}";

/* The golden ViT's configuration with one "key": value replaced (value NULL: the key removed). */
static void config_with(variant *v, const char *key, const char *value)
{
    char json[1024], *at;
    snprintf(json, sizeof json, "%s", vit_config);
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\": ", key);
    if ((at = strstr(json, pattern))) {
        char *end = at + strlen(pattern);
        if (*end == '[') end = strchr(end, ']') + 1;
        else end += strcspn(end, ",}");
        char rest[1024];
        snprintf(rest, sizeof rest, "%s", *end == ',' && !value ? end + 2 : end);
        if (value) snprintf(at, sizeof json - (size_t)(at - json), "%s%s%s", pattern, value, rest);
        else snprintf(at, sizeof json - (size_t)(at - json), "%s", rest);
    }
    meta(v, "softmoe.config", json);
}

static void layer_cases(smoe_context *ctx)
{
    const char *file = "layer_b1_m7_d16_n3_p3_h40.model.safetensors"; /* d 16, n 3, p 3, h 40 */
    variant v;
    CASE(file, (void)0, SMOE_OK, "", NULL, "the golden layer itself");
    CASE(file, drop(&v, "experts.fc2.bias"), SMOE_ERROR_BAD_FORMAT, "\"experts.fc2.bias\" is missing", "[3, 16]", "a missing tensor");
    CASE(file, drop(&v, "phi"), SMOE_ERROR_BAD_FORMAT, "\"phi\" is missing", NULL, "phi missing");
    CASE(file, add(&v, "experts.fc3.weight", 1, (const int64_t[]){4}), SMOE_ERROR_BAD_FORMAT,
         "unexpected tensor \"experts.fc3.weight\"", NULL, "an extra tensor");
    CASE(file, to_f64(&v, "experts.fc1.bias"), SMOE_ERROR_BAD_FORMAT, "\"experts.fc1.bias\"", "F64", "a tensor of another dtype");
    CASE(file, (entry(&v, "experts.fc2.bias")->shape[0] = 16, entry(&v, "experts.fc2.bias")->shape[1] = 3), SMOE_ERROR_BAD_FORMAT,
         "\"experts.fc2.bias\" has shape [16, 3]", "expected F32 [3, 16]", "a transposed shape");
    CASE(file, (entry(&v, "phi")->ndim = 2, entry(&v, "phi")->shape[1] = 9), SMOE_ERROR_BAD_FORMAT, "\"phi\" has 2 dimensions",
         NULL, "phi of two dimensions");
    CASE(file, (entry(&v, "experts.fc1.weight")->shape[1] = 20, entry(&v, "experts.fc1.weight")->shape[2] = 32),
         SMOE_ERROR_BAD_FORMAT, "\"experts.fc1.weight\" has shape [3, 20, 32]", "expected F32 [3, 20, 16]",
         "sizes that disagree between tensors");
    CASE(file, set_value(&v, "experts.fc1.weight", 5, NAN), SMOE_ERROR_NOT_FINITE, "\"experts.fc1.weight\"", "index 5",
         "NaN in a weight");
    CASE(file, set_value(&v, "scale", 0, -INFINITY), SMOE_ERROR_NOT_FINITE, "\"scale\"", "index 0", "Inf in the scale");
    CASE(file, meta(&v, "softmoe.kind", NULL), SMOE_ERROR_BAD_FORMAT, "\"softmoe.kind\"", NULL, "no kind");
    CASE(file, meta(&v, "softmoe.kind", "transformer"), SMOE_ERROR_BAD_FORMAT, "unknown model kind \"transformer\"", NULL,
         "an unknown kind");
}

static void vit_cases(smoe_context *ctx)
{
    const char *file = "vit_d32_L2_b3.model.safetensors";
    variant v;
    CASE(file, (void)0, SMOE_OK, "", NULL, "the golden ViT itself");
    CASE(file, config_with(&v, "num_classes", "5"), SMOE_OK, "", NULL, "the configuration as this test writes it");
    CASE(file, drop(&v, "blocks.1.moe.phi"), SMOE_ERROR_BAD_FORMAT, "\"blocks.1.moe.phi\" is missing", "[32, 4, 1]",
         "a missing tensor");
    CASE(file, add(&v, "blocks.2.norm1.weight", 1, (const int64_t[]){32}), SMOE_ERROR_BAD_FORMAT,
         "unexpected tensor \"blocks.2.norm1.weight\"", NULL, "a tensor of a block beyond the depth");
    CASE(file, to_f64(&v, "head.bias"), SMOE_ERROR_BAD_FORMAT, "\"head.bias\"", "F64", "a tensor of another dtype");
    CASE(file, set_value(&v, "blocks.0.attn.qkv.weight", 7, NAN), SMOE_ERROR_NOT_FINITE, "\"blocks.0.attn.qkv.weight\"",
         "index 7", "NaN in a weight");
    CASE(file, set_value(&v, "pos_embed", 3, INFINITY), SMOE_ERROR_NOT_FINITE, "\"pos_embed\"", "index 3", "Inf in a weight");
    /* the configuration */
    CASE(file, meta(&v, "softmoe.config", NULL), SMOE_ERROR_BAD_FORMAT, "\"softmoe.config\"", NULL, "no configuration");
    CASE(file, meta(&v, "softmoe.config", "{\"image_size\": 8,"), SMOE_ERROR_BAD_FORMAT, "config: not a JSON object", NULL,
         "a configuration that is not JSON");
    CASE(file, meta(&v, "softmoe.config", "[8, 4]"), SMOE_ERROR_BAD_FORMAT, "config: not a JSON object", NULL,
         "a configuration that is a list");
    /* one "key": value of the configuration changed (NULL: removed) */
    static const struct {
        const char *key, *value, *word, *what;
    } config[] = {
        {"dim", NULL, "config: \"dim\" is missing", "dim missing"},
        {"dim", "0", "config: dim is 0; it must be between 1 and", "dim zero"},
        {"depth", "-2", "config: depth is -2", "depth negative"},
        {"heads", "0", "config: heads is 0", "heads zero"},
        {"image_size", "1000000000", "config: image_size is 1000000000", "an absurd image size"},
        {"mlp_dim", "1e30", "config: \"mlp_dim\" is not an integer", "an absurd hidden size"},
        {"num_classes", "2.5", "config: \"num_classes\" is not an integer", "a fractional value"},
        {"dim", "\"32\"", "config: \"dim\" is not an integer", "a string value"},
        {"heads", "3", "dim 32 is not divisible by heads 3", "dim not divisible by heads"},
        {"patch_size", "3", "image_size 8 is not divisible by patch_size 3", "image not divisible by patch"},
        {"moe_layers", "[2]", "moe_layers has block 2", "a Soft MoE block beyond the depth"},
        {"moe_layers", "[1, 1]", "block 1 is twice", "a block twice"},
        {"moe_layers", "[1.5]", "moe_layers holds a non-integer", "a fractional block"},
        {"experts", "0", "experts 0", "no experts"},
    };
    for (size_t i = 0; i < sizeof config / sizeof config[0]; i++)
        CASE(file, config_with(&v, config[i].key, config[i].value), SMOE_ERROR_BAD_FORMAT, config[i].word, NULL,
             config[i].what);
    CASE(file, config_with(&v, "num_classes", "6"), SMOE_ERROR_BAD_FORMAT, "\"head.weight\" has shape [5, 32]",
         "expected F32 [6, 32]", "a configuration that disagrees with the tensors");
    CASE(file, config_with(&v, "experts", "8"), SMOE_ERROR_BAD_FORMAT, "\"blocks.1.moe.phi\"", "[32, 8, 1]",
         "more experts than the tensors have");
    /* the experts' own hidden size (absent: mlp_dim, as the golden file's 64) */
    CASE(file, config_with(&v, "num_classes", "5, \"expert_mlp_dim\": 64"), SMOE_OK, "", NULL,
         "expert_mlp_dim given, equal to mlp_dim");
    CASE(file, config_with(&v, "num_classes", "5, \"expert_mlp_dim\": 32"), SMOE_ERROR_BAD_FORMAT,
         "\"blocks.1.moe.experts.fc1.weight\" has shape [4, 64, 32]", "expected F32 [4, 32, 32]",
         "experts' tensors that disagree with expert_mlp_dim");
    CASE(file, config_with(&v, "mlp_dim", "32, \"expert_mlp_dim\": 64"), SMOE_ERROR_BAD_FORMAT, "\"blocks.0.mlp.fc1.weight\"",
         "expected F32 [32, 32]", "dense MLP tensors that disagree with mlp_dim when the experts' size is kept");
    CASE(file, config_with(&v, "num_classes", "5, \"expert_mlp_dim\": -3"), SMOE_ERROR_BAD_FORMAT,
         "config: expert_mlp_dim is -3", NULL, "a negative expert_mlp_dim");
    CASE(file, meta(&v, "softmoe.config",
              "{\"image_size\": 8, \"patch_size\": 4, \"channels\": 1, \"dim\": 4096, \"depth\": 64, \"heads\": 2, "
              "\"mlp_dim\": 16384, \"moe_layers\": [], \"num_classes\": 5}"),
         SMOE_ERROR_BAD_FORMAT, "more than softmoe supports", NULL, "more weights than supported");
    /* optimizer state */
    CASE(file, add(&v, "opt.m.head.bias", 1, (const int64_t[]){5}), SMOE_ERROR_BAD_FORMAT, "unexpected tensor \"opt.m.head.bias\"",
         "softmoe.step", "optimizer state without its step");
    CASE(file, meta(&v, "softmoe.step", "3"), SMOE_ERROR_BAD_FORMAT, "\"opt.m.", "is missing", "a step without optimizer state");
    CASE(file, meta(&v, "softmoe.step", "-1"), SMOE_ERROR_BAD_FORMAT, "\"opt.m.", "is missing", "a negative step");
}

/* Checkpoints: the step and the moments. */
static void checkpoint_cases(smoe_context *ctx)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/vit_d32_L2_b3.model.safetensors", golden_dir);
    smoe_model *m = NULL;
    CHECK(smoe_model_load_file(ctx, path, &m) == SMOE_OK);
    if (!m) return;
    float images[3 * 64] = {0}, loss;
    int32_t labels[3] = {0, 1, 2};
    smoe_train_config tc;
    smoe_train_config_default(&tc);
    CHECK(smoe_vit_train_step(m, &tc, 3, images, labels, &loss, NULL) == SMOE_OK);
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", tmpdir);
    CHECK(smoe_model_save(m, path, 1) == SMOE_OK);
    smoe_model_free(m);
    variant v;
    CASE(path, (void)0, SMOE_OK, "", NULL, "the checkpoint itself");
    CASE(path, meta(&v, "softmoe.step", "abc"), SMOE_ERROR_BAD_FORMAT, "softmoe.step \"abc\" is not a step count", NULL,
         "a step that is no number");
    CASE(path, meta(&v, "softmoe.step", "-1"), SMOE_ERROR_BAD_FORMAT, "softmoe.step \"-1\"", NULL, "a negative step");
    CASE(path, meta(&v, "softmoe.step", "99999999999999999999"), SMOE_ERROR_BAD_FORMAT, "is not a step count", NULL,
         "an absurd step");
    CASE(path, meta(&v, "softmoe.step", NULL), SMOE_ERROR_BAD_FORMAT, "optimizer state needs \"softmoe.step\"", NULL,
         "moments without the step");
    CASE(path, drop(&v, "opt.v.head.bias"), SMOE_ERROR_BAD_FORMAT, "\"opt.v.head.bias\" is missing", NULL, "a moment missing");
    CASE(path, set_value(&v, "opt.m.pos_embed", 2, NAN), SMOE_ERROR_NOT_FINITE, "\"opt.m.pos_embed\"", NULL, "a NaN moment");
    unlink(path);
}

/* Saving refuses parameters that are not finite and leaves the file as it was. */
static void save_not_finite(smoe_context *ctx)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/vit_d32_L2_b3.model.safetensors", golden_dir);
    smoe_model *m = NULL;
    CHECK(smoe_model_load_file(ctx, path, &m) == SMOE_OK);
    if (!m) return;
    snprintf(path, sizeof path, "%s/saved.safetensors", tmpdir);
    CHECK(smoe_model_save(m, path, 0) == SMOE_OK);
    size_t before = 0, after = 0;
    struct stat s;
    if (stat(path, &s) == 0) before = (size_t)s.st_size;
    int i = smoe_model_find_param(m, "blocks.1.moe.scale");
    float inf = INFINITY;
    smoe_err err;
    CHECK(i >= 0 && smoe_tensor_upload(&m->params[i].value, 0, &inf, 4, &err) == SMOE_OK);
    CHECK(smoe_model_save(m, path, 0) == SMOE_ERROR_NOT_FINITE);
    CHECK_MSG(strstr(smoe_last_error(ctx), "blocks.1.moe.scale[0] is infinite") && strstr(smoe_last_error(ctx), "not saving"),
              "%s", smoe_last_error(ctx));
    if (stat(path, &s) == 0) after = (size_t)s.st_size;
    CHECK_MSG(before && after == before, "the file was changed");
    smoe_model *back = NULL;
    CHECK(smoe_model_load_file(ctx, path, &back) == SMOE_OK);
    smoe_model_free(back);
    smoe_model_free(m);
    unlink(path);
}

/* The configuration of a 3.4 GB model in a file of a few hundred bytes: refused quickly, nothing
 * allocated for it (the regression input of tests/fuzz). */
static void config_larger_than_file(smoe_context *ctx)
{
    variant v;
    if (!start(&v, "vit_d32_L2_b3.model.safetensors")) return;
    v.count = 0;
    meta(&v, "softmoe.config",
         "{\"image_size\": 8, \"patch_size\": 4, \"channels\": 1, \"dim\": 1024, \"depth\": 40, \"heads\": 2, "
         "\"mlp_dim\": 8192, \"moe_layers\": [], \"num_classes\": 5}");
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, before = 0, after = 0;
    if (f) {
        CHECK(fscanf(f, "%lu %lu", &size, &before) == 2);
        fclose(f);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    expect_load(ctx, &v, SMOE_ERROR_BAD_FORMAT, "\"patch_embed.proj.weight\" is missing", NULL, "a huge configuration");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    f = fopen("/proc/self/statm", "r");
    if (f) {
        CHECK(fscanf(f, "%lu %lu", &size, &after) == 2);
        fclose(f);
    }
    double seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    long grown = ((long)after - (long)before) * sysconf(_SC_PAGESIZE);
    CHECK_MSG(seconds < 1.0 && grown < (64l << 20), "a huge configuration took %.2f s and %ld bytes", seconds, grown);
    finish(&v);
}

/* Input files of softmoe run, through run_model against the golden models. */
static void expect_input(smoe_context *ctx, smoe_model *m, const variant *v, smoe_status status, const char *word,
                         const char *what)
{
    size_t size;
    uint8_t *img = image(v, &size);
    smoe_st_file in;
    smoe_err err = {{0}};
    if (!img || smoe_st_parse(img, size, &in, &err)) {
        CHECK_MSG(0, "%s: %s", what, err.msg);
        free(img);
        return;
    }
    run_outputs out;
    smoe_status st = run_model(ctx, m, &in, "in.safetensors", &out, &err);
    CHECK_MSG(st == status, "%s: %s, expected %s (%s)", what, smoe_status_string(st), smoe_status_string(status), err.msg);
    CHECK_MSG(st == SMOE_OK || (strstr(err.msg, word) && out.count == 0), "%s: \"%s\" lacks \"%s\"", what, err.msg, word);
    if (st == SMOE_OK) run_outputs_free(&out);
    smoe_st_free(&in);
    free(img);
}

static void input_cases(smoe_context *ctx)
{
    char path[4096];
    smoe_model *layer = NULL, *vit = NULL;
    snprintf(path, sizeof path, "%s/layer_b1_m7_d16_n3_p3_h40.model.safetensors", golden_dir);
    CHECK(smoe_model_load_file(ctx, path, &layer) == SMOE_OK);
    snprintf(path, sizeof path, "%s/vit_d32_L2_b3.model.safetensors", golden_dir);
    CHECK(smoe_model_load_file(ctx, path, &vit) == SMOE_OK);
    if (!layer || !vit) return;
    variant v;
#define INPUT_CASE(m, file, edit, status, word, what)            \
    do {                                                  \
        if (start(&v, file)) {                            \
            edit;                                         \
            expect_input(ctx, m, &v, status, word, what); \
            finish(&v);                                   \
        }                                                 \
    } while (0)
    const char *li = "layer_b1_m7_d16_n3_p3_h40.input.safetensors", *vi = "vit_d32_L2_b3.input.safetensors";
    INPUT_CASE(layer, li, (void)0, SMOE_OK, "", "the golden layer input");
    INPUT_CASE(layer, li, drop(&v, "x"), SMOE_ERROR_BAD_FORMAT, "in.safetensors: tensor \"x\" is missing", "x missing");
    INPUT_CASE(layer, li, entry(&v, "x")->shape[2] = 8, SMOE_ERROR_BAD_FORMAT, "expected F32 [b, m, 16]", "x of another d");
    INPUT_CASE(layer, li, entry(&v, "dy")->shape[1] = 6, SMOE_ERROR_BAD_FORMAT, "\"dy\"", "dy of another shape");
    INPUT_CASE(layer, li, to_f64(&v, "dy"), SMOE_ERROR_BAD_FORMAT, "\"dy\"", "dy as F64");
    INPUT_CASE(layer, li, add(&v, "labels", 1, (const int64_t[]){1}), SMOE_ERROR_BAD_FORMAT, "unexpected tensor \"labels\"",
         "an extra tensor");
    INPUT_CASE(layer, li, set_value(&v, "x", 9, NAN), SMOE_ERROR_NOT_FINITE, "\"x\"", "NaN in x");
    INPUT_CASE(vit, vi, (void)0, SMOE_OK, "", "the golden ViT input");
    INPUT_CASE(vit, vi, drop(&v, "images"), SMOE_ERROR_BAD_FORMAT, "tensor \"images\" is missing", "images missing");
    INPUT_CASE(vit, vi, (entry(&v, "images")->shape[0] = 1, entry(&v, "images")->shape[1] = 3), SMOE_ERROR_BAD_FORMAT,
         "expected F32 [1, 1, 8, 8]", "images of three channels");
    INPUT_CASE(vit, vi, entry(&v, "labels")->dtype = SMOE_F32, SMOE_ERROR_BAD_FORMAT, "\"labels\" must be I32 [3]",
         "labels as F32");
    INPUT_CASE(vit, vi, add(&v, "dy", 1, (const int64_t[]){2}), SMOE_ERROR_BAD_FORMAT, "unexpected tensor \"dy\"",
         "an extra tensor");
    INPUT_CASE(vit, vi, set_value(&v, "images", 100, INFINITY), SMOE_ERROR_NOT_FINITE, "\"images\"", "Inf in images");
    INPUT_CASE(vit, vi, ((int32_t *)own(&v, entry(&v, "labels"), 12))[1] = 7, SMOE_ERROR_INVALID_ARGUMENT, "labels[1] is 7",
         "a label beyond the classes");
    smoe_model_free(layer);
    smoe_model_free(vit);
}

/* softmoe run ARGS with stderr to a file: the exit status. */
static int run_cli(const char *model, const char *input, const char *output, const char *err_path)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) dup2(fd, 2);
        execl(cli, cli, "run", "--device", "cpu", "--model", model, "--input", input, "--output", output, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void write_variant(const variant *v, const char *path)
{
    size_t size;
    uint8_t *img = image(v, &size);
    FILE *f = fopen(path, "wb");
    CHECK(img && f && fwrite(img, 1, size, f) == size);
    if (f) fclose(f);
    free(img);
}

static void cli_cases(void)
{
    char model[128], input[128], output[128], errs[128], good_model[4096], good_input[4096];
    snprintf(model, sizeof model, "%s/model.safetensors", tmpdir);
    snprintf(input, sizeof input, "%s/input.safetensors", tmpdir);
    snprintf(output, sizeof output, "%s/output.safetensors", tmpdir);
    snprintf(errs, sizeof errs, "%s/stderr.txt", tmpdir);
    snprintf(good_model, sizeof good_model, "%s/vit_d32_L2_b3.model.safetensors", golden_dir);
    snprintf(good_input, sizeof good_input, "%s/vit_d32_L2_b3.input.safetensors", golden_dir);
    struct {
        int model; /* the variant is of the model (else of the input) */
        const char *tensor, *word, *what;
    } cases[] = {
        {1, "blocks.1.moe.scale", "\"blocks.1.moe.scale\"", "a NaN weight"},
        {1, NULL, "unexpected tensor \"extra\"", "an extra tensor in the model"},
        {0, "images", "\"images\"", "a NaN in the images"},
        {0, NULL, "unexpected tensor \"extra\"", "an extra tensor in the input"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        variant v;
        if (!start(&v, cases[i].model ? "vit_d32_L2_b3.model.safetensors" : "vit_d32_L2_b3.input.safetensors")) continue;
        if (cases[i].tensor) set_value(&v, cases[i].tensor, 0, NAN);
        else add(&v, "extra", 1, (const int64_t[]){1});
        write_variant(&v, cases[i].model ? model : input);
        finish(&v);
        int rc = run_cli(cases[i].model ? model : good_model, cases[i].model ? good_input : input, output, errs);
        size_t n = 0;
        char text[4096] = "";
        FILE *f = fopen(errs, "r");
        if (f) {
            n = fread(text, 1, sizeof text - 1, f);
            fclose(f);
        }
        text[n] = 0;
        struct stat s;
        CHECK_MSG(rc != 0 && rc != 127, "softmoe run, %s: exit status %d", cases[i].what, rc);
        CHECK_MSG(strstr(text, cases[i].word), "softmoe run, %s: stderr \"%s\" lacks \"%s\"", cases[i].what, text,
                  cases[i].word);
        CHECK_MSG(stat(output, &s) != 0, "softmoe run, %s: an output file was written", cases[i].what);
        unlink(output);
    }
    /* and the unchanged files work */
    CHECK(run_cli(good_model, good_input, output, errs) == 0);
    unlink(output), unlink(model), unlink(input), unlink(errs);
}

int main(int argc, char **argv)
{
    golden_dir = argc > 1 ? argv[1] : "tests/golden";
    cli = argc > 2 ? argv[2] : NULL;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/softmoe_model_files_XXXXXX");
    CHECK(mkdtemp(tmpdir) != NULL);
    const char *devices[] = {"cpu", "vulkan"};
    for (int d = 0; d < 2; d++) {
        smoe_context *ctx = test_open(devices[d]);
        if (!ctx) continue;
        layer_cases(ctx);
        vit_cases(ctx);
        config_larger_than_file(ctx);
        test_close(ctx);
    }
    smoe_context *ctx = test_open("cpu");
    if (ctx) {
        checkpoint_cases(ctx);
        save_not_finite(ctx);
        input_cases(ctx);
    }
    test_close(ctx);
    if (cli) cli_cases();
    else CHECK_MSG(0, "usage: test_model_files GOLDEN_DIR SOFTMOE_BINARY");
    CHECK_MSG(rmdir(tmpdir) == 0, "%s not empty", tmpdir);
    return test_finish("test_model_files");
}
