/* The sparse MoE layers as ops: the CPU path calls cpu/sparse_moe_cpu.c; Vulkan records
 * forward  logits (matmul), gates + top-K, fills of the slot tables, the routing stages and
 *          sorts, dispatch (gather), the experts (two matmuls), combine, and the auxiliary losses;
 * backward the gradient into the experts (gather), the experts' backward, dx through them
 *          (combine), the combine weights' gradients (slot dots), the router's backward per
 *          token, dW_g and dx through the gates (two matmuls). */
#include "ops/sparse_moe_layer.h"

#include <stdio.h>
#include <string.h>

#include "common/sparse_interface.h"
#include "cpu/softmoe_cpu.h"
#include "ops/experts.h"
#include "ops/matmul.h"

#define TOKEN_WG_MAX 64 /* one workgroup per token (or slot): a power of two within every device's limits */
#define SORT_WG_MAX 256

/* ---- Checks and sizes ---- */

smoe_status smoe_sparse_check(const smoe_sparse_dims *d, smoe_err *err)
{
    if (d->kind != SMOE_MOE_TOKENS_CHOICE && d->kind != SMOE_MOE_EXPERTS_CHOICE)
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "sparse MoE layer: kind %d is neither Tokens nor Experts Choice", d->kind);
    if (d->b < 1 || d->m < 1 || d->d < 1 || d->n < 1 || d->h < 1)
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "sparse MoE layer: b %d, m %d, d %d, n %d, h %d must be at least 1", d->b,
                         d->m, d->d, d->n, d->h);
    if (d->kind == SMOE_MOE_TOKENS_CHOICE && (d->top_k < 1 || d->top_k > 2 || d->top_k > d->n))
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "Tokens Choice: top_k %d must be 1 or 2 and at most the %d experts",
                         d->top_k, d->n);
    if (!(d->capacity_factor > 0.0f && d->capacity_factor <= 1024.0f))
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "sparse MoE layer: capacity factor %g must be in (0, 1024]",
                         (double)d->capacity_factor);
    if (d->group_size < 0)
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "sparse MoE layer: group size %d is negative", d->group_size);
    if (!(d->importance_weight >= 0.0f && d->importance_weight < 1e6f && d->load_weight >= 0.0f && d->load_weight < 1e6f))
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "sparse MoE layer: auxiliary loss weights must be finite and >= 0");
    if (d->sort_block && (d->sort_block < 2 || (d->sort_block & (d->sort_block - 1))))
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "sparse MoE layer: sort block %d is not a power of two", d->sort_block);
    return SMOE_OK;
}

static uint32_t pow2_ceil(uint64_t x)
{
    uint32_t p = 1;
    while (p < x) p *= 2;
    return p;
}

static uint32_t pow2_floor(uint32_t x)
{
    uint32_t p = 1;
    while (p * 2 <= x) p *= 2;
    return p;
}

/* Padded sort lengths: per group (Tokens Choice's BPR order; Experts Choice per group and
 * expert), and of every choice of a group (Tokens Choice). */
static uint32_t sort_len1(const smoe_sparse_plan *pl) { return pow2_ceil((uint64_t)pl->G); }
static uint32_t sort_len2(const smoe_sparse_dims *d, const smoe_sparse_plan *pl)
{
    return pow2_ceil((uint64_t)d->top_k * pl->G);
}

static int is_set(const smoe_tensor *t) { return t->arena != NULL; }

static smoe_status words(smoe_arena *a, smoe_tensor *t, uint64_t count, smoe_err *err)
{
    if (count > UINT32_MAX)
        return smoe_fail(err, SMOE_ERROR_TOO_LARGE, "sparse MoE layer: a buffer of %llu elements exceeds 32-bit indexing",
                         (unsigned long long)count);
    return smoe_arena_reserve(a, count * 4, t, err);
}

