/* The Soft MoE layer through the public API on both paths: the golden cases (y and every
 * gradient within 1e-4 of each tensor's largest magnitude), CPU vs Vulkan on random shapes
 * including the edge cases, with the kernel variants the device's tables pick and with the
 * others forced, and refusal of malformed model files. The routing ablation's variants (layer
 * files with "softmoe.dispatch" and "softmoe.combine"): CPU vs Vulkan for each, hand cases whose
 * output is known from the experts alone (uniform dispatch: every slot gets the token mean;
 * identity: every token its own expert's output), a save/load round trip, and refusals. */
#define _POSIX_C_SOURCE 200809L
#include <unistd.h>

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

static const char *const mix_name[3] = {"soft", "uniform", "identity"};

/* A random layer model image: experts differ, scale != 1; "softmoe.dispatch" and
 * "softmoe.combine" in the metadata unless NULL. */
static uint8_t *random_model_named(int d, int n, int p, int h, const char *dispatch, const char *combine, uint64_t *seed,
                                   size_t *size)
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
    smoe_st_meta meta[3] = {{"softmoe.kind", "layer"}};
    int count = 1;
    if (dispatch) meta[count++] = (smoe_st_meta){"softmoe.dispatch", (char *)dispatch};
    if (combine) meta[count++] = (smoe_st_meta){"softmoe.combine", (char *)combine};
    uint8_t *img = NULL;
    smoe_err err;
    CHECK(smoe_st_serialize(e, 6, meta, count, &img, size, &err) == SMOE_OK);
    for (int i = 0; i < 6; i++) free(data[i]);
    return img;
}

/* The same with smoe_mixing values (soft: no key). */
static uint8_t *random_model_mixing(int d, int n, int p, int h, int dispatch, int combine, uint64_t *seed, size_t *size)
{
    return random_model_named(d, n, p, h, dispatch ? mix_name[dispatch] : NULL, combine ? mix_name[combine] : NULL, seed, size);
}

static void random_shape_mixing(smoe_context *cpu, smoe_context *vk, int b, int m, int d, int n, int p, int h, int dispatch,
                                int combine, uint64_t seed)
{
    size_t size;
    uint8_t *img = random_model_mixing(d, n, p, h, dispatch, combine, &seed, &size);
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
        CHECK_MSG(e <= TOL, "b=%d m=%d d=%d n=%d p=%d h=%d %s/%s: %s differs by %.3g", b, m, d, n, p, h, mix_name[dispatch],
                  mix_name[combine], names[i], e);
    }
    /* fixed weights on both sides: phi and the scale have exactly zero gradients on both paths */
    for (int k = 0; k < 2 && dispatch && combine; k++)
        for (int i = 2; i < 4; i++)
            for (size_t j = 0; j < counts[i]; j++)
                CHECK_MSG(out[k][i][j] == 0.0f, "%s/%s: %s[%zu] = %g", mix_name[dispatch], mix_name[combine], names[i], j,
                          out[k][i][j]);
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 2 + SMOE_LAYER_PARAM_COUNT; i++) free(out[k][i]);
    free(x);
    free(dy);
    smoe_model_free(mc);
    smoe_model_free(mv);
}

static void random_shape(smoe_context *cpu, smoe_context *vk, int b, int m, int d, int n, int p, int h, uint64_t seed)
{
    random_shape_mixing(cpu, vk, b, m, d, n, p, h, SMOE_MIX_SOFT, SMOE_MIX_SOFT, seed);
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
        smoe_context *forced = test_open_forced("vulkan", smoe_matmul_variant_name(i));
        if (!forced) continue;
        random_shape(cpu, forced, 2, 16, 32, 4, 2, 64, 0x77 + i);
        random_shape(cpu, forced, 2, 65, 17, 2, 1, 33, 0x99 + i);
        test_close(forced);
    }
    /* the norms, softmax statistics and router backward in their other mode too (a workgroup or
     * an invocation per vector) */
    smoe_context *rows = test_open_other_rows(gpu);
    if (rows) {
        CHECK(rows->gpu.row_serial == !gpu->row_serial);
        random_shape(cpu, rows, 2, 16, 32, 4, 2, 64, 0x55);
        random_shape(cpu, rows, 3, 31, 31, 31, 1, 31, 0x56);
        test_close(rows);
    }
    test_close(cpu);
    test_close(vk);
}

