/* The matmul family directly, every variant the device runs forced in turn, against a double
 * precision reference on the CPU: all four transposes, every operand transform (with the softmax
 * statistic following m and following k), every epilogue step, two-level row groups, batches,
 * rows at and off multiples of 4 floats, sizes that are multiples of no tile, K = 0, and the row
 * indirection (gathered rows and columns, row counts) of expert-subset inference. Within 2e-5 of each output's largest magnitude. Then the
 * per-kernel profile of a recorded program: one row per label, counts and times. */
#define _POSIX_C_SOURCE 200809L
#include "common/interface.h"
#include "ops/matmul.h"
#include "test_vk.h"

#define TOL 2e-5

static smoe_gpu *gpu;
static uint64_t seed = 0x5eed;
static double worst;

typedef struct mcase {
    const char *name;
    uint32_t M, N, K, batch;
    int ta, tb;
    uint32_t a_xform, b_xform, epi;
    float alpha;
    uint32_t a_g, b_g, c_g; /* row groups of g rows (0: a plain matrix per batch) */
    uint32_t pad;           /* floats after each row: 1 puts rows off multiples of 4 */
    uint32_t gather;        /* SMOE_GATHER_*: through a list per batch (and the row counts) */
} mcase;

/* Stored rows or columns beyond those a gathered product reads: the lists pick among them. */
#define WIDE 5

/* A stored operand with its layout and host copy. */
typedef struct operand {
    uint32_t rows, cols, off, ld, bs, g, gs;
    size_t floats;
    float *host;
} operand;

static size_t index_of(const operand *o, uint32_t r, uint32_t c, uint32_t z)
{
    return o->off + (size_t)z * o->bs + (size_t)(r / o->g) * o->gs + (size_t)(r % o->g) * o->ld + c;
}

/* rows x cols per batch; grouped like the slots of an expert: group q of batch z at z*bs + q*gs. */
static void layout(operand *o, uint32_t rows, uint32_t cols, uint32_t batch, uint32_t g, uint32_t pad)
{
    o->rows = rows, o->cols = cols;
    o->off = pad ? 1 : 4;
    o->ld = cols + pad;
    if (g) {
        o->g = g;
        o->bs = g * o->ld;
        o->gs = batch * o->bs;
        o->floats = o->off + (size_t)((rows + g - 1) / g) * o->gs;
    } else {
        o->g = SMOE_NO_GROUP;
        o->gs = 0;
        o->bs = rows * o->ld;
        o->floats = o->off + (size_t)batch * o->bs;
    }
    if (!o->floats) o->floats = 1;
    o->host = malloc(o->floats * 4);
    for (size_t i = 0; i < o->floats; i++) o->host[i] = test_rand(&seed);
}

static smoe_mm_operand device_operand(const operand *o, smoe_tensor t)
{
    smoe_mm_operand m = {t, o->off, o->ld, o->bs, o->g, o->gs};
    return m;
}

static double gelu_d(double a) { return 0.5 * a * (1.0 + tanh(0.7978845608028654 * (a + 0.044715 * a * a * a))); }
static double gelu_grad_d(double a)
{
    double t = tanh(0.7978845608028654 * (a + 0.044715 * a * a * a));
    return 0.5 * (1.0 + t) + 0.5 * a * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * a * a);
}

enum { T_A, T_B, T_C, T_BIAS, T_AUX, T_STAT, T_ROW, T_COL, T_SCALAR, T_GELU, T_IDX, T_COUNT };

/* The index tensor of a gathered product (interface.h, SMOE_GATHER_*): Z row counts, then a list
 * of distinct indices below range per batch, idx_bs apart. */
static uint32_t *make_idx(uint32_t Z, uint32_t M, uint32_t idx_bs, uint32_t range, size_t *count)
{
    *count = Z + (size_t)Z * idx_bs;
    uint32_t *idx = malloc(*count * 4);
    for (uint32_t z = 0; z < Z; z++) {
        /* all rows, none, then some */
        idx[z] = z == 0 ? M : z == 1 ? 0 : 1 + (uint32_t)((test_rand(&seed) + 1.0f) * 0.5f * (float)M) % M;
        uint32_t *list = idx + Z + (size_t)z * idx_bs, *perm = malloc(range * 4);
        for (uint32_t i = 0; i < range; i++) perm[i] = i;
        for (uint32_t i = range; i > 1; i--) {
            uint32_t j = (uint32_t)((test_rand(&seed) + 1.0f) * 0.5f * (float)i) % i, t = perm[i - 1];
            perm[i - 1] = perm[j], perm[j] = t;
        }
        for (uint32_t i = 0; i < idx_bs; i++) list[i] = perm[i % range];
        free(perm);
    }
    return idx;
}

