/* The sparse MoE layers in double precision, written to be read next to sparse_moe_cpu.h: the
 * gates per token, then per group the routing simulated step by step (Tokens Choice: a queue in
 * Batch Priority order, first choices first, a counter per expert; Experts Choice: each expert
 * repeatedly takes the best token it has not taken), then each assignment's expert applied to its
 * token. Backward differentiates the same sums. */
#include "ref_sparse_moe_f64.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ref_vit_f64.h"
#include "softmoe.h"

static const double PI = 3.14159265358979323846;

typedef struct {
    int T, G, groups, C, K, n;
} shape;

/* The capacity of a group of `count` tokens, computed here without the library's functions. */
static int capacity(const smoe_sparse_dims *d, int count)
{
    if (d->kind == SMOE_MOE_TOKENS_CHOICE) {
        int c = (int)ceil((double)(d->top_k * count) * d->capacity_factor / d->n);
        while (c % 4 || c < 4) c++;
        return c;
    }
    double v = (double)count * d->capacity_factor / d->n;
    int c = (int)floor(v);
    double frac = v - floor(v);
    if (frac > 0.5 || (frac == 0.5 && c % 2 == 1)) c++; /* half to even */
    if (c < 1) c = 1;
    return c > count ? count : c;
}

static shape shape_of(const smoe_sparse_dims *d)
{
    shape s;
    s.T = d->b * d->m;
    s.G = d->group_size > 0 && d->group_size < s.T ? d->group_size : (d->m < s.T ? d->m : s.T);
    s.groups = (s.T + s.G - 1) / s.G;
    s.n = d->n;
    s.K = d->kind == SMOE_MOE_TOKENS_CHOICE ? d->top_k : 0;
    s.C = capacity(d, s.G); /* the full group's: it bounds every group's */
    return s;
}

int ref_sparse_routing_alloc(const smoe_sparse_dims *dims, ref_sparse_routing *r)
{
    shape s = shape_of(dims);
    memset(r, 0, sizeof *r);
    if (s.K) {
        r->expert = malloc(sizeof(int) * (size_t)s.T * s.K);
        r->pos = malloc(sizeof(int) * (size_t)s.T * s.K);
        return r->expert && r->pos ? 0 : -1;
    }
    r->taken = malloc(sizeof(int) * (size_t)s.groups * s.n * s.C);
    return r->taken ? 0 : -1;
}

void ref_sparse_routing_free(ref_sparse_routing *r)
{
    free(r->expert);
    free(r->pos);
    free(r->taken);
    memset(r, 0, sizeof *r);
}

/* Whether expert e holds token t: a kept choice (Tokens Choice) or a pick (Experts Choice). */
static int assigned(const shape *s, const ref_sparse_routing *r, int t, int e)
{
    int yes = 0;
    if (s->K)
        for (int k = 0; k < s->K; k++) yes |= r->expert[(size_t)t * s->K + k] == e && r->pos[(size_t)t * s->K + k] >= 0;
    else
        for (int c = 0; c < s->C; c++) yes |= r->taken[((size_t)(t / s->G) * s->n + e) * s->C + c] == t;
    return yes;
}

/* Expert e on one token: A = W1 x + b1, H = gelu(A), out = W2 H + b2. */
static void expert_forward(const smoe_sparse_dims *dm, const ref_sparse_params *prm, int e, const double *x, double *A,
                           double *out)
{
    const int d = dm->d, h = dm->h;
    for (int j = 0; j < h; j++) {
        double a = prm->b1[(size_t)e * h + j];
        for (int k = 0; k < d; k++) a += prm->w1[((size_t)e * h + j) * d + k] * x[k];
        A[j] = a;
    }
    for (int k = 0; k < d; k++) {
        double o = prm->b2[(size_t)e * d + k];
        for (int j = 0; j < h; j++) o += prm->w2[((size_t)e * d + k) * h + j] * ref_gelu(A[j]);
        out[k] = o;
    }
}