/* ---- The routing ablation ---- */

static const int variants[4][2] = {
    {SMOE_MIX_SOFT, SMOE_MIX_UNIFORM}, {SMOE_MIX_UNIFORM, SMOE_MIX_SOFT},
    {SMOE_MIX_UNIFORM, SMOE_MIX_UNIFORM}, {SMOE_MIX_IDENTITY, SMOE_MIX_IDENTITY},
};

/* CPU vs Vulkan for each variant other than soft/soft (random_shapes), on shapes with n*p = m
 * (identity's) and, for the others, S above and below m and sizes that are multiples of no tile;
 * a soft side with the row kernels in their other mode too. */
static void mixing_variants(void)
{
    smoe_context *cpu = test_open("cpu"), *vk = test_open("vulkan");
    if (!cpu || !vk) return;
    const int square[][6] = {{1, 1, 4, 1, 1, 4}, {2, 8, 16, 4, 2, 24}, {3, 6, 17, 6, 1, 33}, {2, 36, 40, 9, 4, 20}};
    const int other[][6] = {{1, 7, 16, 3, 3, 40}, {2, 65, 17, 2, 1, 33}, {4, 3, 70, 5, 3, 19}};
    uint64_t seed = 0xab1a7e;
    for (int v = 0; v < 4; v++) {
        const int dsp = variants[v][0], cmb = variants[v][1];
        for (size_t i = 0; i < sizeof square / sizeof square[0]; i++) {
            const int *s = square[i];
            random_shape_mixing(cpu, vk, s[0], s[1], s[2], s[3], s[4], s[5], dsp, cmb, seed++);
        }
        for (size_t i = 0; i < sizeof other / sizeof other[0] && dsp != SMOE_MIX_IDENTITY; i++) {
            const int *s = other[i];
            random_shape_mixing(cpu, vk, s[0], s[1], s[2], s[3], s[4], s[5], dsp, cmb, seed++);
        }
    }
    smoe_context *rows = test_open_other_rows(&vk->gpu);
    for (int v = 0; v < 2 && rows; v++)
        random_shape_mixing(cpu, rows, 2, 16, 32, 4, 2, 64, variants[v][0], variants[v][1], seed++);
    test_close(rows);
    test_close(cpu);
    test_close(vk);
}

/* A layer model image from parameter arrays (phi, scale, w1, b1, w2, b2). */
static uint8_t *model_image(int d, int n, int p, int h, float *const prm[6], int dispatch, int combine, size_t *size)
{
    smoe_st_entry e[6];
    int64_t shapes[6][3] = {{d, n, p}, {1}, {n, h, d}, {n, h}, {n, d, h}, {n, d}};
    int ndims[6] = {3, 1, 3, 2, 3, 2};
    for (int i = 0; i < 6; i++) {
        e[i] = (smoe_st_entry){smoe_layer_param_name(i), SMOE_F32, ndims[i], {0}, prm[i]};
        memcpy(e[i].shape, shapes[i], sizeof shapes[i]);
    }
    smoe_st_meta meta[3] = {{"softmoe.kind", "layer"}, {"softmoe.dispatch", (char *)mix_name[dispatch]},
                            {"softmoe.combine", (char *)mix_name[combine]}};
    uint8_t *img = NULL;
    smoe_err err;
    CHECK(smoe_st_serialize(e, 6, meta, 3, &img, size, &err) == SMOE_OK);
    return img;
}

static double gelu64(double a) { return 0.5 * a * (1.0 + tanh(sqrt(2.0 / 3.14159265358979323846) * (a + 0.044715 * a * a * a))); }

/* Expert e's MLP on one row v [d], in double: W2_e gelu(W1_e v + b1_e) + b2_e. */
static void expert64(int d, int h, float *const prm[6], int e, const double *v, double *out)
{
    const float *w1 = prm[2] + (size_t)e * h * d, *b1 = prm[3] + (size_t)e * h;
    const float *w2 = prm[4] + (size_t)e * d * h, *b2 = prm[5] + (size_t)e * d;
    for (int k = 0; k < d; k++) out[k] = b2[k];
    for (int l = 0; l < h; l++) {
        double a = b1[l];
        for (int k = 0; k < d; k++) a += (double)w1[(size_t)l * d + k] * v[k];
        double g = gelu64(a);
        for (int k = 0; k < d; k++) out[k] += (double)w2[(size_t)k * h + l] * g;
    }
}

