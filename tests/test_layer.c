/* The Soft MoE layer through the public API on both paths: the golden cases (y and every
 * gradient within 1e-4 of each tensor's largest magnitude), CPU vs Vulkan on random shapes
 * including the edge cases, with the kernel variants the device's tables pick and with the
 * others forced, and refusal of malformed model files. */
#define _POSIX_C_SOURCE 200809L
#include "ops/matmul.h"
#include "safetensors.h"
#include "test_vk.h"

#define TOL 1e-4

static const char *golden_dir;
static double worst_golden = 0, worst_random = 0;

static char *path_of(const char *name, const char *suffix)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s.%s.safetensors", golden_dir, name, suffix);
    return buf;
}

static float *read_f32(const smoe_st_file *f, const char *name, size_t *count)
{
    const smoe_st_tensor *t = smoe_st_find(f, name);
    CHECK_MSG(t != NULL, "tensor %s missing", name);
    if (!t) return NULL;
    float *v = malloc(t->nbytes ? t->nbytes : 4);
    smoe_err err;
    CHECK(smoe_st_copy_f32(t, v, &err) == SMOE_OK);
    *count = t->nbytes / 4;
    return v;
}

static void golden_case(const char *device, const char *name)
{
    smoe_context *ctx = test_open(device);
    if (!ctx) return;
    smoe_model *model = NULL;
    smoe_status st = smoe_model_load_file(ctx, path_of(name, "model"), &model);
    CHECK_MSG(st == SMOE_OK, "%s: %s", name, smoe_last_error(ctx));
    smoe_st_file in, ex;
    smoe_err err;
    CHECK(smoe_st_read_file(path_of(name, "input"), &in, &err) == SMOE_OK);
    CHECK(smoe_st_read_file(path_of(name, "expected"), &ex, &err) == SMOE_OK);
    if (model) {
        const smoe_st_tensor *xt = smoe_st_find(&in, "x");
        int b = (int)xt->shape[0], m = (int)xt->shape[1];
        size_t nx, ndy, n;
        float *x = read_f32(&in, "x", &nx), *dy = read_f32(&in, "dy", &ndy);
        float *y = calloc(nx, 4), *dx = calloc(nx, 4), *y2 = calloc(nx, 4);
        float *grads[SMOE_LAYER_PARAM_COUNT];
        for (int i = 0; i < SMOE_LAYER_PARAM_COUNT; i++) {
            char gname[128];
            snprintf(gname, sizeof gname, "grad.%s", smoe_layer_param_name(i));
            grads[i] = calloc(smoe_st_find(&ex, gname)->nbytes / 4 + 1, 4);
        }
        st = smoe_layer_forward_backward(model, b, m, x, dy, y, dx, grads);
        CHECK_MSG(st == SMOE_OK, "%s", smoe_last_error(ctx));
        CHECK(smoe_layer_forward(model, b, m, x, y2) == SMOE_OK);
        struct { const char *name; const float *got; } outs[2 + SMOE_LAYER_PARAM_COUNT] = {{"y", y}, {"grad.x", dx}};
        char names[SMOE_LAYER_PARAM_COUNT][128];
        for (int i = 0; i < SMOE_LAYER_PARAM_COUNT; i++) {
            snprintf(names[i], sizeof names[i], "grad.%s", smoe_layer_param_name(i));
            outs[2 + i].name = names[i];
            outs[2 + i].got = grads[i];
        }
        for (int i = 0; i < 2 + SMOE_LAYER_PARAM_COUNT; i++) {
            float *want = read_f32(&ex, outs[i].name, &n);
            double e = test_rel_err(outs[i].got, want, n);
            if (e > worst_golden) worst_golden = e;
            CHECK_MSG(e <= TOL, "%s on %s: %s relative error %.3g", name, device, outs[i].name, e);
            free(want);
        }
        CHECK_MSG(test_rel_err(y2, y, nx) == 0, "forward-only and forward+backward disagree on y");
        free(x), free(dy), free(y), free(dx), free(y2);
        for (int i = 0; i < SMOE_LAYER_PARAM_COUNT; i++) free(grads[i]);
    }
    smoe_st_free(&in);
    smoe_st_free(&ex);
    test_close(ctx);
}