smoe_status smoe_sparse_reserve(smoe_sparse_tensors *L, const smoe_sparse_dims *d, smoe_arena *a, int backward,
                                smoe_err *err)
{
    smoe_status st = smoe_sparse_check(d, err);
    if (st) return st;
    smoe_sparse_plan pl;
    smoe_sparse_plan_make(d, &pl);
    const int tc = d->kind == SMOE_MOE_TOKENS_CHOICE, gpu = a->gpu != NULL;
    const uint64_t T = (uint64_t)pl.T, n = (uint64_t)d->n, rows = n * pl.R, D = (uint64_t)d->d, H = (uint64_t)d->h;
    const uint64_t K = tc ? (uint64_t)d->top_k : 0;
#define W(t, count)                                                                                                   \
    do {                                                                                                              \
        if (!st) st = words(a, &L->t, (count), err);                                                                  \
    } while (0)
    W(aux, 1);
    W(logits, T * n);
    W(gates, T * n);
    W(slot_token, rows);
    W(slot_gate, rows);
    W(tok_slot, T * pl.A);
    W(xs, rows * D);
    W(pre, rows * H);
    W(act, rows * H);
    W(out, rows * D);
    if (tc) {
        W(topk_e, T * K);
        W(topk_g, T * K);
    }
    if (tc && backward) {
        W(probs, T * n);
        W(thresh, T);
        W(stats, (uint64_t)pl.groups * 2 * n);
        W(group_loss, pl.groups);
    }
    if (gpu) {
        uint64_t len1 = sort_len1(&pl);
        W(keys1, (uint64_t)pl.groups * (tc ? 1 : n) * len1);
        W(vals1, (uint64_t)pl.groups * (tc ? 1 : n) * len1);
        if (tc) {
            W(keys2, (uint64_t)pl.groups * sort_len2(d, &pl));
            W(vals2, (uint64_t)pl.groups * sort_len2(d, &pl));
        }
    } else {
        W(sort, 2 * (uint64_t)smoe_cpu_sparse_sort_words(d));
        W(pack, smoe_cpu_gemm_pack_floats());
    }
    if (backward) {
        W(g_out, rows * D);
        W(g_pre, rows * H);
        W(g_xs, rows * D);
        W(dlogits, T * n);
    }
#undef W
    return st;
}

/* ---- Vulkan ---- */

static uint32_t wg_limit(const smoe_gpu *gpu)
{
    uint32_t lim = gpu->info.max_workgroup_invocations;
    if (gpu->info.max_workgroup_size[0] < lim) lim = gpu->info.max_workgroup_size[0];
    return pow2_floor(lim ? lim : 1);
}

/* Invocations of an elementwise dispatch, and of one that runs a workgroup per token over n. */
static uint32_t elem_wg(const smoe_gpu *gpu) { return wg_limit(gpu) < 256 ? wg_limit(gpu) : 256; }
static uint32_t token_wg(const smoe_gpu *gpu, uint32_t n)
{
    uint32_t w = pow2_ceil(n);
    if (w < 8) w = 8;
    if (w > TOKEN_WG_MAX) w = TOKEN_WG_MAX;
    return w < wg_limit(gpu) ? w : wg_limit(gpu);
}

/* A binding of t, or where the pass has no such tensor a read of fallback (the shader does not
 * touch it then). */
static smoe_binding bind(const smoe_tensor *t, smoe_access access, const smoe_tensor *fallback)
{
    smoe_binding b = {is_set(t) ? *t : *fallback, is_set(t) ? access : SMOE_READ};
    return b;
}

/* The longest segment one workgroup sorts in shared memory: what the device's shared memory holds
 * (8 bytes a pair), or the test hook. */
static uint32_t sort_block_limit(const smoe_gpu *gpu, const smoe_sparse_dims *d)
{
    if (d->sort_block) return (uint32_t)d->sort_block;
    uint32_t b = pow2_floor(gpu->info.max_shared_memory / 8);
    return b < 2 ? 2 : b;
}

/* Sorts segments of len pairs (a power of two) ascending by (key, value): in shared memory when a
 * segment fits a block, else blocks in shared memory merged by global steps. */
