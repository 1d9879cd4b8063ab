/* softmoe bench: the Soft MoE layer (forward, forward+backward) on the paper's shapes and ViT
 * throughput, on every device asked for, side by side, as ratios to the CPU path and fractions of
 * each device's measured peak; with --routers also the sparse MoE layers (Tokens Choice K=1 and
 * K=2, Experts Choice) with the same experts and as many expert rows as Soft MoE's slots. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define BENCH_X86 1
#endif
#include <omp.h>

#include "bench.h"
#include "cli.h"
#include "context.h"
#include "ops/sparse_moe_layer.h"
#include "pipeline.h"
#include "profile.h"
#include "record.h"
#include "safetensors.h"

#define MAX_DEVICES 8
#define MAX_SHAPES 32
#define MAX_EXPERT_COUNTS 16

typedef struct bench_opts {
    const char *devices[MAX_DEVICES];
    int ndev;
    int shapes[MAX_SHAPES][5];
    int nshape;
    int matmuls[MAX_SHAPES][5]; /* M, N, K, trans_a, trans_b */
    int nmatmul;
    int json, repeat, skip_vit, vit_only, vit_batch, keep_sweep, routers, profile;
    const char *vit_model;
    const char *variant; /* --variant: the one matmul variant --matmul times */
    int experts[MAX_EXPERT_COUNTS]; /* --experts: each shape at these expert counts, same slot count */
    int nexperts;
    const char *csv; /* --csv: every layer measurement as a CSV row */
} bench_opts;

/* --experts N,N,...: every --shape (b,m,d,n,p) becomes one shape per expert count n' that divides
 * its slot count n*p, with p' = n*p/n' slots per expert (the paper's Figure 6: cost against the
 * number of experts at a fixed number of slots). Returns 0, or 2 after saying why. */
