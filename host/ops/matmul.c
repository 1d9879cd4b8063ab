/* The matmul family: its variants, the choice among them (table, autotune, forcing), recording. */
#define _POSIX_C_SOURCE 200809L
#include "ops/matmul.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/interface.h"
#include "tune.h"

typedef struct mm_variant {
    const char *name;
    int texel;          /* 0: shaders/matmul.comp (shared-memory tiles); 1: shaders/matmul_texel.comp */
    uint32_t bm, bn;    /* the block of C one workgroup computes */
    uint32_t bk;        /* shared-memory tiles: the K step */
    uint32_t tm, tn;    /* the block of C one invocation computes */
    uint32_t avoid;     /* device quirks under which this row is ranked after the rows without them */
} mm_variant;

/* The variants, best first on a device none of whose quirks a row avoids; rows that avoid one of
 * the device's quirks come after all the others. Shared-memory tiles suit GPUs; on drivers that run
 * shaders on the CPU every shared-memory access becomes a scalar loop, and register tiles fed by
 * texel fetches (4 floats each, no shared memory) are an order of magnitude faster. A row is usable
 * when the device can run it (invocations, shared memory, texel formats) and, for texel rows, when
 * the operands can be viewed as texel buffers. Among the usable rows of the first group the first
 * whose BM does not exceed the row count is taken (skinny products, like the few rows routed to
 * one expert, do not waste a tall tile), else the group's last. */
static const mm_variant variants[] = {
    /* name         texel  bm  bn  bk  tm  tn  avoid */
    {"shared64x64",   0,   64, 64, 16, 4,  4, SMOE_QUIRK_CPU_DRIVER}, /* 256 invocations, 8 KiB shared */
    {"shared32x64",   0,   32, 64, 16, 2,  4, SMOE_QUIRK_CPU_DRIVER}, /* 256 invocations, 6 KiB */
    {"shared16x64",   0,   16, 64, 16, 1,  4, SMOE_QUIRK_CPU_DRIVER}, /* 256 invocations, 5 KiB */
    {"shared8x64",    0,    8, 64, 16, 1,  4, SMOE_QUIRK_CPU_DRIVER}, /* 128 invocations */
    {"shared16x16",   0,   16, 16,  8, 1,  1, SMOE_QUIRK_CPU_DRIVER}, /* 256 invocations, 1 KiB: any device */
    {"texel64x64",    1,   64, 64,  0, 8,  8, 0},                     /* 8 x 8 invocations */
    {"texel8x64",     1,    8, 64,  0, 4,  8, 0},                     /* 8 x 2 */
};
#define VARIANT_COUNT (sizeof variants / sizeof variants[0])

/* Workgroup size: shared-memory rows are 1D, texel rows 2D with x along N. */
static void workgroup(const mm_variant *v, uint32_t wg[3])
{
    wg[0] = v->texel ? v->bn / v->tn : (v->bm / v->tm) * (v->bn / v->tn);
    wg[1] = v->texel ? v->bm / v->tm : 1;
    wg[2] = 1;
}

static int device_usable(const smoe_gpu *gpu, const mm_variant *v)
{
    const smoe_device_info *d = &gpu->info;
    uint32_t wg[3];
    workgroup(v, wg);
    if (wg[0] * wg[1] > d->max_workgroup_invocations || wg[0] > d->max_workgroup_size[0] ||
        wg[1] > d->max_workgroup_size[1])
        return 0;
    if (v->texel) return d->texel_buffer_r32f;
    return (v->bm + v->bn) * v->bk * 4 <= d->max_shared_memory;
}

/* The texel view of an operand: rgba32f when every row it reads starts at a multiple of 4 floats
 * (and the device has the format), else r32f. 0 when it cannot be viewed at all. */
static int operand_view(const smoe_gpu *gpu, const smoe_mm_operand *o, uint32_t rows, uint32_t batch, int *vec4,
                        uint32_t *first)
{
    smoe_texel_view v;
    if (!smoe_texel_view_plan(gpu, &o->t, 1, &v)) return 0;
    *first = v.first;
    uint32_t off = o->off + v.first;
    *vec4 = off % 4 == 0 && o->ld % 4 == 0 && (batch <= 1 || o->bs % 4 == 0) &&
            (o->g == SMOE_NO_GROUP || o->g >= rows || o->gs % 4 == 0) && smoe_texel_view_plan(gpu, &o->t, 4, &v);
    return 1;
}

/* Whether C (with aux and gelu_out, laid out alike) and the bias and column scales, where the
 * epilogue reads them, start every row at a multiple of 4 floats. */