static smoe_status record_sort(smoe_program *p, const smoe_tensor *keys, const smoe_tensor *vals, uint32_t segments,
                               uint32_t len, uint32_t limit, smoe_err *err)
{
    if (len < 2 || !segments) return SMOE_OK;
    uint32_t block = len < limit ? len : limit, total = segments * len;
    uint32_t threads = block / 2 < SORT_WG_MAX ? block / 2 : SORT_WG_MAX;
    if (threads > wg_limit(p->gpu)) threads = wg_limit(p->gpu);
    smoe_binding b[2] = {{*keys, SMOE_READ_WRITE}, {*vals, SMOE_READ_WRITE}};
    uint32_t local_groups[3], global_groups[3], ew = elem_wg(p->gpu);
    smoe_grid(p->gpu, total / block, 1, local_groups);
    smoe_grid(p->gpu, smoe_div_up(total / 2, ew), 1, global_groups);
    uint32_t spec[5] = {threads, 1, 1, SMOE_SORT_LOCAL, block};
    smoe_push_sort pc = {len, total, 0, 0, local_groups[0]};
    smoe_status st = smoe_record(p, SMOE_K_BITONIC, spec, b, pc, local_groups, err);
    for (uint32_t k = 2 * block; k <= len && !st; k *= 2) {
        uint32_t gspec[5] = {ew, 1, 1, SMOE_SORT_GLOBAL, block};
        for (uint32_t j = k / 2; j >= block && !st; j /= 2) {
            smoe_push_sort gpc = {len, total, k, j, global_groups[0]};
            st = smoe_record(p, SMOE_K_BITONIC, gspec, b, gpc, global_groups, err);
        }
        spec[3] = SMOE_SORT_MERGE;
        smoe_push_sort mpc = {len, total, k, 0, local_groups[0]};
        if (!st) st = smoe_record(p, SMOE_K_BITONIC, spec, b, mpc, local_groups, err);
    }
    return st;
}

/* One routing stage over items work items. */
static smoe_status record_route(smoe_program *p, const smoe_sparse_tensors *L, const smoe_sparse_dims *d,
                                const smoe_sparse_plan *pl, uint32_t stage, uint32_t items, smoe_err *err)
{
    const smoe_tensor *f = &L->gates;
    int tk1 = stage == SMOE_ROUTE_TC_KEYS1 || stage == SMOE_ROUTE_EC_KEYS, tk2 = stage == SMOE_ROUTE_TC_KEYS2;
    int assign = stage == SMOE_ROUTE_TC_ASSIGN || stage == SMOE_ROUTE_EC_ASSIGN;
    smoe_binding b[10] = {
        bind(&L->gates, SMOE_READ, f),
        bind(&L->topk_e, SMOE_READ, f),
        bind(&L->topk_g, SMOE_READ, f),
        bind(&L->keys1, tk1 ? SMOE_WRITE : SMOE_READ, f),
        bind(&L->vals1, tk1 ? SMOE_WRITE : SMOE_READ, f),
        bind(&L->keys2, tk2 ? SMOE_WRITE : SMOE_READ, f),
        bind(&L->vals2, tk2 ? SMOE_WRITE : SMOE_READ, f),
        bind(&L->slot_token, assign ? SMOE_WRITE : SMOE_READ, f),
        bind(&L->slot_gate, assign ? SMOE_WRITE : SMOE_READ, f),
        bind(&L->tok_slot, assign ? SMOE_WRITE : SMOE_READ, f),
    };
    uint32_t spec[4] = {elem_wg(p->gpu), 1, 1, stage}, groups[3];
    smoe_grid(p->gpu, smoe_div_up(items, spec[0]), 1, groups);
    smoe_push_route pc = {
        (uint32_t)pl->G, (uint32_t)pl->groups, (uint32_t)pl->last, (uint32_t)pl->C, (uint32_t)pl->C_last,
        (uint32_t)pl->R, (uint32_t)d->n, (uint32_t)(d->kind == SMOE_MOE_TOKENS_CHOICE ? d->top_k : 0), sort_len1(pl),
        d->kind == SMOE_MOE_TOKENS_CHOICE ? sort_len2(d, pl) : 0, items, groups[0],
    };
    return smoe_record(p, SMOE_K_SPARSE_ROUTE, spec, b, pc, groups, err);
}

