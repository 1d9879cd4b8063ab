/* The sparse MoE layers on the CPU path (see sparse_moe_cpu.h for the maths). The routing sorts
 * 64-bit words (key << 32 | value) so that the order is total and the same as the Vulkan sort's:
 * keys of gates descend through 0x7f800000 - bits(gate), ties go to the lower value. */
#include "sparse_moe_cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/router_noise.h"
#include "softmoe.h"
#include "softmoe_cpu.h"
#include "vit_cpu.h"

/* ---- The plan ---- */

int smoe_tokens_choice_capacity(int k, int tokens, double c, int n)
{
    /* the order of vmoe: num_tokens * capacity_factor / num_experts, num_tokens = k * tokens */
    int cap = (int)ceil((double)(k * tokens) * c / (double)n);
    cap += (4 - cap % 4) % 4;
    return cap < 4 ? 4 : cap;
}

int smoe_experts_choice_capacity(int tokens, double c, int n)
{
    double v = (double)tokens * c / (double)n, f = floor(v);
    int cap = (int)f;
    if (v - f > 0.5 || (v - f == 0.5 && cap % 2)) cap++;
    if (cap < 1) cap = 1;
    return cap > tokens ? tokens : cap;
}

void smoe_sparse_plan_make(const smoe_sparse_dims *d, smoe_sparse_plan *p)
{
    p->T = d->b * d->m;
    p->G = d->group_size > 0 ? d->group_size : d->m;
    if (p->G > p->T) p->G = p->T;
    p->groups = (p->T + p->G - 1) / p->G;
    p->last = p->T - (p->groups - 1) * p->G;
    if (d->kind == SMOE_MOE_TOKENS_CHOICE) {
        p->C = smoe_tokens_choice_capacity(d->top_k, p->G, d->capacity_factor, d->n);
        p->C_last = smoe_tokens_choice_capacity(d->top_k, p->last, d->capacity_factor, d->n);
        p->A = d->top_k;
    } else {
        p->C = smoe_experts_choice_capacity(p->G, d->capacity_factor, d->n);
        p->C_last = smoe_experts_choice_capacity(p->last, d->capacity_factor, d->n);
        p->A = d->n;
    }
    p->R = p->groups * p->C;
}

int smoe_sparse_has_aux(const smoe_sparse_dims *d, int mode)
{
    return d->kind == SMOE_MOE_TOKENS_CHOICE && mode >= SMOE_ROUTE_GRADS;
}

size_t smoe_cpu_sparse_sort_words(const smoe_sparse_dims *d)
{
    size_t T = (size_t)d->b * d->m;
    return d->kind == SMOE_MOE_TOKENS_CHOICE ? (size_t)(d->top_k + 1) * T : (size_t)d->n * T;
}

/* ---- Routing ---- */

static uint32_t descending_key(float gate)
{
    uint32_t bits;
    memcpy(&bits, &gate, 4);
    return 0x7f800000u - bits; /* gates are >= 0: a larger gate has larger bits */
}

static int cmp_word(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Gates (softmax of the logits plus, in training, noise), the clean softmax for the importance
 * loss, each token's top-K experts and, in training, τ. */
static void gates_forward(const smoe_sparse_dims *d, int mode, const smoe_sparse_plan *pl,
                          const smoe_sparse_host *t)
{
    const int n = d->n, K = d->kind == SMOE_MOE_TOKENS_CHOICE ? d->top_k : 0;
    const int noise = mode == SMOE_ROUTE_TRAIN, aux = smoe_sparse_has_aux(d, mode);
    const uint32_t step = noise ? (uint32_t)t->step[0] : 0;
    const float inv_n = 1.0f / (float)n;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < pl->T; i++) {
        const float *l = t->logits + (size_t)i * n;
        float *g = t->gates + (size_t)i * n;
        for (int pass = 0; pass < 1 + (aux && noise); pass++) {
            /* pass 0: the gates, from the noisy logits; pass 1: the clean softmax */
            float *out = pass ? t->probs + (size_t)i * n : g, mx = -INFINITY, sum = 0.0f;
            for (int e = 0; e < n; e++) {
                out[e] = l[e];
                if (noise && !pass) out[e] = l[e] + smoe_router_normal(step, (uint32_t)d->layer, (uint32_t)i, (uint32_t)e) * inv_n;
                mx = out[e] > mx ? out[e] : mx;
            }
            for (int e = 0; e < n; e++) sum += out[e] = expf(out[e] - mx);
            for (int e = 0; e < n; e++) out[e] /= sum;
        }
        if (aux && !noise) memcpy(t->probs + (size_t)i * n, g, (size_t)n * 4);
        uint32_t chosen[2] = {0, 0};
        for (int k = 0; k < K; k++) {
            int best = -1;
            for (int e = 0; e < n; e++)
                if ((k == 0 || (uint32_t)e != chosen[0]) && (best < 0 || g[e] > g[best])) best = e;
            chosen[k] = (uint32_t)best;
            t->topk_e[(size_t)i * K + k] = (uint32_t)best;
            t->topk_g[(size_t)i * K + k] = g[best];
        }
        if (K && noise && aux) {
            const uint32_t e = chosen[K - 1];
            t->thresh[i] = l[e] + smoe_router_normal(step, (uint32_t)d->layer, (uint32_t)i, e) * inv_n;
        }
    }
}

