/* The ops a model is written in. Each op is one function that runs on either path: with an
 * executor whose gpu is NULL it runs at once on the CPU (host/cpu/ kernels, host tensors); with a
 * gpu it is recorded into the executor's program (shaders/), to be replayed. Model code calls
 * the same sequence of ops for both paths and never asks which one runs it.
 * Tensors are float32 unless named otherwise; shapes are given in the arguments. Outputs are
 * overwritten unless an argument says accumulate. */
#ifndef SMOE_OPS_H
#define SMOE_OPS_H

#include "record.h"

typedef struct smoe_exec {
    smoe_gpu *gpu;      /* NULL: the CPU path */
    smoe_program *prog; /* Vulkan: the program being recorded */
} smoe_exec;

/* Vulkan only: recorders of two small kernels that other ops files use too (the Soft MoE layer's
 * fixed dispatch and combine). y[e] = alpha * x[(e / (rows*cols))*cols + e % cols] (+ y[e] with
 * accumulate), e < n: a row per batch repeated over rows, or (rows 1, cols n) a copy. */
smoe_status smoe_record_bcast(smoe_program *p, const smoe_tensor *x, const smoe_tensor *y, uint32_t n, uint32_t rows,
                              uint32_t cols, float alpha, int accumulate, smoe_err *err);
/* y[z*cols + c] = alpha * sum_r x[(z*rows + r)*cols + c], z < batch. */
smoe_status smoe_record_sum_rows(smoe_program *p, const smoe_tensor *x, const smoe_tensor *y, uint32_t rows, uint32_t cols,
                                 uint32_t batch, float alpha, smoe_err *err);

/* y[rows, out] = x[rows, in] W^T + b (W [out, in]; b may be NULL). */
smoe_status smoe_op_linear_forward(smoe_exec *ex, int rows, int in, int out, const smoe_tensor *x,
                                   const smoe_tensor *w, const smoe_tensor *b, const smoe_tensor *y, smoe_err *err);
/* dx = dy W (dx may be NULL; accumulate_dx adds to it), dw = dy^T x, db = colsum(dy) (may be NULL). */
smoe_status smoe_op_linear_backward(smoe_exec *ex, int rows, int in, int out, const smoe_tensor *x,
                                    const smoe_tensor *w, const smoe_tensor *dy, const smoe_tensor *dx, int accumulate_dx,
                                    const smoe_tensor *dw, const smoe_tensor *db, smoe_err *err);

/* Dense GELU MLP: pre = x W1^T + b1 [rows, hidden] (kept for backward), y = gelu(pre) W2^T + b2. */
smoe_status smoe_op_mlp_forward(smoe_exec *ex, int rows, int dim, int hidden, const smoe_tensor *x,
                                const smoe_tensor *w1, const smoe_tensor *b1, const smoe_tensor *w2,
                                const smoe_tensor *b2, const smoe_tensor *pre, const smoe_tensor *y, smoe_err *err);
/* dpre [rows, hidden] is scratch; dx overwritten. */
smoe_status smoe_op_mlp_backward(smoe_exec *ex, int rows, int dim, int hidden, const smoe_tensor *x,
                                 const smoe_tensor *w1, const smoe_tensor *w2, const smoe_tensor *pre,
                                 const smoe_tensor *dy, const smoe_tensor *dpre, const smoe_tensor *dx,
                                 const smoe_tensor *dw1, const smoe_tensor *db1, const smoe_tensor *dw2,
                                 const smoe_tensor *db2, smoe_err *err);

/* images [b, c, H, W] -> patches [b*(H/P)*(W/P), c*P*P] (order of vit_cpu.h). */
smoe_status smoe_op_im2col(smoe_exec *ex, int b, int c, int H, int W, int P, const smoe_tensor *images,
                           const smoe_tensor *patches, smoe_err *err);

/* LayerNorm over d (eps 1e-6); mean and rstd [rows] kept for backward. */
smoe_status smoe_op_layernorm_forward(smoe_exec *ex, int rows, int d, const smoe_tensor *x, const smoe_tensor *gamma,
                                      const smoe_tensor *beta, const smoe_tensor *y, const smoe_tensor *mean,
                                      const smoe_tensor *rstd, smoe_err *err);