/* The hand cases, b = 2 sequences of m = 6 tokens, d = 5, n = 3 experts of p = 2 slots (S = m),
 * h = 7, random weights and phi:
 *  - uniform dispatch, soft combine, all experts the same: every slot holds the token mean x̄, so
 *    every slot's output is f(x̄) and every token's output f(x̄), whatever C is;
 *  - uniform dispatch and combine, experts that differ: every token's output is the mean over
 *    the slots of f_e(x̄), e = the slot's expert;
 *  - soft dispatch, uniform combine: every token of a sequence gets the same output;
 *  - identity: token i's output is f_{i div p}(x_i), its own expert's on its own row. */
static void hand_mixing(const char *device)
{
    smoe_context *ctx = test_open(device);
    if (!ctx) return;
    enum { B = 2, M = 6, D = 5, N = 3, P = 2, H = 7 };
    const size_t counts[6] = {D * N * P, 1, N * H * D, N * H, N * D * H, N * D};
    float *prm[6];
    uint64_t seed = 4242;
    for (int i = 0; i < 6; i++) {
        prm[i] = malloc(counts[i] * 4);
        for (size_t k = 0; k < counts[i]; k++) prm[i][k] = 0.6f * test_rand(&seed);
    }
    prm[1][0] = 2.5f;
    float x[B * M * D], y[B * M * D];
    for (int i = 0; i < B * M * D; i++) x[i] = 1.5f * test_rand(&seed);
    double want[B * M * D], mean[B][D], f[D];
    for (int z = 0; z < B; z++)
        for (int k = 0; k < D; k++) {
            mean[z][k] = 0;
            for (int i = 0; i < M; i++) mean[z][k] += x[(z * M + i) * D + k] / (double)M;
        }
    for (int c = 0; c < 4; c++) {
        const int dsp = c == 2 ? SMOE_MIX_SOFT : c == 3 ? SMOE_MIX_IDENTITY : SMOE_MIX_UNIFORM;
        const int cmb = c == 0 ? SMOE_MIX_SOFT : c == 3 ? SMOE_MIX_IDENTITY : SMOE_MIX_UNIFORM;
        float *same[6] = {prm[0], prm[1], prm[2], prm[3], prm[4], prm[5]};
        float *w1 = malloc(counts[2] * 4), *b1 = malloc(counts[3] * 4), *w2 = malloc(counts[4] * 4), *b2 = malloc(counts[5] * 4);
        if (c == 0) { /* every expert expert 0's weights */
            for (int e = 0; e < N; e++) {
                memcpy(w1 + (size_t)e * H * D, prm[2], H * D * 4), memcpy(b1 + (size_t)e * H, prm[3], H * 4);
                memcpy(w2 + (size_t)e * D * H, prm[4], D * H * 4), memcpy(b2 + (size_t)e * D, prm[5], D * 4);
            }
            same[2] = w1, same[3] = b1, same[4] = w2, same[5] = b2;
        }
        for (int z = 0; z < B; z++)
            for (int i = 0; i < M; i++) {
                double *o = want + (size_t)(z * M + i) * D;
                if (c == 0) expert64(D, H, same, 0, mean[z], o);
                if (c == 1) {
                    for (int k = 0; k < D; k++) o[k] = 0;
                    for (int s = 0; s < N * P; s++) {
                        expert64(D, H, same, s / P, mean[z], f);
                        for (int k = 0; k < D; k++) o[k] += f[k] / (N * P);
                    }
                }
                if (c == 3) {
                    double xi[D];
                    for (int k = 0; k < D; k++) xi[k] = x[(z * M + i) * D + k];
                    expert64(D, H, same, i / P, xi, o);
                }
            }
        size_t size;
        uint8_t *img = model_image(D, N, P, H, same, dsp, cmb, &size);
        smoe_model *model = NULL;
        CHECK_MSG(smoe_model_load_memory(ctx, img, size, &model) == SMOE_OK, "%s", smoe_last_error(ctx));
        free(img);
        CHECK_MSG(model && smoe_layer_forward(model, B, M, x, y) == SMOE_OK, "%s", smoe_last_error(ctx));
        double worst = 0, scale = 0;
        for (int i = 0; i < B * M * D; i++) {
            /* the third case: every token of a sequence equals the sequence's first token */
            double w = c == 2 ? y[(i / (M * D)) * M * D + i % D] : want[i];
            if (fabs(w) > scale) scale = fabs(w);
            if (fabs(y[i] - w) > worst) worst = fabs(y[i] - w);
        }
        CHECK_MSG(worst <= 1e-5 * (scale > 1 ? scale : 1), "%s, %s dispatch, %s combine: the hand case is off by %.3g", device,
                  mix_name[dsp], mix_name[cmb], worst);
        printf("  hand case on %s, %s dispatch, %s combine: worst difference %.3g\n", device, mix_name[dsp], mix_name[cmb],
               worst);
        smoe_model_free(model);
        free(w1), free(b1), free(w2), free(b2);
    }
    for (int i = 0; i < 6; i++) free(prm[i]);
    test_close(ctx);
}

