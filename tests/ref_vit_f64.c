/* See ref_vit_f64.h. Written for readability: one loop per formula. */
#include "ref_vit_f64.h"

#include <math.h>
#include <stdlib.h>

void ref_linear_forward(int rows, int in, int out, const double *x, const double *w, const double *b, double *y)
{
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) {
            double s = b ? b[o] : 0.0;
            for (int k = 0; k < in; k++) s += x[r * in + k] * w[o * in + k];
            y[r * out + o] = s;
        }
}

void ref_linear_backward(int rows, int in, int out, const double *x, const double *w, const double *dy, double *dx,
                         double *dw, double *db)
{
    if (dx)
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < in; k++) {
                double s = 0.0;
                for (int o = 0; o < out; o++) s += dy[r * out + o] * w[o * in + k];
                dx[r * in + k] = s;
            }
    if (dw)
        for (int o = 0; o < out; o++)
            for (int k = 0; k < in; k++) {
                double s = 0.0;
                for (int r = 0; r < rows; r++) s += dy[r * out + o] * x[r * in + k];
                dw[o * in + k] = s;
            }
    if (db)
        for (int o = 0; o < out; o++) {
            double s = 0.0;
            for (int r = 0; r < rows; r++) s += dy[r * out + o];
            db[o] = s;
        }
}

void ref_patch_conv(int b, int c, int H, int W, int P, int dim, const double *images, const double *w,
                    const double *bias, double *y)
{
    const int ph = H / P, pw = W / P;
    for (int n = 0; n < b; n++)
        for (int oy = 0; oy < ph; oy++)
            for (int ox = 0; ox < pw; ox++)
                for (int o = 0; o < dim; o++) {
                    double s = bias ? bias[o] : 0.0;
                    for (int ch = 0; ch < c; ch++)
                        for (int ky = 0; ky < P; ky++)
                            for (int kx = 0; kx < P; kx++) {
                                const int iy = oy * P + ky, ix = ox * P + kx;
                                s += w[((o * c + ch) * P + ky) * P + kx] * images[((n * c + ch) * H + iy) * W + ix];
                            }
                    y[((n * ph + oy) * pw + ox) * dim + o] = s;
                }
}

static void row_stats(int d, const double *x, double *mean, double *rstd)
{
    double mu = 0.0, var = 0.0;
    for (int k = 0; k < d; k++) mu += x[k];
    mu /= d;
    for (int k = 0; k < d; k++) var += (x[k] - mu) * (x[k] - mu);
    var /= d;
    *mean = mu;
    *rstd = 1.0 / sqrt(var + 1e-6);
}

void ref_layernorm_forward(int rows, int d, const double *x, const double *gamma, const double *beta, double *y)
{
    for (int r = 0; r < rows; r++) {
        double mu, rs;
        row_stats(d, x + r * d, &mu, &rs);
        for (int k = 0; k < d; k++) y[r * d + k] = (x[r * d + k] - mu) * rs * gamma[k] + beta[k];
    }
}

void ref_layernorm_backward(int rows, int d, const double *x, const double *gamma, const double *dy, double *dx,
                            double *dgamma, double *dbeta)
{
    for (int k = 0; k < d; k++) dgamma[k] = dbeta[k] = 0.0;
    for (int r = 0; r < rows; r++) {
        const double *xr = x + r * d, *dyr = dy + r * d;
        double mu, rs;
        row_stats(d, xr, &mu, &rs);
        /* g = dy * gamma; dx = rs * (g - mean(g) - xhat * mean(g * xhat)) */
        double mg = 0.0, mgx = 0.0;
        for (int k = 0; k < d; k++) {
            const double xhat = (xr[k] - mu) * rs;
            mg += dyr[k] * gamma[k];
            mgx += dyr[k] * gamma[k] * xhat;
            dgamma[k] += dyr[k] * xhat;
            dbeta[k] += dyr[k];
        }
        mg /= d;
        mgx /= d;
        for (int k = 0; k < d; k++) {
            const double xhat = (xr[k] - mu) * rs;
            dx[r * d + k] = rs * (dyr[k] * gamma[k] - mg - xhat * mgx);
        }
    }
}

/* Q, K, V element t of token i, head h, image n. */
#define QKV(n, i, which, h, t) qkv[((n) * T + (i)) * 3 * dim + (which) * dim + (h) * hd + (t)]

/* P[i, j] = softmax_j(Q_i . K_j / sqrt(hd)) for one image and head. */
static void probs_of(int n, int h, int T, int dim, int hd, const double *qkv, double *p)
{
    const double scale = 1.0 / sqrt((double)hd);
    for (int i = 0; i < T; i++) {
        double mx = -INFINITY, sum = 0.0;
        for (int j = 0; j < T; j++) {
            double s = 0.0;
            for (int t = 0; t < hd; t++) s += QKV(n, i, 0, h, t) * QKV(n, j, 1, h, t);
            p[i * T + j] = s * scale;
            if (p[i * T + j] > mx) mx = p[i * T + j];
        }
        for (int j = 0; j < T; j++) {
            p[i * T + j] = exp(p[i * T + j] - mx);
            sum += p[i * T + j];
        }
        for (int j = 0; j < T; j++) p[i * T + j] /= sum;
    }
}