smoe_status smoe_op_layernorm_backward(smoe_exec *ex, int rows, int d, const smoe_tensor *x, const smoe_tensor *gamma,
                                       const smoe_tensor *mean, const smoe_tensor *rstd, const smoe_tensor *dy,
                                       const smoe_tensor *dx, const smoe_tensor *dgamma, const smoe_tensor *dbeta,
                                       smoe_err *err);

/* Attention core on qkv [b, T, 3*dim] -> out [b, T, dim]; att [b, heads, T, T] kept. */
smoe_status smoe_op_attention_forward(smoe_exec *ex, int b, int T, int dim, int heads, const smoe_tensor *qkv,
                                      const smoe_tensor *att, const smoe_tensor *out, smoe_err *err);
/* datt [b, heads, T, T] is scratch; dqkv overwritten. */
smoe_status smoe_op_attention_backward(smoe_exec *ex, int b, int T, int dim, int heads, const smoe_tensor *qkv,
                                       const smoe_tensor *att, const smoe_tensor *dout, const smoe_tensor *datt,
                                       const smoe_tensor *dqkv, smoe_err *err);

/* y += x over n floats. */
smoe_status smoe_op_add(smoe_exec *ex, size_t n, const smoe_tensor *x, const smoe_tensor *y, smoe_err *err);
/* y[i, :] += x for i < b, x [n], y [b, n] (position embedding). */
smoe_status smoe_op_add_broadcast(smoe_exec *ex, int b, size_t n, const smoe_tensor *x, const smoe_tensor *y,
                                  smoe_err *err);
/* y[n] = sum_i x[i, :], x [b, n] (the position embedding's gradient). */
smoe_status smoe_op_sum_rows(smoe_exec *ex, int b, size_t n, const smoe_tensor *x, const smoe_tensor *y, smoe_err *err);

/* Mean over tokens: y[b, d] = mean_t x[b, t, d]; backward dx[b, t, d] = dy[b, d] / T. */
smoe_status smoe_op_meanpool_forward(smoe_exec *ex, int b, int T, int d, const smoe_tensor *x, const smoe_tensor *y,
                                     smoe_err *err);
smoe_status smoe_op_meanpool_backward(smoe_exec *ex, int b, int T, int d, const smoe_tensor *dy,
                                      const smoe_tensor *dx, smoe_err *err);

/* Softmax cross-entropy over logits [b, classes] with int32 labels [b]: loss [1] = mean over the
 * batch, probs [b, classes]; dlogits = (probs - onehot) / b unless dlogits is NULL. losses [b] is
 * scratch. */
smoe_status smoe_op_cross_entropy(smoe_exec *ex, int b, int classes, const smoe_tensor *logits,
                                  const smoe_tensor *labels, const smoe_tensor *probs, const smoe_tensor *losses,
                                  const smoe_tensor *loss, const smoe_tensor *dlogits, smoe_err *err);

/* out [1] = sum over every element of every tensor of x^2 (the squared global gradient norm).
 * partial is scratch of smoe_op_sum_squares_scratch(count, tensors) floats. */
size_t smoe_op_sum_squares_scratch(int count, const smoe_tensor *tensors);
smoe_status smoe_op_sum_squares(smoe_exec *ex, int count, const smoe_tensor *tensors, const smoe_tensor *partial,
                                const smoe_tensor *out, smoe_err *err);

/* One AdamW step of a parameter tensor p (n floats) with gradient g, moments m and v. The step
 * t (1-based) and learning rate live in state [2] = {t, lr} (written by the host each step, so
 * replays need no re-recording); the gradient is scaled by min(1, max_norm / sqrt(norm2[0]))
 * (global-norm clipping; max_norm <= 0 disables it). wd is 0 for tensors without decay. */
typedef struct smoe_adamw_cfg {
    float beta1, beta2, eps, wd, max_norm;
    float lr_mult; /* this tensor's learning rate is lr * lr_mult (0 means 1) */
} smoe_adamw_cfg;
smoe_status smoe_op_adamw(smoe_exec *ex, size_t n, const smoe_tensor *p, const smoe_tensor *g, const smoe_tensor *m,
                          const smoe_tensor *v, const smoe_tensor *state, const smoe_tensor *norm2,
                          const smoe_adamw_cfg *cfg, smoe_err *err);

#endif