/* moe_gather over the experts' rows, or moe_combine / sparse_slot_dot. */
static smoe_status record_slots(smoe_program *p, smoe_kernel k, uint32_t weighted, const smoe_binding b[4], uint32_t rows,
                                const smoe_sparse_dims *d, const smoe_sparse_plan *pl, int per_row, smoe_err *err)
{
    uint32_t spec[4] = {per_row ? TOKEN_WG_MAX : elem_wg(p->gpu), 1, 1, weighted}, groups[3];
    if (spec[0] > wg_limit(p->gpu)) spec[0] = wg_limit(p->gpu);
    smoe_grid(p->gpu, per_row ? rows : smoe_div_up((uint64_t)rows * d->d, spec[0]), 1, groups);
    smoe_push_slots pc = {rows, (uint32_t)d->d, (uint32_t)pl->A, (uint32_t)pl->R, (uint32_t)d->n, groups[0]};
    uint32_t nspec = k == SMOE_K_SPARSE_SLOT_DOT ? 3 : 4; /* slot_dot has no constant 3 */
    return smoe_record_kernel(p, k, spec, nspec, b, 4, &pc, sizeof pc, groups, err);
}

static smoe_experts_rec experts_of(const smoe_sparse_tensors *L, const smoe_sparse_dims *d, const smoe_sparse_plan *pl)
{
    uint32_t R = (uint32_t)pl->R, D = (uint32_t)d->d, H = (uint32_t)d->h;
    smoe_experts_rec ex = {.n = (uint32_t)d->n, .rows = R, .d = D, .h = H, .w1 = L->w1, .b1 = L->b1, .w2 = L->w2,
                           .b2 = L->b2, .pre = L->pre, .hidden = L->act, .x = smoe_mm_plain(L->xs, D, R * D),
                           .y = smoe_mm_plain(L->out, D, R * D)};
    return ex;
}

/* The gates, the clean softmax, top-K and tau from the logits. */
static smoe_status record_gates(smoe_program *p, const smoe_sparse_tensors *L, const smoe_sparse_dims *d, uint32_t T, int mode,
                                smoe_err *err)
{
    const uint32_t n = (uint32_t)d->n;
    const int tc = d->kind == SMOE_MOE_TOKENS_CHOICE, aux = smoe_sparse_has_aux(d, mode), noise = mode == SMOE_ROUTE_TRAIN;
    const smoe_tensor *f = &L->gates;
    uint32_t gspec[7] = {token_wg(p->gpu, n), 1, 1, tc ? (uint32_t)d->top_k : 0, (uint32_t)noise, (uint32_t)aux,
                         (uint32_t)(aux && noise)};
    smoe_binding gb[7] = {
        {L->logits, SMOE_READ},
        noise ? (smoe_binding){L->step, SMOE_READ} : (smoe_binding){L->logits, SMOE_READ},
        {L->gates, SMOE_READ_WRITE},
        aux ? bind(&L->probs, SMOE_READ_WRITE, f) : (smoe_binding){*f, SMOE_READ_WRITE},
        tc ? bind(&L->topk_e, SMOE_WRITE, f) : (smoe_binding){*f, SMOE_READ_WRITE},
        tc ? bind(&L->topk_g, SMOE_WRITE, f) : (smoe_binding){*f, SMOE_READ_WRITE},
        aux && noise ? bind(&L->thresh, SMOE_WRITE, f) : (smoe_binding){*f, SMOE_READ_WRITE},
    };
    uint32_t groups[3];
    smoe_grid(p->gpu, T, 1, groups);
    smoe_push_gates gpc = {T, n, (uint32_t)d->layer, 1.0f / (float)n, groups[0]};
    return smoe_record(p, SMOE_K_SPARSE_GATES, gspec, gb, gpc, groups, err);
}

/* The routing into the slot tables: sort keys, sorts, assignment. */
static smoe_status record_routing(smoe_program *p, const smoe_sparse_tensors *L, const smoe_sparse_dims *d,
                                  const smoe_sparse_plan *pl, smoe_err *err)
{
    smoe_status st;
    if ((st = smoe_program_fill(p, &L->slot_token, SMOE_NO_SLOT_U, err))) return st;
    if ((st = smoe_program_fill(p, &L->slot_gate, 0, err))) return st;
    const uint32_t limit = sort_block_limit(p->gpu, d), len1 = sort_len1(pl), G = (uint32_t)pl->groups, n = (uint32_t)d->n;
    if (d->kind == SMOE_MOE_TOKENS_CHOICE) {
        const uint32_t len2 = sort_len2(d, pl);
        if ((st = record_route(p, L, d, pl, SMOE_ROUTE_TC_KEYS1, G * len1, err))) return st;
        if ((st = record_sort(p, &L->keys1, &L->vals1, G, len1, limit, err))) return st;
        if ((st = record_route(p, L, d, pl, SMOE_ROUTE_TC_KEYS2, G * len2, err))) return st;
        if ((st = record_sort(p, &L->keys2, &L->vals2, G, len2, limit, err))) return st;
        return record_route(p, L, d, pl, SMOE_ROUTE_TC_ASSIGN, G * len2, err);
    }
    if ((st = smoe_program_fill(p, &L->tok_slot, SMOE_NO_SLOT_U, err))) return st;
    if ((st = record_route(p, L, d, pl, SMOE_ROUTE_EC_KEYS, G * n * len1, err))) return st;
    if ((st = record_sort(p, &L->keys1, &L->vals1, G * n, len1, limit, err))) return st;
    return record_route(p, L, d, pl, SMOE_ROUTE_EC_ASSIGN, G * n * (uint32_t)pl->C, err);
}

