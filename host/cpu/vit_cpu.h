/* CPU kernels of the ViT ops (docs/format.md section 2), the reference the Vulkan shaders are checked
 * against. Plain C; OpenBLAS for matmuls; OpenMP across rows where it pays. All tensors are
 * float32 row-major; every backward overwrites its outputs unless it says "accumulates". */
#ifndef SMOE_VIT_CPU_H
#define SMOE_VIT_CPU_H

#include <stddef.h>
#include <stdint.h>

/* y[rows, out] = x[rows, in] W^T + b, W [out, in] (PyTorch Linear layout); b may be NULL. */
void smoe_cpu_linear_forward(int rows, int in, int out, const float *x, const float *w, const float *b, float *y);
/* dx = dy W (dx may be NULL); dw = dy^T x; db = sum over rows of dy (db may be NULL).
 * accumulate != 0: dx, dw, db are added to instead of overwritten. */
void smoe_cpu_linear_backward(int rows, int in, int out, const float *x, const float *w, const float *dy, float *dx,
                              float *dw, float *db, int accumulate);

/* Patches of images [b, c, H, W] with patch size P as rows [b * (H/P)*(W/P), c*P*P], in the order
 * (channel, row in patch, column in patch) that matches patch_embed.proj.weight [dim, c, P, P]
 * flattened; patches in row-major order over the image. */
void smoe_cpu_im2col(int b, int c, int H, int W, int P, const float *images, float *patches);

/* LayerNorm over the last dimension d (eps 1e-6): y = (x - mean) * rstd * gamma + beta; saves mean
 * and rstd [rows] for backward. */
void smoe_cpu_layernorm_forward(int rows, int d, const float *x, const float *gamma, const float *beta, float *y,
                                float *mean, float *rstd);
/* dx (overwritten), dgamma and dbeta (overwritten). */
void smoe_cpu_layernorm_backward(int rows, int d, const float *x, const float *gamma, const float *mean,
                                 const float *rstd, const float *dy, float *dx, float *dgamma, float *dbeta);

/* Multi-head self-attention core on qkv [b, T, 3*dim] (q, then k, then v; heads contiguous inside
 * each): out[b, T, dim] = concat_h softmax(Q_h K_h^T / sqrt(hd)) V_h, hd = dim/heads. Saves the
 * attention probabilities att [b, heads, T, T] for backward. */
void smoe_cpu_attention_forward(int b, int T, int dim, int heads, const float *qkv, float *att, float *out);
/* dqkv [b, T, 3*dim] (overwritten) from dout [b, T, dim]. */
void smoe_cpu_attention_backward(int b, int T, int dim, int heads, const float *qkv, const float *att,
                                 const float *dout, float *dqkv);

/* gelu (tanh form) elementwise, and its backward dx = dy * gelu'(x). */
void smoe_cpu_gelu_forward(size_t n, const float *x, float *y);
void smoe_cpu_gelu_backward(size_t n, const float *x, const float *dy, float *dx);

/* Mean over tokens: y[b, d] = mean_t x[b, t, d]; backward dx[b, t, d] = dy[b, d] / T. */
void smoe_cpu_meanpool_forward(int b, int T, int d, const float *x, float *y);
void smoe_cpu_meanpool_backward(int b, int T, int d, const float *dy, float *dx);

/* Softmax cross-entropy, mean over the batch. Returns the mean loss; writes per-example
 * probabilities probs [b, classes]; labels are in [0, classes). */
float smoe_cpu_cross_entropy_forward(int b, int classes, const float *logits, const int32_t *labels, float *probs);
/* dlogits = (probs - onehot(labels)) / b. */
void smoe_cpu_cross_entropy_backward(int b, int classes, const float *probs, const int32_t *labels, float *dlogits);

/* Sum of squares of n floats, accumulated in double. */
double smoe_cpu_sum_squares(size_t n, const float *x);

/* One AdamW step on n parameters (PyTorch's AdamW): with g = grad * grad_scale,
 *   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *   p -= lr * (wd * p + (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps))
 * t is the 1-based step. */
void smoe_cpu_adamw(size_t n, float *p, const float *grad, float *m, float *v, float lr, float beta1, float beta2,
                    float eps, float wd, float grad_scale, int t);

#endif
