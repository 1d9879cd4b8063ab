/* The Soft MoE layer on the CPU path (docs/format.md section 1): readable C, its GEMMs through gemm.h,
 * on the OpenMP threads. The reference every Vulkan kernel is checked against. */
#ifndef SMOE_SOFTMOE_CPU_H
#define SMOE_SOFTMOE_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "layer_types.h"

/* Parameters, in the layouts of docs/format.md: phi [d, n*p], scale [1], w1 [n, h, d], b1 [n, h],
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

/* The experts alone, over rows already gathered expert-major (xs [n, M, d]: the M rows of
 * expert e contiguous); shared with the sparse MoE layers. Forward: A = xs W1ᵀ + b1 [n, M, h],
 * H = gelu(A), out = H W2ᵀ [n, M, d] (without b2). Backward, given gy = G_out [n, M, d]: every
 * expert gradient (overwritten), gh = G_A [n, M, h] and gx = G_xs [n, M, d]. pack is scratch of
 * smoe_cpu_gemm_pack_floats() floats. */
size_t smoe_cpu_gemm_pack_floats(void);
void smoe_cpu_experts_forward(int n, int M, int d, int h, const float *w1, const float *b1,
                              const float *w2, const float *xs, float *A, float *H, float *out,
                              float *pack);
void smoe_cpu_experts_backward(int n, int M, int d, int h, const float *w1, const float *w2,
                               const float *xs, const float *A, const float *H, const float *gy,
                               float *gh, float *gx, float *gw1, float *gb1, float *gw2,
                               float *gb2, float *pack);

/* Expert-subset inference (smoe_keep, layer_types.h). */
/* y = the layer keeping keep->k experts per sequence (1 <= k <= n), inference only: ws is left
 * unfit for backward. The fc1/gelu/fc2 GEMMs, the dispatch and the combine run over the kept
 * slots only. state: {seed low word, seed high word, call} of the random draws (read only with
 * keep->random), layer: the layer's own draw. With k = n and no renormalisation, y equals
 * smoe_cpu_layer_forward's bit for bit. */
void smoe_cpu_layer_forward_keep(const smoe_layer_dims *dims, const smoe_layer_params *prm,
                                 const float *x, float *y, float *ws, const smoe_keep *keep,
                                 const uint32_t state[3], uint32_t layer);

#endif
