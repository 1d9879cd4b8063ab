/* The internal interface of softmoe bench (bench_api.h). */
#define _POSIX_C_SOURCE 200809L
#include "bench_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "context.h"
#include "model.h"
#include "ops/matmul.h"
#include "ops/sparse_moe_layer.h"
#include "pipeline.h"
#include "record.h"
#include "safetensors.h"

int smoe_bench_cpu_driver(smoe_context *ctx)
{
    smoe_gpu *gpu = smoe_ctx_gpu(ctx);
    return gpu && (gpu->quirks & SMOE_QUIRK_CPU_DRIVER);
}

/* ---- Peak ---- */

/* Milliseconds of the fastest of runs after the first (the first also settles clocks and caches). */
static double best_run(smoe_program *p, int runs, smoe_err *err)
{
    double best = 1e30;
    for (int r = 0; r < runs; r++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (smoe_program_run(p, err)) return 1e30;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double t = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        if (r && t < best) best = t;
    }
    return best;
}

double smoe_bench_vulkan_peak(smoe_context *ctx)
{
    smoe_gpu *gpu = smoe_ctx_gpu(ctx);
    if (!gpu) return 0;
    smoe_err err;
    int slow = smoe_bench_cpu_driver(ctx);
    uint32_t wg = 64, groups = slow ? 256 : 4096, iters = slow ? 256 : 4096;
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
            double best = best_run(&p, 4, &err);
            if (best < 1e30) gflops = (double)wg * groups * iters * 64 / best / 1e9;
        }
        smoe_program_destroy(&p);
    }
    smoe_arena_release(&a);
    return gflops;
}

/* ---- Profiles ---- */

int smoe_bench_can_profile(smoe_context *ctx)
{
    smoe_gpu *gpu = smoe_ctx_gpu(ctx);
    return gpu && gpu->info.timestamps;
}

void smoe_bench_profile_model(smoe_model *model, smoe_profile *prof)
{
    if (!smoe_bench_can_profile(model->ctx)) return;
    smoe_err err = {{0}};
    if (smoe_model_settle(model, &err)) return; /* the device was lost: its runs will say so */
    smoe_executor_set_profile(&model->exec, prof);
}

/* ---- The layer model ---- */

smoe_status smoe_bench_layer_model(smoe_context *ctx, int d, int n, int p, int h, smoe_model **out)
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
    size_t size = 0;
    smoe_err err;
    if (smoe_st_serialize(e, 6, &meta, 1, &img, &size, &err)) img = NULL;
    for (int i = 0; i < 6; i++) free(data[i]);
    smoe_status st = img ? smoe_model_load_memory(ctx, img, size, out) : SMOE_ERROR_OUT_OF_HOST_MEMORY;
    free(img);
    return st;
}

/* ---- One matmul ---- */

struct smoe_bench_matmul {
    smoe_context *ctx;
    smoe_gpu *gpu;
    smoe_arena arena;
    smoe_matmul mm;
    smoe_program p;
    int recorded;
};

int smoe_bench_matmul_variant_count(void) { return (int)smoe_matmul_variant_count(); }

const char *smoe_bench_matmul_variant(smoe_context *ctx, int i)
{
    smoe_gpu *gpu = smoe_ctx_gpu(ctx);
    return gpu && i >= 0 && smoe_matmul_variant_usable(gpu, (uint32_t)i) ? smoe_matmul_variant_name((uint32_t)i) : NULL;
}

static smoe_status operands(smoe_bench_matmul *bm, const int s[5], const float *a, const float *b, smoe_err *err)
{
    uint64_t na = (uint64_t)s[0] * s[2], nb = (uint64_t)s[2] * s[1], nc = (uint64_t)s[0] * s[1];
    smoe_tensor A = {0}, B = {0}, C = {0}; /* copied into mm below even when a reservation failed */
    smoe_status st = smoe_arena_reserve(&bm->arena, na * 4, &A, err);
    if (!st) st = smoe_arena_reserve(&bm->arena, nb * 4, &B, err);
    if (!st) st = smoe_arena_reserve(&bm->arena, nc * 4, &C, err);
    if (!st) st = smoe_arena_commit(&bm->arena, err);
    if (!st) st = smoe_tensor_upload(&A, 0, a, na * 4, err);
    if (!st) st = smoe_tensor_upload(&B, 0, b, nb * 4, err);
    uint32_t M = (uint32_t)s[0], N = (uint32_t)s[1], K = (uint32_t)s[2];
    smoe_matmul mm = {
        .M = M, .N = N, .K = K, .batch = 1, .trans_a = s[3], .trans_b = s[4],
        .a = smoe_mm_plain(A, s[3] ? M : K, 0), .b = smoe_mm_plain(B, s[4] ? K : N, 0), .c = smoe_mm_plain(C, N, 0),
    };
    bm->mm = mm;
    return st;
}