/* Tokens Choice with Batch Priority Routing, group by group. */
static void route_tokens_choice(const smoe_sparse_dims *d, const smoe_sparse_plan *pl, const smoe_sparse_host *t)
{
    const int K = d->top_k;
#pragma omp parallel for schedule(dynamic)
    for (int g = 0; g < pl->groups; g++) {
        const int first = g * pl->G, count = g + 1 < pl->groups ? pl->G : pl->last;
        const int cap = g + 1 < pl->groups ? pl->C : pl->C_last;
        uint64_t *order = t->sort + (size_t)first, *assign = t->sort + (size_t)pl->T + (size_t)first * K;
        /* the BPR order: by top-1 gate, descending */
        for (int s = 0; s < count; s++)
            order[s] = (uint64_t)descending_key(t->topk_g[(size_t)(first + s) * K]) << 32 | (uint32_t)s;
        qsort(order, (size_t)count, sizeof *order, cmp_word);
        /* every (k, position in that order) by expert; within an expert in serving order */
        for (int k = 0; k < K; k++)
            for (int s = 0; s < count; s++) {
                const uint32_t tok = (uint32_t)first + (uint32_t)order[s];
                const uint32_t e = t->topk_e[(size_t)tok * K + k];
                assign[k * count + s] = (uint64_t)e << 32 | (uint32_t)(k * pl->G + s);
            }
        qsort(assign, (size_t)K * count, sizeof *assign, cmp_word);
        int start = 0;
        for (int i = 0; i < K * count; i++) {
            const uint32_t e = (uint32_t)(assign[i] >> 32), o = (uint32_t)assign[i];
            if (i == 0 || (uint32_t)(assign[i - 1] >> 32) != e) start = i;
            const int pos = i - start, k = (int)o / pl->G, s = (int)o % pl->G;
            const uint32_t tok = (uint32_t)first + (uint32_t)order[s];
            uint32_t slot = SMOE_NO_SLOT;
            if (pos < cap) {
                slot = e * (uint32_t)pl->R + (uint32_t)(g * pl->C + pos);
                t->slot_token[slot] = tok;
                t->slot_gate[slot] = t->topk_g[(size_t)tok * K + k];
            }
            t->tok_slot[(size_t)tok * K + k] = slot;
        }
    }
}

/* Experts Choice: per group and expert, the top tokens by gate. */
static void route_experts_choice(const smoe_sparse_dims *d, const smoe_sparse_plan *pl, const smoe_sparse_host *t)
{
    const int n = d->n;
#pragma omp parallel for collapse(2) schedule(dynamic)
    for (int g = 0; g < pl->groups; g++)
        for (int e = 0; e < n; e++) {
            const int first = g * pl->G, count = g + 1 < pl->groups ? pl->G : pl->last;
            const int cap = g + 1 < pl->groups ? pl->C : pl->C_last;
            uint64_t *w = t->sort + (size_t)e * pl->T + first;
            for (int i = 0; i < count; i++)
                w[i] = (uint64_t)descending_key(t->gates[(size_t)(first + i) * n + e]) << 32 | (uint32_t)i;
            qsort(w, (size_t)count, sizeof *w, cmp_word);
            for (int c = 0; c < cap; c++) {
                const uint32_t tok = (uint32_t)first + (uint32_t)w[c];
                const uint32_t slot = (uint32_t)e * (uint32_t)pl->R + (uint32_t)(g * pl->C + c);
                t->slot_token[slot] = tok;
                t->slot_gate[slot] = t->gates[(size_t)tok * n + e];
                t->tok_slot[(size_t)tok * n + e] = slot;
            }
        }
}

