/* The Soft MoE layer in double precision, written to be read next to docs/format.md section 1.
 * Matrices are row-major; every sequence of the batch is routed independently, and the experts
 * are applied slot by slot (the same as applying expert e to the matrix of all its slots). */
#include "ref_softmoe_f64.h"
#include "softmoe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const double PI = 3.14159265358979323846;

static double gelu(double a)
{
    const double k = sqrt(2.0 / PI);
    return 0.5 * a * (1.0 + tanh(k * (a + 0.044715 * a * a * a)));
}

static double gelu_grad(double a)
{
    const double k = sqrt(2.0 / PI);
    double t = tanh(k * (a + 0.044715 * a * a * a));
    return 0.5 * (1.0 + t) + 0.5 * a * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * a * a);
}

/* l2 backward of y = v / sqrt(|v|^2 + 1e-6) for one vector of `len` values `stride` apart:
 * g_v = r*g_y - r^3 * v * (v . g_y), written into g_v (which may be g_y). */
static void l2_backward(const double *v, const double *g_y, double *g_v, int len, int stride)
{
    double ss = 0, dot = 0;
    for (int k = 0; k < len; k++) {
        ss += v[k * stride] * v[k * stride];
        dot += v[k * stride] * g_y[k * stride];
    }
    double r = 1.0 / sqrt(ss + 1e-6);
    for (int k = 0; k < len; k++)
        g_v[k * stride] = r * g_y[k * stride] - r * r * r * v[k * stride] * dot;
}

/* Expert subset: per sequence, scores[e] = sum of C over the tokens and the slots of e, and
 * kept[e] = 1 for the k largest (of equal scores the lower index). */
static void keep_top(const double *Cb, int m, int n, int p, int k, double *scores, int *kept)
{
    for (int e = 0; e < n; e++) {
        scores[e] = 0;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < p; j++) scores[e] += Cb[i * n * p + e * p + j];
    }
    for (int e = 0; e < n; e++) {
        int rank = 0; /* experts before e in the order: larger score, or equal and lower index */
        for (int f = 0; f < n; f++) rank += scores[f] > scores[e] || (scores[f] == scores[e] && f < e);
        kept[e] = rank < k;
    }
}

