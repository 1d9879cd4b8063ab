/* Every ViT op (host/ops/ops.h) on both paths: random inputs, run at once on the CPU path (host
 * arena) and recorded into a program on Vulkan, compared within 1e-5 of each output's largest
 * magnitude (1e-4 for the long sum of squares); odd sizes that are multiples of no workgroup or
 * tile. Then a chain of ops recorded once and replayed (barriers), the ops that use the matmul
 * with each matmul shader forced, the row kernels in their other mode (a workgroup or an
 * invocation per row), and a row count above maxComputeWorkGroupCount[0] where that is small
 * enough to try. */
#define _POSIX_C_SOURCE 200809L
#include "common/interface.h"
#include "ops/matmul.h"
#include "ops/ops.h"
#include "test_vk.h"

#define TOL 1e-5
#define TOL_LONG 1e-4
#define MAXT 16

static smoe_gpu *gpu;
static char shape[160]; /* the case being run, for messages */
static uint64_t seed = 0x9e3779b97f4a7c15ull;

/* The worst error seen per op, for the summary. */
typedef struct worst_entry {
    const char *name;
    double worst;
} worst_entry;
static worst_entry worst[64];
static int worst_count;

static void note(const char *name, double e)
{
    for (int i = 0; i < worst_count; i++)
        if (!strcmp(worst[i].name, name)) {
            if (e > worst[i].worst || e != e) worst[i].worst = e;
            return;
        }
    if (worst_count < 64) worst[worst_count++] = (worst_entry){name, e};
}

/* The same tensors on the CPU path (side 0, host arena) and on Vulkan (side 1). */
typedef struct pair {
    smoe_arena a[2];
    smoe_tensor t[2][MAXT];
    size_t n[MAXT];
    int count;
    uint32_t barriers, dispatches; /* of the last Vulkan program */
} pair;

typedef smoe_status (*op_fn)(smoe_exec *ex, const smoe_tensor *t, const void *arg, smoe_err *err);

static void pair_init(pair *P)
{
    memset(P, 0, sizeof *P);
    smoe_arena_init(&P->a[0], NULL, "test cpu");
    smoe_arena_init(&P->a[1], gpu, "test vulkan");
}

static int pair_add(pair *P, size_t floats)
{
    smoe_err err;
    int i = P->count++;
    P->n[i] = floats;
    for (int s = 0; s < 2; s++) CHECK(smoe_arena_reserve(&P->a[s], floats * 4, &P->t[s][i], &err) == SMOE_OK);
    return i;
}

static void pair_commit(pair *P)
{
    smoe_err err;
    for (int s = 0; s < 2; s++) CHECK_MSG(smoe_arena_commit(&P->a[s], &err) == SMOE_OK, "%s", err.msg);
}

static void pair_set(pair *P, int i, const void *data)
{
    smoe_err err;
    if (!P->n[i]) return;
    memcpy(smoe_tensor_host(&P->t[0][i]), data, P->n[i] * 4);
    CHECK_MSG(smoe_tensor_upload(&P->t[1][i], 0, data, P->n[i] * 4, &err) == SMOE_OK, "%s", err.msg);
}

/* Uniform in [offset - scale, offset + scale). */
static void pair_rand(pair *P, int i, float scale, float offset)
{
    float *v = malloc(P->n[i] * 4 + 4);
    for (size_t k = 0; k < P->n[i]; k++) v[k] = offset + scale * test_rand(&seed);
    pair_set(P, i, v);
    free(v);
}

static void pair_rand_all(pair *P)
{
    for (int i = 0; i < P->count; i++) pair_rand(P, i, 1.0f, 0.0f);
}

