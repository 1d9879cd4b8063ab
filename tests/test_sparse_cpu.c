/* The sparse MoE layers (Tokens Choice, Experts Choice) on the CPU path:
 *  1. capacities by hand: ceil and the multiple of 4 of Tokens Choice (in vmoe's order of float
 *     operations), round half to even and the clamps of Experts Choice;
 *  2. routings by hand: which tokens are dropped, Batch Priority Routing's order, first choices
 *     before second choices, ties, tokens no expert takes (their output is exactly 0);
 *  3. the float64 reference's gradients against central finite differences of sum(y*dy) + aux,
 *     the routing held fixed, with and without training noise, aux weights large enough to see;
 *  4. the float32 CPU path against the reference on random shapes (routing identical; y, aux, dx
 *     and every gradient within 1e-4 of each tensor's largest magnitude), partial last groups,
 *     groups spanning sequences, n = 1, m = 1. */
#include "ref_sparse_moe_f64.h"
#include "sparse_moe_cpu.h"
#include "softmoe.h"
#include "softmoe_cpu.h"
#include "test_util.h"
#include "common/router_noise.h"

#include <stdint.h>
#include <string.h>

#define TOL 1e-4

static uint64_t rng_state = 0x5a17e5u;

static double rng_uniform(void) { return test_uniform(&rng_state); }

/* ---- A problem: parameters and inputs, exactly representable in float ---- */

enum { P_X, P_GATE, P_W1, P_B1, P_W2, P_B2, P_COUNT };
static const char *const pname[P_COUNT] = {"x", "gate", "w1", "b1", "w2", "b2"};

typedef struct {
    smoe_sparse_dims dm;
    smoe_sparse_plan pl;
    size_t len[P_COUNT];
    double *val[P_COUNT], *dy;
} problem;

static void problem_make(problem *pr, smoe_sparse_dims dm, double gate_amp)
{
    memset(pr, 0, sizeof *pr);
    pr->dm = dm;
    smoe_sparse_plan_make(&dm, &pr->pl);
    size_t T = (size_t)dm.b * dm.m, d = dm.d, n = dm.n, h = dm.h;
    size_t len[P_COUNT] = {T * d, n * d, n * h * d, n * h, n * d * h, n * d};
    double amp[P_COUNT] = {1.5, gate_amp / sqrt((double)d), 1.7 / sqrt((double)d), 0.3, 1.7 / sqrt((double)h), 0.3};
    for (int i = 0; i < P_COUNT; i++) {
        pr->len[i] = len[i];
        pr->val[i] = malloc(len[i] * sizeof(double));
        for (size_t k = 0; k < len[i]; k++) pr->val[i][k] = (double)(float)(amp[i] * rng_uniform());
    }
    pr->dy = malloc(T * d * sizeof(double));
    for (size_t k = 0; k < T * d; k++) pr->dy[k] = (double)(float)rng_uniform();
}

static void problem_free(problem *pr)
{
    for (int i = 0; i < P_COUNT; i++) free(pr->val[i]);
    free(pr->dy);
}

/* The training noise the CPU path draws at step (N(0,1) samples, before the 1/n). */
static double *noise_of(const smoe_sparse_dims *dm, uint32_t step)
{
    size_t T = (size_t)dm->b * dm->m;
    double *v = malloc(T * dm->n * sizeof(double));
    for (size_t t = 0; t < T; t++)
        for (int e = 0; e < dm->n; e++)
            v[t * dm->n + e] = smoe_router_normal(step, (uint32_t)dm->layer, (uint32_t)t, (uint32_t)e);
    return v;
}

/* ---- The float32 CPU path's buffers ---- */

typedef struct {
    smoe_sparse_host h;
    float *params[P_COUNT], *grads[P_COUNT], *y, *dy, step, aux;
} cpu_layer;

static void *zalloc(size_t words) { return calloc(words ? words : 1, 4); }