/* Layer files with a dispatch and combine: refused where malformed, identity refuses inputs
 * whose tokens are not n*p, and a saved model keeps the setting (the same outputs). */
static void mixing_files(void)
{
    smoe_context *ctx = test_open("cpu");
    if (!ctx) return;
    uint64_t seed = 99;
    size_t size;
    uint8_t *img = random_model_mixing(8, 3, 2, 12, SMOE_MIX_IDENTITY, SMOE_MIX_IDENTITY, &seed, &size);
    smoe_model *m = NULL, *back = NULL;
    CHECK(smoe_model_load_memory(ctx, img, size, &m) == SMOE_OK);
    free(img);
    float x[2 * 7 * 8], y[2 * 7 * 8], y2[2 * 6 * 8];
    for (int i = 0; i < 2 * 7 * 8; i++) x[i] = test_rand(&seed);
    CHECK(m && smoe_layer_forward(m, 2, 7, x, y) == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK_MSG(strstr(smoe_last_error(ctx), "7 tokens for 3 * 2 slots") != NULL, "%s", smoe_last_error(ctx));
    CHECK(m && smoe_layer_forward(m, 2, 6, x, y) == SMOE_OK);
    char dir[] = "/tmp/softmoe_mix_XXXXXX", path[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/layer.safetensors", dir);
    CHECK(m && smoe_model_save(m, path, 0) == SMOE_OK);
    CHECK(smoe_model_load_file(ctx, path, &back) == SMOE_OK);
    CHECK(back && smoe_layer_forward(back, 2, 6, x, y2) == SMOE_OK);
    CHECK_MSG(!memcmp(y, y2, sizeof y2), "the saved identity layer computes something else");
    CHECK(back && smoe_model_set_keep_experts(back, 1, 0) == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(smoe_last_error(ctx), "uniform or identity") != NULL);
    smoe_model_free(m);
    smoe_model_free(back);
    unlink(path);
    rmdir(dir);
    /* mixed identity, and unknown names */
    struct { const char *dispatch, *combine, *word; } bad[] = {
        {"identity", "soft", "on both sides"}, {"uniform", "identity", "on both sides"}, {"hard", "soft", "\"hard\""},
        {"soft", "Uniform", "\"Uniform\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        seed = 5;
        img = random_model_named(4, 2, 1, 4, bad[i].dispatch, bad[i].combine, &seed, &size);
        smoe_model *bm = NULL;
        CHECK(smoe_model_load_memory(ctx, img, size, &bm) == SMOE_ERROR_BAD_FORMAT && bm == NULL);
        CHECK_MSG(strstr(smoe_last_error(ctx), bad[i].word) != NULL, "\"%s\" lacks \"%s\"", smoe_last_error(ctx), bad[i].word);
        free(img);
    }
    test_close(ctx);
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
    hand_mixing("cpu");
    hand_mixing("vulkan");
    mixing_variants();
    printf("  worst relative error CPU vs Vulkan with the routing variants too: %.3g\n", worst_random);
    mixing_files();
    return test_finish("test_layer");
}
