/* The sparse MoE layers' op (ops/sparse_moe_layer.h) on Vulkan against the CPU path, the same
 * inputs on both (test_sparse_cpu checks the CPU path against a float64 reference):
 *  - the routing tables identical (slot_token, slot_gate's zeros, tok_slot, the top-K choices),
 *    y, the auxiliary loss, dx and every gradient within 1e-4 of each tensor's largest magnitude,
 *    on shapes with partial last groups, groups spanning sequences, one expert, one token, many
 *    experts, in every mode (inference, gradients, training with noise);
 *  - the sort in global memory (segments longer than the shared-memory block, forced small) gives
 *    the same routing as in shared memory;
 *  - the hand-checked routings of test_sparse_cpu (BPR drops, first choices first, EC ties);
 *  - the training noise is the same bits on both paths (with W_g = 0, τ is the noise itself);
 *  - a replayed program gives the same results (the fills reset the slot tables).
 * The Khronos validation layer is on; any message fails the test. */
#define _POSIX_C_SOURCE 200809L
#include "common/router_noise.h"
#include "ops/sparse_moe_layer.h"
#include "test_vk.h"

#define TOL 1e-4

static smoe_gpu *gpu;
static uint64_t seed = 0x2545f4914f6cdd1dull;
static double worst = 0;

enum { I_X, I_GATE, I_W1, I_B1, I_W2, I_B2, I_DY, I_STEP, I_COUNT };

typedef struct side {
    smoe_arena a;
    smoe_sparse_tensors L;
    smoe_tensor in[I_COUNT];
} side;

typedef struct lpair {
    smoe_sparse_dims d;
    smoe_sparse_plan pl;
    side s[2]; /* 0: CPU path, 1: Vulkan */
    size_t n_in[I_COUNT];
} lpair;

static void lpair_init(lpair *P, const smoe_sparse_dims *d)
{
    smoe_err err;
    memset(P, 0, sizeof *P);
    P->d = *d;
    smoe_sparse_plan_make(d, &P->pl);
    size_t T = (size_t)d->b * d->m, n = d->n, D = d->d, H = d->h;
    size_t sizes[I_COUNT] = {T * D, n * D, n * H * D, n * H, n * D * H, n * D, T * D, 2};
    memcpy(P->n_in, sizes, sizeof sizes);
    for (int k = 0; k < 2; k++) {
        side *s = &P->s[k];
        smoe_arena_init(&s->a, k ? gpu : NULL, k ? "test vulkan" : "test cpu");
        for (int i = 0; i < I_COUNT; i++) CHECK(smoe_arena_reserve(&s->a, sizes[i] * 4, &s->in[i], &err) == SMOE_OK);
        smoe_sparse_tensors *L = &s->L;
        smoe_tensor *grads[6] = {&L->dx, &L->g_gate, &L->g_w1, &L->g_b1, &L->g_w2, &L->g_b2};
        for (int i = 0; i < 6; i++) CHECK(smoe_arena_reserve(&s->a, sizes[i] * 4, grads[i], &err) == SMOE_OK);
        CHECK(smoe_arena_reserve(&s->a, T * D * 4, &L->y, &err) == SMOE_OK);
        L->x = s->in[I_X], L->gate = s->in[I_GATE], L->w1 = s->in[I_W1], L->b1 = s->in[I_B1];
        L->w2 = s->in[I_W2], L->b2 = s->in[I_B2], L->dy = s->in[I_DY], L->step = s->in[I_STEP];
        smoe_status st = smoe_sparse_reserve(L, d, &s->a, 1, &err);
        CHECK_MSG(st == SMOE_OK, "%s", err.msg);
        st = smoe_arena_commit(&s->a, &err);
        CHECK_MSG(st == SMOE_OK, "%s", err.msg);
    }
}

static void lpair_set(lpair *P, int i, const float *v)
{
    smoe_err err;
    memcpy(smoe_tensor_host(&P->s[0].in[i]), v, P->n_in[i] * 4);
    CHECK(smoe_tensor_upload(&P->s[1].in[i], 0, v, P->n_in[i] * 4, &err) == SMOE_OK);
}

static void lpair_random(lpair *P, float gate_amp)
{
    const smoe_sparse_dims *d = &P->d;
    float amp[I_COUNT] = {1.5f, gate_amp / sqrtf((float)d->d), 1.7f / sqrtf((float)d->d), 0.3f, 1.7f / sqrtf((float)d->h),
                          0.3f, 1.0f, 0};
    for (int i = 0; i < I_STEP; i++) {
        float *v = malloc(P->n_in[i] * 4);
        for (size_t k = 0; k < P->n_in[i]; k++) v[k] = amp[i] * test_rand(&seed);
        lpair_set(P, i, v);
        free(v);
    }
    float step[2] = {11, 0};
    lpair_set(P, I_STEP, step);
}