static void cpu_alloc(cpu_layer *c, const problem *pr)
{
    const smoe_sparse_dims *d = &pr->dm;
    const smoe_sparse_plan *pl = &pr->pl;
    size_t T = (size_t)pl->T, n = d->n, rows = n * pl->R, K = d->top_k > 0 ? d->top_k : 1;
    memset(c, 0, sizeof *c);
    for (int i = 0; i < P_COUNT; i++) {
        c->params[i] = zalloc(pr->len[i]);
        c->grads[i] = zalloc(pr->len[i]);
        for (size_t k = 0; k < pr->len[i]; k++) c->params[i][k] = (float)pr->val[i][k];
    }
    c->y = zalloc(T * d->d);
    c->dy = zalloc(T * d->d);
    for (size_t k = 0; k < T * d->d; k++) c->dy[k] = (float)pr->dy[k];
    smoe_sparse_host *h = &c->h;
    h->x = c->params[P_X], h->gate = c->params[P_GATE], h->w1 = c->params[P_W1], h->b1 = c->params[P_B1];
    h->w2 = c->params[P_W2], h->b2 = c->params[P_B2];
    h->dx = c->grads[P_X], h->g_gate = c->grads[P_GATE], h->g_w1 = c->grads[P_W1], h->g_b1 = c->grads[P_B1];
    h->g_w2 = c->grads[P_W2], h->g_b2 = c->grads[P_B2];
    h->y = c->y, h->dy = c->dy, h->step = &c->step, h->aux = &c->aux;
    h->logits = zalloc(T * n), h->gates = zalloc(T * n), h->probs = zalloc(T * n), h->dlogits = zalloc(T * n);
    h->thresh = zalloc(T), h->topk_e = zalloc(T * K), h->topk_g = zalloc(T * K);
    h->slot_token = zalloc(rows), h->slot_gate = zalloc(rows), h->tok_slot = zalloc(T * pl->A);
    h->stats = zalloc((size_t)pl->groups * 2 * n);
    h->xs = zalloc(rows * d->d), h->out = zalloc(rows * d->d), h->g_out = zalloc(rows * d->d), h->g_xs = zalloc(rows * d->d);
    h->pre = zalloc(rows * d->h), h->act = zalloc(rows * d->h), h->g_pre = zalloc(rows * d->h);
    h->sort = zalloc(2 * smoe_cpu_sparse_sort_words(d));
    h->pack = zalloc(smoe_cpu_gemm_pack_floats());
}