static int expand_expert_counts(bench_opts *o)
{
    int out[MAX_SHAPES][5], nout = 0;
    for (int s = 0; s < o->nshape; s++) {
        long slots = (long)o->shapes[s][3] * o->shapes[s][4];
        for (int e = 0; e < o->nexperts; e++) {
            int n = o->experts[e];
            if (slots % n) {
                fprintf(stderr, "softmoe bench: %d experts do not divide shape %d's %ld slots\n", n, s + 1, slots);
                return 2;
            }
            if (nout == MAX_SHAPES) {
                fprintf(stderr, "softmoe bench: more than %d shapes with --experts\n", MAX_SHAPES);
                return 2;
            }
            memcpy(out[nout], o->shapes[s], sizeof out[0]);
            out[nout][3] = n, out[nout][4] = (int)(slots / n);
            nout++;
        }
    }
    memcpy(o->shapes, out, sizeof out);
    o->nshape = nout;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- Peaks ---- */

/* Fused multiply-adds through intrinsics: C11 mode keeps the compiler from contracting a * m + c
 * (-ffp-contract=off), and separate multiplies and adds measured half the rate at twice the
 * latency. 16 independent chains cover the FMA latency of two units. */
#define FMA_ROUNDS 10000000L
#define FMA_CHAINS 16
#ifdef BENCH_X86
__attribute__((target("avx512f"))) static float fma_loop16(long n)
{
    __m512 a[FMA_CHAINS], m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (int k = 0; k < FMA_CHAINS; k++) a[k] = _mm512_set1_ps((float)k * 1e-3f);
    for (long r = 0; r < n; r++)
        for (int k = 0; k < FMA_CHAINS; k++) a[k] = _mm512_fmadd_ps(a[k], m, c);
    float s = 0;
    for (int k = 0; k < FMA_CHAINS; k++) s += _mm512_reduce_add_ps(a[k]);
    return s;
}

__attribute__((target("avx2,fma"))) static float fma_loop8(long n)
{
    __m256 a[FMA_CHAINS], m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (int k = 0; k < FMA_CHAINS; k++) a[k] = _mm256_set1_ps((float)k * 1e-3f);
    for (long r = 0; r < n; r++)
        for (int k = 0; k < FMA_CHAINS; k++) a[k] = _mm256_fmadd_ps(a[k], m, c);
    float s = 0, lanes[8];
    for (int k = 0; k < FMA_CHAINS; k++) {
        _mm256_storeu_ps(lanes, a[k]);
        for (int i = 0; i < 8; i++) s += lanes[i];
    }
    return s;
}

#endif

/* FMA peak of all cores with the widest vectors the CPU has, GFLOP/s. */
static double cpu_peak(void)
{
#ifndef BENCH_X86
    return 0; /* the peak loop is written for x86's vector units; elsewhere not measured */
#else
    __builtin_cpu_init();
    int width = __builtin_cpu_supports("avx512f") ? 16 : __builtin_cpu_supports("avx2") ? 8 : 0;
    if (!width) return 0;
    volatile float sink = 0;
    int threads = 1;
    double t = 1e30;
    for (int rep = 0; rep < 3; rep++) { /* the best of 3: the first also starts the threads and the clocks */
        double t0 = cli_now();
#pragma omp parallel reduction(+ : sink)
        {
#pragma omp single
            threads = omp_get_num_threads();
            sink += width == 16 ? fma_loop16(FMA_ROUNDS) : fma_loop8(FMA_ROUNDS);
        }
        double dt = cli_now() - t0;
        if (dt < t) t = dt;
    }
    return (double)threads * FMA_ROUNDS * FMA_CHAINS * width * 2 / t / 1e9;
#endif
}

/* cblas_sgemm on 1024^3, GFLOP/s (best of 5). */
static double sgemm_peak(void)
{
    int n = 1024;
    float *a = malloc((size_t)n * n * 4), *b = malloc((size_t)n * n * 4), *c = malloc((size_t)n * n * 4);
    if (!a || !b || !c) return 0;
    for (size_t i = 0; i < (size_t)n * n; i++) a[i] = b[i] = (float)(i % 7) * 0.1f;
    double best = 1e30;
    for (int r = 0; r < 6; r++) {
        double t0 = cli_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double t = cli_now() - t0;
        if (r && t < best) best = t;
    }
    free(a), free(b), free(c);
    return 2.0 * n * n * n / best / 1e9;
}

/* The peak-FMA shader on the context's Vulkan device, GFLOP/s. */
static double vulkan_peak(smoe_context *ctx)
{
    smoe_gpu *gpu = smoe_ctx_gpu(ctx);
    if (!gpu) return 0;
    smoe_err err;
    uint32_t wg = 64, groups = 4096, iters = gpu->quirks & SMOE_QUIRK_CPU_DRIVER ? 256 : 4096;
    if (gpu->quirks & SMOE_QUIRK_CPU_DRIVER) groups = 256;
    smoe_arena a;
    smoe_arena_init(&a, gpu, "peak");
    smoe_tensor out;
    double gflops = 0;
    uint32_t spec[4] = {wg, 1, 1, iters};
    if (!smoe_arena_reserve(&a, (uint64_t)wg * groups * 4, &out, &err) && !smoe_arena_commit(&a, &err)) {
        smoe_program p;
        smoe_binding b[1] = {{out, SMOE_WRITE}};
        uint32_t g[3] = {groups, 1, 1};
        if (!smoe_program_begin(gpu, &p, &err) &&
            !smoe_record_kernel(&p, SMOE_K_PEAK_FMA, spec, SMOE_LEN(spec), b, SMOE_LEN(b), NULL, 0, g, &err) &&
            !smoe_program_end(&p, &err)) {
            double best = 1e30;
            for (int r = 0; r < 4; r++) {
                double t0 = cli_now();
                if (smoe_program_run(&p, &err)) break;
                double t = cli_now() - t0;
                if (r && t < best) best = t;
            }
            if (best < 1e30) gflops = (double)wg * groups * iters * 64 / best / 1e9;
        }
        smoe_program_destroy(&p);
    }
    smoe_arena_release(&a);
    return gflops;
}

/* ---- Profiles ---- */

/* Attaches prof to ctx's gpu (NULL detaches); 0 when there is nothing to profile (the CPU path,
 * a queue without timestamps). */
static int profile_attach(smoe_context *ctx, smoe_profile *prof)
{
    smoe_gpu *gpu = smoe_ctx_gpu(ctx);
    if (!gpu || !gpu->info.timestamps) return 0;
    gpu->profile = prof;
    return 1;
}

/* The per-kernel table of replays runs of what, slowest first. */
static void print_profile(const char *label, const char *dname, const char *what, smoe_profile *prof, int replays,
                          int json)
{
    smoe_profile_sort(prof);
    double total = smoe_profile_total_ms(prof);
    if (!json) printf("%-9s profile of %s, GPU time per run %.2f ms%s:\n", label, what, total / replays,
                      prof->failed ? " (incomplete: out of memory)" : "");
    for (size_t i = 0; i < prof->count; i++) {
        const smoe_profile_row *r = &prof->rows[i];
        double share = total > 0 ? r->ms / total : 0;
        if (json)
            printf("{\"device\": \"%s\", \"device_name\": \"%s\", \"kind\": \"profile\", \"of\": \"%s\", "
                   "\"kernel\": \"%s\", \"count\": %.1f, \"ms\": %.4f, \"share\": %.4f}\n",
                   label, dname, what, r->label, (double)r->count / replays, r->ms / replays, share);
        else
            printf("    %-60s %6.1fx %10.3f ms %5.1f%%\n", r->label, (double)r->count / replays, r->ms / replays,
                   100 * share);
    }
}

/* ---- The layer ---- */

static uint8_t *layer_model(int d, int n, int p, int h, size_t *size)
{
    size_t counts[6] = {(size_t)d * n * p, 1, (size_t)n * h * d, (size_t)n * h, (size_t)n * d * h, (size_t)n * d};
    int64_t shapes[6][3] = {{d, n, p}, {1}, {n, h, d}, {n, h}, {n, d, h}, {n, d}};
    int ndims[6] = {3, 1, 3, 2, 3, 2};
    smoe_st_entry e[6];
    float *data[6];
    uint64_t s = 12345;
    for (int i = 0; i < 6; i++) {
        data[i] = malloc(counts[i] * 4);
        for (size_t k = 0; data[i] && k < counts[i]; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            data[i][k] = ((float)(s >> 40) / 16777216.0f - 0.5f) * 0.1f;
        }
        e[i] = (smoe_st_entry){smoe_layer_param_name(i), SMOE_F32, ndims[i], {0}, data[i]};
        memcpy(e[i].shape, shapes[i], sizeof shapes[i]);
    }
    if (data[1]) data[1][0] = 1.0f;
    smoe_st_meta meta = {"softmoe.kind", "layer"};
    uint8_t *img = NULL;
    smoe_err err;
    if (smoe_st_serialize(e, 6, &meta, 1, &img, size, &err)) img = NULL;
    for (int i = 0; i < 6; i++) free(data[i]);
    return img;
}

/* s as the inside of a JSON string (quotes, backslashes, control characters escaped). */
static void json_text(const char *s, char *out, size_t size)
{
    size_t n = 0;
    for (; *s && n + 7 < size; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') out[n++] = '\\', out[n++] = (char)c;
        else if (c < 0x20) n += (size_t)snprintf(out + n, size - n, "\\u%04x", c);
        else out[n++] = (char)c;
    }
    out[n] = 0;
}

typedef struct result {
    double ms_min, ms_median;
    char skipped[320]; /* why a device could not run the shape (too large for it), or "" */
} result;

/* keep: experts kept per input (smoe_model_set_keep_experts; 0: all). With prof, the runs after
 * the warm-up are profiled into it (the program is recorded with timestamps, so a profiled run is
 * not one of the timed ones). */
static int time_layer(smoe_context *ctx, const int *sh, int backward, int repeat, int keep, result *r, smoe_profile *prof)
{
    int b = sh[0], m = sh[1], d = sh[2], n = sh[3], p = sh[4], h = 4 * d;
    size_t size;
    uint8_t *img = layer_model(d, n, p, h, &size);
    smoe_model *model = NULL;
    r->skipped[0] = 0;
    smoe_status lst = img ? smoe_model_load_memory(ctx, img, size, &model) : SMOE_ERROR_OUT_OF_HOST_MEMORY;
    free(img);
    if (lst == SMOE_ERROR_TOO_LARGE || lst == SMOE_ERROR_OUT_OF_DEVICE_MEMORY) {
        /* a shape this device cannot hold: noted, and the other measurements go on */
        snprintf(r->skipped, sizeof r->skipped, "%s", smoe_last_error(ctx));
        fprintf(stderr, "bench: skipped: %s\n", r->skipped);
        return 0;
    }
    if (lst) return cli_fail(ctx, lst, "making the layer");
    smoe_status kst = smoe_model_set_keep_experts(model, keep, 0);
    if (kst) {
        smoe_model_free(model);
        return cli_fail(ctx, kst, "keeping experts");
    }
    size_t io = (size_t)b * m * d;
    float *x = malloc(io * 4), *y = malloc(io * 4), *dy = malloc(io * 4), *dx = malloc(io * 4);
    /* zero-mean tokens: inputs of a batch route (and keep experts) differently, as real activations do */
    for (size_t i = 0; x && dy && i < io; i++) x[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f, dy[i] = 1e-3f;
    double *t = calloc((size_t)repeat, sizeof *t);
    int rc = 0;
    if (prof) profile_attach(ctx, prof);
    for (int k = -2; k < repeat && !rc; k++) { /* two warm-up runs: pipelines, recording */
        if (k == 0 && prof) smoe_profile_clear(prof);
        double t0 = cli_now();
        smoe_status st = backward ? smoe_layer_forward_backward(model, b, m, x, dy, y, dx, NULL) : smoe_layer_forward(model, b, m, x, y);
        if (st) rc = cli_fail(ctx, st, "running the layer");
        if (k >= 0) t[k] = (cli_now() - t0) * 1e3;
    }
    if (prof) profile_attach(ctx, NULL);
    if (!rc) {
        qsort(t, (size_t)repeat, sizeof *t, cmp_double);
        r->ms_min = t[0];
        r->ms_median = t[repeat / 2];
    }
    free(t), free(x), free(y), free(dy), free(dx);
    smoe_model_free(model);
    return rc;
}

static double layer_gflop(const int *sh, int backward)
{
    double b = sh[0], m = sh[1], d = sh[2], S = (double)sh[3] * sh[4], h = 4.0 * sh[2];
    double fwd = b * (6 * m * S * d + 4 * S * d * h);
    return (backward ? 3 * fwd : fwd) / 1e9;
}

/* Bytes of expert weights one pass streams (read once forward; read and gradients written backward). */
static double layer_weight_bytes(const int *sh, int backward)
{
    double w = 2.0 * sh[3] * sh[2] * 4.0 * sh[2] * 4;
    return backward ? 3 * w : w;
}

/* ---- The sparse MoE layers ---- */

#define ROUTERS 3 /* Tokens Choice K=1, K=2, Experts Choice */
static const char *const router_names[ROUTERS] = {"tokens_choice_k1", "tokens_choice_k2", "experts_choice"};

/* The sparse layer on shape (b, m, d, n, p): n experts of hidden 4d, one group per sequence, the
 * capacity factor c = n*p/m, so that an expert's capacity per sequence is about p (Tokens
 * Choice rounds it up to a multiple of 4) and the experts see about as many rows as Soft MoE's
 * n*p slots. */
static smoe_sparse_dims sparse_dims(const int *sh, int r)
{
    smoe_sparse_dims d = {.b = sh[0], .m = sh[1], .d = sh[2], .n = sh[3], .h = 4 * sh[2],
                          .kind = r == 2 ? SMOE_MOE_EXPERTS_CHOICE : SMOE_MOE_TOKENS_CHOICE, .top_k = r == 2 ? 0 : r + 1,
                          .capacity_factor = (float)sh[3] * sh[4] / sh[1], .importance_weight = SMOE_AUX_LOSS_WEIGHT,
                          .load_weight = SMOE_AUX_LOSS_WEIGHT};
    return d;
}

static double sparse_gflop(const int *sh, int r, int backward)
{
    smoe_sparse_dims d = sparse_dims(sh, r);
    smoe_sparse_plan pl;
    smoe_sparse_plan_make(&d, &pl);
    double rows = (double)d.n * pl.R, router = 2.0 * pl.T * d.d * d.n, fwd = router + 4.0 * rows * d.d * d.h;
    return (backward ? 3 * fwd : fwd) / 1e9;
}

/* Times the op directly (there is no sparse layer model file): forward, or forward and backward
 * in training mode (noise, auxiliary losses), recorded once and replayed on Vulkan. */
static int time_sparse(smoe_context *ctx, const int *sh, int r, int backward, int repeat, result *res)
{
    smoe_gpu *gpu = smoe_ctx_gpu(ctx);
    smoe_sparse_dims d = sparse_dims(sh, r);
    smoe_sparse_tensors L;
    memset(&L, 0, sizeof L);
    smoe_arena a;
    smoe_arena_init(&a, gpu, "bench");
    smoe_err err = {{0}};
    uint64_t io = (uint64_t)d.b * d.m * d.d, n = d.n, D = d.d, H = d.h;
    smoe_tensor *in[14] = {&L.x, &L.y, &L.dy, &L.dx, &L.gate, &L.w1, &L.b1, &L.w2, &L.b2, &L.g_gate, &L.g_w1, &L.g_b1, &L.g_w2, &L.g_b2};
    uint64_t sizes[14] = {io, io, io, io, n * D, n * H * D, n * H, n * D * H, n * D, n * D, n * H * D, n * H, n * D * H, n * D};
    smoe_status st = SMOE_OK;
    for (int i = 0; i < 14 && !st; i++) st = smoe_arena_reserve(&a, sizes[i] * 4, in[i], &err);
    if (!st) st = smoe_arena_reserve(&a, 8, &L.step, &err);
    if (!st) st = smoe_sparse_reserve(&L, &d, &a, 1, &err);
    if (!st) st = smoe_arena_commit(&a, &err);
    res->skipped[0] = 0;
    if (st == SMOE_ERROR_TOO_LARGE || st == SMOE_ERROR_OUT_OF_DEVICE_MEMORY) {
        /* a shape this device cannot hold: noted, and the other measurements go on */
        snprintf(res->skipped, sizeof res->skipped, "%.300s", err.msg);
        fprintf(stderr, "bench: skipped: %s\n", res->skipped);
        smoe_arena_release(&a);
        return 0;
    }
    float *buf = st ? NULL : malloc(n * H * D * 4 > io * 4 ? n * H * D * 4 : io * 4);
    if (!st && !buf) st = smoe_fail(&err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    for (int i = 0; i < 9 && !st; i++) {
        uint64_t s = 99 + (uint64_t)i;
        for (uint64_t k = 0; k < sizes[i]; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            buf[k] = ((float)(s >> 40) / 16777216.0f - 0.5f) * (i < 4 ? 2.0f : 0.1f);
        }
        st = smoe_tensor_upload(in[i], 0, buf, sizes[i] * 4, &err);
    }
    float step[2] = {1, 0};
    if (!st) st = smoe_tensor_upload(&L.step, 0, step, sizeof step, &err);
    free(buf);
    int mode = backward ? SMOE_ROUTE_TRAIN : SMOE_ROUTE_INFER;
    smoe_program prog;
    memset(&prog, 0, sizeof prog);
    smoe_exec ex = {gpu, gpu ? &prog : NULL};
    if (!st && gpu) {
        st = smoe_program_begin(gpu, &prog, &err);
        if (!st) st = smoe_op_sparse_forward(&ex, &L, &d, mode, &err);
        if (!st && backward) st = smoe_op_sparse_backward(&ex, &L, &d, mode, &err);
        if (!st) st = smoe_program_end(&prog, &err);
    }
    double *t = calloc((size_t)repeat, sizeof *t);
    for (int k = -2; k < repeat && !st && t; k++) {
        double t0 = cli_now();
        if (gpu) st = smoe_program_run(&prog, &err);
        else {
            st = smoe_op_sparse_forward(&ex, &L, &d, mode, &err);
            if (!st && backward) st = smoe_op_sparse_backward(&ex, &L, &d, mode, &err);
        }
        if (k >= 0) t[k] = (cli_now() - t0) * 1e3;
    }
    if (!st && t) {
        qsort(t, (size_t)repeat, sizeof *t, cmp_double);
        res->ms_min = t[0];
        res->ms_median = t[repeat / 2];
    }
    free(t);
    smoe_program_destroy(&prog);
    smoe_arena_release(&a);
    if (st) {
        fprintf(stderr, "softmoe bench: %s layer: %s\n", router_names[r], err.msg);
        return 1;
    }
    return 0;
}

/* ---- The ViT ---- */

/* With prof (two of them: inference, training), the runs after the warm-up are profiled. */
static int time_vit(smoe_context *ctx, const bench_opts *o, double *infer_ips, double *train_ips, char *name, size_t name_size,
                    smoe_profile *prof)
{
    smoe_model *model = NULL;
    smoe_status st;
    if (o->vit_model) {
        st = smoe_model_load_file(ctx, o->vit_model, &model);
        snprintf(name, name_size, "%s", o->vit_model);
    } else {
        /* The reference configuration (PyTorch: 113 img/s training, 369 inference). */
        smoe_vit_config c = {.image_size = 28, .patch_size = 4, .channels = 1, .dim = 96, .depth = 6, .heads = 3,
                             .mlp_dim = 384, .experts = 16, .slots_per_expert = 3, .num_classes = 10};
        c.moe_layers[0] = 3, c.moe_layers[1] = 4, c.moe_layers[2] = 5, c.moe_count = 3;
        st = smoe_vit_create(ctx, &c, 1, &model);
        snprintf(name, name_size, "vit dim96 depth6 16x3 experts");
    }
    if (st) return cli_fail(ctx, st, "making the ViT");
    int B = o->vit_batch;
    smoe_vit_config c;
    smoe_vit_get_config(model, &c);
    size_t per = (size_t)c.channels * c.image_size * c.image_size;
    float *images = malloc(per * B * 4), *logits = malloc((size_t)B * c.num_classes * 4), loss;
    int32_t *labels = malloc((size_t)B * 4);
    for (size_t i = 0; images && i < per * B; i++) images[i] = (float)(i % 255) / 255.0f;
    for (int i = 0; labels && i < B; i++) labels[i] = i % c.num_classes;
    smoe_train_config cfg;
    smoe_train_config_default(&cfg);
    int rc = 0, reps = smoe_ctx_gpu(ctx) && (smoe_ctx_gpu(ctx)->quirks & SMOE_QUIRK_CPU_DRIVER) ? 2 : 5;
    if (prof) reps = 1;
    for (int mode = 0; mode < 2 && !rc; mode++) {
        double best = 1e30;
        if (prof) profile_attach(ctx, &prof[mode]);
        for (int k = -1; k < reps && !rc; k++) {
            if (k == 0 && prof) smoe_profile_clear(&prof[mode]);
            double t0 = cli_now();
            st = mode ? smoe_vit_train_step(model, &cfg, B, images, labels, &loss, NULL) : smoe_vit_infer(model, B, images, logits);
            if (st) rc = cli_fail(ctx, st, mode ? "training" : "inference");
            double t = cli_now() - t0;
            if (k >= 0 && t < best) best = t;
        }
        if (prof) profile_attach(ctx, NULL);
        *(mode ? train_ips : infer_ips) = B / best;
    }
    free(images), free(logits), free(labels);
    smoe_model_free(model);
    return rc;
}

/* ---- The command ---- */

static void device_label(smoe_context *ctx, char *label, size_t size, char *name, size_t name_size)
{
    smoe_device_info info;
    smoe_context_device(ctx, &info, NULL);
    if (info.index < 0) snprintf(label, size, "cpu");
    else snprintf(label, size, "vulkan:%d", info.index);
    snprintf(name, name_size, "%s", info.name);
}

/* ---- Expert-subset inference: the layer forward keeping n, n/2, n/4, n/8 experts ---- */

#define KEEP_STEPS 4

static int bench_keep(const bench_opts *o)
{
    for (int dv = 0; dv < o->ndev; dv++) {
        smoe_context *ctx = cli_open(o->devices[dv]);
        if (!ctx) return 1;
        char label[32], dname[256];
        device_label(ctx, label, sizeof label, dname, sizeof dname);
        int is_cpu_driver = smoe_ctx_gpu(ctx) && (smoe_ctx_gpu(ctx)->quirks & SMOE_QUIRK_CPU_DRIVER);
        int reps = is_cpu_driver && o->repeat > 3 ? 3 : o->repeat;
        for (int s = 0; s < o->nshape; s++) {
            const int *sh = o->shapes[s];
            int n = sh[3], done[KEEP_STEPS] = {0};
            result all = {0};
            for (int step = 0; step < KEEP_STEPS; step++) {
                int k = n >> step > 0 ? n >> step : 1;
                if (step && k == done[step - 1]) break; /* n too small for this fraction */
                done[step] = k;
                fprintf(stderr, "bench: %s layer (%d,%d,%d,%d,%d) forward keeping %d of %d experts...\n", label, sh[0],
                        sh[1], sh[2], sh[3], sh[4], k, n);
                result r = {0};
                int rc = time_layer(ctx, sh, 0, reps, k, &r, NULL);
                if (rc) {
                    smoe_context_destroy(ctx);
                    return rc;
                }
                if (r.skipped[0]) break; /* a shape this device cannot hold, said on stderr */
                if (!step) all = r;
                double speedup = all.ms_min / r.ms_min;
                if (o->json)
                    printf("{\"device\": \"%s\", \"device_name\": \"%s\", \"kind\": \"layer_keep\", \"shape\": [%d, %d, %d, %d, "
                           "%d], \"keep\": %d, \"experts\": %d, \"ms_min\": %.3f, \"ms_median\": %.3f, \"speedup_vs_all\": %.3f}\n",
                           label, dname, sh[0], sh[1], sh[2], sh[3], sh[4], k, n, r.ms_min, r.ms_median, speedup);
                else
                    printf("%-9s (%3d,%3d,%3d,%3d,%d) forward keeping %3d/%-3d %9.2f ms (median %9.2f)  %5.2fx vs all\n", label,
                           sh[0], sh[1], sh[2], sh[3], sh[4], k, n, r.ms_min, r.ms_median, speedup);
                fflush(stdout);
            }
        }
        int rc = cli_close(ctx, 0);
        if (rc) return rc;
    }
    return 0;
}

/* One layer measurement as a row of --csv's file (the header is written where the file opens). */
static void csv_row(FILE *csv, const char *label, const char *dname, const char *router, const int *sh, int pass,
                    const result *r, double gflops)
{
    fprintf(csv, "%s,%s,%d,%d,%d,%d,%d,%s,%.3f,%.3f,%.2f,\"%s\"\n", label, router, sh[0], sh[1], sh[2], sh[3], sh[4],
            pass ? "forward+backward" : "forward", r->ms_min, r->ms_median, gflops, dname);
}

int cmd_bench(int argc, char **argv)
{
    bench_opts o = {.repeat = 5, .vit_batch = 128};
    for (int i = 1; i < argc; i++) {
        long v;
        if (!strcmp(argv[i], "--json")) o.json = 1;
        else if (!strcmp(argv[i], "--profile")) o.profile = 1;
        else if (!strcmp(argv[i], "--routers")) o.routers = 1;
        else if (!strcmp(argv[i], "--no-vit")) o.skip_vit = 1;
        else if (!strcmp(argv[i], "--vit-only")) o.vit_only = 1;
        else if (!strcmp(argv[i], "--keep-experts")) o.keep_sweep = 1;
        else if (!strcmp(argv[i], "--device") && i + 1 < argc && o.ndev < MAX_DEVICES) o.devices[o.ndev++] = argv[++i];
        else if (!strcmp(argv[i], "--vit") && i + 1 < argc) o.vit_model = argv[++i];
        else if (!strcmp(argv[i], "--variant") && i + 1 < argc) o.variant = argv[++i];
        else if (!strcmp(argv[i], "--csv") && i + 1 < argc) o.csv = argv[++i];
        else if (!strcmp(argv[i], "--experts") && i + 1 < argc) {
            const char *q = argv[++i];
            o.nexperts = 0;
            for (;;) {
                char *end;
                long n = strtol(q, &end, 10);
                if (end == q || n < 1 || n > 65536 || o.nexperts == MAX_EXPERT_COUNTS || (*end && *end != ',')) {
                    fprintf(stderr, "softmoe bench: --experts wants up to %d counts N,N,... (1..65536)\n", MAX_EXPERT_COUNTS);
                    return 2;
                }
                o.experts[o.nexperts++] = (int)n;
                if (!*end) break;
                q = end + 1;
            }
        }
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc && cli_int(argv[i + 1], 1, 1000, &v)) o.repeat = (int)v, i++;
        else if (!strcmp(argv[i], "--vit-batch") && i + 1 < argc && cli_int(argv[i + 1], 1, 4096, &v)) o.vit_batch = (int)v, i++;
        else if (!strcmp(argv[i], "--shape") && i + 1 < argc && o.nshape < MAX_SHAPES) {
            int *s = o.shapes[o.nshape];
            if (sscanf(argv[++i], "%d,%d,%d,%d,%d", &s[0], &s[1], &s[2], &s[3], &s[4]) != 5 || s[0] < 1 || s[1] < 1 ||
                s[2] < 1 || s[3] < 1 || s[4] < 1) {
                fprintf(stderr, "softmoe bench: --shape wants b,m,d,n,p\n");
                return 2;
            }
            o.nshape++;
        } else if (!strcmp(argv[i], "--matmul") && i + 1 < argc && o.nmatmul < MAX_SHAPES) {
            int *s = o.matmuls[o.nmatmul];
            s[3] = s[4] = 0;
            int n = sscanf(argv[++i], "%d,%d,%d,%d,%d", &s[0], &s[1], &s[2], &s[3], &s[4]);
            if ((n != 3 && n != 5) || s[0] < 1 || s[1] < 1 || s[2] < 1 || (unsigned)s[3] > 1 || (unsigned)s[4] > 1) {
                fprintf(stderr, "softmoe bench: --matmul wants M,N,K or M,N,K,trans_a,trans_b (0 or 1)\n");
                return 2;
            }
            o.nmatmul++;
        } else {
            fprintf(stderr, "usage: softmoe bench [--device D]... [--shape b,m,d,n,p]... [--matmul M,N,K[,ta,tb]]...\n"
                            "                     [--variant NAME] [--json] [--repeat N] [--profile] [--no-vit] [--vit MODEL] [--vit-batch N]\n"
                            "default: cpu and every Vulkan device; the paper's shapes (expert hidden 4d) and the ViT;\n"
                            "--matmul alone: only those products, on every matmul variant of each Vulkan device (or --variant's);\n"
                            "--profile: then each Vulkan measurement once more with per-kernel GPU times\n");
            fprintf(stderr, "usage: softmoe bench [--device D]... [--shape b,m,d,n,p]... [--json] [--repeat N]\n"
                            "                     [--no-vit | --vit-only] [--vit MODEL] [--vit-batch N] [--keep-experts] [--routers]\n"
                            "default: cpu and every Vulkan device; the paper's shapes (expert hidden 4d)\n"
                            "--keep-experts: instead, the layer forward keeping n, n/2, n/4 and n/8 experts per input\n"
                            "--routers: also Tokens Choice (K=1, 2) and Experts Choice layers, n experts with\n"
                            "           capacity factor n*p/m (about as many expert rows as Soft MoE's slots)\n"
                            "--experts N,N,...: each shape at these expert counts with its n*p slots (p = slots/N)\n"
                            "--csv FILE: also every layer measurement as a row of FILE (the device name last)\n"
                            "--vit-only: only the ViT (the issue's reference configuration, or --vit MODEL)\n");
            return 2;
        }
    }
    int only_matmul = o.nmatmul && !o.nshape;
    if (only_matmul) o.skip_vit = 1;
    if (!o.nshape && !only_matmul) {
        const int paper[4][5] = {{8, 196, 384, 128, 1}, {8, 196, 384, 32, 4}, {4, 256, 768, 128, 2}, {32, 64, 256, 16, 4}};
        memcpy(o.shapes, paper, sizeof paper);
        o.nshape = 4;
    }
    if (o.nexperts && expand_expert_counts(&o)) return 2;
    if (o.vit_only && (o.skip_vit || o.nmatmul || o.keep_sweep)) {
        fprintf(stderr, "softmoe bench: --vit-only goes with neither --no-vit, --matmul nor --keep-experts\n");
        return 2;
    }
    if (o.vit_only) o.nshape = 0;
    char vk_names[MAX_DEVICES][24];
    if (!o.ndev) {
        o.devices[o.ndev++] = "cpu";
        smoe_context *probe = NULL;
        int n = 0;
        if (!smoe_context_create(&probe) && !smoe_device_count(probe, &n))
            for (int i = 1; i < n && o.ndev < MAX_DEVICES; i++) {
                snprintf(vk_names[o.ndev], sizeof vk_names[0], "vulkan:%d", i - 1);
                o.devices[o.ndev] = vk_names[o.ndev];
                o.ndev++;
            }
        smoe_context_destroy(probe);
    }
    if (o.keep_sweep) return bench_keep(&o);
    /* results[device][shape][pass] */
    static result res[MAX_DEVICES][MAX_SHAPES][2], sres[MAX_DEVICES][MAX_SHAPES][ROUTERS][2];
    double peak[MAX_DEVICES] = {0}, gemm = 0, vit_inf[MAX_DEVICES] = {0}, vit_train[MAX_DEVICES] = {0};
    char label[MAX_DEVICES][32], dname[MAX_DEVICES][256], vit_name[256] = "";
    int cpu_index = -1, rc = 0;
    for (int dv = 0; dv < o.ndev && !rc; dv++) {
        smoe_context *ctx = cli_open(o.devices[dv]);
        if (!ctx) return 1;
        device_label(ctx, label[dv], sizeof label[dv], dname[dv], sizeof dname[dv]);
        int is_cpu = smoe_ctx_gpu(ctx) == NULL;
        if (is_cpu) cpu_index = dv;
        int slow = !is_cpu && (smoe_ctx_gpu(ctx)->quirks & SMOE_QUIRK_CPU_DRIVER);
        for (int s = 0; s < o.nmatmul && !rc; s++)
            rc = bench_matmul(ctx, label[dv], dname[dv], o.matmuls[s], slow && o.repeat > 3 ? 3 : o.repeat, o.variant, o.json);
        if (only_matmul) {
            smoe_context_destroy(ctx);
            continue;
        }
        fprintf(stderr, "bench: %s (%s): peak...\n", label[dv], dname[dv]);
        peak[dv] = is_cpu ? cpu_peak() : vulkan_peak(ctx);
        if (is_cpu) gemm = sgemm_peak();
        smoe_profile prof[2] = {{0}};
        int profiling = o.profile && profile_attach(ctx, NULL);
        for (int s = 0; s < o.nshape && !rc; s++)
            for (int pass = 0; pass < 2 && !rc; pass++) {
                const int *sh = o.shapes[s];
                const char *pname = pass ? "forward+backward" : "forward";
                fprintf(stderr, "bench: %s layer (%d,%d,%d,%d,%d) %s...\n", label[dv], sh[0], sh[1], sh[2], sh[3], sh[4], pname);
                int reps = slow && o.repeat > 3 ? 3 : o.repeat;
                rc = time_layer(ctx, sh, pass, reps, 0, &res[dv][s][pass], NULL);
                for (int r = 0; r < ROUTERS && o.routers && !rc; r++) {
                    fprintf(stderr, "bench: %s %s layer %s...\n", label[dv], router_names[r], pname);
                    rc = time_sparse(ctx, sh, r, pass, reps, &sres[dv][s][r][pass]);
                }
                if (rc || !profiling || res[dv][s][pass].skipped[0]) continue;
                fprintf(stderr, "bench: %s layer (%d,%d,%d,%d,%d) %s, profiled...\n", label[dv], sh[0], sh[1], sh[2], sh[3],
                        sh[4], pname);
                result ignored;
                rc = time_layer(ctx, sh, pass, 2, 0, &ignored, &prof[0]);
                char what[96];
                snprintf(what, sizeof what, "layer (%d,%d,%d,%d,%d) %s", sh[0], sh[1], sh[2], sh[3], sh[4], pname);
                if (!rc) print_profile(label[dv], dname[dv], what, &prof[0], 2, o.json);
                smoe_profile_clear(&prof[0]);
            }
        if (!o.skip_vit && !rc) {
            fprintf(stderr, "bench: %s ViT...\n", label[dv]);
            rc = time_vit(ctx, &o, &vit_inf[dv], &vit_train[dv], vit_name, sizeof vit_name, NULL);
            if (!rc && profiling) {
                double ignored[2];
                fprintf(stderr, "bench: %s ViT, profiled...\n", label[dv]);
                rc = time_vit(ctx, &o, &ignored[0], &ignored[1], vit_name, sizeof vit_name, prof);
                char what[2][320];
                snprintf(what[0], sizeof what[0], "ViT inference, batch %d", o.vit_batch);
                snprintf(what[1], sizeof what[1], "ViT training step, batch %d", o.vit_batch);
                for (int mode = 0; mode < 2 && !rc; mode++) print_profile(label[dv], dname[dv], what[mode], &prof[mode], 1, o.json);
            }
        }
        smoe_profile_clear(&prof[0]);
        smoe_profile_clear(&prof[1]);
        smoe_context_destroy(ctx);
    }
    if (rc || only_matmul) return rc;
    FILE *csv = NULL;
    if (o.csv) {
        csv = fopen(o.csv, "w");
        if (!csv) {
            fprintf(stderr, "softmoe bench: cannot write %s\n", o.csv);
            return 1;
        }
        fprintf(csv, "device,router,b,m,d,n,p,pass,ms_min,ms_median,gflops,device_name\n");
    }
    for (int dv = 0; dv < o.ndev; dv++) {
        for (int s = 0; s < o.nshape; s++)
            for (int pass = 0; pass < 2; pass++) {
                const int *sh = o.shapes[s];
                result *r = &res[dv][s][pass];
                if (r->skipped[0]) {
                    char why[2048];
                    json_text(r->skipped, why, sizeof why);
                    if (o.json)
                        printf("{\"device\": \"%s\", \"device_name\": \"%s\", \"kind\": \"layer\", \"shape\": [%d, %d, %d, "
                               "%d, %d], \"pass\": \"%s\", \"skipped\": \"%s\"}\n",
                               label[dv], dname[dv], sh[0], sh[1], sh[2], sh[3], sh[4], pass ? "forward+backward" : "forward",
                               why);
                    else
                        printf("%-9s (%3d,%3d,%3d,%3d,%d) %-16s skipped: %s\n", label[dv], sh[0], sh[1], sh[2], sh[3], sh[4],
                               pass ? "forward+backward" : "forward", r->skipped);
                    continue;
                }
                double gf = layer_gflop(sh, pass) / (r->ms_min / 1e3);
                double vs_cpu = cpu_index >= 0 && !res[cpu_index][s][pass].skipped[0] ? res[cpu_index][s][pass].ms_min / r->ms_min : 0;
                double gbs = layer_weight_bytes(sh, pass) / (r->ms_min / 1e3) / 1e9;
                if (csv) csv_row(csv, label[dv], dname[dv], "soft", sh, pass, r, gf);
                if (o.json)
                    printf("{\"device\": \"%s\", \"device_name\": \"%s\", \"kind\": \"layer\", \"router\": \"soft\", \"shape\": [%d, %d, %d, %d, %d], "
                           "\"pass\": \"%s\", \"ms_min\": %.3f, \"ms_median\": %.3f, \"gflops\": %.2f, \"speedup_vs_cpu\": %.3f, "
                           "\"fraction_of_peak\": %.4f, \"weight_gbytes_per_second\": %.2f}\n",
                           label[dv], dname[dv], sh[0], sh[1], sh[2], sh[3], sh[4], pass ? "forward+backward" : "forward",
                           r->ms_min, r->ms_median, gf, vs_cpu, peak[dv] > 0 ? gf / peak[dv] : 0, gbs);
                else
                    printf("%-9s (%3d,%3d,%3d,%3d,%d) %-16s %9.2f ms (median %9.2f) %7.1f GFLOP/s  %5.2fx cpu  %5.1f%% of peak  "
                           "weights %.1f GB/s\n",
                           label[dv], sh[0], sh[1], sh[2], sh[3], sh[4], pass ? "forward+backward" : "forward", r->ms_min,
                           r->ms_median, gf, vs_cpu, peak[dv] > 0 ? 100 * gf / peak[dv] : 0, gbs);
            }
        for (int s = 0; s < o.nshape && o.routers; s++)
            for (int r = 0; r < ROUTERS; r++)
                for (int pass = 0; pass < 2; pass++) {
                    const int *sh = o.shapes[s];
                    const result *q = &sres[dv][s][r][pass], *soft = &res[dv][s][pass];
                    if (q->skipped[0]) continue; /* said on stderr */
                    double soft_time = soft->skipped[0] ? 0 : q->ms_min / soft->ms_min;
                    double gf = sparse_gflop(sh, r, pass) / (q->ms_min / 1e3);
                    double vs_cpu = cpu_index >= 0 && !sres[cpu_index][s][r][pass].skipped[0]
                                        ? sres[cpu_index][s][r][pass].ms_min / q->ms_min : 0;
                    if (csv) csv_row(csv, label[dv], dname[dv], router_names[r], sh, pass, q, gf);
                    if (o.json)
                        printf("{\"device\": \"%s\", \"device_name\": \"%s\", \"kind\": \"layer\", \"router\": \"%s\", "
                               "\"shape\": [%d, %d, %d, %d, %d], \"pass\": \"%s\", \"ms_min\": %.3f, \"ms_median\": %.3f, "
                               "\"gflops\": %.2f, \"speedup_vs_cpu\": %.3f, \"time_vs_soft\": %.3f}\n",
                               label[dv], dname[dv], router_names[r], sh[0], sh[1], sh[2], sh[3], sh[4],
                               pass ? "forward+backward" : "forward", q->ms_min, q->ms_median, gf, vs_cpu, soft_time);
                    else
                        printf("%-9s (%3d,%3d,%3d,%3d,%d) %-16s %-17s %9.2f ms (median %9.2f) %7.1f GFLOP/s  %5.2fx cpu  %5.2fx "
                               "soft's time\n",
                               label[dv], sh[0], sh[1], sh[2], sh[3], sh[4], pass ? "forward+backward" : "forward", router_names[r],
                               q->ms_min, q->ms_median, gf, vs_cpu, soft_time);
                }
        if (!o.skip_vit) {
            if (o.json)
                printf("{\"device\": \"%s\", \"device_name\": \"%s\", \"kind\": \"vit\", \"model\": \"%s\", \"batch\": %d, "
                       "\"inference_images_per_second\": %.1f, \"training_images_per_second\": %.1f}\n",
                       label[dv], dname[dv], vit_name, o.vit_batch, vit_inf[dv], vit_train[dv]);
            else
                printf("%-9s ViT (%s), batch %d: inference %.0f images/s, training %.0f images/s\n", label[dv], vit_name,
                       o.vit_batch, vit_inf[dv], vit_train[dv]);
        }
        if (o.json)
            printf("{\"device\": \"%s\", \"device_name\": \"%s\", \"kind\": \"peak\", \"fma_gflops\": %.1f%s}\n", label[dv],
                   dname[dv], peak[dv], dv == cpu_index ? "" : "");
        else
            printf("%-9s peak FMA %.1f GFLOP/s%s\n", label[dv], peak[dv], dname[dv][0] ? "" : "");
        if (dv == cpu_index) {
            if (o.json)
                printf("{\"device\": \"cpu\", \"kind\": \"sgemm\", \"shape\": [1024, 1024, 1024], \"gflops\": %.1f}\n", gemm);
            else
                printf("cpu       cblas_sgemm 1024^3: %.1f GFLOP/s\n", gemm);
        }
    }
    if (csv && fclose(csv)) {
        fprintf(stderr, "softmoe bench: writing %s failed\n", o.csv);
        return 1;
    }
    return 0;
}