static void lpair_free(lpair *P)
{
    smoe_arena_release(&P->s[0].a);
    smoe_arena_release(&P->s[1].a);
}

static smoe_status run_ops(smoe_exec *ex, lpair *P, int k, int mode, int backward, smoe_err *err)
{
    smoe_status st = smoe_op_sparse_forward(ex, &P->s[k].L, &P->d, mode, err);
    if (!st && backward) st = smoe_op_sparse_backward(ex, &P->s[k].L, &P->d, mode, err);
    return st;
}

/* Forward (and backward) on both paths; Vulkan replays its program `replays` times. */
static void lpair_run(lpair *P, int mode, int backward, int replays)
{
    smoe_err err;
    smoe_exec cpu = {NULL, NULL};
    smoe_status st = run_ops(&cpu, P, 0, mode, backward, &err);
    CHECK_MSG(st == SMOE_OK, "CPU path: %s", err.msg);
    smoe_program prog;
    st = smoe_program_begin(gpu, &prog, &err);
    CHECK_MSG(st == SMOE_OK, "%s", err.msg);
    if (st) return;
    smoe_exec vk = {gpu, &prog};
    st = run_ops(&vk, P, 1, mode, backward, &err);
    CHECK_MSG(st == SMOE_OK, "recording: %s", err.msg);
    if (!st) st = smoe_program_end(&prog, &err);
    for (int r = 0; r < replays && !st; r++) st = smoe_program_run(&prog, &err);
    CHECK_MSG(st == SMOE_OK, "Vulkan: %s", err.msg);
    smoe_program_destroy(&prog);
}

static void *download(const smoe_tensor *t)
{
    smoe_err err;
    void *v = malloc(t->bytes + 4);
    CHECK(smoe_tensor_download(t, 0, v, t->bytes, &err) == SMOE_OK);
    return v;
}

/* Tensor t of both sides bit for bit (routing tables). */
static int same_bits(lpair *P, size_t off, const char *name, const char *what)
{
    const smoe_tensor *a = (const smoe_tensor *)((const char *)&P->s[0].L + off);
    const smoe_tensor *b = (const smoe_tensor *)((const char *)&P->s[1].L + off);
    if (!a->arena) return 1;
    void *v = download(b);
    int same = !memcmp(smoe_tensor_host(a), v, a->bytes);
    CHECK_MSG(same, "%s: %s differs between the CPU path and Vulkan", name, what);
    free(v);
    return same;
}

static void close_to(lpair *P, const smoe_tensor *a, const smoe_tensor *b, size_t n, const char *name, const char *what)
{
    float *v = download(b);
    double e = test_rel_err(v, smoe_tensor_host(a), n);
    if (e > worst) worst = e;
    CHECK_MSG(e <= TOL, "%s: %s differs by %.3g", name, what, e);
    free(v);
    (void)P;
}

#define SAME(field) same_bits(P_, offsetof(smoe_sparse_tensors, field), name, #field)

static void compare(lpair *P, int mode, int backward, const char *name)
{
    lpair *P_ = P;
    const smoe_sparse_dims *d = &P->d;
    size_t T = (size_t)d->b * d->m, io = T * d->d;
    smoe_sparse_tensors *c = &P->s[0].L, *v = &P->s[1].L;
    SAME(slot_token);
    SAME(tok_slot);
    if (d->kind == SMOE_MOE_TOKENS_CHOICE) SAME(topk_e);
    close_to(P, &c->y, &v->y, io, name, "y");
    if (smoe_sparse_has_aux(d, mode)) {
        float *a = download(&v->aux), want = ((float *)smoe_tensor_host(&c->aux))[0];
        double e = fabs(a[0] - want) / (fabs(want) > 1e-6 ? fabs(want) : 1.0);
        if (e > worst) worst = e;
        CHECK_MSG(e <= TOL, "%s: aux %.8g on Vulkan, %.8g on the CPU path", name, a[0], want);
        free(a);
    }
    if (!backward) return;
    const smoe_tensor *gc[6] = {&c->dx, &c->g_gate, &c->g_w1, &c->g_b1, &c->g_w2, &c->g_b2};
    const smoe_tensor *gv[6] = {&v->dx, &v->g_gate, &v->g_w1, &v->g_b1, &v->g_w2, &v->g_b2};
    const char *names[6] = {"dx", "grad gate", "grad fc1.w", "grad fc1.b", "grad fc2.w", "grad fc2.b"};
    for (int i = 0; i < 6; i++) close_to(P, gc[i], gv[i], P->n_in[i], name, names[i]);
}

static smoe_sparse_dims dims(int kind, int b, int m, int d, int n, int h, int k, double c, int group, int sort_block)
{
    smoe_sparse_dims dm = {.b = b, .m = m, .d = d, .n = n, .h = h, .kind = kind, .top_k = k,
                           .capacity_factor = (float)c, .group_size = group, .layer = 2,
                           .importance_weight = 0.05f, .load_weight = 0.05f, .sort_block = sort_block};
    return dm;
}