smoe_status smoe_bench_matmul_open(smoe_context *ctx, const int shape[5], const float *a, const float *b,
                                   smoe_bench_matmul **out)
{
    *out = NULL;
    smoe_gpu *gpu = smoe_ctx_gpu(ctx);
    if (!gpu) return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "the matmul bench runs on a Vulkan device");
    smoe_bench_matmul *bm = calloc(1, sizeof *bm);
    if (!bm) return smoe_ctx_fail(ctx, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    bm->ctx = ctx;
    bm->gpu = gpu;
    smoe_arena_init(&bm->arena, gpu, "bench matmul");
    smoe_err err;
    smoe_status st = operands(bm, shape, a, b, &err);
    if (st) {
        smoe_bench_matmul_close(bm);
        return smoe_ctx_error(ctx, st, &err);
    }
    *out = bm;
    return SMOE_OK;
}

smoe_status smoe_bench_matmul_record(smoe_bench_matmul *bm, const char *variant, const char **chosen)
{
    if (bm->recorded) smoe_program_destroy(&bm->p);
    bm->recorded = 0;
    if (chosen) *chosen = smoe_matmul_choice(bm->gpu, &bm->mm, NULL);
    smoe_err err;
    smoe_status st = smoe_program_begin(bm->gpu, &bm->p, &err);
    if (st) return smoe_ctx_error(bm->ctx, st, &err);
    bm->recorded = 1;
    st = smoe_record_matmul_variant(&bm->p, &bm->mm, variant, &err);
    if (!st) st = smoe_program_end(&bm->p, &err);
    return st ? smoe_ctx_error(bm->ctx, st, &err) : SMOE_OK;
}

smoe_status smoe_bench_matmul_run(smoe_bench_matmul *bm)
{
    smoe_err err;
    smoe_status st = smoe_program_run(&bm->p, &err);
    return st ? smoe_ctx_error(bm->ctx, st, &err) : SMOE_OK;
}

smoe_status smoe_bench_matmul_result(smoe_bench_matmul *bm, float *c)
{
    smoe_err err;
    smoe_status st = smoe_tensor_download(&bm->mm.c.t, 0, c, (uint64_t)bm->mm.M * bm->mm.N * 4, &err);
    return st ? smoe_ctx_error(bm->ctx, st, &err) : SMOE_OK;
}

void smoe_bench_matmul_close(smoe_bench_matmul *bm)
{
    if (!bm) return;
    if (bm->recorded) smoe_program_destroy(&bm->p);
    smoe_arena_release(&bm->arena);
    free(bm);
}

/* ---- The sparse MoE layers ---- */

#define SPARSE_TENSORS 14
#define SPARSE_INPUTS 9 /* x, y, dy, dx, gate, w1, b1, w2, b2: the ones given values */

struct smoe_bench_sparse {
    smoe_context *ctx;
    smoe_gpu *gpu;
    smoe_sparse_dims d;
    smoe_sparse_tensors L;
    smoe_arena arena;
    smoe_program prog;
    int mode, backward, recorded;
};

/* Shape (b, m, d, n, p): n experts of hidden 4d, one group per sequence, the capacity factor
 * c = n*p/m, so that an expert's capacity per sequence is about p (Tokens Choice rounds it up
 * to a multiple of 4) and the experts see about as many rows as Soft MoE's n*p slots. */
static smoe_sparse_dims sparse_dims(const int *sh, int r)
{
    smoe_sparse_dims d = {.b = sh[0], .m = sh[1], .d = sh[2], .n = sh[3], .h = 4 * sh[2],
                          .kind = r == 2 ? SMOE_MOE_EXPERTS_CHOICE : SMOE_MOE_TOKENS_CHOICE, .top_k = r == 2 ? 0 : r + 1,
                          .capacity_factor = (float)sh[3] * sh[4] / sh[1], .importance_weight = SMOE_AUX_LOSS_WEIGHT,
                          .load_weight = SMOE_AUX_LOSS_WEIGHT};
    return d;
}

double smoe_bench_sparse_gflop(const int shape[5], int router, int backward)
{
    smoe_sparse_dims d = sparse_dims(shape, router);
    smoe_sparse_plan pl;
    smoe_sparse_plan_make(&d, &pl);
    double rows = (double)d.n * pl.R, route = 2.0 * pl.T * d.d * d.n, fwd = route + 4.0 * rows * d.d * d.h;
    return (backward ? 3 * fwd : fwd) / 1e9;
}

static void sparse_list(smoe_bench_sparse *bs, smoe_tensor *in[SPARSE_TENSORS], uint64_t sizes[SPARSE_TENSORS])
{
    smoe_sparse_tensors *L = &bs->L;
    const smoe_sparse_dims *d = &bs->d;
    uint64_t io = (uint64_t)d->b * d->m * d->d, n = d->n, D = d->d, H = d->h;
    smoe_tensor *t[SPARSE_TENSORS] = {&L->x, &L->y, &L->dy, &L->dx, &L->gate, &L->w1, &L->b1, &L->w2,
                                      &L->b2, &L->g_gate, &L->g_w1, &L->g_b1, &L->g_w2, &L->g_b2};
    uint64_t s[SPARSE_TENSORS] = {io, io, io, io, n * D, n * H * D, n * H, n * D * H, n * D, n * D, n * H * D, n * H, n * D * H, n * D};
    memcpy(in, t, sizeof t);
    memcpy(sizes, s, sizeof s);
}

