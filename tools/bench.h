/* Parts of softmoe bench in their own files: the options (cmd_bench.c), the measurements
 * (bench_measure.c), the matmul rows (bench_matmul.c). */
#ifndef SMOE_BENCH_H
#define SMOE_BENCH_H

#include "bench_api.h"
#include "softmoe.h"

#define MAX_DEVICES 8
#define MAX_SHAPES 32
#define MAX_EXPERT_COUNTS 16
#define ROUTERS SMOE_BENCH_ROUTERS

typedef struct bench_opts {
    const char *devices[MAX_DEVICES];
    int ndev;
    char vk_names[MAX_DEVICES][24]; /* the default devices' names */
    int shapes[MAX_SHAPES][5];
    int nshape;
    int matmuls[MAX_SHAPES][5]; /* M, N, K, trans_a, trans_b */
    int nmatmul;
    int json, repeat, skip_vit, vit_only, vit_batch, keep_sweep, routers, profile, only_matmul;
    const char *vit_model;
    const char *variant; /* --variant: the one matmul variant --matmul times */
    int experts[MAX_EXPERT_COUNTS]; /* --experts: each shape at these expert counts, same slot count */
    int nexperts;
    const char *csv; /* --csv: every layer measurement as a CSV row */
} bench_opts;

typedef struct result {
    double ms_min, ms_median;
    char skipped[320]; /* why a device could not run the shape (too large for it), or "" */
} result;

extern const char *const bench_router_names[ROUTERS];

/* Everything measured, by device: what the report prints. */
typedef struct bench_results {
    result res[MAX_DEVICES][MAX_SHAPES][2];             /* [device][shape][pass] */
    result sres[MAX_DEVICES][MAX_SHAPES][ROUTERS][2];   /* the sparse layers */
    double peak[MAX_DEVICES], gemm, vit_inf[MAX_DEVICES], vit_train[MAX_DEVICES];
    char label[MAX_DEVICES][32], dname[MAX_DEVICES][256], vit_name[256];
    int cpu_index;
} bench_results;

/* FMA peak of all cores with the widest vectors the CPU has, and cblas_sgemm on 1024^3, GFLOP/s. */
double bench_cpu_peak(void);
double bench_sgemm_peak(void);

/* keep: experts kept per input (0: all). With prof, the runs after the warm-up are profiled
 * into it. Returns 0 (r->skipped says when the device cannot hold the shape), or 1 after
 * printing why. */
int bench_time_layer(smoe_context *ctx, const int *sh, int backward, int repeat, int keep, result *r, smoe_profile *prof);
/* Router r's sparse layer, as bench_time_layer. */
int bench_time_sparse(smoe_context *ctx, const int *sh, int r, int backward, int repeat, result *res);
/* Images per second of the ViT (o->vit_model, or the reference configuration); with prof
 * (two: inference, training) one profiled run each. */
int bench_time_vit(smoe_context *ctx, const bench_opts *o, double *infer_ips, double *train_ips, char *name,
                   size_t name_size, smoe_profile *prof);
/* The per-kernel table of replays runs of what, slowest first. */
void bench_print_profile(const char *label, const char *dname, const char *what, smoe_profile *prof, int replays,
                         int json);

/* One product C = op(A) op(B), shape {M, N, K, trans_a, trans_b}, on ctx's device: on Vulkan once
 * with every variant of the matmul family the device can run (each forced; only the one named
 * only, if not NULL) and once as the library chooses; on the CPU path with cblas_sgemm. Prints a
 * row per measurement (JSON objects with json) and returns 0, or 1 after printing why. */
int bench_matmul(smoe_context *ctx, const char *label, const char *dname, const int shape[5], int repeat, const char *only,
                 int json);

#endif