/* ---- Moving rows between tokens and expert slots ---- */

/* dst[slot] = src[token of slot] (times its gate when weighted), 0 for an empty slot. */
static void gather_slots(const smoe_sparse_plan *pl, int n, int d, const float *src, int weighted,
                         const smoe_sparse_host *t, float *dst)
{
    const size_t rows = (size_t)n * pl->R;
#pragma omp parallel for schedule(static)
    for (size_t s = 0; s < rows; s++) {
        float *o = dst + s * d;
        const uint32_t tok = t->slot_token[s];
        if (tok == SMOE_NO_SLOT) {
            memset(o, 0, (size_t)d * 4);
            continue;
        }
        const float w = weighted ? t->slot_gate[s] : 1.0f, *in = src + (size_t)tok * d;
        for (int k = 0; k < d; k++) o[k] = w * in[k];
    }
}

/* dst[token] = sum over its slots of src[slot] (times the slot's gate when weighted). */
static void combine_slots(const smoe_sparse_plan *pl, int d, const float *src, int weighted,
                          const smoe_sparse_host *t, float *dst)
{
#pragma omp parallel for schedule(static)
    for (int i = 0; i < pl->T; i++) {
        float *o = dst + (size_t)i * d;
        memset(o, 0, (size_t)d * 4);
        for (int a = 0; a < pl->A; a++) {
            const uint32_t s = t->tok_slot[(size_t)i * pl->A + a];
            if (s == SMOE_NO_SLOT) continue;
            const float w = weighted ? t->slot_gate[s] : 1.0f, *in = src + (size_t)s * d;
            for (int k = 0; k < d; k++) o[k] += w * in[k];
        }
    }
}

/* ---- Auxiliary losses (Tokens Choice) ---- */

/* n Σ v² / (Σ v)² - 1 (CV² with the population std) of v [n]; v is overwritten with the
 * loss's gradient times weight (both 0 when Σ v vanishes). */
static double cv2(int n, float *v, double weight)
{
    double s1 = 0, s2 = 0;
    for (int e = 0; e < n; e++) s1 += v[e], s2 += (double)v[e] * v[e];
    if (!(s1 > 1e-30)) {
        for (int e = 0; e < n; e++) v[e] = 0.0f;
        return 0;
    }
    for (int e = 0; e < n; e++) v[e] = (float)(weight * (2.0 * n * v[e] / (s1 * s1) - 2.0 * n * s2 / (s1 * s1 * s1)));
    return n * s2 / (s1 * s1) - 1.0;
}

/* Per group: the importance I_e = Σ_t probs and, in training, the load P_e = mean_t p_te, their
 * CV² losses, and (into stats) dAux/dI_e and dAux/dp_te. aux = the mean over groups. */
static void aux_forward(const smoe_sparse_dims *d, int mode, const smoe_sparse_plan *pl, const smoe_sparse_host *t)
{
    const int n = d->n, load = mode == SMOE_ROUTE_TRAIN;
    double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (int g = 0; g < pl->groups; g++) {
        const int first = g * pl->G, count = g + 1 < pl->groups ? pl->G : pl->last;
        float *imp = t->stats + (size_t)g * 2 * n, *ld = imp + n;
        for (int e = 0; e < n; e++) {
            double si = 0, sl = 0;
            for (int i = first; i < first + count; i++) {
                si += t->probs[(size_t)i * n + e];
                if (load) sl += smoe_normal_sf((t->thresh[i] - t->logits[(size_t)i * n + e]) * (float)n);
            }
            imp[e] = (float)si;
            ld[e] = (float)(sl / count);
        }
        double loss = d->importance_weight * cv2(n, imp, d->importance_weight / pl->groups);
        if (load) loss += d->load_weight * cv2(n, ld, d->load_weight / pl->groups / count);
        else
            for (int e = 0; e < n; e++) ld[e] = 0.0f;
        total += loss / pl->groups;
    }
    t->aux[0] = (float)total;
}

/* ---- The layer ---- */