/* Runs fn on the CPU path, then records it into a program and runs that on Vulkan. */
static void pair_run(pair *P, op_fn fn, const void *arg, const char *name)
{
    smoe_err err;
    smoe_exec cpu = {NULL, NULL};
    smoe_status st = fn(&cpu, P->t[0], arg, &err);
    CHECK_MSG(st == SMOE_OK, "%s on the CPU path: %s", name, err.msg);
    smoe_program prog;
    st = smoe_program_begin(gpu, &prog, &err);
    CHECK_MSG(st == SMOE_OK, "%s", err.msg);
    if (st) return;
    smoe_exec vk = {gpu, &prog};
    st = fn(&vk, P->t[1], arg, &err);
    CHECK_MSG(st == SMOE_OK, "%s recorded: %s", name, err.msg);
    P->barriers = prog.barriers;
    P->dispatches = prog.dispatches;
    if (!st) st = smoe_program_end(&prog, &err);
    if (!st) st = smoe_program_run(&prog, &err);
    CHECK_MSG(st == SMOE_OK, "%s on Vulkan: %s", name, err.msg);
    smoe_program_destroy(&prog);
}

/* Compares tensor i of both sides. */
static void pair_check(pair *P, int i, double tol, const char *name, const char *what)
{
    smoe_err err;
    size_t n = P->n[i];
    float *got = malloc(n * 4 + 4);
    CHECK(smoe_tensor_download(&P->t[1][i], 0, got, n * 4, &err) == SMOE_OK);
    double e = test_rel_err(got, (const float *)smoe_tensor_host(&P->t[0][i]), n);
    note(name, e);
    CHECK_MSG(e <= tol, "%s (%s): %s differs by %.3g (tolerance %.1g)", name, shape, what, e, tol);
    free(got);
}

static void pair_free(pair *P)
{
    smoe_arena_release(&P->a[0]);
    smoe_arena_release(&P->a[1]);
}

/* ---- Linear ---- */

typedef struct lin_arg {
    int rows, in, out, bias, acc, has_dx, has_db;
} lin_arg;
enum { LX, LW, LB, LY, LDY, LDX, LDW, LDB };

static smoe_status linear_fwd(smoe_exec *ex, const smoe_tensor *t, const void *arg, smoe_err *err)
{
    const lin_arg *a = arg;
    return smoe_op_linear_forward(ex, a->rows, a->in, a->out, &t[LX], &t[LW], a->bias ? &t[LB] : NULL, &t[LY], err);
}

static smoe_status linear_bwd(smoe_exec *ex, const smoe_tensor *t, const void *arg, smoe_err *err)
{
    const lin_arg *a = arg;
    return smoe_op_linear_backward(ex, a->rows, a->in, a->out, &t[LX], &t[LW], &t[LDY], a->has_dx ? &t[LDX] : NULL,
                                   a->acc, &t[LDW], a->has_db ? &t[LDB] : NULL, err);
}

static void test_linear(int rows, int in, int out)
{
    snprintf(shape, sizeof shape, "rows %d in %d out %d", rows, in, out);
    lin_arg cases[] = {
        {rows, in, out, 1, 0, 1, 1}, {rows, in, out, 0, 1, 1, 0}, {rows, in, out, 1, 0, 0, 1}, {rows, in, out, 0, 1, 1, 1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        pair P;
        pair_init(&P);
        size_t sz[8] = {(size_t)rows * in, (size_t)out * in, (size_t)out, (size_t)rows * out,
                        (size_t)rows * out, (size_t)rows * in, (size_t)out * in, (size_t)out};
        for (int i = 0; i < 8; i++) pair_add(&P, sz[i]);
        pair_commit(&P);
        pair_rand_all(&P);
        pair_run(&P, linear_fwd, &cases[c], "linear forward");
        pair_check(&P, LY, TOL, "linear forward", "y");
        pair_run(&P, linear_bwd, &cases[c], "linear backward");
        if (cases[c].has_dx) pair_check(&P, LDX, TOL, "linear backward", "dx");
        pair_check(&P, LDW, TOL, "linear backward", "dw");
        if (cases[c].has_db) pair_check(&P, LDB, TOL, "linear backward", "db");
        pair_free(&P);
    }
}

/* ---- MLP ---- */

typedef struct mlp_arg {
    int rows, dim, hidden;
} mlp_arg;
enum { MX, MW1, MB1, MW2, MB2, MPRE, MY, MDY, MDPRE, MDX, MDW1, MDB1, MDW2, MDB2 };

static smoe_status mlp(smoe_exec *ex, const smoe_tensor *t, const void *arg, smoe_err *err)
{
    const mlp_arg *a = arg;
    smoe_status st = smoe_op_mlp_forward(ex, a->rows, a->dim, a->hidden, &t[MX], &t[MW1], &t[MB1], &t[MW2], &t[MB2],
                                         &t[MPRE], &t[MY], err);
    if (st) return st;
    return smoe_op_mlp_backward(ex, a->rows, a->dim, a->hidden, &t[MX], &t[MW1], &t[MW2], &t[MPRE], &t[MDY], &t[MDPRE],
                                &t[MDX], &t[MDW1], &t[MDB1], &t[MDW2], &t[MDB2], err);
}

static void test_mlp(int rows, int dim, int hidden)
{
    snprintf(shape, sizeof shape, "rows %d dim %d hidden %d", rows, dim, hidden);
    mlp_arg a = {rows, dim, hidden};
    size_t R = (size_t)rows, D = (size_t)dim, H = (size_t)hidden;
    size_t sz[14] = {R * D, H * D, H, D * H, D, R * H, R * D, R * D, R * H, R * D, H * D, H, D * H, D};
    pair P;
    pair_init(&P);
    for (int i = 0; i < 14; i++) pair_add(&P, sz[i]);
    pair_commit(&P);
    pair_rand_all(&P);
    pair_rand(&P, MX, 2.0f, 0.0f);
    pair_run(&P, mlp, &a, "mlp");
    const char *names[14] = {"x", "w1", "b1", "w2", "b2", "pre", "y", "dy", "dpre", "dx", "dw1", "db1", "dw2", "db2"};
    int outs[] = {MPRE, MY, MDPRE, MDX, MDW1, MDB1, MDW2, MDB2};
    for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++)
        pair_check(&P, outs[i], TOL, i < 2 ? "mlp forward" : "mlp backward", names[outs[i]]);
    pair_free(&P);
}