/* Backward of expert e on one token given G_out = g: gradients accumulated, dx += W1ᵀ G_A. */
static void expert_backward(const smoe_sparse_dims *dm, const ref_sparse_params *prm, const ref_sparse_grads *gr, int e,
                            const double *x, const double *A, const double *g, double *dx)
{
    const int d = dm->d, h = dm->h;
    for (int k = 0; k < d; k++) gr->b2[(size_t)e * d + k] += g[k];
    for (int j = 0; j < h; j++) {
        double gh = 0;
        for (int k = 0; k < d; k++) {
            gr->w2[((size_t)e * d + k) * h + j] += g[k] * ref_gelu(A[j]);
            gh += prm->w2[((size_t)e * d + k) * h + j] * g[k];
        }
        double ga = gh * ref_gelu_grad(A[j]);
        gr->b1[(size_t)e * h + j] += ga;
        for (int k = 0; k < d; k++) {
            gr->w1[((size_t)e * h + j) * d + k] += ga * x[k];
            dx[k] += prm->w1[((size_t)e * h + j) * d + k] * ga;
        }
    }
}

static void softmax(int n, const double *l, double *out)
{
    double mx = l[0], sum = 0;
    for (int e = 1; e < n; e++) mx = l[e] > mx ? l[e] : mx;
    for (int e = 0; e < n; e++) sum += out[e] = exp(l[e] - mx);
    for (int e = 0; e < n; e++) out[e] /= sum;
}

/* Tokens Choice routing of one group (tokens first..first+count-1). */
static void route_tc(const smoe_sparse_dims *dm, const shape *s, const double *gates, int first, int count,
                     ref_sparse_routing *r)
{
    const int n = s->n, K = s->K, cap = capacity(dm, count);
    int *order = malloc(sizeof(int) * (size_t)count), *used = calloc((size_t)n, sizeof(int));
    for (int i = 0; i < count; i++) {
        /* choices: repeatedly the best expert not chosen yet */
        for (int k = 0; k < K; k++) {
            int best = -1;
            for (int e = 0; e < n; e++) {
                int taken = 0;
                for (int j = 0; j < k; j++) taken |= r->expert[(size_t)(first + i) * K + j] == e;
                if (!taken && (best < 0 || gates[(size_t)(first + i) * n + e] > gates[(size_t)(first + i) * n + best])) best = e;
            }
            r->expert[(size_t)(first + i) * K + k] = best;
        }
        order[i] = first + i;
    }
    /* Batch Priority Routing: by top-1 gate descending, the lower token first on ties (insertion sort) */
    for (int i = 1; i < count; i++)
        for (int j = i; j > 0; j--) {
            int a = order[j - 1], b = order[j];
            double ga = gates[(size_t)a * n + r->expert[(size_t)a * K]], gb = gates[(size_t)b * n + r->expert[(size_t)b * K]];
            if (gb > ga || (gb == ga && b < a)) order[j - 1] = b, order[j] = a;
            else break;
        }
    for (int k = 0; k < K; k++)
        for (int i = 0; i < count; i++) {
            int t = order[i], e = r->expert[(size_t)t * K + k];
            r->pos[(size_t)t * K + k] = used[e] < cap ? used[e]++ : -1;
        }
    free(order);
    free(used);
}

/* Experts Choice routing of group g. */
static void route_ec(const smoe_sparse_dims *dm, const shape *s, const double *gates, int g, int first, int count,
                     ref_sparse_routing *r)
{
    const int n = s->n, cap = capacity(dm, count);
    for (int e = 0; e < n; e++) {
        int *taken = r->taken + ((size_t)g * n + e) * s->C;
        for (int c = 0; c < s->C; c++) taken[c] = -1;
        for (int c = 0; c < cap; c++) {
            int best = -1;
            for (int i = first; i < first + count; i++) {
                int dup = 0;
                for (int j = 0; j < c; j++) dup |= taken[j] == i;
                if (!dup && (best < 0 || gates[(size_t)i * n + e] > gates[(size_t)best * n + e])) best = i;
            }
            taken[c] = best;
        }
    }
}