static int c_vec4(const smoe_matmul *mm)
{
    const smoe_mm_operand *c = &mm->c;
    int many = mm->batch > 1;
    return c->off % 4 == 0 && c->ld % 4 == 0 && (!many || c->bs % 4 == 0) &&
           (c->g == SMOE_NO_GROUP || c->g >= mm->M || c->gs % 4 == 0) &&
           (!(mm->epi & SMOE_EPI_BIAS) || !many || mm->bias_bs % 4 == 0) &&
           (!(mm->epi & SMOE_EPI_COLSCALE) || !many || mm->cs_bs % 4 == 0);
}

/* Whether the texel variant reads and writes mm four floats at a time: one choice for both
 * operands and C (a quarter of the pipelines to compile, a second each on a CPU driver, for the few
 * products with some rows on multiples of 4 floats and some not); columns of A gathered through an
 * index list are not contiguous. */
static int texel_vec4(const smoe_gpu *gpu, const smoe_matmul *mm)
{
    int va = 0, vb = 0;
    uint32_t f;
    return operand_view(gpu, &mm->a, mm->trans_a ? mm->K : mm->M, mm->batch, &va, &f) &&
           operand_view(gpu, &mm->b, mm->trans_b ? mm->N : mm->K, mm->batch, &vb, &f) && va && vb && c_vec4(mm) &&
           !(mm->gather & SMOE_GATHER_A_COL);
}

static int usable(const smoe_gpu *gpu, const mm_variant *v, const smoe_matmul *mm)
{
    if (!device_usable(gpu, v)) return 0;
    if (!v->texel) return 1;
    int vec;
    uint32_t first;
    return operand_view(gpu, &mm->a, mm->trans_a ? mm->K : mm->M, mm->batch, &vec, &first) &&
           operand_view(gpu, &mm->b, mm->trans_b ? mm->N : mm->K, mm->batch, &vec, &first);
}

static int preferred(const smoe_gpu *gpu, const mm_variant *v) { return !(v->avoid & gpu->quirks); }

/* The table's choice (see above the table). */
static const mm_variant *table_choice(const smoe_gpu *gpu, const smoe_matmul *mm)
{
    uint32_t rows = mm->tile_m ? mm->tile_m : mm->M; /* the rows expected (gathered products: fewer) */
    for (int group = 1; group >= 0; group--) {
        const mm_variant *pick = NULL;
        for (size_t i = 0; i < VARIANT_COUNT; i++) {
            const mm_variant *v = &variants[i];
            if (preferred(gpu, v) != group || !usable(gpu, v, mm)) continue;
            pick = v;
            if (v->bm <= rows || v->bm <= 8) break;
        }
        if (pick) return pick;
    }
    return &variants[4]; /* shared16x16 fits every Vulkan device (256 invocations, 1 KiB) */
}

static const mm_variant *by_name(const char *name)
{
    for (size_t i = 0; i < VARIANT_COUNT; i++)
        if (!strcmp(variants[i].name, name)) return &variants[i];
    return NULL;
}

uint32_t smoe_matmul_variant_count(void) { return (uint32_t)VARIANT_COUNT; }

const char *smoe_matmul_variant_name(uint32_t i) { return i < VARIANT_COUNT ? variants[i].name : NULL; }

int smoe_matmul_variant_usable(const smoe_gpu *gpu, uint32_t i)
{
    return i < VARIANT_COUNT && device_usable(gpu, &variants[i]);
}

const char *smoe_matmul_variant_shader(uint32_t i)
{
    return i < VARIANT_COUNT ? (variants[i].texel ? "matmul_texel" : "matmul") : NULL;
}

/* ---- Recording one variant ---- */

#define MM_BINDINGS 11 /* A, B, C, bias, aux, stat, rowscale, colscale, scalar, idx, gelu_out */