/* A random layer model image: experts differ, scale != 1. */
static uint8_t *random_model(int d, int n, int p, int h, uint64_t *seed, size_t *size)
{
    size_t counts[6] = {(size_t)d * n * p, 1, (size_t)n * h * d, (size_t)n * h, (size_t)n * d * h, (size_t)n * d};
    float *data[6];
    smoe_st_entry e[6];
    int64_t shapes[6][3] = {{d, n, p}, {1}, {n, h, d}, {n, h}, {n, d, h}, {n, d}};
    int ndims[6] = {3, 1, 3, 2, 3, 2};
    float scales[6] = {1.0f, 0, 1.0f / sqrtf((float)d), 0.1f, 1.0f / sqrtf((float)h), 0.1f};
    for (int i = 0; i < 6; i++) {
        data[i] = malloc(counts[i] * 4);
        for (size_t k = 0; k < counts[i]; k++) data[i][k] = scales[i] * test_rand(seed);
        e[i].name = smoe_layer_param_name(i);
        e[i].dtype = SMOE_F32;
        e[i].ndim = ndims[i];
        memcpy(e[i].shape, shapes[i], sizeof shapes[i]);
        e[i].data = data[i];
    }
    data[1][0] = 1.7f;
    smoe_st_meta meta = {"softmoe.kind", "layer"};
    uint8_t *img = NULL;
    smoe_err err;
    CHECK(smoe_st_serialize(e, 6, &meta, 1, &img, size, &err) == SMOE_OK);
    for (int i = 0; i < 6; i++) free(data[i]);
    return img;
}

static void random_shape(smoe_context *cpu, smoe_context *vk, int b, int m, int d, int n, int p, int h, uint64_t seed)
{
    size_t size;
    uint8_t *img = random_model(d, n, p, h, &seed, &size);
    smoe_model *mc = NULL, *mv = NULL;
    CHECK_MSG(smoe_model_load_memory(cpu, img, size, &mc) == SMOE_OK, "%s", smoe_last_error(cpu));
    CHECK_MSG(smoe_model_load_memory(vk, img, size, &mv) == SMOE_OK, "%s", smoe_last_error(vk));
    free(img);
    if (!mc || !mv) return;
    size_t io = (size_t)b * m * d;
    float *x = malloc(io * 4), *dy = malloc(io * 4);
    for (size_t i = 0; i < io; i++) {
        x[i] = 2.0f * test_rand(&seed);
        dy[i] = test_rand(&seed);
    }
    float *out[2][2 + SMOE_LAYER_PARAM_COUNT];
    size_t counts[2 + SMOE_LAYER_PARAM_COUNT] = {io, io, (size_t)d * n * p, 1, (size_t)n * h * d, (size_t)n * h,
                                                 (size_t)n * d * h, (size_t)n * d};
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < 2 + SMOE_LAYER_PARAM_COUNT; i++) out[k][i] = calloc(counts[i], 4);
        smoe_model *md = k ? mv : mc;
        smoe_status st = smoe_layer_forward_backward(md, b, m, x, dy, out[k][0], out[k][1], out[k] + 2);
        CHECK_MSG(st == SMOE_OK, "%s", smoe_last_error(k ? vk : cpu));
    }
    const char *names[] = {"y", "dx", "phi", "scale", "fc1.w", "fc1.b", "fc2.w", "fc2.b"};
    for (int i = 0; i < 2 + SMOE_LAYER_PARAM_COUNT; i++) {
        double e = test_rel_err(out[1][i], out[0][i], counts[i]);
        if (e > worst_random) worst_random = e;
        CHECK_MSG(e <= TOL, "b=%d m=%d d=%d n=%d p=%d h=%d: %s differs by %.3g", b, m, d, n, p, h, names[i], e);
    }
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 2 + SMOE_LAYER_PARAM_COUNT; i++) free(out[k][i]);
    free(x);
    free(dy);
    smoe_model_free(mc);
    smoe_model_free(mv);
}