/* ---- im2col ---- */

typedef struct im_arg {
    int b, c, H, W, P;
} im_arg;

static smoe_status im2col(smoe_exec *ex, const smoe_tensor *t, const void *arg, smoe_err *err)
{
    const im_arg *a = arg;
    return smoe_op_im2col(ex, a->b, a->c, a->H, a->W, a->P, &t[0], &t[1], err);
}

static void test_im2col(int b, int c, int H, int W, int Ps)
{
    snprintf(shape, sizeof shape, "b %d c %d H %d W %d P %d", b, c, H, W, Ps);
    im_arg a = {b, c, H, W, Ps};
    pair P;
    pair_init(&P);
    pair_add(&P, (size_t)b * c * H * W);
    pair_add(&P, (size_t)b * (H / Ps) * (W / Ps) * c * Ps * Ps);
    pair_commit(&P);
    pair_rand_all(&P);
    pair_run(&P, im2col, &a, "im2col");
    pair_check(&P, 1, 0.0, "im2col", "patches");
    pair_free(&P);
}

/* ---- LayerNorm ---- */

typedef struct ln_arg {
    int rows, d, backward;
} ln_arg;
enum { NX, NG, NB, NY, NMEAN, NRSTD, NDY, NDX, NDG, NDB };

static smoe_status layernorm(smoe_exec *ex, const smoe_tensor *t, const void *arg, smoe_err *err)
{
    const ln_arg *a = arg;
    smoe_status st =
        smoe_op_layernorm_forward(ex, a->rows, a->d, &t[NX], &t[NG], &t[NB], &t[NY], &t[NMEAN], &t[NRSTD], err);
    if (st || !a->backward) return st;
    return smoe_op_layernorm_backward(ex, a->rows, a->d, &t[NX], &t[NG], &t[NMEAN], &t[NRSTD], &t[NDY], &t[NDX],
                                      &t[NDG], &t[NDB], err);
}