/* The auxiliary losses: per group, then their sum. */
static smoe_status record_aux(smoe_program *p, const smoe_sparse_tensors *L, const smoe_sparse_dims *d,
                              const smoe_sparse_plan *pl, int noise, smoe_err *err)
{
    const uint32_t n = (uint32_t)d->n, G = (uint32_t)pl->groups;
    smoe_binding ab[6] = {
        {L->probs, SMOE_READ}, {L->logits, SMOE_READ}, noise ? (smoe_binding){L->thresh, SMOE_READ} : (smoe_binding){L->logits, SMOE_READ},
        {L->stats, SMOE_READ_WRITE}, {L->group_loss, SMOE_WRITE}, {L->aux, SMOE_READ},
    };
    uint32_t aspec[5] = {token_wg(p->gpu, n), 1, 1, 0, (uint32_t)noise}, groups[3];
    smoe_push_aux apc = {(uint32_t)pl->G, G, (uint32_t)pl->last, n, d->importance_weight, d->load_weight};
    smoe_grid(p->gpu, G, 1, groups);
    smoe_status st = smoe_record(p, SMOE_K_SPARSE_AUX, aspec, ab, apc, groups, err);
    if (st) return st;
    aspec[3] = 1;
    ab[3].access = SMOE_READ;
    ab[4].access = SMOE_READ;
    ab[5].access = SMOE_WRITE;
    uint32_t one[3] = {1, 1, 1};
    return smoe_record(p, SMOE_K_SPARSE_AUX, aspec, ab, apc, one, err);
}

static smoe_status record_forward(smoe_program *p, const smoe_sparse_tensors *L, const smoe_sparse_dims *d, int mode,
                                  smoe_err *err)
{
    smoe_sparse_plan pl;
    smoe_sparse_plan_make(d, &pl);
    const uint32_t T = (uint32_t)pl.T, n = (uint32_t)d->n, D = (uint32_t)d->d, rows = n * (uint32_t)pl.R;
    smoe_status st;

    /* logits = x W_g^T */
    smoe_matmul mm = {
        .M = T, .N = n, .K = D, .batch = 1, .trans_b = 1,
        .a = smoe_mm_plain(L->x, D, 0), .b = smoe_mm_plain(L->gate, D, 0), .c = smoe_mm_plain(L->logits, n, 0),
    };
    if ((st = smoe_record_matmul(p, &mm, err))) return st;
    if ((st = record_gates(p, L, d, T, mode, err))) return st;
    if ((st = record_routing(p, L, d, &pl, err))) return st;

    /* dispatch, the experts, combine */
    smoe_binding xb[4] = {{L->x, SMOE_READ}, {L->slot_token, SMOE_READ}, {L->slot_gate, SMOE_READ}, {L->xs, SMOE_WRITE}};
    if ((st = record_slots(p, SMOE_K_MOE_GATHER, 0, xb, rows, d, &pl, 0, err))) return st;
    smoe_experts_rec ex = experts_of(L, d, &pl);
    if ((st = smoe_record_experts_forward(p, &ex, err))) return st;
    smoe_binding cb[4] = {{L->out, SMOE_READ}, {L->tok_slot, SMOE_READ}, {L->slot_gate, SMOE_READ}, {L->y, SMOE_WRITE}};
    if ((st = record_slots(p, SMOE_K_MOE_COMBINE, 1, cb, T, d, &pl, 1, err))) return st;
    if (!smoe_sparse_has_aux(d, mode)) return SMOE_OK;
    return record_aux(p, L, d, &pl, mode == SMOE_ROUTE_TRAIN, err);
}

