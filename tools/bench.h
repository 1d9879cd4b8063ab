/* Parts of softmoe bench in their own files. */
#ifndef SMOE_BENCH_H
#define SMOE_BENCH_H

#include "softmoe.h"

/* One product C = op(A) op(B), shape {M, N, K, trans_a, trans_b}, on ctx's device: on Vulkan once
 * with every variant of the matmul family the device can run (each forced; only the one named
 * only, if not NULL) and once as the library chooses; on the CPU path with cblas_sgemm. Prints a
 * row per measurement (JSON objects with json) and returns 0, or 1 after printing why. */
int bench_matmul(smoe_context *ctx, const char *label, const char *dname, const int shape[5], int repeat, const char *only,
                 int json);

#endif