static void random_case(const char *name, smoe_sparse_dims d, int mode)
{
    lpair P;
    lpair_init(&P, &d);
    lpair_random(&P, 2.0f);
    lpair_run(&P, mode, mode != SMOE_ROUTE_INFER, 2);
    compare(&P, mode, mode != SMOE_ROUTE_INFER, name);
    lpair_free(&P);
}

/* The routing of a sort in global memory equals the shared-memory one (and the CPU path's). */
static void global_sort(const char *name, smoe_sparse_dims d)
{
    lpair P;
    lpair_init(&P, &d);
    lpair_random(&P, 2.0f);
    lpair_run(&P, SMOE_ROUTE_TRAIN, 1, 1);
    compare(&P, SMOE_ROUTE_TRAIN, 1, name);
    lpair_free(&P);
}

/* The hand cases of test_sparse_cpu: logits = x (d = n, W_g = I). */
static void hand_case(const char *name, smoe_sparse_dims d, const float *logits)
{
    lpair P;
    lpair_init(&P, &d);
    lpair_random(&P, 1.0f);
    float *g = calloc(P.n_in[I_GATE], 4);
    for (int e = 0; e < d.n; e++) g[e * d.d + e] = 1.0f;
    lpair_set(&P, I_GATE, g);
    lpair_set(&P, I_X, logits);
    free(g);
    lpair_run(&P, SMOE_ROUTE_GRADS, 1, 1);
    compare(&P, SMOE_ROUTE_GRADS, 1, name);
    lpair_free(&P);
}

/* With W_g = 0 the logits are exactly 0, so τ is the noise of the K-th choice itself. */
static void noise_bits(void)
{
    smoe_sparse_dims d = dims(SMOE_MOE_TOKENS_CHOICE, 3, 37, 8, 13, 8, 2, 1.0, 0, 0);
    lpair P;
    lpair_init(&P, &d);
    lpair_random(&P, 1.0f);
    float *g = calloc(P.n_in[I_GATE], 4);
    lpair_set(&P, I_GATE, g);
    free(g);
    lpair_run(&P, SMOE_ROUTE_TRAIN, 0, 1);
    const char *name = "noise";
    lpair *P_ = &P;
    SAME(topk_e);
    int same = SAME(thresh);
    /* and it is the noise the CPU path documents: router_noise.h at (step 11, layer 2, token, expert) / n */
    const float *tau = smoe_tensor_host(&P.s[0].L.thresh);
    const uint32_t *top = smoe_tensor_host(&P.s[0].L.topk_e);
    int match = 1;
    for (int t = 0; t < 3 * 37; t++) match &= tau[t] == smoe_router_normal(11, 2, (uint32_t)t, top[t * 2 + 1]) * (1.0f / 13.0f);
    CHECK_MSG(match, "τ is not the documented noise");
    printf("  training noise: %s on both paths\n", same && match ? "the same bits" : "DIFFERENT");
    lpair_free(&P);
}

static void bad_dims(void)
{
    smoe_err err;
    smoe_sparse_dims d = dims(SMOE_MOE_TOKENS_CHOICE, 1, 4, 4, 1, 4, 2, 1.0, 0, 0);
    CHECK(smoe_sparse_check(&d, &err) == SMOE_ERROR_INVALID_ARGUMENT && strstr(err.msg, "top_k"));
    d = dims(SMOE_MOE_EXPERTS_CHOICE, 1, 4, 4, 2, 4, 0, 0.0, 0, 0);
    CHECK(smoe_sparse_check(&d, &err) == SMOE_ERROR_INVALID_ARGUMENT && strstr(err.msg, "capacity"));
    d = dims(SMOE_MOE_EXPERTS_CHOICE, 1, 4, 4, 2, 4, 0, 1.0, 0, 6);
    CHECK(smoe_sparse_check(&d, &err) == SMOE_ERROR_INVALID_ARGUMENT && strstr(err.msg, "power of two"));
    d = dims(7, 1, 4, 4, 2, 4, 0, 1.0, 0, 0);
    CHECK(smoe_sparse_check(&d, &err) == SMOE_ERROR_INVALID_ARGUMENT);
}

