/* The Soft MoE layer on the CPU path (SPEC section 1): readable C, its own AVX-512 GEMMs where
 * the CPU has them (OpenBLAS otherwise; see softmoe_cpu.c for why),
 * both cores used. The reference every Vulkan kernel is checked against. */
#ifndef SMOE_SOFTMOE_CPU_H
#define SMOE_SOFTMOE_CPU_H

#include <stddef.h>

typedef struct smoe_layer_dims {
    int b, m, d, n, p, h; /* batch, tokens, model dim, experts, slots per expert, expert hidden */
} smoe_layer_dims;

/* Parameters, in the SPEC's layouts: phi [d, n*p], scale [1], w1 [n, h, d], b1 [n, h],
 * w2 [n, d, h], b2 [n, d]. */
typedef struct smoe_layer_params {
    const float *phi, *scale, *w1, *b1, *w2, *b2;
} smoe_layer_params;

typedef struct smoe_layer_grads {
    float *phi, *scale, *w1, *b1, *w2, *b2;
} smoe_layer_grads;

/* Floats of workspace the forward pass needs; it keeps there what backward reads (logits,
 * softmax statistics, slots, expert activations), so backward must get the same workspace. */
size_t smoe_cpu_layer_workspace(const smoe_layer_dims *dims);

/* y[b,m,d] = SoftMoE(x). ws: smoe_cpu_layer_workspace(dims) floats. */
void smoe_cpu_layer_forward(const smoe_layer_dims *dims, const smoe_layer_params *prm,
                            const float *x, float *y, float *ws);

/* Given dy, after smoe_cpu_layer_forward with the same x and ws: writes dx and every gradient
 * (overwriting, not accumulating). */
void smoe_cpu_layer_backward(const smoe_layer_dims *dims, const smoe_layer_params *prm,
                             const float *x, const float *dy, float *ws, float *dx,
                             const smoe_layer_grads *grads);

#endif