static void random_shapes(void)
{
    smoe_context *cpu = test_open("cpu"), *vk = test_open("vulkan");
    if (!cpu || !vk) return;
    /* b, m, d, n, p, h: edge cases first (ones, S < m and S > m, sizes not multiples of tiles) */
    const int shapes[][6] = {
        {1, 1, 1, 1, 1, 1},   {1, 1, 4, 1, 1, 4},   {1, 7, 16, 3, 3, 40},  {2, 16, 32, 4, 2, 64},
        {3, 10, 24, 8, 1, 48}, {1, 5, 8, 16, 2, 8},  {2, 65, 17, 2, 1, 33}, {4, 3, 70, 5, 3, 19},
        {1, 100, 12, 1, 4, 24}, {5, 9, 33, 7, 2, 65}, {2, 64, 64, 8, 8, 64}, {1, 130, 20, 3, 1, 70},
        {6, 17, 9, 11, 1, 13}, {1, 2, 130, 2, 2, 129}, {3, 31, 31, 31, 1, 31}, {2, 50, 40, 1, 1, 160},
        {8, 8, 8, 8, 8, 8},    {1, 256, 16, 4, 4, 16}, {2, 12, 48, 24, 1, 96}, {7, 5, 3, 2, 5, 7},
        {1, 33, 65, 9, 3, 17}, {3, 1, 20, 4, 2, 10},
    };
    uint64_t seed = 0x1234567;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const int *s = shapes[i];
        random_shape(cpu, vk, s[0], s[1], s[2], s[3], s[4], s[5], seed + i);
    }
    test_close(cpu);
    test_close(vk);
}

/* Each matmul shader the device runs (its first usable row) forced, CPU vs Vulkan as above, on a
 * shape whose rows sit at multiples of 4 floats (d = 32) and one whose rows do not (d = 17); then
 * the row kernels in the mode the device did not choose.
 * Every row of every shader is checked on every feature of the family in test_matmul; here each
 * costs a pipeline per product of the layer, compiled at first use (a second on lavapipe). */
static void other_kernels(void)
{
    smoe_context *cpu = test_open("cpu"), *vk = test_open("vulkan");
    if (!cpu || !vk) return;
    smoe_gpu *gpu = &vk->gpu;
    for (uint32_t i = 0; i < smoe_matmul_variant_count(); i++) {
        if (!test_first_of_shader(gpu, i)) continue;
        snprintf(gpu->matmul_variant, sizeof gpu->matmul_variant, "%s", smoe_matmul_variant_name(i));
        random_shape(cpu, vk, 2, 16, 32, 4, 2, 64, 0x77 + i);
        random_shape(cpu, vk, 2, 65, 17, 2, 1, 33, 0x99 + i);
    }
    gpu->matmul_variant[0] = 0;
    /* the norms, softmax statistics and router backward in their other mode too (a workgroup or
     * an invocation per vector) */
    gpu->row_serial = !gpu->row_serial;
    random_shape(cpu, vk, 2, 16, 32, 4, 2, 64, 0x55);
    random_shape(cpu, vk, 3, 31, 31, 31, 1, 31, 0x56);
    gpu->row_serial = !gpu->row_serial;
    test_close(cpu);
    test_close(vk);
}

int main(int argc, char **argv)
{
    golden_dir = argc > 1 ? argv[1] : "tests/golden";
    const char *cases[] = {"layer_b1_m7_d16_n3_p3_h40", "layer_b2_m16_d32_n4_p2_h64", "layer_b3_m10_d24_n8_p1_h48"};
    for (int i = 0; i < 3; i++) {
        golden_case("cpu", cases[i]);
        golden_case("vulkan", cases[i]);
    }
    printf("  worst relative error vs golden: %.3g\n", worst_golden);
    random_shapes();
    printf("  worst relative error CPU vs Vulkan on random shapes: %.3g\n", worst_random);
    other_kernels();
    printf("  worst relative error CPU vs Vulkan with the other kernel variants too: %.3g\n", worst_random);
    return test_finish("test_layer");
}
