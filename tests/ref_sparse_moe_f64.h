/* The sparse MoE layers (Tokens Choice, Experts Choice; host/cpu/sparse_moe_cpu.h) in double
 * precision with plain loops and the routing simulated one token at a time: the slow, obviously
 * correct reference the float32 paths are tested against. No BLAS, no threads. */
#ifndef SMOE_REF_SPARSE_MOE_F64_H
#define SMOE_REF_SPARSE_MOE_F64_H

#include "sparse_moe_cpu.h"

typedef struct {
    const double *gate, *w1, *b1, *w2, *b2; /* gate [n, d]; w1 [n, h, d], b1 [n, h], w2 [n, d, h], b2 [n, d] */
} ref_sparse_params;

typedef struct {
    double *gate, *w1, *b1, *w2, *b2;
} ref_sparse_grads;

/* A routing. Tokens Choice: expert[t*K + k] is token t's k-th choice and pos[t*K + k] its row in
 * that expert's buffer of its group (0..C-1), or -1 when it was dropped. Experts Choice:
 * taken[(group*n + e)*C + c] is the token expert e took c-th in the group, or -1. */
typedef struct {
    int *expert, *pos; /* [T*K] */
    int *taken;        /* [groups*n*C] */
} ref_sparse_routing;

/* Allocates the arrays of a routing for dims (free with ref_sparse_routing_free). */
int ref_sparse_routing_alloc(const smoe_sparse_dims *dims, ref_sparse_routing *r);
void ref_sparse_routing_free(ref_sparse_routing *r);

/* y [b*m, d] and *aux from x. noise [T, n] are the N(0,1) samples of a training pass (added as
 * noise/n to the logits, with the load loss), or NULL for a deterministic pass. The auxiliary
 * losses are computed for Tokens Choice (weights in dims). The routing is computed into *routing,
 * or, with fixed, taken from it as given (finite differences hold the choices). With dy, also dx
 * and the gradients (overwritten) of sum(y * dy) + aux. Returns 0, or -1 when out of memory. */
int ref_sparse_f64(const smoe_sparse_dims *dims, const ref_sparse_params *prm, const double *x, const double *noise,
                   double *y, double *aux, const double *dy, double *dx, const ref_sparse_grads *grads,
                   ref_sparse_routing *routing, int fixed);

#endif