static smoe_status record_backward(smoe_program *p, const smoe_sparse_tensors *L, const smoe_sparse_dims *d, int mode,
                                   smoe_err *err)
{
    smoe_sparse_plan pl;
    smoe_sparse_plan_make(d, &pl);
    const uint32_t T = (uint32_t)pl.T, n = (uint32_t)d->n, D = (uint32_t)d->d, rows = n * (uint32_t)pl.R;
    const int tc = d->kind == SMOE_MOE_TOKENS_CHOICE, aux = smoe_sparse_has_aux(d, mode), load = aux && mode == SMOE_ROUTE_TRAIN;
    const smoe_tensor *f = &L->gates;
    smoe_status st;

    /* into the experts: G_out = gate * dy; their backward; dx through them */
    smoe_binding gb[4] = {{L->dy, SMOE_READ}, {L->slot_token, SMOE_READ}, {L->slot_gate, SMOE_READ}, {L->g_out, SMOE_WRITE}};
    if ((st = record_slots(p, SMOE_K_MOE_GATHER, 1, gb, rows, d, &pl, 0, err))) return st;
    smoe_experts_rec ex = experts_of(L, d, &pl);
    uint32_t R = (uint32_t)pl.R;
    if ((st = smoe_record_experts_backward(p, &ex, smoe_mm_plain(L->g_out, D, R * D), L->g_pre, smoe_mm_plain(L->g_xs, D, R * D),
                                           L->g_w1, L->g_b1, L->g_w2, L->g_b2, err)))
        return st;
    smoe_binding cb[4] = {{L->g_xs, SMOE_READ}, {L->tok_slot, SMOE_READ}, {L->slot_gate, SMOE_READ}, {L->dx, SMOE_WRITE}};
    if ((st = record_slots(p, SMOE_K_MOE_COMBINE, 0, cb, T, d, &pl, 1, err))) return st;

    /* the combine weights' gradients dy . out per kept assignment, then the router's backward */
    if ((st = smoe_program_fill(p, &L->dlogits, 0, err))) return st;
    smoe_binding sb[4] = {{L->dy, SMOE_READ}, {L->out, SMOE_READ}, {L->slot_token, SMOE_READ}, {L->dlogits, SMOE_WRITE}};
    if ((st = record_slots(p, SMOE_K_SPARSE_SLOT_DOT, 0, sb, rows, d, &pl, 1, err))) return st;
    smoe_binding rb[7] = {
        {L->gates, SMOE_READ},
        aux ? bind(&L->probs, SMOE_READ, f) : (smoe_binding){*f, SMOE_READ},
        {L->logits, SMOE_READ},
        load ? bind(&L->thresh, SMOE_READ, f) : (smoe_binding){*f, SMOE_READ},
        tc ? bind(&L->topk_e, SMOE_READ, f) : (smoe_binding){*f, SMOE_READ},
        aux ? bind(&L->stats, SMOE_READ, f) : (smoe_binding){*f, SMOE_READ},
        {L->dlogits, SMOE_READ_WRITE},
    };
    uint32_t rspec[5] = {token_wg(p->gpu, n), 1, 1, (uint32_t)aux, (uint32_t)load}, groups[3];
    smoe_grid(p->gpu, T, 1, groups);
    smoe_push_router_bwd rpc = {T, n, (uint32_t)pl.G, (uint32_t)(tc ? d->top_k : 0), groups[0]};
    if ((st = smoe_record(p, SMOE_K_SPARSE_ROUTER_BWD, rspec, rb, rpc, groups, err))) return st;

    /* logits = x W_g^T: dW_g = dlogits^T x, dx += dlogits W_g */
    smoe_matmul mm = {
        .M = n, .N = D, .K = T, .batch = 1, .trans_a = 1,
        .a = smoe_mm_plain(L->dlogits, n, 0), .b = smoe_mm_plain(L->x, D, 0), .c = smoe_mm_plain(L->g_gate, D, 0),
    };
    if ((st = smoe_record_matmul(p, &mm, err))) return st;
    mm = (smoe_matmul){
        .M = T, .N = D, .K = n, .batch = 1,
        .a = smoe_mm_plain(L->dlogits, n, 0), .b = smoe_mm_plain(L->gate, D, 0), .c = smoe_mm_plain(L->dx, D, 0),
        .epi = SMOE_EPI_ACCUMULATE,
    };
    return smoe_record_matmul(p, &mm, err);
}