int ref_sparse_f64(const smoe_sparse_dims *dm, const ref_sparse_params *prm, const double *x, const double *noise,
                   double *y, double *aux, const double *dy, double *dx, const ref_sparse_grads *gr,
                   ref_sparse_routing *r, int fixed)
{
    const shape s = shape_of(dm);
    const int n = dm->n, d = dm->d, h = dm->h, T = s.T, K = s.K, tc = dm->kind == SMOE_MOE_TOKENS_CHOICE;
    double *logits = malloc(sizeof(double) * (size_t)T * n), *noisy = malloc(sizeof(double) * (size_t)T * n);
    double *gates = malloc(sizeof(double) * (size_t)T * n), *probs = malloc(sizeof(double) * (size_t)T * n);
    double *dgate = calloc((size_t)T * n, sizeof(double)), *dl = calloc((size_t)T * n, sizeof(double));
    double *A = malloc(sizeof(double) * (size_t)h), *out = malloc(sizeof(double) * (size_t)d);
    double *g = malloc(sizeof(double) * (size_t)d), *tau = calloc((size_t)T, sizeof(double));
    double *imp = malloc(sizeof(double) * (size_t)n), *load = malloc(sizeof(double) * (size_t)n);
    double *dv = malloc(sizeof(double) * (size_t)n);
    int rc = -1;
    if (!logits || !noisy || !gates || !probs || !dgate || !dl || !A || !out || !g || !tau || !imp || !load || !dv) goto done;

    /* gates: softmax of the logits (+ noise/n in training); probs: of the clean logits */
    for (int t = 0; t < T; t++) {
        for (int e = 0; e < n; e++) {
            double l = 0;
            for (int k = 0; k < d; k++) l += prm->gate[(size_t)e * d + k] * x[(size_t)t * d + k];
            logits[(size_t)t * n + e] = l;
            noisy[(size_t)t * n + e] = l + (noise ? noise[(size_t)t * n + e] / n : 0.0);
        }
        softmax(n, noisy + (size_t)t * n, gates + (size_t)t * n);
        softmax(n, logits + (size_t)t * n, probs + (size_t)t * n);
    }

    /* routing */
    for (int gi = 0; gi < s.groups && !fixed; gi++) {
        int first = gi * s.G, count = first + s.G <= T ? s.G : T - first;
        if (tc) route_tc(dm, &s, gates, first, count, r);
        else route_ec(dm, &s, gates, gi, first, count, r);
    }

    /* y: each assignment's gate times its expert's output on the token; dgate for backward */
    memset(y, 0, sizeof(double) * (size_t)T * d);
    for (int t = 0; t < T; t++)
        for (int e = 0; e < n; e++) {
            if (!assigned(&s, r, t, e)) continue;
            expert_forward(dm, prm, e, x + (size_t)t * d, A, out);
            double w = gates[(size_t)t * n + e], dot = 0;
            for (int k = 0; k < d; k++) {
                y[(size_t)t * d + k] += w * out[k];
                if (dy) dot += dy[(size_t)t * d + k] * out[k];
            }
            dgate[(size_t)t * n + e] = dot;
        }

    /* auxiliary losses per group (Tokens Choice), and their gradients into dl */
    *aux = 0;
    for (int gi = 0; gi < s.groups && tc; gi++) {
        int first = gi * s.G, count = first + s.G <= T ? s.G : T - first;
        for (int e = 0; e < n; e++) imp[e] = load[e] = 0;
        for (int t = first; t < first + count; t++) {
            tau[t] = noisy[(size_t)t * n + r->expert[(size_t)t * K + K - 1]];
            for (int e = 0; e < n; e++) {
                imp[e] += probs[(size_t)t * n + e];
                load[e] += 0.5 * erfc((tau[t] - logits[(size_t)t * n + e]) * n / sqrt(2.0)) / count;
            }
        }
        for (int which = 0; which < (noise ? 2 : 1); which++) {
            const double *v = which ? load : imp, wt = which ? dm->load_weight : dm->importance_weight;
            double s1 = 0, s2 = 0;
            for (int e = 0; e < n; e++) s1 += v[e], s2 += v[e] * v[e];
            *aux += wt * (n * s2 / (s1 * s1) - 1.0) / s.groups;
            for (int e = 0; e < n; e++) dv[e] = wt / s.groups * (2.0 * n * v[e] / (s1 * s1) - 2.0 * n * s2 / (s1 * s1 * s1));
            for (int t = first; t < first + count && dy; t++) {
                double *dlt = dl + (size_t)t * n, *q = probs + (size_t)t * n;
                if (!which) { /* importance: I_e sums the clean softmax; back through it */
                    double sq = 0;
                    for (int e = 0; e < n; e++) sq += q[e] * dv[e];
                    for (int e = 0; e < n; e++) dlt[e] += q[e] * (dv[e] - sq);
                    continue;
                }
                /* load: P_e = mean_t p, p = 1 - Phi(z), z = (tau - logit) n, so dp/dlogit = phi(z) n and
                 * dp/dtau = -phi(z) n; tau is the noisy logit of the K-th choice */
                double dtau = 0;
                for (int e = 0; e < n; e++) {
                    double z = (tau[t] - logits[(size_t)t * n + e]) * n, phi = exp(-0.5 * z * z) / sqrt(2.0 * PI);
                    dlt[e] += dv[e] / count * phi * n;
                    dtau -= dv[e] / count * phi * n;
                }
                dlt[r->expert[(size_t)t * K + K - 1]] += dtau;
            }
        }
    }

    if (dy) {
        memset(dx, 0, sizeof(double) * (size_t)T * d);
        memset(gr->gate, 0, sizeof(double) * (size_t)n * d);
        memset(gr->w1, 0, sizeof(double) * (size_t)n * h * d);
        memset(gr->b1, 0, sizeof(double) * (size_t)n * h);
        memset(gr->w2, 0, sizeof(double) * (size_t)n * d * h);
        memset(gr->b2, 0, sizeof(double) * (size_t)n * d);
        for (int t = 0; t < T; t++) {
            /* through the experts: G_out = gate * dy for every expert that holds the token */
            for (int e = 0; e < n; e++) {
                if (!assigned(&s, r, t, e)) continue;
                expert_forward(dm, prm, e, x + (size_t)t * d, A, out);
                for (int k = 0; k < d; k++) g[k] = gates[(size_t)t * n + e] * dy[(size_t)t * d + k];
                expert_backward(dm, prm, gr, e, x + (size_t)t * d, A, g, dx + (size_t)t * d);
            }
            /* through the gates: softmax backward of the combine weights (noise is additive) */
            double sc = 0;
            for (int e = 0; e < n; e++) sc += gates[(size_t)t * n + e] * dgate[(size_t)t * n + e];
            for (int e = 0; e < n; e++) dl[(size_t)t * n + e] += gates[(size_t)t * n + e] * (dgate[(size_t)t * n + e] - sc);
            /* logits = W_g x */
            for (int e = 0; e < n; e++)
                for (int k = 0; k < d; k++) {
                    gr->gate[(size_t)e * d + k] += dl[(size_t)t * n + e] * x[(size_t)t * d + k];
                    dx[(size_t)t * d + k] += dl[(size_t)t * n + e] * prm->gate[(size_t)e * d + k];
                }
        }
    }
    rc = 0;
done:
    free(logits), free(noisy), free(gates), free(probs), free(dgate), free(dl), free(A), free(out), free(g), free(tau);
    free(imp), free(load), free(dv);
    return rc;
}