int main(void)
{
    const int TC = SMOE_MOE_TOKENS_CHOICE, EC = SMOE_MOE_EXPERTS_CHOICE;
    smoe_context *ctx = test_open("vulkan");
    if (!ctx) return test_finish("test_sparse_layer");
    gpu = smoe_ctx_gpu(ctx);
    bad_dims();

    struct {
        const char *name;
        smoe_sparse_dims d;
        int mode;
    } cases[] = {
        {"TC K=1 train", dims(TC, 2, 16, 8, 4, 12, 1, 1.0, 0, 0), SMOE_ROUTE_TRAIN},
        {"TC K=2 train", dims(TC, 3, 20, 16, 6, 24, 2, 1.25, 0, 0), SMOE_ROUTE_TRAIN},
        {"TC K=2 grads", dims(TC, 2, 16, 8, 4, 12, 2, 1.0, 0, 0), SMOE_ROUTE_GRADS},
        {"TC K=1 inference", dims(TC, 2, 16, 8, 4, 12, 1, 1.0, 0, 0), SMOE_ROUTE_INFER},
        {"TC K=2 partial group", dims(TC, 3, 10, 6, 5, 7, 2, 0.5, 12, 0), SMOE_ROUTE_TRAIN},
        {"TC K=1 group of 2 sequences", dims(TC, 4, 7, 9, 3, 5, 1, 1.0, 14, 0), SMOE_ROUTE_TRAIN},
        {"TC K=1 one expert", dims(TC, 2, 6, 4, 1, 4, 1, 1.0, 0, 0), SMOE_ROUTE_GRADS},
        {"TC K=2 one token", dims(TC, 3, 1, 5, 4, 6, 2, 1.0, 0, 0), SMOE_ROUTE_TRAIN},
        {"TC K=1 small capacity", dims(TC, 1, 40, 8, 2, 8, 1, 0.1, 0, 0), SMOE_ROUTE_TRAIN},
        {"TC K=2 many experts", dims(TC, 2, 49, 32, 100, 16, 2, 1.0, 0, 0), SMOE_ROUTE_TRAIN},
        {"EC train", dims(EC, 1, 33, 16, 8, 20, 0, 1.0, 0, 0), SMOE_ROUTE_TRAIN},
        {"EC grads", dims(EC, 2, 12, 6, 4, 9, 0, 2.0, 0, 0), SMOE_ROUTE_GRADS},
        {"EC inference", dims(EC, 2, 12, 6, 4, 9, 0, 1.0, 0, 0), SMOE_ROUTE_INFER},
        {"EC partial group", dims(EC, 2, 9, 5, 3, 6, 0, 2.0, 7, 0), SMOE_ROUTE_TRAIN},
        {"EC one expert", dims(EC, 2, 5, 4, 1, 5, 0, 0.6, 0, 0), SMOE_ROUTE_GRADS},
        {"EC one token", dims(EC, 3, 1, 4, 3, 5, 0, 1.0, 0, 0), SMOE_ROUTE_GRADS},
        {"EC many experts", dims(EC, 2, 49, 32, 100, 16, 0, 1.0, 0, 0), SMOE_ROUTE_TRAIN},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) random_case(cases[i].name, cases[i].d, cases[i].mode);

    /* segments of 64..512 pairs sorted with shared-memory blocks of 4..16: global steps and merges */
    global_sort("TC K=2 global sort", dims(TC, 2, 150, 8, 5, 8, 2, 1.0, 0, 8));
    global_sort("TC K=1 global sort, groups of 300", dims(TC, 2, 150, 8, 3, 8, 1, 0.8, 300, 4));
    global_sort("EC global sort", dims(EC, 2, 60, 8, 4, 8, 0, 1.0, 0, 16));

    const float tc1[16] = {0.25f, -0.25f, 1.5f, -1.5f, 0.5f, -0.5f, 1, -1, 0.1f, -0.1f, 0.75f, -0.75f, -0.5f, 0.5f, -1, 1};
    hand_case("hand: top-1 BPR", dims(TC, 1, 8, 2, 2, 6, 1, 1.0, 0, 0), tc1);
    float tc2[24];
    const float prio[8] = {1.2f, 2.5f, 0.6f, 1.6f, 3.0f, 2.0f, 0.9f, 0.3f};
    const int first[8] = {1, 1, 1, 1, 0, 2, 2, 2}, second[8] = {2, 2, 2, 2, 1, 0, 0, 0};
    for (int t = 0; t < 8; t++) {
        for (int e = 0; e < 3; e++) tc2[3 * t + e] = -1;
        tc2[3 * t + first[t]] = prio[t];
        tc2[3 * t + second[t]] = 0;
    }
    hand_case("hand: top-2 BPR", dims(TC, 1, 8, 3, 3, 5, 2, 0.5, 0, 0), tc2);
    const float ec[24] = {3, 0, 0, 2, 2, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0, 2.5f, 0, 2.5f, 0, 2.8f, 0, 0, 0, 0};
    hand_case("hand: experts choice ties", dims(EC, 1, 8, 3, 3, 5, 0, 1.0, 0, 0), ec);
    noise_bits();

    printf("  worst relative difference CPU vs Vulkan: %.3g\n", worst);
    test_close(ctx);
    return test_finish("test_sparse_layer");
}