static void test_layernorm(int rows, int d, int backward)
{
    snprintf(shape, sizeof shape, "rows %d d %d", rows, d);
    ln_arg a = {rows, d, backward};
    size_t R = (size_t)rows, D = (size_t)d;
    size_t sz[10] = {R * D, D, D, R * D, R, R, R * D, R * D, D, D};
    pair P;
    pair_init(&P);
    for (int i = 0; i < 10; i++) pair_add(&P, sz[i]);
    pair_commit(&P);
    pair_rand_all(&P);
    pair_rand(&P, NX, 2.0f, 3.0f); /* an offset the mean must remove */
    if (rows > 1000) {
        /* many rows of few values: keep every row's variance away from 0, where float32 itself
         * loses the digits that the CPU path keeps in double */
        float *x = malloc(R * D * 4);
        for (size_t k = 0; k < R * D; k++) x[k] = (float)(k % D) - 0.5f * (float)(D - 1) + 0.2f * test_rand(&seed);
        pair_set(&P, NX, x);
        free(x);
    }
    pair_rand(&P, NG, 0.5f, 1.0f);
    pair_run(&P, layernorm, &a, "layernorm");
    pair_check(&P, NY, TOL, "layernorm forward", "y");
    pair_check(&P, NMEAN, TOL, "layernorm forward", "mean");
    pair_check(&P, NRSTD, TOL, "layernorm forward", "rstd");
    if (backward) {
        pair_check(&P, NDX, TOL, "layernorm backward", "dx");
        pair_check(&P, NDG, TOL, "layernorm backward", "dgamma");
        pair_check(&P, NDB, TOL, "layernorm backward", "dbeta");
    }
    pair_free(&P);
}

/* ---- Attention ---- */

typedef struct att_arg {
    int b, T, dim, heads;
} att_arg;
enum { AQKV, AATT, AOUT, ADOUT, ADATT, ADQKV };

static smoe_status attention(smoe_exec *ex, const smoe_tensor *t, const void *arg, smoe_err *err)
{
    const att_arg *a = arg;
    smoe_status st = smoe_op_attention_forward(ex, a->b, a->T, a->dim, a->heads, &t[AQKV], &t[AATT], &t[AOUT], err);
    if (st) return st;
    return smoe_op_attention_backward(ex, a->b, a->T, a->dim, a->heads, &t[AQKV], &t[AATT], &t[ADOUT], &t[ADATT],
                                      &t[ADQKV], err);
}

static void test_attention(int b, int T, int dim, int heads)
{
    snprintf(shape, sizeof shape, "b %d T %d dim %d heads %d", b, T, dim, heads);
    att_arg a = {b, T, dim, heads};
    size_t B = (size_t)b, TT = (size_t)T, D = (size_t)dim, NH = (size_t)heads;
    size_t sz[6] = {B * TT * 3 * D, B * NH * TT * TT, B * TT * D, B * TT * D, B * NH * TT * TT, B * TT * 3 * D};
    pair P;
    pair_init(&P);
    for (int i = 0; i < 6; i++) pair_add(&P, sz[i]);
    pair_commit(&P);
    pair_rand_all(&P);
    pair_rand(&P, AQKV, 2.0f, 0.0f);
    pair_run(&P, attention, &a, "attention");
    pair_check(&P, AATT, TOL, "attention forward", "att");
    pair_check(&P, AOUT, TOL, "attention forward", "out");
    pair_check(&P, ADQKV, TOL, "attention backward", "dqkv");
    pair_free(&P);
}

/* ---- Additions, sums, pooling ---- */

typedef struct vec_arg {
    int which, b, T, d;
    size_t n;
} vec_arg;

static smoe_status vec_op(smoe_exec *ex, const smoe_tensor *t, const void *arg, smoe_err *err)
{
    const vec_arg *a = arg;
    switch (a->which) {
    case 0: return smoe_op_add(ex, a->n, &t[0], &t[1], err);
    case 1: return smoe_op_add_broadcast(ex, a->b, a->n, &t[0], &t[1], err);
    case 2: return smoe_op_sum_rows(ex, a->b, a->n, &t[0], &t[1], err);
    case 3: return smoe_op_meanpool_forward(ex, a->b, a->T, a->d, &t[0], &t[1], err);
    default: return smoe_op_meanpool_backward(ex, a->b, a->T, a->d, &t[0], &t[1], err);
    }
}