/* ---- Both paths ---- */

static void *host(const smoe_tensor *t) { return is_set(t) ? smoe_tensor_host(t) : NULL; }

static smoe_sparse_host host_of(const smoe_sparse_tensors *L)
{
    smoe_sparse_host h = {
        .gate = host(&L->gate), .w1 = host(&L->w1), .b1 = host(&L->b1), .w2 = host(&L->w2), .b2 = host(&L->b2),
        .g_gate = host(&L->g_gate), .g_w1 = host(&L->g_w1), .g_b1 = host(&L->g_b1), .g_w2 = host(&L->g_w2),
        .g_b2 = host(&L->g_b2), .x = host(&L->x), .dy = host(&L->dy), .y = host(&L->y), .dx = host(&L->dx),
        .step = host(&L->step), .aux = host(&L->aux), .logits = host(&L->logits), .gates = host(&L->gates),
        .probs = host(&L->probs), .thresh = host(&L->thresh), .topk_e = host(&L->topk_e), .topk_g = host(&L->topk_g),
        .slot_token = host(&L->slot_token), .tok_slot = host(&L->tok_slot), .slot_gate = host(&L->slot_gate),
        .stats = host(&L->stats), .xs = host(&L->xs), .pre = host(&L->pre), .act = host(&L->act), .out = host(&L->out),
        .g_out = host(&L->g_out), .g_pre = host(&L->g_pre), .g_xs = host(&L->g_xs), .dlogits = host(&L->dlogits),
        .sort = host(&L->sort), .pack = host(&L->pack),
    };
    return h;
}

/* The tensors a pass needs beyond the workspace, present and of the right size. */
static smoe_status check_io(const smoe_sparse_tensors *L, const smoe_sparse_dims *d, int mode, int backward, smoe_err *err)
{
    smoe_status st = smoe_sparse_check(d, err);
    if (st) return st;
    uint64_t io = (uint64_t)d->b * d->m * d->d * 4;
    struct { const smoe_tensor *t; uint64_t bytes; const char *name; } need[] = {
        {&L->x, io, "x"}, {&L->y, io, "y"}, {&L->gate, (uint64_t)d->n * d->d * 4, "gate.weight"},
        {&L->dy, backward ? io : 0, "dy"}, {&L->dx, backward ? io : 0, "dx"},
        {&L->step, mode == SMOE_ROUTE_TRAIN ? 4 : 0, "step"},
        {&L->dlogits, backward ? 4 : 0, "the backward workspace"},
        {&L->stats, backward && smoe_sparse_has_aux(d, mode) ? 4 : 0, "the auxiliary losses' workspace"},
    };
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
        if (need[i].bytes && (!is_set(need[i].t) || need[i].t->bytes < need[i].bytes))
            return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "sparse MoE layer: tensor %s missing or too small", need[i].name);
    return SMOE_OK;
}

smoe_status smoe_op_sparse_forward(smoe_exec *ex, const smoe_sparse_tensors *L, const smoe_sparse_dims *d, int mode,
                                   smoe_err *err)
{
    smoe_status st = check_io(L, d, mode, 0, err);
    if (st) return st;
    if (smoe_sparse_has_aux(d, mode) && !is_set(&L->probs))
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "sparse MoE layer: the auxiliary losses need a training workspace");
    if (ex->gpu) return record_forward(ex->prog, L, d, mode, err);
    smoe_sparse_host h = host_of(L);
    smoe_cpu_sparse_forward(d, mode, &h);
    return SMOE_OK;
}

smoe_status smoe_op_sparse_backward(smoe_exec *ex, const smoe_sparse_tensors *L, const smoe_sparse_dims *d, int mode,
                                    smoe_err *err)
{
    smoe_status st = check_io(L, d, mode, 1, err);
    if (st) return st;
    if (ex->gpu) return record_backward(ex->prog, L, d, mode, err);
    smoe_sparse_host h = host_of(L);
    smoe_cpu_sparse_backward(d, mode, &h);
    return SMOE_OK;
}
