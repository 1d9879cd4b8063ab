/* The ViT ops (docs/format.md section 2) in double precision with plain loops: the slow, obviously correct
 * reference that host/cpu/vit_cpu.c is tested against. No BLAS, no threads. Same layouts as
 * vit_cpu.h; every output is overwritten. */
#ifndef SMOE_REF_VIT_F64_H
#define SMOE_REF_VIT_F64_H

#include <stdint.h>

/* y[rows, out] = x W^T + b (b may be NULL); W [out, in]. */
void ref_linear_forward(int rows, int in, int out, const double *x, const double *w, const double *b, double *y);
/* dx = dy W, dw = dy^T x, db = column sums of dy (any output may be NULL). */
void ref_linear_backward(int rows, int in, int out, const double *x, const double *w, const double *dy, double *dx,
                         double *dw, double *db);

/* Direct convolution with stride = kernel = P, no padding: images [b, c, H, W], w [dim, c, P, P],
 * bias [dim] (may be NULL) -> y [b, (H/P)*(W/P), dim] (patches in row-major order). */
void ref_patch_conv(int b, int c, int H, int W, int P, int dim, const double *images, const double *w,
                    const double *bias, double *y);

/* LayerNorm over the last dimension, eps 1e-6, biased variance. */
void ref_layernorm_forward(int rows, int d, const double *x, const double *gamma, const double *beta, double *y);
void ref_layernorm_backward(int rows, int d, const double *x, const double *gamma, const double *dy, double *dx,
                            double *dgamma, double *dbeta);

/* Multi-head self-attention core on qkv [b, T, 3*dim]; att [b, heads, T, T] may be NULL. */
void ref_attention_forward(int b, int T, int dim, int heads, const double *qkv, double *att, double *out);
/* dqkv [b, T, 3*dim] from dout [b, T, dim]. Returns 0, or -1 when out of memory. */
int ref_attention_backward(int b, int T, int dim, int heads, const double *qkv, const double *dout, double *dqkv);

/* GELU, tanh form. */
double ref_gelu(double a);
double ref_gelu_grad(double a);

/* y[b, d] = mean over t of x[b, t, d]; dx[b, t, d] = dy[b, d] / T. */
void ref_meanpool_forward(int b, int T, int d, const double *x, double *y);
void ref_meanpool_backward(int b, int T, int d, const double *dy, double *dx);

/* Mean softmax cross-entropy; probs [b, classes] may be NULL. dlogits = (softmax - onehot) / b. */
double ref_cross_entropy_forward(int b, int classes, const double *logits, const int32_t *labels, double *probs);
void ref_cross_entropy_backward(int b, int classes, const double *logits, const int32_t *labels, double *dlogits);

#endif