static void test_vec(int which, int b, size_t n, int T, int d)
{
    snprintf(shape, sizeof shape, "b %d n %zu T %d d %d", b, n, T, d);
    static const char *names[] = {"add", "add broadcast", "sum rows", "meanpool forward", "meanpool backward"};
    vec_arg a = {which, b, T, d, n};
    size_t in, out;
    switch (which) {
    case 0: in = n, out = n; break;
    case 1: in = n, out = (size_t)b * n; break;
    case 2: in = (size_t)b * n, out = n; break;
    case 3: in = (size_t)b * T * d, out = (size_t)b * d; break;
    default: in = (size_t)b * d, out = (size_t)b * T * d; break;
    }
    pair P;
    pair_init(&P);
    pair_add(&P, in);
    pair_add(&P, out);
    pair_commit(&P);
    pair_rand_all(&P);
    pair_run(&P, vec_op, &a, names[which]);
    pair_check(&P, 1, TOL, names[which], "output");
    pair_free(&P);
}

/* ---- Cross-entropy ---- */

typedef struct ce_arg {
    int b, classes, has_d;
} ce_arg;
enum { CLOGITS, CLABELS, CPROBS, CLOSSES, CLOSS, CDLOGITS };

static smoe_status cross_entropy(smoe_exec *ex, const smoe_tensor *t, const void *arg, smoe_err *err)
{
    const ce_arg *a = arg;
    return smoe_op_cross_entropy(ex, a->b, a->classes, &t[CLOGITS], &t[CLABELS], &t[CPROBS], &t[CLOSSES], &t[CLOSS],
                                 a->has_d ? &t[CDLOGITS] : NULL, err);
}

static void test_cross_entropy(int b, int classes, int has_d)
{
    snprintf(shape, sizeof shape, "b %d classes %d%s", b, classes, has_d ? "" : " without dlogits");
    ce_arg a = {b, classes, has_d};
    size_t B = (size_t)b, C = (size_t)classes;
    size_t sz[6] = {B * C, B, B * C, B, 1, B * C};
    pair P;
    pair_init(&P);
    for (int i = 0; i < 6; i++) pair_add(&P, sz[i]);
    pair_commit(&P);
    pair_rand_all(&P);
    pair_rand(&P, CLOGITS, 4.0f, 1.0f);
    int32_t *labels = malloc(B * 4);
    for (size_t i = 0; i < B; i++) labels[i] = (int32_t)((test_rand(&seed) + 1.0f) * 0.5f * (float)classes) % classes;
    pair_set(&P, CLABELS, labels);
    free(labels);
    pair_run(&P, cross_entropy, &a, "cross entropy");
    pair_check(&P, CPROBS, TOL, "cross entropy", "probs");
    pair_check(&P, CLOSS, TOL, "cross entropy", "loss");
    if (has_d) pair_check(&P, CDLOGITS, TOL, "cross entropy", "dlogits");
    pair_free(&P);
}

/* ---- Sum of squares ---- */

typedef struct sq_arg {
    int count;
} sq_arg;

static smoe_status sum_squares(smoe_exec *ex, const smoe_tensor *t, const void *arg, smoe_err *err)
{
    const sq_arg *a = arg;
    return smoe_op_sum_squares(ex, a->count, t, &t[a->count], &t[a->count + 1], err);
}

static void test_sum_squares(void)
{
    snprintf(shape, sizeof shape, "6 tensors, one empty");
    const size_t sizes[] = {1, 13, 0, 1000, 70001, 257};
    sq_arg a = {(int)(sizeof sizes / sizeof sizes[0])};
    pair P;
    pair_init(&P);
    for (int i = 0; i < a.count; i++) pair_add(&P, sizes[i]);
    size_t s0 = smoe_op_sum_squares_scratch(a.count, P.t[0]), s1 = smoe_op_sum_squares_scratch(a.count, P.t[1]);
    pair_add(&P, s0 > s1 ? s0 : s1);
    pair_add(&P, 1);
    pair_commit(&P);
    pair_rand_all(&P);
    pair_run(&P, sum_squares, &a, "sum of squares");
    pair_check(&P, a.count + 1, TOL_LONG, "sum of squares", "out");
    CHECK_MSG(P.barriers == 1, "sum of squares: %u barriers, 1 expected (the level-0 dispatches are independent)",
              P.barriers);
    pair_free(&P);
}

/* ---- AdamW ---- */