static void run_case(const mcase *mc)
{
    uint32_t M = mc->M, N = mc->N, K = mc->K, Z = mc->batch, gt = mc->gather;
    uint32_t a_rows = (mc->ta ? K : M) + (gt & SMOE_GATHER_A_ROW ? WIDE : 0);
    uint32_t a_cols = (mc->ta ? M : K) + (gt & SMOE_GATHER_A_COL ? WIDE : 0);
    uint32_t c_rows = M + (gt & SMOE_GATHER_C_ROW ? WIDE : 0);
    operand a, b, c, aux, gout;
    layout(&a, a_rows, a_cols, Z, mc->a_g, mc->pad);
    layout(&b, mc->tb ? N : K, mc->tb ? K : N, Z, mc->b_g, mc->pad);
    layout(&c, c_rows, N, Z, mc->c_g, 0);
    layout(&aux, c_rows, N, Z, mc->c_g, 0);
    layout(&gout, c_rows, N, Z, mc->c_g, 0);
    /* one list per product: of A's stored rows, A's stored columns or C's rows */
    uint32_t idx_bs = M > K ? M : K;
    uint32_t range = gt & SMOE_GATHER_A_ROW ? a_rows : gt & SMOE_GATHER_A_COL ? a_cols : c_rows;
    size_t n_idx = 1;
    uint32_t *idx = gt ? make_idx(Z, M, idx_bs, range, &n_idx) : calloc(1, 4);
#define LIST(z, u) idx[Z + (size_t)(z) * idx_bs + (u)]
    uint32_t stat_bs = (a_rows > a_cols ? a_rows : a_cols) + 1;
    uint32_t bias_bs = (N + 3) / 4 * 4 + 4, cs_bs = (N + 3) / 4 * 4 + 8, rs_bs = M + 1;
    size_t n_vec[T_COUNT] = {0};
    n_vec[T_BIAS] = (size_t)Z * bias_bs, n_vec[T_STAT] = (size_t)Z * stat_bs;
    n_vec[T_ROW] = (size_t)Z * rs_bs, n_vec[T_COL] = (size_t)Z * cs_bs, n_vec[T_SCALAR] = 1;
    float *vec[T_COUNT] = {0};
    for (int i = T_BIAS; i < T_COUNT; i++) {
        if (i == T_AUX || i == T_GELU) continue;
        vec[i] = malloc(n_vec[i] * 4);
        for (size_t k = 0; k < n_vec[i]; k++) vec[i][k] = test_rand(&seed);
    }
    for (size_t k = 0; k < n_vec[T_STAT]; k++) vec[T_STAT][k] = 0.5f * (vec[T_STAT][k] + 1.0f);
    vec[T_SCALAR][0] = 1.3f;

    /* the reference, in double */
    int exp_a = mc->a_xform == SMOE_XFORM_EXP_COL || mc->a_xform == SMOE_XFORM_EXP_ROW;
    double *want = calloc(c.floats, sizeof *want), *want_gelu = calloc(gout.floats, sizeof *want_gelu);
    for (uint32_t z = 0; z < Z; z++)
        for (uint32_t r = 0; r < (gt & SMOE_GATHER_COUNT ? idx[z] : M); r++)
            for (uint32_t col = 0; col < N; col++) {
                double acc = 0;
                for (uint32_t k = 0; k < K; k++) {
                    uint32_t ar = mc->ta ? k : r, ac = mc->ta ? r : k, br = mc->tb ? col : k, bc = mc->tb ? k : col;
                    if (gt & SMOE_GATHER_A_ROW) ar = LIST(z, ar);
                    if (gt & SMOE_GATHER_A_COL) ac = LIST(z, ac);
                    double va = a.host[index_of(&a, ar, ac, z)], vb = b.host[index_of(&b, br, bc, z)];
                    if (mc->a_xform == SMOE_XFORM_GELU) va = gelu_d(va);
                    if (exp_a) {
                        uint32_t si = mc->a_xform == SMOE_XFORM_EXP_COL ? ac : ar;
                        va = exp(1.3 * va - vec[T_STAT][(size_t)z * stat_bs + si]);
                    }
                    if (mc->b_xform == SMOE_XFORM_GELU) vb = gelu_d(vb);
                    acc += va * vb;
                }
                double v = acc * (mc->alpha != 0 ? mc->alpha : 1.0);
                if (mc->epi & SMOE_EPI_ROWSCALE) v *= vec[T_ROW][(size_t)z * rs_bs + r];
                if (mc->epi & SMOE_EPI_COLSCALE) v *= vec[T_COL][(size_t)z * cs_bs + col];
                if (mc->epi & SMOE_EPI_SCALAR) v *= 1.3;
                if (mc->epi & SMOE_EPI_BIAS) v += vec[T_BIAS][(size_t)z * bias_bs + col];
                size_t ci = index_of(&c, gt & SMOE_GATHER_C_ROW ? LIST(z, r) : r, col, z);
                if (mc->epi & SMOE_EPI_GELU_GRAD) v *= gelu_grad_d(aux.host[ci]);
                if (mc->epi & SMOE_EPI_ACCUMULATE) v += c.host[ci];
                want[ci] = v;
                want_gelu[ci] = gelu_d(v);
            }
    /* places C does not own keep their old values */
    float *want_f = malloc(c.floats * 4), *want_gelu_f = malloc(gout.floats * 4);
    for (size_t i = 0; i < c.floats; i++) want_f[i] = c.host[i], want_gelu_f[i] = gout.host[i];
    for (uint32_t z = 0; z < Z; z++)
        for (uint32_t r = 0; r < (gt & SMOE_GATHER_COUNT ? idx[z] : M); r++)
            for (uint32_t col = 0; col < N; col++) {
                size_t ci = index_of(&c, gt & SMOE_GATHER_C_ROW ? LIST(z, r) : r, col, z);
                want_f[ci] = (float)want[ci];
                want_gelu_f[ci] = (float)want_gelu[ci];
            }

    smoe_err err;
    smoe_arena arena;
    smoe_arena_init(&arena, gpu, "test matmul");
    smoe_tensor t[T_COUNT];
    size_t n[T_COUNT] = {a.floats, b.floats, c.floats, n_vec[T_BIAS], aux.floats, n_vec[T_STAT],
                         n_vec[T_ROW], n_vec[T_COL], 1, gout.floats, n_idx};
    for (int i = 0; i < T_COUNT; i++) CHECK(smoe_arena_reserve(&arena, n[i] * 4, &t[i], &err) == SMOE_OK);
    CHECK_MSG(smoe_arena_commit(&arena, &err) == SMOE_OK, "%s", err.msg);
    smoe_matmul mm = {
        .M = M, .N = N, .K = K, .batch = Z, .trans_a = mc->ta, .trans_b = mc->tb,
        .a = device_operand(&a, t[T_A]), .b = device_operand(&b, t[T_B]), .c = device_operand(&c, t[T_C]),
        .a_xform = mc->a_xform, .b_xform = mc->b_xform, .epi = mc->epi, .alpha = mc->alpha,
        .bias = t[T_BIAS], .aux = t[T_AUX], .stat = t[T_STAT], .rowscale = t[T_ROW], .colscale = t[T_COL],
        .scalar = t[T_SCALAR], .gelu_out = t[T_GELU],
        .bias_bs = bias_bs, .stat_bs = stat_bs, .rs_bs = rs_bs, .cs_bs = cs_bs,
        .gather = gt, .idx = t[T_IDX], .idx_off = Z, .idx_bs = idx_bs,
    };
    float *got = malloc(c.floats * 4), *got_gelu = malloc(gout.floats * 4);
    for (uint32_t i = 0; i < smoe_matmul_variant_count(); i++) {
        if (!smoe_matmul_variant_usable(gpu, i)) continue;
        const char *name = smoe_matmul_variant_name(i);
        const char *chosen = smoe_matmul_choice(gpu, &mm, name);
        CHECK_MSG(chosen && !strcmp(chosen, name), "%s: forcing %s chose %s", mc->name, name, chosen ? chosen : "nothing");
        const void *hosts[T_COUNT] = {a.host, b.host, c.host, vec[T_BIAS], aux.host, vec[T_STAT], vec[T_ROW],
                                      vec[T_COL], vec[T_SCALAR], gout.host, idx};
        for (int k = 0; k < T_COUNT; k++)
            CHECK(smoe_tensor_upload(&t[k], 0, hosts[k], n[k] * 4, &err) == SMOE_OK);
        smoe_program p;
        smoe_status st = smoe_program_begin(gpu, &p, &err);
        if (!st) st = smoe_record_matmul_variant(&p, &mm, name, &err);
        if (!st) st = smoe_program_end(&p, &err);
        if (!st) st = smoe_program_run(&p, &err);
        CHECK_MSG(st == SMOE_OK, "%s with %s: %s", mc->name, name, err.msg);
        smoe_program_destroy(&p);
        CHECK(smoe_tensor_download(&t[T_C], 0, got, c.floats * 4, &err) == SMOE_OK);
        double e = test_rel_err(got, want_f, c.floats);
        if (mc->epi & SMOE_EPI_STORE_GELU) {
            CHECK(smoe_tensor_download(&t[T_GELU], 0, got_gelu, gout.floats * 4, &err) == SMOE_OK);
            double eg = test_rel_err(got_gelu, want_gelu_f, gout.floats);
            if (eg > e || eg != eg) e = eg;
        }
        if (e > worst || e != e) worst = e;
        CHECK_MSG(e <= TOL, "%s (%ux%ux%u batch %u) with %s: relative error %.3g", mc->name, M, N, K, Z, name, e);
    }
    smoe_arena_release(&arena);
    free(got), free(got_gelu), free(want), free(want_gelu), free(want_f), free(want_gelu_f);
    free(a.host), free(b.host), free(c.host), free(aux.host), free(gout.host);
    for (int i = 0; i < T_COUNT; i++) free(vec[i]);
    free(idx);
#undef LIST
}