static smoe_status sparse_reserve(smoe_bench_sparse *bs, smoe_err *err)
{
    smoe_tensor *in[SPARSE_TENSORS];
    uint64_t sizes[SPARSE_TENSORS];
    sparse_list(bs, in, sizes);
    smoe_status st = SMOE_OK;
    for (int i = 0; i < SPARSE_TENSORS && !st; i++) st = smoe_arena_reserve(&bs->arena, sizes[i] * 4, in[i], err);
    if (!st) st = smoe_arena_reserve(&bs->arena, 8, &bs->L.step, err);
    if (!st) st = smoe_sparse_reserve(&bs->L, &bs->d, &bs->arena, 1, err);
    if (!st) st = smoe_arena_commit(&bs->arena, err);
    return st;
}

/* Made-up inputs and weights, and the step counter the noise reads. */
static smoe_status sparse_fill(smoe_bench_sparse *bs, smoe_err *err)
{
    smoe_tensor *in[SPARSE_TENSORS];
    uint64_t sizes[SPARSE_TENSORS], most = 0;
    sparse_list(bs, in, sizes);
    for (int i = 0; i < SPARSE_INPUTS; i++) most = sizes[i] > most ? sizes[i] : most;
    float *buf = malloc(most * 4);
    if (!buf) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    smoe_status st = SMOE_OK;
    for (int i = 0; i < SPARSE_INPUTS && !st; i++) {
        uint64_t s = 99 + (uint64_t)i;
        for (uint64_t k = 0; k < sizes[i]; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            buf[k] = ((float)(s >> 40) / 16777216.0f - 0.5f) * (i < 4 ? 2.0f : 0.1f);
        }
        st = smoe_tensor_upload(in[i], 0, buf, sizes[i] * 4, err);
    }
    free(buf);
    float step[2] = {1, 0};
    if (!st) st = smoe_tensor_upload(&bs->L.step, 0, step, sizeof step, err);
    return st;
}

/* The op's forward (and backward), into the program on Vulkan, at once on the CPU path. */
static smoe_status sparse_pass(smoe_bench_sparse *bs, smoe_err *err)
{
    smoe_exec ex = {bs->gpu, bs->gpu ? &bs->prog : NULL};
    smoe_status st = smoe_op_sparse_forward(&ex, &bs->L, &bs->d, bs->mode, err);
    if (!st && bs->backward) st = smoe_op_sparse_backward(&ex, &bs->L, &bs->d, bs->mode, err);
    return st;
}

static smoe_status sparse_record(smoe_bench_sparse *bs, smoe_err *err)
{
    smoe_status st = smoe_program_begin(bs->gpu, &bs->prog, err);
    if (st) return st;
    bs->recorded = 1;
    st = sparse_pass(bs, err);
    if (!st) st = smoe_program_end(&bs->prog, err);
    return st;
}

smoe_status smoe_bench_sparse_open(smoe_context *ctx, const int shape[5], int router, int backward,
                                   smoe_bench_sparse **out)
{
    *out = NULL;
    smoe_bench_sparse *bs = calloc(1, sizeof *bs);
    if (!bs) return smoe_ctx_fail(ctx, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    bs->ctx = ctx;
    bs->gpu = smoe_ctx_gpu(ctx);
    bs->d = sparse_dims(shape, router);
    bs->backward = backward;
    bs->mode = backward ? SMOE_ROUTE_TRAIN : SMOE_ROUTE_INFER;
    smoe_arena_init(&bs->arena, bs->gpu, "bench");
    smoe_err err = {{0}};
    smoe_status st = sparse_reserve(bs, &err);
    if (!st) st = sparse_fill(bs, &err);
    if (!st && bs->gpu) st = sparse_record(bs, &err);
    if (st) {
        smoe_bench_sparse_close(bs);
        return smoe_ctx_error(ctx, st, &err);
    }
    *out = bs;
    return SMOE_OK;
}

smoe_status smoe_bench_sparse_run(smoe_bench_sparse *bs)
{
    smoe_err err = {{0}};
    smoe_status st = bs->gpu ? smoe_program_run(&bs->prog, &err) : sparse_pass(bs, &err);
    return st ? smoe_ctx_error(bs->ctx, st, &err) : SMOE_OK;
}

void smoe_bench_sparse_close(smoe_bench_sparse *bs)
{
    if (!bs) return;
    if (bs->recorded) smoe_program_destroy(&bs->prog);
    smoe_arena_release(&bs->arena);
    free(bs);
}