static smoe_status record_variant(smoe_program *p, const smoe_matmul *mm, const mm_variant *v, smoe_err *err)
{
    uint32_t wg[3];
    workgroup(v, wg);
    uint32_t spec[SMOE_MM_TEXEL_SPEC_COUNT] = {wg[0], wg[1], wg[2]};
    spec[SMOE_MM_TRANS_A] = mm->trans_a != 0;
    spec[SMOE_MM_TRANS_B] = mm->trans_b != 0;
    spec[SMOE_MM_BM] = v->bm;
    spec[SMOE_MM_BN] = v->bn;
    spec[SMOE_MM_BK] = v->bk;
    spec[SMOE_MM_TM] = v->tm;
    spec[SMOE_MM_TN] = v->tn;
    spec[SMOE_MM_A_XFORM] = mm->a_xform;
    spec[SMOE_MM_B_XFORM] = mm->b_xform;
    spec[SMOE_MM_EPI] = mm->epi;
    spec[SMOE_MM_GATHER] = mm->gather;
    smoe_push_matmul pc = {
        .M = mm->M, .N = mm->N, .K = mm->K,
        .a_off = mm->a.off, .a_ld = mm->a.ld, .a_bs = mm->a.bs, .a_g = mm->a.g, .a_gs = mm->a.gs,
        .b_off = mm->b.off, .b_ld = mm->b.ld, .b_bs = mm->b.bs, .b_g = mm->b.g, .b_gs = mm->b.gs,
        .c_off = mm->c.off, .c_ld = mm->c.ld, .c_bs = mm->c.bs, .c_g = mm->c.g, .c_gs = mm->c.gs,
        .alpha = mm->alpha != 0 ? mm->alpha : 1.0f,
        .bias_bs = mm->bias_bs, .stat_bs = mm->stat_bs, .rs_bs = mm->rs_bs, .cs_bs = mm->cs_bs,
        .idx_off = mm->idx_off, .idx_bs = mm->idx_bs,
    };
    /* Bindings a variant does not read are given C itself (read-only): it is written by this
     * dispatch anyway, so the hazard tracker sees no new dependency. */
    smoe_tensor unused = mm->c.t;
    int exp_a = mm->a_xform == SMOE_XFORM_EXP_COL || mm->a_xform == SMOE_XFORM_EXP_ROW;
    smoe_binding b[MM_BINDINGS] = {
        {mm->a.t, SMOE_READ},
        {mm->b.t, SMOE_READ},
        {mm->c.t, (mm->epi & SMOE_EPI_ACCUMULATE) ? SMOE_READ_WRITE : SMOE_WRITE},
        {(mm->epi & SMOE_EPI_BIAS) ? mm->bias : unused, SMOE_READ},
        {(mm->epi & SMOE_EPI_GELU_GRAD) ? mm->aux : unused, SMOE_READ},
        {exp_a ? mm->stat : unused, SMOE_READ},
        {(mm->epi & SMOE_EPI_ROWSCALE) ? mm->rowscale : unused, SMOE_READ},
        {(mm->epi & SMOE_EPI_COLSCALE) ? mm->colscale : unused, SMOE_READ},
        {((mm->epi & SMOE_EPI_SCALAR) || exp_a) ? mm->scalar : unused, SMOE_READ},
        {mm->gather ? mm->idx : unused, SMOE_READ},
        {(mm->epi & SMOE_EPI_STORE_GELU) ? mm->gelu_out : unused, SMOE_WRITE},
    };
    smoe_kernel k = SMOE_K_MATMUL;
    uint32_t nspec = SMOE_MM_SPEC_COUNT;
    if (v->texel) {
        int vec_a, vec_b;
        uint32_t first_a, first_b;
        if (!operand_view(p->gpu, &mm->a, mm->trans_a ? mm->K : mm->M, mm->batch, &vec_a, &first_a) ||
            !operand_view(p->gpu, &mm->b, mm->trans_b ? mm->N : mm->K, mm->batch, &vec_b, &first_b))
            return smoe_fail(err, SMOE_ERROR_INTERNAL, "matmul %s: an operand cannot be viewed as a texel buffer", v->name);
        int vec = texel_vec4(p->gpu, mm);
        spec[SMOE_MM_VEC_A] = spec[SMOE_MM_VEC_B] = spec[SMOE_MM_VEC_C] = (uint32_t)vec;
        pc.a_off += first_a;
        pc.b_off += first_b;
        b[0].access = vec ? SMOE_READ_TEXEL4 : SMOE_READ_TEXEL1;
        b[1].access = vec ? SMOE_READ_TEXEL4 : SMOE_READ_TEXEL1;
        k = SMOE_K_MATMUL_TEXEL;
        nspec = SMOE_MM_TEXEL_SPEC_COUNT;
    }
    char label[SMOE_LABEL_MAX];
    if (mm->batch > 1) snprintf(label, sizeof label, "matmul %s %ux%ux%u x%u", v->name, mm->M, mm->N, mm->K, mm->batch);
    else snprintf(label, sizeof label, "matmul %s %ux%ux%u", v->name, mm->M, mm->N, mm->K);
    p->label = label;
    uint32_t groups[3] = {smoe_div_up(mm->N, v->bn), smoe_div_up(mm->M, v->bm), mm->batch};
    return smoe_record_kernel(p, k, spec, nspec, b, SMOE_LEN(b), &pc, sizeof pc, groups, err);
}