/* A program of two matmuls and a fill, profiled: one row per label, with its count and time. */
static void test_profile(void)
{
    if (!gpu->info.timestamps) {
        printf("  (no timestamps on this queue: profile not tested)\n");
        return;
    }
    smoe_err err;
    smoe_arena arena;
    smoe_arena_init(&arena, gpu, "test profile");
    smoe_tensor a, b, c;
    CHECK(smoe_arena_reserve(&arena, 64 * 64 * 4, &a, &err) == SMOE_OK);
    CHECK(smoe_arena_reserve(&arena, 64 * 64 * 4, &b, &err) == SMOE_OK);
    CHECK(smoe_arena_reserve(&arena, 64 * 64 * 4, &c, &err) == SMOE_OK);
    CHECK(smoe_arena_commit(&arena, &err) == SMOE_OK);
    smoe_matmul mm = {.M = 64, .N = 64, .K = 64, .batch = 1, .a = smoe_mm_plain(a, 64, 0), .b = smoe_mm_plain(b, 64, 0),
                      .c = smoe_mm_plain(c, 64, 0)};
    smoe_profile prof = {0};
    smoe_program p;
    CHECK(smoe_program_begin_profiled(gpu, &p, &prof, &err) == SMOE_OK);
    CHECK(smoe_program_fill(&p, &a, 0, &err) == SMOE_OK);
    CHECK(smoe_record_matmul(&p, &mm, &err) == SMOE_OK);
    mm.M = 32;
    CHECK(smoe_record_matmul(&p, &mm, &err) == SMOE_OK);
    CHECK(smoe_program_end(&p, &err) == SMOE_OK);
    for (int r = 0; r < 3; r++) CHECK_MSG(smoe_program_run(&p, &err) == SMOE_OK, "%s", err.msg);
    smoe_program_destroy(&p);
    smoe_profile_sort(&prof);
    CHECK_MSG(prof.count == 3 && !prof.failed, "%zu profile rows, 3 expected", prof.count);
    int fills = 0, big = 0, small = 0;
    for (size_t i = 0; i < prof.count; i++) {
        const smoe_profile_row *r = &prof.rows[i];
        CHECK_MSG(r->count == 3, "%s: %llu runs measured, 3 expected", r->label, (unsigned long long)r->count);
        CHECK_MSG(r->ms >= 0 && r->ms < 1e4, "%s: %g ms", r->label, r->ms);
        fills += !strcmp(r->label, "fill");
        big += strstr(r->label, "matmul ") && strstr(r->label, " 64x64x64") != NULL;
        small += strstr(r->label, "matmul ") && strstr(r->label, " 32x64x64") != NULL;
        if (i) CHECK(prof.rows[i].ms <= prof.rows[i - 1].ms);
    }
    CHECK_MSG(fills == 1 && big == 1 && small == 1, "profile labels: fill %d, 64x64x64 %d, 32x64x64 %d", fills, big, small);
    CHECK(smoe_profile_total_ms(&prof) > 0);
    smoe_profile_clear(&prof);
    smoe_arena_release(&arena);
}

