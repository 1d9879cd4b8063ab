/* The Soft MoE layer (docs/format.md section 1) in double precision with plain loops: the slow, obviously
 * correct reference the float32 CPU path is tested against. No BLAS, no threads. */
#ifndef SMOE_REF_SOFTMOE_F64_H
#define SMOE_REF_SOFTMOE_F64_H

#include "softmoe_cpu.h"

/* Same layouts as smoe_layer_params: phi [d, n*p], scale [1], w1 [n, h, d], b1 [n, h],
 * w2 [n, d, h], b2 [n, d]. */
typedef struct {
    const double *phi, *scale, *w1, *b1, *w2, *b2;
} ref_layer_params;

typedef struct {
    double *phi, *scale, *w1, *b1, *w2, *b2;
} ref_layer_grads;

/* y[b,m,d] = SoftMoE(x), with the dispatch and combine weights dims->dispatch and dims->combine
 * (smoe_mixing: the fixed ones formed as matrices). With dy != NULL also writes dx and every
 * gradient (overwriting).
 * Returns 0, or -1 when out of memory. */
int ref_layer_f64(const smoe_layer_dims *dims, const ref_layer_params *prm, const double *x,
                  double *y, const double *dy, double *dx, const ref_layer_grads *grads);

/* The forward keeping k experts per sequence (smoe_keep in softmoe_cpu.h; 1 <= k <= n): per
 * sequence the k experts with the largest sum of C over the tokens and their slots (of equal
 * sums the lower index), the dropped experts' slots output zero, and the kept slots are combined
 * with C, or with renormalize with each token's kept weights rescaled to sum to 1. scores [b, n]
 * and kept [b, n] (1: kept, 0: dropped) are written when not NULL. Returns 0, or -1 when out of
 * memory. */
int ref_layer_keep_f64(const smoe_layer_dims *dims, const ref_layer_params *prm, const double *x,
                       double *y, int k, int renormalize, double *scores, int *kept);

#endif