/* ---- Autotune ---- */

#define TUNE_FLOPS (1u << 23) /* the most work one measured product may be: a few ms on a CPU driver */
#define TUNE_RUNS 3
#define TUNE_GIVE_UP 4.0      /* a variant whose first run is this much slower than the best is not timed further */

static uint32_t log2_up(uint32_t x)
{
    uint32_t l = 0;
    while (l < 31 && (1u << l) < x) l++;
    return l;
}

/* The shape class a choice is kept for: sizes rounded up to powers of two, transposes, and
 * whether the operands allow 4-float reads. Transforms and epilogues are left out (of the class
 * and of the measurement): they add about the same to every variant, and leaving them out lets
 * the products of a model share their classes and their measured pipelines. */
static void class_key(const smoe_gpu *gpu, const smoe_matmul *mm, char *key, size_t size)
{
    snprintf(key, size, "matmul/m%u/n%u/k%u/z%u/t%d%d/v%d", log2_up(mm->M), log2_up(mm->N), log2_up(mm->K),
             log2_up(mm->batch), mm->trans_a != 0, mm->trans_b != 0, texel_vec4(gpu, mm));
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* Milliseconds of one run of mm with variant v (GPU timestamps where the queue has them), or
 * 1e30 when its first run already took more than give_up ms. */
static smoe_status time_variant(smoe_gpu *gpu, const smoe_matmul *mm, const mm_variant *v, double give_up, double *ms,
                                smoe_err *err)
{
    smoe_profile prof = {0};
    int stamps = gpu->info.timestamps;
    smoe_program p;
    smoe_status st = smoe_program_begin_profiled(gpu, &p, stamps ? &prof : NULL, err);
    if (!st) st = record_variant(&p, mm, v, err);
    if (!st) st = smoe_program_end(&p, err);
    double best = 1e30;
    for (int r = -1; r < TUNE_RUNS && !st; r++) { /* run -1: the warm-up */
        smoe_profile_clear(&prof);
        double t0 = now_ms();
        st = smoe_program_run(&p, err);
        double t = stamps ? smoe_profile_total_ms(&prof) : now_ms() - t0;
        if (r < 0 && t > give_up) break;
        if (r >= 0 && t < best) best = t;
    }
    smoe_profile_clear(&prof);
    smoe_program_destroy(&p);
    *ms = best;
    return st;
}

static uint32_t round4(uint32_t x) { return (x + 3) / 4 * 4; }

/* A plain operand of rows x cols per batch on a new tensor of a: rows start at multiples of 4
 * floats when vec4, else not. */
static smoe_status tune_operand(smoe_arena *a, uint32_t rows, uint32_t cols, uint32_t batch, int vec4,
                                smoe_mm_operand *o, smoe_err *err)
{
    uint32_t ld = round4(cols) + (vec4 ? 0 : 1);
    smoe_tensor t;
    smoe_status st = smoe_arena_reserve(a, (uint64_t)rows * ld * batch * 4, &t, err);
    *o = smoe_mm_plain(t, ld, rows * ld);
    return st;
}

/* A product of mm's class of at most TUNE_FLOPS: fewer rows and batches; the same N, K and
 * transposes. */
static smoe_matmul tune_shape(const smoe_matmul *mm)
{
    smoe_matmul t = {.M = mm->M, .N = mm->N, .K = mm->K, .batch = mm->batch, .trans_a = mm->trans_a,
                     .trans_b = mm->trans_b};
    uint64_t per_row = 2ull * mm->N * (mm->K ? mm->K : 1);
    uint64_t rows = TUNE_FLOPS / per_row;
    if (rows < 64) rows = 64;
    if (t.M > rows) t.M = (uint32_t)(rows / 8 * 8);
    uint64_t batches = TUNE_FLOPS / (per_row * t.M);
    t.batch = mm->batch < batches ? mm->batch : (uint32_t)(batches ? batches : 1);
    if (t.batch > 16) t.batch = 16;
    return t;
}

/* t's operands on arena, with mm's operand alignment (vec4), all zeros: no denormals or NaNs to
 * slow a CPU driver down. */
static smoe_status tune_operands(smoe_gpu *gpu, smoe_arena *arena, smoe_matmul *t, int vec, smoe_err *err)
{
    smoe_status st = tune_operand(arena, t->trans_a ? t->K : t->M, t->trans_a ? t->M : t->K, t->batch, vec, &t->a, err);
    if (!st) st = tune_operand(arena, t->trans_b ? t->N : t->K, t->trans_b ? t->K : t->N, t->batch, vec, &t->b, err);
    if (!st) st = tune_operand(arena, t->M, t->N, t->batch, vec, &t->c, err);
    if (!st) st = smoe_arena_commit(arena, err);
    if (st) return st;
    smoe_program p;
    st = smoe_program_begin(gpu, &p, err);
    smoe_tensor all[3] = {t->a.t, t->b.t, t->c.t};
    for (int i = 0; i < 3 && !st; i++) st = smoe_program_fill(&p, &all[i], 0, err);
    if (!st) st = smoe_program_end(&p, err);
    if (!st) st = smoe_program_run(&p, err);
    smoe_program_destroy(&p);
    return st;
}

/* Measures every usable variant, best first in table order, on tune_shape's product. */
static smoe_status autotune(smoe_gpu *gpu, const smoe_matmul *mm, const mm_variant **pick, smoe_err *err)
{
    smoe_matmul t = tune_shape(mm);
    int vec = texel_vec4(gpu, mm); /* what the texel variant decides on (record_variant) */
    smoe_arena arena;
    smoe_arena_init(&arena, gpu, "matmul autotune");
    smoe_status st = tune_operands(gpu, &arena, &t, vec, err);
    double best = 1e30;
    *pick = NULL;
    for (int group = 1; group >= 0 && !st; group--)
        for (size_t i = 0; i < VARIANT_COUNT && !st; i++) {
            const mm_variant *v = &variants[i];
            if (preferred(gpu, v) != group || !usable(gpu, v, mm) || !usable(gpu, v, &t)) continue;
            double ms;
            st = time_variant(gpu, &t, v, best < 1e30 ? TUNE_GIVE_UP * best : 1e30, &ms, err);
            if (!st && ms < best) best = ms, *pick = v;
        }
    smoe_arena_release(&arena);
    gpu->tunings++;
    return st;
}

/* ---- Choice and recording ---- */

/* forced: a variant's name or "" (none); may_tune: whether a shape class may be measured. */
static smoe_status choose(smoe_gpu *gpu, const smoe_matmul *mm, const char *forced, int may_tune,
                          const mm_variant **out, smoe_err *err)
{
    if (forced[0]) {
        const mm_variant *v = by_name(forced);
        if (!v) {
            char names[512] = "";
            for (size_t i = 0; i < VARIANT_COUNT; i++)
                snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "", variants[i].name);
            return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT,
                             "unknown matmul variant \"%s\" (SOFTMOE_MATMUL_VARIANT): the variants are %s",
                             forced, names);
        }
        /* a forced variant that cannot run this product leaves it to the table */
        if (usable(gpu, v, mm)) {
            *out = v;
            return SMOE_OK;
        }
    }
    *out = table_choice(gpu, mm);
    /* products through an index list cost what its contents make them: the table, by tile_m */
    if (!may_tune || mm->gather) return SMOE_OK;
    char key[SMOE_TUNE_KEY_MAX];
    class_key(gpu, mm, key, sizeof key);
    const char *cached = smoe_tune_get(gpu, key);
    const mm_variant *v = cached ? by_name(cached) : NULL;
    if (v && usable(gpu, v, mm)) {
        *out = v;
        return SMOE_OK;
    }
    smoe_status st = autotune(gpu, mm, &v, err);
    if (st) return smoe_fail_prefix(err, st, "autotuning a matmul (SOFTMOE_AUTOTUNE=0 turns it off)");
    if (v) {
        *out = v;
        smoe_tune_put(gpu, key, v->name);
    }
    return SMOE_OK;
}

const char *smoe_matmul_choice(smoe_gpu *gpu, const smoe_matmul *mm, const char *variant)
{
    const mm_variant *v;
    smoe_err err;
    smoe_status st = choose(gpu, mm, variant ? variant : gpu->opts->matmul_variant, 0, &v, &err);
    return st ? NULL : v->name;
}

smoe_status smoe_record_matmul(smoe_program *p, const smoe_matmul *mm, smoe_err *err)
{
    if (!mm->M || !mm->N || !mm->batch) return SMOE_OK;
    return smoe_record_matmul_variant(p, mm, NULL, err);
}

smoe_status smoe_record_matmul_variant(smoe_program *p, const smoe_matmul *mm, const char *variant, smoe_err *err)
{
    if (!mm->M || !mm->N || !mm->batch) return SMOE_OK;
    const mm_variant *v;
    const char *forced = variant ? variant : p->gpu->opts->matmul_variant;
    smoe_status st = choose(p->gpu, mm, forced, p->gpu->opts->autotune, &v, err);
    if (st) return st;
    return record_variant(p, mm, v, err);
}