int main(void)
{
    smoe_context *vk = test_open("vulkan");
    if (!vk) return test_finish("test_matmul");
    gpu = &vk->gpu;
    /* Five specializations, each with every row at multiples of 4 floats (the texel variant's
     * 4-float reads and writes) and not, on several shapes. */
    const uint32_t s1 = SMOE_EPI_ROWSCALE | SMOE_EPI_COLSCALE | SMOE_EPI_BIAS, s2 = SMOE_EPI_SCALAR | SMOE_EPI_STORE_GELU;
    const uint32_t c1 = SMOE_XFORM_EXP_COL, r1 = SMOE_XFORM_EXP_ROW, g1 = SMOE_XFORM_GELU;
    const mcase cases[] = {
        {"exp by column along k, grouped A rows, row and column scales, bias, alpha", 68, 72, 36, 2, 0, 0, c1, 0, s1,
         0.5f, 3, 0, 0, 0, 0},
        {"the same, several tiles each way, rows off 4", 150, 130, 70, 1, 0, 0, c1, 0, s1, 0.5f, 3, 0, 0, 0, 0},
        {"the same, K = 0: the epilogue of nothing", 5, 7, 0, 2, 0, 0, c1, 0, s1, 0.5f, 3, 0, 0, 0, 0},
        {"A^T exp by column along m, grouped B rows, scalar, gelu stored", 36, 44, 28, 2, 1, 0, c1, 0, s2, 0, 0, 2, 0, 0, 0},
        {"the same, rows off 4", 37, 45, 29, 2, 1, 0, c1, 0, s2, 0, 0, 2, 0, 1, 0},
        {"B^T, exp by row along m, grouped A and C rows, accumulate: 8 rows, 5 batches", 8, 40, 48, 5, 0, 1, r1, 0,
         SMOE_EPI_ACCUMULATE, 0, 4, 0, 4, 0, 0},
        {"the same, rows off 4", 50, 33, 64, 2, 0, 1, r1, 0, SMOE_EPI_ACCUMULATE, 0, 4, 0, 4, 0, 0},
        {"A^T B^T, exp by row along k, gelu on B, gelu gradient", 24, 28, 36, 3, 1, 1, r1, g1, SMOE_EPI_GELU_GRAD, 0, 0,
         0, 0, 0, 0},
        {"the same, rows off 4", 23, 26, 37, 3, 1, 1, r1, g1, SMOE_EPI_GELU_GRAD, 0, 0, 0, 0, 1, 0},
        {"the same, 1 x 1 x 1", 1, 1, 1, 1, 1, 1, r1, g1, SMOE_EPI_GELU_GRAD, 0, 0, 0, 0, 1, 0},
        {"gelu on A, bias", 32, 16, 12, 3, 0, 0, g1, 0, SMOE_EPI_BIAS, 0, 0, 0, 0, 0, 0},
        {"the same, rows off 4", 31, 17, 10, 3, 0, 0, g1, 0, SMOE_EPI_BIAS, 0, 0, 0, 0, 1, 0},
        /* the row indirection of expert-subset inference, as its four products use it */
        {"A^T columns gathered, exp by column along m (the kept slots' dispatch)", 12, 20, 16, 3, 1, 0, c1, 0, 0, 0, 0,
         0, 0, 0, SMOE_GATHER_A_COL},
        {"A rows gathered and counted, B^T, bias, gelu stored (an expert's fc1)", 12, 24, 16, 4, 0, 1, 0, 0,
         SMOE_EPI_BIAS | SMOE_EPI_STORE_GELU, 0, 0, 0, 0, 0, SMOE_GATHER_A_ROW | SMOE_GATHER_COUNT},
        {"C rows gathered and counted, gelu on A, B^T, bias (fc2)", 12, 24, 16, 4, 0, 1, g1, 0, SMOE_EPI_BIAS, 0, 0, 0, 0,
         0, SMOE_GATHER_C_ROW | SMOE_GATHER_COUNT},
        {"A columns gathered, exp by row along m (the kept slots' combine), rows off 4", 15, 20, 12, 2, 0, 0, r1, 0, 0,
         0, 0, 0, 0, 1, SMOE_GATHER_A_COL},
        {"A^T rows gathered, exp by row along k", 16, 12, 20, 2, 1, 0, r1, 0, 0, 0, 0, 0, 0, 0, SMOE_GATHER_A_ROW},
    };
    int usable = 0;
    for (uint32_t i = 0; i < smoe_matmul_variant_count(); i++) usable += smoe_matmul_variant_usable(gpu, i);
    CHECK_MSG(usable >= 2, "only %d matmul variants usable", usable);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i]);
    printf("  %zu cases x %d variants: worst relative error %.3g\n", sizeof cases / sizeof cases[0], usable, worst);
    test_profile();
    test_close(vk);
    return test_finish("test_matmul");
}
