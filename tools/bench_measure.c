/* softmoe bench's measurements: the peaks, the Soft MoE layer, the sparse layers and the ViT. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
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

const char *const bench_router_names[ROUTERS] = {"tokens_choice_k1", "tokens_choice_k2", "experts_choice"};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The fastest and the median of n run times (sorted in place). */
static void summarise(double *t, int n, result *r)
{
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    r->ms_min = t[0];
    r->ms_median = t[n / 2];
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
double bench_cpu_peak(void)
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
double bench_sgemm_peak(void)
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

/* ---- Profiles ---- */

void bench_print_profile(const char *label, const char *dname, const char *what, smoe_profile *prof, int replays,
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

/* The timed runs of one layer measurement (profiled through smoe_bench_profile_model when asked). */
typedef struct layer_runs {
    smoe_context *ctx;
    smoe_model *model;
    int b, m, backward, repeat;
    float *x, *y, *dy, *dx;
    double *t;
    smoe_profile *prof;
} layer_runs;

static int run_layer(void *user)
{
    layer_runs *L = user;
    int rc = 0;
    for (int k = -2; k < L->repeat && !rc; k++) { /* two warm-up runs: pipelines, recording */
        if (k == 0 && L->prof) smoe_profile_clear(L->prof);
        double t0 = cli_now();
        smoe_status st = L->backward ? smoe_layer_forward_backward(L->model, L->b, L->m, L->x, L->dy, L->y, L->dx, NULL)
                                     : smoe_layer_forward(L->model, L->b, L->m, L->x, L->y);
        if (st) rc = cli_fail(L->ctx, st, "running the layer");
        if (k >= 0) L->t[k] = (cli_now() - t0) * 1e3;
    }
    return rc;
}

/* Inputs and timings of L; 0 when out of host memory. */
static int layer_buffers(layer_runs *L, int d)
{
    size_t io = (size_t)L->b * L->m * d;
    L->x = malloc(io * 4), L->y = malloc(io * 4), L->dy = malloc(io * 4), L->dx = malloc(io * 4);
    L->t = calloc((size_t)L->repeat, sizeof *L->t);
    /* zero-mean tokens: inputs of a batch route (and keep experts) differently, as real activations do */
    for (size_t i = 0; L->x && L->dy && i < io; i++)
        L->x[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f, L->dy[i] = 1e-3f;
    return L->x && L->y && L->dy && L->dx && L->t;
}

/* keep: experts kept per input (smoe_model_set_keep_experts; 0: all). With prof, the runs after the
 * warm-up are profiled into it (the program is recorded with timestamps, so a profiled run is
 * not one of the timed ones). */
int bench_time_layer(smoe_context *ctx, const int *sh, int backward, int repeat, int keep, result *r, smoe_profile *prof)
{
    layer_runs L = {.ctx = ctx, .b = sh[0], .m = sh[1], .backward = backward, .repeat = repeat, .prof = prof};
    r->skipped[0] = 0;
    smoe_status lst = smoe_bench_layer_model(ctx, sh[2], sh[3], sh[4], 4 * sh[2], &L.model);
    if (lst == SMOE_ERROR_TOO_LARGE || lst == SMOE_ERROR_OUT_OF_DEVICE_MEMORY) {
        /* a shape this device cannot hold: noted, and the other measurements go on */
        snprintf(r->skipped, sizeof r->skipped, "%s", smoe_last_error(ctx));
        fprintf(stderr, "bench: skipped: %s\n", r->skipped);
        return 0;
    }
    if (lst) return cli_fail(ctx, lst, "making the layer");
    smoe_status kst = smoe_model_set_keep_experts(L.model, keep, 0);
    int rc = kst ? cli_fail(ctx, kst, "keeping experts") : 0;
    if (!rc && !layer_buffers(&L, sh[2])) rc = cli_fail(ctx, SMOE_ERROR_OUT_OF_HOST_MEMORY, "the layer's inputs");
    if (!rc && prof) smoe_bench_profile_model(L.model, prof);
    if (!rc) rc = run_layer(&L);
    if (!rc) summarise(L.t, repeat, r);
    free(L.t), free(L.x), free(L.y), free(L.dy), free(L.dx);
    smoe_model_free(L.model);
    return rc;
}

/* ---- The sparse MoE layers ---- */

/* Times the op directly (there is no sparse layer model file): forward, or forward and backward
 * in training mode (noise, auxiliary losses), recorded once and replayed on Vulkan. */
int bench_time_sparse(smoe_context *ctx, const int *sh, int r, int backward, int repeat, result *res)
{
    smoe_bench_sparse *bs = NULL;
    smoe_status st = smoe_bench_sparse_open(ctx, sh, r, backward, &bs);
    res->skipped[0] = 0;
    if (st == SMOE_ERROR_TOO_LARGE || st == SMOE_ERROR_OUT_OF_DEVICE_MEMORY) {
        /* a shape this device cannot hold: noted, and the other measurements go on */
        snprintf(res->skipped, sizeof res->skipped, "%.300s", smoe_last_error(ctx));
        fprintf(stderr, "bench: skipped: %s\n", res->skipped);
        return 0;
    }
    double *t = calloc((size_t)repeat, sizeof *t);
    if (!t) {
        smoe_bench_sparse_close(bs);
        return cli_fail(ctx, SMOE_ERROR_OUT_OF_HOST_MEMORY, "the sparse layer's timings");
    }
    for (int k = -2; k < repeat && !st; k++) {
        double t0 = cli_now();
        st = smoe_bench_sparse_run(bs);
        if (k >= 0) t[k] = (cli_now() - t0) * 1e3;
    }
    if (!st) summarise(t, repeat, res);
    free(t);
    smoe_bench_sparse_close(bs);
    if (st) {
        fprintf(stderr, "softmoe bench: %s layer: %s\n", bench_router_names[r], smoe_last_error(ctx));
        return 1;
    }
    return 0;
}

/* ---- The ViT ---- */

static smoe_status make_vit(smoe_context *ctx, const bench_opts *o, char *name, size_t name_size, smoe_model **model)
{
    if (o->vit_model) {
        snprintf(name, name_size, "%s", o->vit_model);
        return smoe_model_load_file(ctx, o->vit_model, model);
    }
    /* The reference configuration (PyTorch: 113 img/s training, 369 inference). */
    smoe_vit_config c = {.image_size = 28, .patch_size = 4, .channels = 1, .dim = 96, .depth = 6, .heads = 3,
                         .mlp_dim = 384, .experts = 16, .slots_per_expert = 3, .num_classes = 10};
    c.moe_layers[0] = 3, c.moe_layers[1] = 4, c.moe_layers[2] = 5, c.moe_count = 3;
    snprintf(name, name_size, "vit dim96 depth6 16x3 experts");
    return smoe_vit_create(ctx, &c, 1, model);
}

/* The runs of one ViT mode (0 inference, 1 training); best: the fastest, in seconds. */
typedef struct vit_runs {
    smoe_context *ctx;
    smoe_model *model;
    int B, mode, reps;
    float *images, *logits;
    int32_t *labels;
    smoe_profile *prof;
    double best;
} vit_runs;

static int run_vit(void *user)
{
    vit_runs *V = user;
    smoe_train_config cfg;
    smoe_train_config_default(&cfg);
    float loss;
    int rc = 0;
    V->best = 1e30;
    for (int k = -1; k < V->reps && !rc; k++) {
        if (k == 0 && V->prof) smoe_profile_clear(V->prof);
        double t0 = cli_now();
        smoe_status st = V->mode ? smoe_vit_train_step(V->model, &cfg, V->B, V->images, V->labels, &loss, NULL)
                                 : smoe_vit_infer(V->model, V->B, V->images, V->logits);
        if (st) rc = cli_fail(V->ctx, st, V->mode ? "training" : "inference");
        double t = cli_now() - t0;
        if (k >= 0 && t < V->best) V->best = t;
    }
    return rc;
}

/* With prof (two of them: inference, training), the runs after the warm-up are profiled. */
int bench_time_vit(smoe_context *ctx, const bench_opts *o, double *infer_ips, double *train_ips, char *name,
                   size_t name_size, smoe_profile *prof)
{
    vit_runs V = {.ctx = ctx, .B = o->vit_batch};
    smoe_status st = make_vit(ctx, o, name, name_size, &V.model);
    if (st) return cli_fail(ctx, st, "making the ViT");
    smoe_vit_config c;
    smoe_vit_get_config(V.model, &c);
    size_t per = (size_t)c.channels * c.image_size * c.image_size;
    V.images = malloc(per * V.B * 4), V.logits = malloc((size_t)V.B * c.num_classes * 4);
    V.labels = malloc((size_t)V.B * 4);
    for (size_t i = 0; V.images && i < per * V.B; i++) V.images[i] = (float)(i % 255) / 255.0f;
    for (int i = 0; V.labels && i < V.B; i++) V.labels[i] = i % c.num_classes;
    V.reps = prof ? 1 : smoe_bench_cpu_driver(ctx) ? 2 : 5;
    int rc = 0;
    for (int mode = 0; mode < 2 && !rc; mode++) {
        V.mode = mode;
        V.prof = prof ? &prof[mode] : NULL;
        if (prof) smoe_bench_profile_model(V.model, V.prof);
        rc = run_vit(&V);
        *(mode ? train_ips : infer_ips) = V.B / V.best;
    }
    free(V.images), free(V.logits), free(V.labels);
    smoe_model_free(V.model);
    return rc;
}
