/* What softmoe bench needs beyond the public API (softmoe.h), in one place: the device's measured
 * peak, one matmul timed on one named variant, the sparse MoE layers (which have no model file),
 * a layer model of made-up weights, and profiled calls with their per-kernel table. Inside the
 * library, not installed. Failures leave their message in the context (smoe_last_error). */
#ifndef SMOE_BENCH_API_H
#define SMOE_BENCH_API_H

#include "profile.h"
#include "softmoe.h"

/* Whether ctx's device is a Vulkan driver that runs on the CPU (fewer repetitions make sense). */
int smoe_bench_cpu_driver(smoe_context *ctx);

/* GFLOP/s of the peak-FMA shader on ctx's Vulkan device; 0 on the CPU path or on failure. */
double smoe_bench_vulkan_peak(smoe_context *ctx);

/* Whether calls on ctx can be profiled (a Vulkan queue with timestamps). */
int smoe_bench_can_profile(smoe_context *ctx);
/* From now on every run of model's work adds its per-dispatch GPU times to prof (its programs
 * are recorded again, with timestamps); NULL stops it. prof is to outlive the model or be
 * unset first. Without profiling (smoe_bench_can_profile 0) nothing changes. */
void smoe_bench_profile_model(smoe_model *model, smoe_profile *prof);

/* A Soft MoE layer model of deterministic made-up weights: d model width, n experts, p slots
 * each, h expert hidden width. */
smoe_status smoe_bench_layer_model(smoe_context *ctx, int d, int n, int p, int h, smoe_model **out);

/* ---- One matmul, C = op(A) op(B) with shape {M, N, K, trans_a, trans_b} ---- */

typedef struct smoe_bench_matmul smoe_bench_matmul;

/* The matmul variants: their count, and the name of variant i when ctx's device runs it (else NULL). */
int smoe_bench_matmul_variant_count(void);
const char *smoe_bench_matmul_variant(smoe_context *ctx, int i);

/* The operands on ctx's Vulkan device, a (M x K, or K x M transposed) and b uploaded. */
smoe_status smoe_bench_matmul_open(smoe_context *ctx, const int shape[5], const float *a, const float *b,
                                   smoe_bench_matmul **out);
/* Records the product with variant forced (NULL: the library's own choice); then *chosen (may
 * be NULL) names what the library chose with variant NULL. */
smoe_status smoe_bench_matmul_record(smoe_bench_matmul *bm, const char *variant, const char **chosen);
/* Runs the recorded product once and waits for it. */
smoe_status smoe_bench_matmul_run(smoe_bench_matmul *bm);
/* Downloads C (M x N). */
smoe_status smoe_bench_matmul_result(smoe_bench_matmul *bm, float *c);
void smoe_bench_matmul_close(smoe_bench_matmul *bm);

/* ---- The sparse MoE layers on shape {b, m, d, n, p} (see smoe_bench_sparse_open) ---- */

#define SMOE_BENCH_ROUTERS 3 /* 0: Tokens Choice K=1, 1: Tokens Choice K=2, 2: Experts Choice */

typedef struct smoe_bench_sparse smoe_bench_sparse;

/* GFLOP of one pass of router r on shape (backward: forward and backward). */
double smoe_bench_sparse_gflop(const int shape[5], int router, int backward);
/* Router r's layer with n experts of hidden 4d, one group per sequence and capacity factor
 * n*p/m, on made-up inputs and weights; on Vulkan recorded once (forward, and backward in
 * training mode when backward). SMOE_ERROR_TOO_LARGE or SMOE_ERROR_OUT_OF_DEVICE_MEMORY: the
 * device cannot hold the shape. */
smoe_status smoe_bench_sparse_open(smoe_context *ctx, const int shape[5], int router, int backward,
                                   smoe_bench_sparse **out);
/* One pass (a replay on Vulkan). */
smoe_status smoe_bench_sparse_run(smoe_bench_sparse *bs);
void smoe_bench_sparse_close(smoe_bench_sparse *bs);

#endif