static void cpu_free(cpu_layer *c)
{
    for (int i = 0; i < P_COUNT; i++) free(c->params[i]), free(c->grads[i]);
    free(c->y), free(c->dy);
    smoe_sparse_host *h = &c->h;
    void *bufs[] = {h->logits, h->gates, h->probs, h->dlogits, h->thresh, h->topk_e, h->topk_g, h->slot_token, h->slot_gate,
                    h->tok_slot, h->stats, h->xs, h->out, h->g_out, h->g_xs, h->pre, h->act, h->g_pre, h->sort, h->pack};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

static smoe_sparse_dims dims(int kind, int b, int m, int d, int n, int h, int k, double c, int group)
{
    smoe_sparse_dims dm = {.b = b, .m = m, .d = d, .n = n, .h = h, .kind = kind, .top_k = k,
                           .capacity_factor = (float)c, .group_size = group, .layer = 3,
                           .importance_weight = SMOE_AUX_LOSS_WEIGHT, .load_weight = SMOE_AUX_LOSS_WEIGHT};
    return dm;
}

/* ---- 1. Capacities ---- */

static void capacities(void)
{
    /* Tokens Choice: ceil(k*g*c/n), then up to a multiple of 4 */
    CHECK(smoe_tokens_choice_capacity(1, 49, 1.0, 16) == 4);   /* 3.06 -> 4 */
    CHECK(smoe_tokens_choice_capacity(2, 49, 1.0, 16) == 8);   /* 6.125 -> 7 -> 8 */
    CHECK(smoe_tokens_choice_capacity(1, 64, 1.0, 16) == 4);   /* exactly 4 */
    CHECK(smoe_tokens_choice_capacity(1, 65, 1.0, 16) == 8);   /* 4.06 -> 5 -> 8 */
    CHECK(smoe_tokens_choice_capacity(2, 196, 1.25, 32) == 16); /* 15.3 -> 16 */
    CHECK(smoe_tokens_choice_capacity(1, 8, 0.5, 2) == 4);     /* 2 -> 4: never below 4 */
    CHECK(smoe_tokens_choice_capacity(2, 8, 0.5, 3) == 4);     /* 2.67 -> 3 -> 4 */
    CHECK(smoe_tokens_choice_capacity(1, 100, 2.0, 4) == 52);  /* 50 -> 52 */
    /* vmoe's order, (k*g)*c/n in double: 200*1.1 = 220.00000000000003 -> 221 -> 224 */
    CHECK(smoe_tokens_choice_capacity(1, 200, 1.1, 1) == 224);
    /* Experts Choice: round(g*c/n), half to even, within [1, g] */
    CHECK(smoe_experts_choice_capacity(49, 1.0, 16) == 3);  /* 3.06 */
    CHECK(smoe_experts_choice_capacity(10, 1.0, 4) == 2);   /* 2.5 -> 2 */
    CHECK(smoe_experts_choice_capacity(14, 1.0, 4) == 4);   /* 3.5 -> 4 */
    CHECK(smoe_experts_choice_capacity(11, 1.0, 4) == 3);   /* 2.75 */
    CHECK(smoe_experts_choice_capacity(4, 0.1, 8) == 1);    /* 0.05 -> 0 -> at least 1 */
    CHECK(smoe_experts_choice_capacity(8, 4.0, 2) == 8);    /* 16 -> at most the group */
    /* the plan: groups, the partial last group's own capacity */
    smoe_sparse_dims dm = dims(SMOE_MOE_TOKENS_CHOICE, 3, 10, 4, 4, 4, 2, 1.0, 12);
    smoe_sparse_plan pl;
    smoe_sparse_plan_make(&dm, &pl);
    CHECK(pl.T == 30 && pl.G == 12 && pl.groups == 3 && pl.last == 6);
    CHECK(pl.C == 8 && pl.C_last == 4 && pl.R == 24 && pl.A == 2); /* ceil(24/4)=6 -> 8; ceil(12/4)=3 -> 4 */
    dm = dims(SMOE_MOE_EXPERTS_CHOICE, 2, 9, 4, 3, 4, 0, 1.0, 0);
    smoe_sparse_plan_make(&dm, &pl);
    CHECK(pl.G == 9 && pl.groups == 2 && pl.last == 9 && pl.C == 3 && pl.R == 6 && pl.A == 3);
}

/* ---- 2. Routings by hand ---- */

/* A layer whose logits are x itself: d = n, W_g = I. */
static void identity_router(problem *pr, const double *logits)
{
    const smoe_sparse_dims *d = &pr->dm;
    for (int e = 0; e < d->n; e++)
        for (int k = 0; k < d->d; k++) pr->val[P_GATE][e * d->d + k] = e == k;
    memcpy(pr->val[P_X], logits, pr->len[P_X] * sizeof(double));
}

/* Checks token t's k-th choice: expert e at row pos of its buffer, or dropped (pos -1). */
static void expect_choice(const cpu_layer *c, const problem *pr, int t, int k, int e, int pos, const char *what)
{
    const smoe_sparse_plan *pl = &pr->pl;
    uint32_t got_e = c->h.topk_e[t * pr->dm.top_k + k], slot = c->h.tok_slot[t * pr->dm.top_k + k];
    int got_pos = slot == SMOE_NO_SLOT ? -1 : (int)(slot % (uint32_t)pl->R) - (t / pl->G) * pl->C;
    CHECK_MSG(got_e == (uint32_t)e && got_pos == pos && (slot == SMOE_NO_SLOT || slot / (uint32_t)pl->R == (uint32_t)e),
              "%s: token %d choice %d: expert %u row %d, expected expert %d row %d", what, t, k, got_e, got_pos, e, pos);
}

static int row_is_zero(const float *y, int t, int d)
{
    for (int k = 0; k < d; k++)
        if (y[t * d + k] != 0.0f) return 0;
    return 1;
}

static void hand_routings(void)
{
    /* (a) Tokens Choice, K = 1, 2 experts, capacity ceil(8/2) = 4. Tokens 0-5 prefer expert 0 by
     * margins 0.5, 3, 1, 2, 0.2, 1.5; tokens 6 and 7 expert 1 by 1 and 2. Expert 0 serves in BPR
     * order 1, 3, 5, 2 and drops 0 and 4; expert 1 takes 7, then 6. */
    {
        problem pr;
        problem_make(&pr, dims(SMOE_MOE_TOKENS_CHOICE, 1, 8, 2, 2, 6, 1, 1.0, 0), 1.0);
        const double margin[8] = {0.5, 3, 1, 2, 0.2, 1.5, -1, -2};
        double lg[16];
        for (int t = 0; t < 8; t++) lg[2 * t] = margin[t] / 2, lg[2 * t + 1] = -margin[t] / 2;
        identity_router(&pr, lg);
        cpu_layer c;
        cpu_alloc(&c, &pr);
        CHECK(pr.pl.C == 4);
        smoe_cpu_sparse_forward(&pr.dm, SMOE_ROUTE_INFER, &c.h);
        const int e[8] = {0, 0, 0, 0, 0, 0, 1, 1}, pos[8] = {-1, 0, 3, 1, -1, 2, 1, 0};
        for (int t = 0; t < 8; t++) expect_choice(&c, &pr, t, 0, e[t], pos[t], "top-1 BPR");
        for (int t = 0; t < 8; t++)
            CHECK_MSG(row_is_zero(c.y, t, 2) == (pos[t] < 0), "top-1 BPR: token %d output zero %d", t, row_is_zero(c.y, t, 2));
        cpu_free(&c);
        problem_free(&pr);
    }
    /* (b) Tokens Choice, K = 2, 3 experts, c = 0.5: capacity ceil(16*0.5/3) = 3 -> 4. BPR order
     * (top-1 gates) 4, 1, 5, 3, 0, 6, 2, 7. Tokens 0-3 choose experts (1, 2), token 4 (0, 1),
     * tokens 5-7 (2, 0). First choices fill expert 1 (1, 3, 0, 2) before token 4's second choice
     * arrives, so that is dropped although token 4 is served first; expert 2 takes 5, 6, 7, then
     * the best second choice (token 1) and drops the rest; expert 0 takes 4, then 5, 6, 7. */
    {
        problem pr;
        problem_make(&pr, dims(SMOE_MOE_TOKENS_CHOICE, 1, 8, 3, 3, 5, 2, 0.5, 0), 1.0);
        const double prio[8] = {1.2, 2.5, 0.6, 1.6, 3.0, 2.0, 0.9, 0.3};
        const int first[8] = {1, 1, 1, 1, 0, 2, 2, 2}, second[8] = {2, 2, 2, 2, 1, 0, 0, 0};
        double lg[24];
        for (int t = 0; t < 8; t++) {
            for (int e = 0; e < 3; e++) lg[3 * t + e] = -1;
            lg[3 * t + first[t]] = prio[t];
            lg[3 * t + second[t]] = 0;
        }
        identity_router(&pr, lg);
        cpu_layer c;
        cpu_alloc(&c, &pr);
        CHECK(pr.pl.C == 4);
        smoe_cpu_sparse_forward(&pr.dm, SMOE_ROUTE_INFER, &c.h);
        const int pos1[8] = {2, 0, 3, 1, 0, 0, 1, 2}, pos2[8] = {-1, 3, -1, -1, -1, 1, 2, 3};
        for (int t = 0; t < 8; t++) {
            expect_choice(&c, &pr, t, 0, first[t], pos1[t], "top-2 BPR");
            expect_choice(&c, &pr, t, 1, second[t], pos2[t], "top-2 BPR");
        }
        cpu_free(&c);
        problem_free(&pr);
    }
    /* (c) Experts Choice, 3 experts, C = round(8/3) = 3. Expert 0 takes 0, 5, 1; expert 1 takes
     * 2, 6, 1; expert 2 takes 3, 5 and, of tokens 4 and 7 (equal logits, so equal gates), the
     * lower: 4. Token 7 is taken by none: its output is exactly 0. */
    {
        problem pr;
        problem_make(&pr, dims(SMOE_MOE_EXPERTS_CHOICE, 1, 8, 3, 3, 5, 0, 1.0, 0), 1.0);
        const double lg[24] = {3, 0, 0, 2, 2, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0, 2.5, 0, 2.5, 0, 2.8, 0, 0, 0, 0};
        identity_router(&pr, lg);
        cpu_layer c;
        cpu_alloc(&c, &pr);
        CHECK(pr.pl.C == 3);
        smoe_cpu_sparse_forward(&pr.dm, SMOE_ROUTE_INFER, &c.h);
        const int taken[3][3] = {{0, 5, 1}, {2, 6, 1}, {3, 5, 4}};
        for (int e = 0; e < 3; e++)
            for (int k = 0; k < 3; k++)
                CHECK_MSG(c.h.slot_token[e * pr.pl.R + k] == (uint32_t)taken[e][k], "EC: expert %d pick %d is token %u, expected %d",
                          e, k, c.h.slot_token[e * pr.pl.R + k], taken[e][k]);
        for (int t = 0; t < 8; t++) CHECK_MSG(row_is_zero(c.y, t, 3) == (t == 7), "EC: token %d output zero", t);
        cpu_free(&c);
        problem_free(&pr);
    }
}

/* ---- 3. Finite differences of the reference ---- */

typedef struct {
    double *y, *dx, *g[P_COUNT];
} ref_out;

static double ref_objective(const problem *pr, const double *noise, ref_sparse_routing *r)
{
    size_t yl = pr->len[P_X];
    double *y = malloc(yl * sizeof(double)), aux = 0, s = 0;
    ref_sparse_params prm = {pr->val[P_GATE], pr->val[P_W1], pr->val[P_B1], pr->val[P_W2], pr->val[P_B2]};
    CHECK(ref_sparse_f64(&pr->dm, &prm, pr->val[P_X], noise, y, &aux, NULL, NULL, NULL, r, 1) == 0);
    for (size_t k = 0; k < yl; k++) s += y[k] * pr->dy[k];
    free(y);
    return s + aux;
}

static void ref_run(const problem *pr, const double *noise, ref_sparse_routing *r, ref_out *o, double *aux)
{
    for (int i = 0; i < P_COUNT; i++) o->g[i] = malloc(pr->len[i] * sizeof(double));
    o->y = malloc(pr->len[P_X] * sizeof(double));
    ref_sparse_params prm = {pr->val[P_GATE], pr->val[P_W1], pr->val[P_B1], pr->val[P_W2], pr->val[P_B2]};
    ref_sparse_grads gr = {o->g[P_GATE], o->g[P_W1], o->g[P_B1], o->g[P_W2], o->g[P_B2]};
    CHECK(ref_sparse_f64(&pr->dm, &prm, pr->val[P_X], noise, o->y, aux, pr->dy, o->g[P_X], &gr, r, 0) == 0);
}

static void ref_out_free(ref_out *o)
{
    free(o->y);
    for (int i = 0; i < P_COUNT; i++) free(o->g[i]);
}

static void finite_differences(const char *name, smoe_sparse_dims dm, int train, int zero_dy)
{
    problem pr;
    problem_make(&pr, dm, 2.0);
    if (zero_dy) memset(pr.dy, 0, pr.len[P_X] * sizeof(double));
    double *noise = train ? noise_of(&dm, 17) : NULL, aux;
    ref_sparse_routing r;
    CHECK(ref_sparse_routing_alloc(&dm, &r) == 0);
    ref_out o;
    ref_run(&pr, noise, &r, &o, &aux);
    const double eps = 1e-6;
    double worst = 0;
    for (int i = 0; i < P_COUNT; i++) {
        double scale = 0;
        for (size_t k = 0; k < pr.len[i]; k++) scale = fabs(o.g[i][k]) > scale ? fabs(o.g[i][k]) : scale;
        for (int probe = 0; probe < 8; probe++) {
            size_t k = (size_t)((rng_uniform() + 1) * 0.5 * pr.len[i]) % pr.len[i];
            double keep = pr.val[i][k];
            pr.val[i][k] = keep + eps;
            double up = ref_objective(&pr, noise, &r);
            pr.val[i][k] = keep - eps;
            double down = ref_objective(&pr, noise, &r);
            pr.val[i][k] = keep;
            double num = (up - down) / (2 * eps), e = fabs(num - o.g[i][k]) / (scale > 1e-12 ? scale : 1.0);
            if (e > worst) worst = e;
            CHECK_MSG(e < 1e-6, "%s: d/d%s[%zu]: analytic %.9g, finite difference %.9g", name, pname[i], k, o.g[i][k], num);
        }
    }
    printf("  finite differences, %s: worst %.2g of each gradient's largest magnitude (aux %.4g)\n", name, worst, aux);
    ref_out_free(&o);
    ref_sparse_routing_free(&r);
    free(noise);
    problem_free(&pr);
}

/* ---- 4. The float32 CPU path against the reference ---- */

static double worst_vs_ref = 0;

static void compare(const char *name, const char *what, const float *got, const double *want, size_t n)
{
    float *w = malloc(n * sizeof(float) + 4);
    for (size_t k = 0; k < n; k++) w[k] = (float)want[k];
    double e = test_rel_err(got, w, n);
    if (e > worst_vs_ref) worst_vs_ref = e;
    CHECK_MSG(e <= TOL, "%s: %s differs from the reference by %.3g", name, what, e);
    free(w);
}

static void cpu_vs_ref(const char *name, smoe_sparse_dims dm, int mode)
{
    problem pr;
    problem_make(&pr, dm, 2.0);
    const uint32_t step = 5;
    double *noise = mode == SMOE_ROUTE_TRAIN ? noise_of(&dm, step) : NULL, aux = 0;
    ref_sparse_routing r;
    CHECK(ref_sparse_routing_alloc(&dm, &r) == 0);
    ref_out o;
    ref_run(&pr, noise, &r, &o, &aux);
    cpu_layer c;
    cpu_alloc(&c, &pr);
    c.step = (float)step;
    smoe_cpu_sparse_forward(&dm, mode, &c.h);
    smoe_cpu_sparse_backward(&dm, mode, &c.h);
    /* the same routing */
    const smoe_sparse_plan *pl = &pr.pl;
    int same = 1;
    if (dm.kind == SMOE_MOE_TOKENS_CHOICE) {
        for (int t = 0; t < pl->T; t++)
            for (int k = 0; k < dm.top_k; k++) {
                uint32_t slot = c.h.tok_slot[t * dm.top_k + k];
                int pos = slot == SMOE_NO_SLOT ? -1 : (int)(slot % (uint32_t)pl->R) - (t / pl->G) * pl->C;
                same &= c.h.topk_e[t * dm.top_k + k] == (uint32_t)r.expert[t * dm.top_k + k] && pos == r.pos[t * dm.top_k + k];
            }
    } else {
        for (int g = 0; g < pl->groups; g++)
            for (int e = 0; e < dm.n; e++)
                for (int k = 0; k < pl->C; k++) {
                    uint32_t tok = c.h.slot_token[e * pl->R + g * pl->C + k];
                    int want = r.taken[(g * dm.n + e) * pl->C + k];
                    same &= want < 0 ? tok == SMOE_NO_SLOT : tok == (uint32_t)want;
                }
    }
    CHECK_MSG(same, "%s: the routing differs from the reference's", name);
    compare(name, "y", c.y, o.y, pr.len[P_X]);
    if (smoe_sparse_has_aux(&dm, mode)) {
        double e = fabs(c.aux - aux) / (fabs(aux) > 1e-6 ? fabs(aux) : 1.0); /* one expert: CV² = 0 */
        CHECK_MSG(e <= TOL, "%s: aux %.8g, reference %.8g", name, c.aux, aux);
        if (e > worst_vs_ref) worst_vs_ref = e;
    }
    for (int i = 0; i < P_COUNT; i++) {
        char what[32];
        snprintf(what, sizeof what, "grad %s", pname[i]);
        compare(name, what, c.grads[i], o.g[i], pr.len[i]);
    }
    cpu_free(&c);
    ref_out_free(&o);
    ref_sparse_routing_free(&r);
    free(noise);
    problem_free(&pr);
}

int main(void)
{
    const int TC = SMOE_MOE_TOKENS_CHOICE, EC = SMOE_MOE_EXPERTS_CHOICE;
    capacities();
    hand_routings();

    smoe_sparse_dims big_aux = dims(TC, 2, 9, 6, 4, 7, 2, 1.0, 0);
    big_aux.importance_weight = 0.7f, big_aux.load_weight = 1.3f;
    finite_differences("tokens choice K=2, training", big_aux, 1, 0);
    finite_differences("tokens choice K=2, aux only", big_aux, 1, 1);
    smoe_sparse_dims k1 = dims(TC, 3, 5, 5, 3, 6, 1, 0.75, 4);
    k1.importance_weight = 1.0f, k1.load_weight = 1.0f;
    finite_differences("tokens choice K=1 groups of 4, training", k1, 1, 0);
    finite_differences("tokens choice K=1 groups of 4, deterministic", k1, 0, 0);
    finite_differences("experts choice", dims(EC, 2, 8, 5, 4, 6, 0, 1.0, 0), 1, 0);

    struct {
        const char *name;
        smoe_sparse_dims dm;
        int mode;
    } cases[] = {
        {"TC K=1 train", dims(TC, 2, 16, 8, 4, 12, 1, 1.0, 0), SMOE_ROUTE_TRAIN},
        {"TC K=2 train", dims(TC, 2, 16, 8, 4, 12, 2, 1.25, 0), SMOE_ROUTE_TRAIN},
        {"TC K=2 grads", dims(TC, 2, 16, 8, 4, 12, 2, 1.0, 0), SMOE_ROUTE_GRADS},
        {"TC K=2 partial group", dims(TC, 3, 10, 6, 5, 7, 2, 0.5, 12), SMOE_ROUTE_TRAIN},
        {"TC K=1 group of 2 sequences", dims(TC, 4, 7, 9, 3, 5, 1, 1.0, 14), SMOE_ROUTE_TRAIN},
        {"TC K=1 one expert", dims(TC, 2, 6, 4, 1, 4, 1, 1.0, 0), SMOE_ROUTE_GRADS},
        {"TC K=2 one token", dims(TC, 3, 1, 5, 4, 6, 2, 1.0, 0), SMOE_ROUTE_TRAIN},
        {"TC K=1 small capacity", dims(TC, 1, 40, 8, 2, 8, 1, 0.1, 0), SMOE_ROUTE_TRAIN},
        {"EC train", dims(EC, 1, 33, 16, 8, 20, 0, 1.0, 0), SMOE_ROUTE_TRAIN},
        {"EC grads", dims(EC, 2, 12, 6, 4, 9, 0, 2.0, 0), SMOE_ROUTE_GRADS},
        {"EC partial group", dims(EC, 2, 9, 5, 3, 6, 0, 2.0, 7), SMOE_ROUTE_TRAIN},
        {"EC one expert", dims(EC, 2, 5, 4, 1, 5, 0, 0.6, 0), SMOE_ROUTE_GRADS},
        {"EC one token", dims(EC, 3, 1, 4, 3, 5, 0, 1.0, 0), SMOE_ROUTE_GRADS},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) cpu_vs_ref(cases[i].name, cases[i].dm, cases[i].mode);
    printf("  float32 CPU path vs the float64 reference: worst relative error %.3g\n", worst_vs_ref);
    return test_finish("test_sparse_cpu");
}