void smoe_cpu_sparse_forward(const smoe_sparse_dims *d, int mode, const smoe_sparse_host *t)
{
    smoe_sparse_plan pl;
    smoe_sparse_plan_make(d, &pl);
    const int n = d->n, D = d->d, h = d->h;
    const size_t rows = (size_t)n * pl.R;
    smoe_cpu_linear_forward(pl.T, D, n, t->x, t->gate, NULL, t->logits);
    gates_forward(d, mode, &pl, t);
    for (size_t s = 0; s < rows; s++) t->slot_token[s] = SMOE_NO_SLOT, t->slot_gate[s] = 0.0f;
    if (d->kind == SMOE_MOE_TOKENS_CHOICE) {
        route_tokens_choice(d, &pl, t);
    } else {
        for (size_t i = 0; i < (size_t)pl.T * n; i++) t->tok_slot[i] = SMOE_NO_SLOT;
        route_experts_choice(d, &pl, t);
    }
    gather_slots(&pl, n, D, t->x, 0, t, t->xs);
    smoe_cpu_experts_forward(n, pl.R, D, h, t->w1, t->b1, t->w2, t->xs, t->pre, t->act, t->out, t->pack);
#pragma omp parallel for schedule(static)
    for (size_t s = 0; s < rows; s++) {
        const float *b2 = t->b2 + (s / (size_t)pl.R) * D;
        for (int k = 0; k < D; k++) t->out[s * D + k] += b2[k];
    }
    combine_slots(&pl, D, t->out, 1, t, t->y);
    if (smoe_sparse_has_aux(d, mode)) aux_forward(d, mode, &pl, t);
}

/* dlogits per token: the combine weights' gradient through the softmax, plus the auxiliary
 * losses' (importance through the clean softmax, load directly and through τ). */
static void gates_backward(const smoe_sparse_dims *d, int mode, const smoe_sparse_plan *pl, const smoe_sparse_host *t)
{
    const int n = d->n, D = d->d, aux = smoe_sparse_has_aux(d, mode), load = aux && mode == SMOE_ROUTE_TRAIN;
    const float inv_sqrt_2pi = 0.398942280f;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < pl->T; i++) {
        float *dl = t->dlogits + (size_t)i * n;
        const float *g = t->gates + (size_t)i * n, *dyi = t->dy + (size_t)i * D;
        for (int e = 0; e < n; e++) dl[e] = 0.0f;
        for (int a = 0; a < pl->A; a++) {
            const uint32_t s = t->tok_slot[(size_t)i * pl->A + a];
            if (s == SMOE_NO_SLOT) continue;
            const float *o = t->out + (size_t)s * D;
            float dot = 0.0f;
            for (int k = 0; k < D; k++) dot += dyi[k] * o[k];
            dl[s / (uint32_t)pl->R] = dot;
        }
        float sc = 0.0f;
        for (int e = 0; e < n; e++) sc += g[e] * dl[e];
        for (int e = 0; e < n; e++) dl[e] = g[e] * (dl[e] - sc);
        if (!aux) continue;
        const float *st = t->stats + (size_t)(i / pl->G) * 2 * n, *q = t->probs + (size_t)i * n;
        float si = 0.0f;
        for (int e = 0; e < n; e++) si += q[e] * st[e];
        for (int e = 0; e < n; e++) dl[e] += q[e] * (st[e] - si);
        if (!load) continue;
        const float *l = t->logits + (size_t)i * n;
        float sl = 0.0f;
        for (int e = 0; e < n; e++) {
            const float z = (t->thresh[i] - l[e]) * (float)n;
            const float w = st[n + e] * inv_sqrt_2pi * expf(-0.5f * z * z) * (float)n;
            dl[e] += w;
            sl += w;
        }
        dl[t->topk_e[(size_t)i * d->top_k + d->top_k - 1]] -= sl;
    }
}

void smoe_cpu_sparse_backward(const smoe_sparse_dims *d, int mode, const smoe_sparse_host *t)
{
    smoe_sparse_plan pl;
    smoe_sparse_plan_make(d, &pl);
    const int n = d->n, D = d->d, h = d->h;
    gather_slots(&pl, n, D, t->dy, 1, t, t->g_out);
    smoe_cpu_experts_backward(n, pl.R, D, h, t->w1, t->w2, t->xs, t->pre, t->act, t->g_out, t->g_pre, t->g_xs, t->g_w1,
                              t->g_b1, t->g_w2, t->g_b2, t->pack);
    combine_slots(&pl, D, t->g_xs, 0, t, t->dx);
    gates_backward(d, mode, &pl, t);
    /* dW_g = dlogitsᵀ x, dx += dlogits W_g */
    memset(t->g_gate, 0, (size_t)n * D * 4);
    smoe_cpu_linear_backward(pl.T, D, n, t->x, t->gate, t->dlogits, t->dx, t->g_gate, NULL, 1);
}