void ref_attention_forward(int b, int T, int dim, int heads, const double *qkv, double *att, double *out)
{
    const int hd = dim / heads;
    double *p = malloc((size_t)T * T * sizeof(double));
    if (!p) abort();
    for (int n = 0; n < b; n++)
        for (int h = 0; h < heads; h++) {
            probs_of(n, h, T, dim, hd, qkv, p);
            if (att)
                for (int e = 0; e < T * T; e++) att[((n * heads + h) * T) * T + e] = p[e];
            for (int i = 0; i < T; i++)
                for (int t = 0; t < hd; t++) {
                    double s = 0.0;
                    for (int j = 0; j < T; j++) s += p[i * T + j] * QKV(n, j, 2, h, t);
                    out[(n * T + i) * dim + h * hd + t] = s;
                }
        }
    free(p);
}

int ref_attention_backward(int b, int T, int dim, int heads, const double *qkv, const double *dout, double *dqkv)
{
    const int hd = dim / heads;
    const double scale = 1.0 / sqrt((double)hd);
    double *p = malloc((size_t)T * T * sizeof(double)), *ds = malloc((size_t)T * T * sizeof(double));
    if (!p || !ds) {
        free(p);
        free(ds);
        return -1;
    }
#define DO(n, i, h, t) dout[((n) * T + (i)) * dim + (h) * hd + (t)]
#define DQKV(n, i, which, h, t) dqkv[((n) * T + (i)) * 3 * dim + (which) * dim + (h) * hd + (t)]
    for (int n = 0; n < b; n++)
        for (int h = 0; h < heads; h++) {
            probs_of(n, h, T, dim, hd, qkv, p);
            /* dP = dO V^T; dS = P * (dP - sum_j P dP) (softmax backward), times the scale */
            for (int i = 0; i < T; i++) {
                double dot = 0.0;
                for (int j = 0; j < T; j++) {
                    double dp = 0.0;
                    for (int t = 0; t < hd; t++) dp += DO(n, i, h, t) * QKV(n, j, 2, h, t);
                    ds[i * T + j] = dp;
                    dot += p[i * T + j] * dp;
                }
                for (int j = 0; j < T; j++) ds[i * T + j] = p[i * T + j] * (ds[i * T + j] - dot) * scale;
            }
            for (int i = 0; i < T; i++)
                for (int t = 0; t < hd; t++) {
                    double dq = 0.0, dk = 0.0, dv = 0.0;
                    for (int j = 0; j < T; j++) {
                        dq += ds[i * T + j] * QKV(n, j, 1, h, t); /* dQ = dS K */
                        dk += ds[j * T + i] * QKV(n, j, 0, h, t); /* dK = dS^T Q */
                        dv += p[j * T + i] * DO(n, j, h, t);      /* dV = P^T dO */
                    }
                    DQKV(n, i, 0, h, t) = dq;
                    DQKV(n, i, 1, h, t) = dk;
                    DQKV(n, i, 2, h, t) = dv;
                }
        }
#undef DO
#undef DQKV
    free(p);
    free(ds);
    return 0;
}

#define GELU_C 0.79788456080286535588 /* sqrt(2/pi) */
#define GELU_A 0.044715

double ref_gelu(double a) { return 0.5 * a * (1.0 + tanh(GELU_C * (a + GELU_A * a * a * a))); }

double ref_gelu_grad(double a)
{
    const double th = tanh(GELU_C * (a + GELU_A * a * a * a));
    return 0.5 * (1.0 + th) + 0.5 * a * (1.0 - th * th) * GELU_C * (1.0 + 3.0 * GELU_A * a * a);
}

void ref_meanpool_forward(int b, int T, int d, const double *x, double *y)
{
    for (int n = 0; n < b; n++)
        for (int k = 0; k < d; k++) {
            double s = 0.0;
            for (int t = 0; t < T; t++) s += x[(n * T + t) * d + k];
            y[n * d + k] = s / T;
        }
}

void ref_meanpool_backward(int b, int T, int d, const double *dy, double *dx)
{
    for (int n = 0; n < b; n++)
        for (int t = 0; t < T; t++)
            for (int k = 0; k < d; k++) dx[(n * T + t) * d + k] = dy[n * d + k] / T;
}

/* softmax of one row of logits into p; returns log(sum exp(l - max)) + max. */
static double log_softmax_row(int classes, const double *l, double *p)
{
    double mx = -INFINITY, sum = 0.0;
    for (int c = 0; c < classes; c++)
        if (l[c] > mx) mx = l[c];
    for (int c = 0; c < classes; c++) sum += exp(l[c] - mx);
    if (p)
        for (int c = 0; c < classes; c++) p[c] = exp(l[c] - mx) / sum;
    return log(sum) + mx;
}

double ref_cross_entropy_forward(int b, int classes, const double *logits, const int32_t *labels, double *probs)
{
    double total = 0.0;
    for (int n = 0; n < b; n++) {
        const double lse = log_softmax_row(classes, logits + n * classes, probs ? probs + n * classes : NULL);
        total += lse - logits[n * classes + labels[n]];
    }
    return total / b;
}

void ref_cross_entropy_backward(int b, int classes, const double *logits, const int32_t *labels, double *dlogits)
{
    for (int n = 0; n < b; n++) {
        log_softmax_row(classes, logits + n * classes, dlogits + n * classes);
        dlogits[n * classes + labels[n]] -= 1.0;
        for (int c = 0; c < classes; c++) dlogits[n * classes + c] /= b;
    }
}