typedef struct adam_arg {
    size_t n;
    smoe_adamw_cfg cfg;
} adam_arg;
enum { OP, OG, OM, OV, OSTATE, ONORM };

static smoe_status adamw(smoe_exec *ex, const smoe_tensor *t, const void *arg, smoe_err *err)
{
    const adam_arg *a = arg;
    return smoe_op_adamw(ex, a->n, &t[OP], &t[OG], &t[OM], &t[OV], &t[OSTATE], &t[ONORM], &a->cfg, err);
}

static void test_adamw(size_t n, float t, float lr, float norm2, smoe_adamw_cfg cfg)
{
    snprintf(shape, sizeof shape, "n %zu t %g lr %g norm2 %g max_norm %g wd %g", n, t, lr, norm2, cfg.max_norm, cfg.wd);
    adam_arg a = {n, cfg};
    pair P;
    pair_init(&P);
    size_t sz[6] = {n, n, n, n, 2, 1};
    for (int i = 0; i < 6; i++) pair_add(&P, sz[i]);
    pair_commit(&P);
    pair_rand_all(&P);
    pair_rand(&P, OM, 0.1f, 0.0f);
    pair_rand(&P, OV, 0.005f, 0.005f); /* v >= 0 */
    float state[2] = {t, lr};
    pair_set(&P, OSTATE, state);
    pair_set(&P, ONORM, &norm2);
    pair_run(&P, adamw, &a, "adamw");
    pair_check(&P, OP, TOL, "adamw", "p");
    pair_check(&P, OM, TOL, "adamw", "m");
    pair_check(&P, OV, TOL, "adamw", "v");
    pair_free(&P);
}

/* ---- A chain recorded once and replayed: x <- x + linear(layernorm(x)) ---- */

typedef struct chain_arg {
    int rows, d;
} chain_arg;
enum { CX, CG, CB, CH, CMEAN, CRSTD, CW, CWB, CZ };

static smoe_status chain(smoe_exec *ex, const smoe_tensor *t, const void *arg, smoe_err *err)
{
    const chain_arg *a = arg;
    smoe_status st =
        smoe_op_layernorm_forward(ex, a->rows, a->d, &t[CX], &t[CG], &t[CB], &t[CH], &t[CMEAN], &t[CRSTD], err);
    if (!st) st = smoe_op_linear_forward(ex, a->rows, a->d, a->d, &t[CH], &t[CW], &t[CWB], &t[CZ], err);
    if (!st) st = smoe_op_add(ex, (size_t)a->rows * a->d, &t[CZ], &t[CX], err);
    return st;
}

static void test_chain(int rows, int d)
{
    snprintf(shape, sizeof shape, "rows %d d %d", rows, d);
    chain_arg a = {rows, d};
    size_t R = (size_t)rows, D = (size_t)d;
    size_t sz[9] = {R * D, D, D, R * D, R, R, D * D, D, R * D};
    pair P;
    pair_init(&P);
    for (int i = 0; i < 9; i++) pair_add(&P, sz[i]);
    pair_commit(&P);
    pair_rand_all(&P);
    smoe_err err;
    smoe_program prog;
    CHECK(smoe_program_begin(gpu, &prog, &err) == SMOE_OK);
    smoe_exec vk = {gpu, &prog};
    CHECK_MSG(chain(&vk, P.t[1], &a, &err) == SMOE_OK, "%s", err.msg);
    /* layernorm -> linear (reads h) -> add (reads z, writes x that layernorm read) */
    CHECK_MSG(prog.barriers == 2, "chain: %u barriers, 2 expected", prog.barriers);
    CHECK(smoe_program_end(&prog, &err) == SMOE_OK);
    for (int rep = 0; rep < 2; rep++) {
        smoe_exec cpu = {NULL, NULL};
        CHECK(chain(&cpu, P.t[0], &a, &err) == SMOE_OK);
        CHECK_MSG(smoe_program_run(&prog, &err) == SMOE_OK, "%s", err.msg);
        pair_check(&P, CH, TOL, "chain (replayed)", "h");
        pair_check(&P, CZ, TOL, "chain (replayed)", "z");
        pair_check(&P, CX, TOL, "chain (replayed)", "x");
    }
    smoe_program_destroy(&prog);
    pair_free(&P);
}