/* The layer; keep > 0 keeps that many experts per sequence (forward only). */
static int layer_f64(const smoe_layer_dims *dims, const ref_layer_params *prm, const double *x, double *y,
                     const double *dy, double *dx, const ref_layer_grads *grads, int keep, int renormalize,
                     double *scores_out, int *kept_out)
{
    const int b = dims->b, m = dims->m, d = dims->d, n = dims->n, p = dims->p, h = dims->h;
    const int S = n * p;
    const double scale = prm->scale[0];
    const size_t bm = (size_t)b * m, bS = (size_t)b * S;

    double *phihat = malloc(sizeof(double) * (size_t)d * S); /* [d, S]    Φ̂ */
    double *xhat = malloc(sizeof(double) * bm * d);          /* [b, m, d] X̂ */
    double *L0 = malloc(sizeof(double) * bm * S);            /* [b, m, S] X̂Φ̂ (unscaled) */
    double *D = malloc(sizeof(double) * bm * S);             /* dispatch weights */
    double *C = malloc(sizeof(double) * bm * S);             /* combine weights */
    double *xs = malloc(sizeof(double) * bS * d);            /* [b, S, d] X̃ */
    double *A = malloc(sizeof(double) * bS * h);             /* [b, S, h] fc1 pre-activation */
    double *H = malloc(sizeof(double) * bS * h);             /* gelu(A) */
    double *ys = malloc(sizeof(double) * bS * d);            /* [b, S, d] Ỹ */
    double *gC = malloc(sizeof(double) * (size_t)m * S);     /* per-sequence scratch of backward */
    double *gD = malloc(sizeof(double) * (size_t)m * S);
    double *gL = malloc(sizeof(double) * (size_t)m * S);
    double *gys = malloc(sizeof(double) * (size_t)S * d);
    double *gxs = malloc(sizeof(double) * (size_t)S * d);
    double *gA = malloc(sizeof(double) * (size_t)h);
    double *gxhat = malloc(sizeof(double) * bm * d);
    double *gphihat = malloc(sizeof(double) * (size_t)d * S);
    double *scores = malloc(sizeof(double) * (size_t)b * n);
    int *kept = malloc(sizeof(int) * (size_t)b * n);
    int rc = -1;
    if (!phihat || !xhat || !L0 || !D || !C || !xs || !A || !H || !ys || !gC || !gD || !gL ||
        !gys || !gxs || !gA || !gxhat || !gphihat || !scores || !kept)
        goto done;

    /* ---------------- forward ---------------- */

    /* Φ̂ = phi ⊙ c, c_j = 1/sqrt(sum_k phi[k,j]^2 + 1e-6) */
    for (int j = 0; j < S; j++) {
        double ss = 0;
        for (int k = 0; k < d; k++) ss += prm->phi[k * S + j] * prm->phi[k * S + j];
        double c = 1.0 / sqrt(ss + 1e-6);
        for (int k = 0; k < d; k++) phihat[k * S + j] = prm->phi[k * S + j] * c;
    }

    for (int bb = 0; bb < b; bb++) {
        const double *X = x + (size_t)bb * m * d;
        double *Xh = xhat + (size_t)bb * m * d;
        double *L0b = L0 + (size_t)bb * m * S, *Db = D + (size_t)bb * m * S;
        double *Cb = C + (size_t)bb * m * S, *Xs = xs + (size_t)bb * S * d;

        /* X̂ = r ⊙ X, r_i = 1/sqrt(sum_k X[i,k]^2 + 1e-6) */
        for (int i = 0; i < m; i++) {
            double ss = 0;
            for (int k = 0; k < d; k++) ss += X[i * d + k] * X[i * d + k];
            double r = 1.0 / sqrt(ss + 1e-6);
            for (int k = 0; k < d; k++) Xh[i * d + k] = X[i * d + k] * r;
        }
        /* L = scale * X̂ Φ̂ (we keep X̂Φ̂, G_scale needs it) */
        for (int i = 0; i < m; i++)
            for (int j = 0; j < S; j++) {
                double s = 0;
                for (int k = 0; k < d; k++) s += Xh[i * d + k] * phihat[k * S + j];
                L0b[i * S + j] = s;
            }
        /* D = softmax of L over the m tokens (per column); or fixed: 1/m, or the identity */
        for (int j = 0; j < S && dims->dispatch != SMOE_MIX_SOFT; j++)
            for (int i = 0; i < m; i++)
                Db[i * S + j] = dims->dispatch == SMOE_MIX_UNIFORM ? 1.0 / m : (double)(i == j);
        for (int j = 0; j < S && dims->dispatch == SMOE_MIX_SOFT; j++) {
            double mx = -INFINITY, sum = 0;
            for (int i = 0; i < m; i++) mx = fmax(mx, scale * L0b[i * S + j]);
            for (int i = 0; i < m; i++) sum += exp(scale * L0b[i * S + j] - mx);
            for (int i = 0; i < m; i++) Db[i * S + j] = exp(scale * L0b[i * S + j] - mx) / sum;
        }
        /* C = softmax of L over the S slots (per row); or fixed: 1/S, or the identity */
        for (int i = 0; i < m && dims->combine != SMOE_MIX_SOFT; i++)
            for (int j = 0; j < S; j++)
                Cb[i * S + j] = dims->combine == SMOE_MIX_UNIFORM ? 1.0 / S : (double)(i == j);
        for (int i = 0; i < m && dims->combine == SMOE_MIX_SOFT; i++) {
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j < S; j++) mx = fmax(mx, scale * L0b[i * S + j]);
            for (int j = 0; j < S; j++) sum += exp(scale * L0b[i * S + j] - mx);
            for (int j = 0; j < S; j++) Cb[i * S + j] = exp(scale * L0b[i * S + j] - mx) / sum;
        }
        /* X̃ = Dᵀ X */
        for (int j = 0; j < S; j++)
            for (int k = 0; k < d; k++) {
                double s = 0;
                for (int i = 0; i < m; i++) s += Db[i * S + j] * X[i * d + k];
                Xs[j * d + k] = s;
            }
    }

    /* the kept experts of each sequence (all without k) */
    for (int bb = 0; bb < b; bb++) {
        if (keep > 0) keep_top(C + (size_t)bb * m * S, m, n, p, keep, scores + (size_t)bb * n, kept + (size_t)bb * n);
        else
            for (int e = 0; e < n; e++) kept[(size_t)bb * n + e] = 1;
    }

    /* Ỹ_j = fc2_e(gelu(fc1_e(X̃_j))), e = j div p; zero for a dropped expert */
    for (size_t row = 0; row < bS; row++) {
        int e = (int)(row % (size_t)S) / p;
        if (!kept[(row / (size_t)S) * n + e]) {
            for (int kk = 0; kk < d; kk++) ys[row * d + kk] = 0;
            continue;
        }
        const double *W1 = prm->w1 + (size_t)e * h * d, *B1 = prm->b1 + (size_t)e * h;
        const double *W2 = prm->w2 + (size_t)e * d * h, *B2 = prm->b2 + (size_t)e * d;
        const double *xin = xs + row * d;
        double *a = A + row * h, *hh = H + row * h, *yout = ys + row * d;
        for (int l = 0; l < h; l++) {
            double s = B1[l];
            for (int k = 0; k < d; k++) s += W1[(size_t)l * d + k] * xin[k];
            a[l] = s;
            hh[l] = gelu(s);
        }
        for (int k = 0; k < d; k++) {
            double s = B2[k];
            for (int l = 0; l < h; l++) s += W2[(size_t)k * h + l] * hh[l];
            yout[k] = s;
        }
    }

    /* renormalised: each token's weights on the kept slots rescaled to sum to 1 */
    for (int bb = 0; bb < b && renormalize; bb++)
        for (int i = 0; i < m; i++) {
            double *ci = C + ((size_t)bb * m + i) * S, sum = 0;
            for (int j = 0; j < S; j++) sum += kept[(size_t)bb * n + j / p] ? ci[j] : 0;
            for (int j = 0; j < S; j++) ci[j] = kept[(size_t)bb * n + j / p] ? ci[j] / sum : 0;
        }

    /* Y = C Ỹ */
    for (int bb = 0; bb < b; bb++) {
        const double *Cb = C + (size_t)bb * m * S, *Ys = ys + (size_t)bb * S * d;
        double *Y = y + (size_t)bb * m * d;
        for (int i = 0; i < m; i++)
            for (int k = 0; k < d; k++) {
                double s = 0;
                for (int j = 0; j < S; j++) s += Cb[i * S + j] * Ys[j * d + k];
                Y[i * d + k] = s;
            }
    }

    if (scores_out) memcpy(scores_out, scores, sizeof(double) * (size_t)b * n);
    if (kept_out) memcpy(kept_out, kept, sizeof(int) * (size_t)b * n);
    if (!dy) {
        rc = 0;
        goto done;
    }

    /* ---------------- backward ---------------- */

    memset(grads->w1, 0, sizeof(double) * (size_t)n * h * d);
    memset(grads->b1, 0, sizeof(double) * (size_t)n * h);
    memset(grads->w2, 0, sizeof(double) * (size_t)n * d * h);
    memset(grads->b2, 0, sizeof(double) * (size_t)n * d);
    memset(gphihat, 0, sizeof(double) * (size_t)d * S);
    double gscale = 0;

    for (int bb = 0; bb < b; bb++) {
        const double *X = x + (size_t)bb * m * d, *Xh = xhat + (size_t)bb * m * d;
        const double *GY = dy + (size_t)bb * m * d;
        const double *L0b = L0 + (size_t)bb * m * S, *Db = D + (size_t)bb * m * S;
        const double *Cb = C + (size_t)bb * m * S;
        const double *Xs = xs + (size_t)bb * S * d, *Ys = ys + (size_t)bb * S * d;
        const double *Ab = A + (size_t)bb * S * h, *Hb = H + (size_t)bb * S * h;
        double *DX = dx + (size_t)bb * m * d, *GXh = gxhat + (size_t)bb * m * d;

        /* G_C = G_Y Ỹᵀ,  G_Ỹ = Cᵀ G_Y */
        for (int i = 0; i < m; i++)
            for (int j = 0; j < S; j++) {
                double s = 0;
                for (int k = 0; k < d; k++) s += GY[i * d + k] * Ys[j * d + k];
                gC[i * S + j] = s;
            }
        for (int j = 0; j < S; j++)
            for (int k = 0; k < d; k++) {
                double s = 0;
                for (int i = 0; i < m; i++) s += Cb[i * S + j] * GY[i * d + k];
                gys[j * d + k] = s;
            }

        /* experts, slot by slot: G_W2 += G_Ỹᵀ H, G_b2 += G_Ỹ, G_A = (G_Ỹ W2) ⊙ gelu'(A),
         * G_W1 += G_Aᵀ X̃, G_b1 += G_A, G_X̃ = G_A W1 */
        for (int j = 0; j < S; j++) {
            int e = j / p;
            const double *W1 = prm->w1 + (size_t)e * h * d, *W2 = prm->w2 + (size_t)e * d * h;
            double *GW1 = grads->w1 + (size_t)e * h * d, *GB1 = grads->b1 + (size_t)e * h;
            double *GW2 = grads->w2 + (size_t)e * d * h, *GB2 = grads->b2 + (size_t)e * d;
            const double *g = gys + (size_t)j * d, *a = Ab + (size_t)j * h;
            const double *hh = Hb + (size_t)j * h, *xin = Xs + (size_t)j * d;
            for (int k = 0; k < d; k++) {
                GB2[k] += g[k];
                for (int l = 0; l < h; l++) GW2[(size_t)k * h + l] += g[k] * hh[l];
            }
            for (int l = 0; l < h; l++) {
                double s = 0;
                for (int k = 0; k < d; k++) s += g[k] * W2[(size_t)k * h + l];
                gA[l] = s * gelu_grad(a[l]);
            }
            for (int l = 0; l < h; l++) {
                GB1[l] += gA[l];
                for (int k = 0; k < d; k++) GW1[(size_t)l * d + k] += gA[l] * xin[k];
            }
            for (int k = 0; k < d; k++) {
                double s = 0;
                for (int l = 0; l < h; l++) s += gA[l] * W1[(size_t)l * d + k];
                gxs[j * d + k] = s;
            }
        }

        /* G_D = X G_X̃ᵀ,  G_X (through the values) = D G_X̃ */
        for (int i = 0; i < m; i++)
            for (int j = 0; j < S; j++) {
                double s = 0;
                for (int k = 0; k < d; k++) s += X[i * d + k] * gxs[j * d + k];
                gD[i * S + j] = s;
            }
        for (int i = 0; i < m; i++)
            for (int k = 0; k < d; k++) {
                double s = 0;
                for (int j = 0; j < S; j++) s += Db[i * S + j] * gxs[j * d + k];
                DX[i * d + k] = s;
            }

        /* G_L = D ⊙ (G_D − colsum(D ⊙ G_D)) + C ⊙ (G_C − rowsum(C ⊙ G_C)), each half only where
         * its side is the softmax (fixed weights do not depend on L) */
        for (int i = 0; i < m * S; i++) gL[i] = 0;
        for (int j = 0; j < S && dims->dispatch == SMOE_MIX_SOFT; j++) {
            double cs = 0;
            for (int i = 0; i < m; i++) cs += Db[i * S + j] * gD[i * S + j];
            for (int i = 0; i < m; i++) gL[i * S + j] += Db[i * S + j] * (gD[i * S + j] - cs);
        }
        for (int i = 0; i < m && dims->combine == SMOE_MIX_SOFT; i++) {
            double rs = 0;
            for (int j = 0; j < S; j++) rs += Cb[i * S + j] * gC[i * S + j];
            for (int j = 0; j < S; j++) gL[i * S + j] += Cb[i * S + j] * (gC[i * S + j] - rs);
        }

        /* G_scale = Σ G_L ⊙ (X̂ Φ̂),  G_X̂ = scale G_L Φ̂ᵀ,  G_Φ̂ += scale X̂ᵀ G_L */
        for (int i = 0; i < m * S; i++) gscale += gL[i] * L0b[i];
        for (int i = 0; i < m; i++)
            for (int k = 0; k < d; k++) {
                double s = 0;
                for (int j = 0; j < S; j++) s += gL[i * S + j] * phihat[k * S + j];
                GXh[i * d + k] = scale * s;
            }
        for (int k = 0; k < d; k++)
            for (int j = 0; j < S; j++) {
                double s = 0;
                for (int i = 0; i < m; i++) s += Xh[i * d + k] * gL[i * S + j];
                gphihat[k * S + j] += scale * s;
            }
    }

    /* G_X = D G_X̃ + l2back(G_X̂) per token row;  G_phi = l2back(G_Φ̂) per slot column */
    for (size_t i = 0; i < bm; i++) {
        double *row = gxhat + i * d; /* l2back in place, then added to the value path in dx */
        l2_backward(x + i * d, row, row, d, 1);
        for (int k = 0; k < d; k++) dx[i * d + k] += row[k];
    }
    for (int j = 0; j < S; j++) l2_backward(prm->phi + j, gphihat + j, grads->phi + j, d, S);
    grads->scale[0] = gscale;
    rc = 0;

done:
    free(phihat), free(xhat), free(L0), free(D), free(C), free(xs), free(A), free(H), free(ys);
    free(gC), free(gD), free(gL), free(gys), free(gxs), free(gA), free(gxhat), free(gphihat);
    free(scores), free(kept);
    return rc;
}

int ref_layer_f64(const smoe_layer_dims *dims, const ref_layer_params *prm, const double *x,
                  double *y, const double *dy, double *dx, const ref_layer_grads *grads)
{
    return layer_f64(dims, prm, x, y, dy, dx, grads, 0, 0, NULL, NULL);
}

int ref_layer_keep_f64(const smoe_layer_dims *dims, const ref_layer_params *prm, const double *x,
                       double *y, int k, int renormalize, double *scores, int *kept)
{
    return layer_f64(dims, prm, x, y, NULL, NULL, NULL, k, renormalize, scores, kept);
}