int main(void)
{
    smoe_context *cpu = test_open("cpu");
    smoe_context *vk = test_open("vulkan");
    if (!cpu || !vk) {
        test_close(cpu);
        test_close(vk);
        return test_finish("test_ops");
    }
    gpu = &vk->gpu;

    test_linear(37, 13, 10);
    test_linear(130, 70, 65);
    test_mlp(37, 13, 21);
    test_mlp(70, 6, 130);
    test_im2col(5, 3, 12, 8, 4);
    test_im2col(2, 1, 9, 9, 3);
    test_im2col(3, 2, 5, 7, 1);
    test_layernorm(37, 13, 1);
    test_layernorm(9, 200, 1);
    test_layernorm(1, 1, 1);
    test_attention(5, 7, 6, 2);
    test_attention(2, 67, 12, 3);
    test_attention(3, 1, 4, 4);
    test_vec(0, 1, 1001, 0, 0);
    test_vec(1, 5, 91, 0, 0);
    test_vec(2, 37, 91, 0, 0);
    test_vec(2, 300, 5, 0, 0);
    test_vec(3, 5, 0, 7, 13);
    test_vec(3, 3, 0, 65, 70);
    test_vec(4, 5, 0, 7, 13);
    test_cross_entropy(5, 10, 1);
    test_cross_entropy(37, 100, 1);
    test_cross_entropy(5, 10, 0);
    test_sum_squares();
    smoe_adamw_cfg cfg = {0.9f, 0.999f, 1e-8f, 0.05f, 1.0f, 1.0f};
    test_adamw(1001, 1.0f, 1e-2f, 50.0f, cfg);
    test_adamw(1001, 7.0f, 1e-3f, 0.25f, cfg);
    cfg.max_norm = 0.0f;
    cfg.wd = 0.0f;
    test_adamw(3, 100.0f, 3e-4f, 1e6f, cfg);
    cfg.lr_mult = 3.0f; /* a per-tensor learning-rate multiplier (the Soft MoE scales) */
    test_adamw(1001, 5.0f, 1e-3f, 2.0f, cfg);
    test_chain(37, 13);
    /* the ops that use the matmul with each matmul shader forced (its first usable row; every
     * row is checked on every feature in test_matmul), on rows at and off multiples of 4 floats */
    for (uint32_t i = 0; i < smoe_matmul_variant_count(); i++) {
        if (!test_first_of_shader(gpu, i)) continue;
        /* the variant is the policy of a context of its own (SOFTMOE_MATMUL_VARIANT) */
        smoe_context *forced = test_open_forced("vulkan", smoe_matmul_variant_name(i));
        if (!forced) continue;
        smoe_gpu *main_gpu = gpu;
        gpu = &forced->gpu;
        for (int odd = 0; odd < 2; odd++) {
            test_linear(37, 16 + odd, 12);
            test_mlp(37, 12 + odd, 20);
            test_attention(3, 9, 12 + 3 * odd, 3);
        }
        gpu = main_gpu;
        test_close(forced);
    }
    /* the row kernels (layernorm, softmax, cross-entropy) the other way too: a workgroup per row
     * where the device chose an invocation per row, and the reverse */
    smoe_context *rows = test_open_other_rows(gpu);
    if (rows) {
        smoe_gpu *main_gpu = gpu;
        gpu = &rows->gpu;
        CHECK(gpu->row_serial == !main_gpu->row_serial);
        test_layernorm(37, 13, 1);
        test_layernorm(9, 200, 1);
        test_attention(2, 67, 12, 3);
        test_cross_entropy(37, 100, 1);
        test_cross_entropy(5, 10, 0);
        gpu = main_gpu;
        test_close(rows);
    }
    /* more rows than one grid dimension holds, where that is small enough to try */
    uint32_t maxx = gpu->info.max_workgroup_count[0];
    if (maxx < (1u << 17)) test_layernorm((int)maxx + 5, 3, 0);

    for (int i = 0; i < worst_count; i++) printf("  %-20s worst relative error %.3g\n", worst[i].name, worst[i].worst);
    test_close(cpu);
    test_close(vk);
    return test_finish("test_ops");
}
