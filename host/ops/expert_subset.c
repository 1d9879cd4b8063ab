/* The expert-subset forward of the Soft MoE layer on both paths (see expert_subset.h). */
#include "ops/expert_subset.h"

#include "common/interface.h"
#include "ops/matmul.h"

#define KEEP_WG 64 /* a power of two: scans and sums in shared memory */

smoe_status smoe_keep_reserve(smoe_layer_tensors *L, const smoe_layer_dims *d, smoe_arena *a, smoe_err *err)
{
    if (!a->gpu) return SMOE_OK;
    uint64_t B = (uint64_t)d->b, n = (uint64_t)d->n, S = n * d->p, m = (uint64_t)d->m;
    smoe_status st = smoe_arena_reserve(a, B * n * 4, &L->keep_scores, err);
    if (!st) st = smoe_arena_reserve(a, B * n * 4, &L->keep_mask, err);
    if (!st) st = smoe_arena_reserve(a, B * S * 4, &L->keep_slots, err);
    if (!st) st = smoe_arena_reserve(a, (n + B * S) * 4, &L->keep_rows, err);
    if (!st) st = smoe_arena_reserve(a, B * m * 4, &L->keep_lse, err);
    return st;
}

smoe_status smoe_keep_write_state(uint64_t seed, uint32_t call, const smoe_tensor *state, smoe_err *err)
{
    uint32_t words[SMOE_KEEP_STATE_WORDS] = {(uint32_t)seed, (uint32_t)(seed >> 32), call, 0};
    return smoe_tensor_upload(state, 0, words, sizeof words, err);
}

/* One workgroup per item (sequence or expert), in the 2D grid of the device's limits. */
static smoe_status record_keep_shader(smoe_program *p, smoe_kernel k, const smoe_binding *b, uint32_t bindings,
                                      const uint32_t *spec, uint32_t spec_count, uint32_t items,
                                      const smoe_layer_dims *d, const smoe_keep *keep, uint32_t layer, smoe_err *err)
{
    uint32_t groups[3];
    smoe_grid(p->gpu, items, 1, groups);
    smoe_push_keep pc = {(uint32_t)d->m, (uint32_t)d->n, (uint32_t)d->p, (uint32_t)keep->k, (uint32_t)d->b, layer, groups[0]};
    return smoe_record_kernel(p, k, spec, spec_count, b, bindings, &pc, sizeof pc, groups, err);
}

static smoe_status record_forward_keep(smoe_program *p, const smoe_layer_tensors *L, const smoe_layer_dims *d,
                                       const smoe_keep *keep, uint32_t layer, smoe_err *err)
{
    uint32_t B = (uint32_t)d->b, m = (uint32_t)d->m, D = (uint32_t)d->d, S = (uint32_t)(d->n * d->p);
    uint32_t n = (uint32_t)d->n, R = B * (uint32_t)d->p, H = (uint32_t)d->h, kp = (uint32_t)(keep->k * d->p);

    /* 1-4. the plain forward's router */
    smoe_status st = smoe_layer_record_router(p, L, d, err);
    if (st) return st;

    /* 5. the kept experts of each sequence (the state is read only by random draws, the kept
     * log-sum-exp written only when renormalising: otherwise the logits and the buffer stand in) */
    uint32_t spec[5] = {KEEP_WG, 1, 1, keep->random != 0, keep->renormalize != 0};
    smoe_binding bt[8] = {
        {L->logits, SMOE_READ},      {L->lse_row, SMOE_READ},   {L->scale, SMOE_READ},
        {keep->random ? L->keep_state : L->logits, SMOE_READ},  {L->keep_scores, SMOE_READ_WRITE},
        {L->keep_mask, SMOE_WRITE},  {L->keep_slots, SMOE_READ_WRITE}, {L->keep_lse, SMOE_WRITE},
    };
    st = record_keep_shader(p, SMOE_K_EXPERT_TOPK, bt, SMOE_LEN(bt), spec, SMOE_LEN(spec), B, d, keep, layer, err);

    /* 6. the kept rows of each expert */
    smoe_binding br[2] = {{L->keep_mask, SMOE_READ}, {L->keep_rows, SMOE_WRITE}};
    const uint32_t rspec[3] = {KEEP_WG, 1, 1};
    if (!st) st = record_keep_shader(p, SMOE_K_EXPERT_ROWS, br, SMOE_LEN(br), rspec, SMOE_LEN(rspec), n, d, keep, layer, err);
    if (st) return st;

    /* 7. dispatch over the kept slots: X~_b [kp, d] = D_b[:, kept]^T X_b */
    smoe_matmul mm = {
        .M = kp, .N = D, .K = m, .batch = B, .trans_a = 1,
        .a = smoe_mm_plain(L->logits, S, m * S), .b = smoe_mm_plain(L->x, D, m * D), .c = smoe_mm_plain(L->slots, D, kp * D),
        .a_xform = SMOE_XFORM_EXP_COL, .stat = L->lse_col, .stat_bs = S, .scalar = L->scale,
        .gather = SMOE_GATHER_A_COL, .idx = L->keep_slots, .idx_bs = kp,
    };
    if ((st = smoe_record_matmul(p, &mm, err))) return st;

    /* 8. fc1 over the rows routed to each expert (at most b*p of them; b*k*p/n on average, which
     * picks the tile): pre_e = X~_e W1_e^T + b1_e, and gelu(pre_e) */
    uint32_t rows_per_expert = smoe_div_up((uint64_t)B * kp, n);
    mm = (smoe_matmul){
        .M = R, .N = H, .K = D, .batch = n, .trans_b = 1,
        .a = smoe_mm_plain(L->slots, D, 0), .b = smoe_mm_plain(L->w1, D, H * D), .c = smoe_mm_plain(L->pre, H, R * H),
        .epi = SMOE_EPI_BIAS | SMOE_EPI_STORE_GELU, .bias = L->b1, .bias_bs = H, .gelu_out = L->hidden,
        .gather = SMOE_GATHER_A_ROW | SMOE_GATHER_COUNT, .idx = L->keep_rows, .idx_off = n, .idx_bs = R,
        .tile_m = rows_per_expert,
    };
    if ((st = smoe_record_matmul(p, &mm, err))) return st;

    /* 9. fc2, written back to the kept slot rows: Y~_e = gelu(pre_e) W2_e^T + b2_e */
    mm = (smoe_matmul){
        .M = R, .N = D, .K = H, .batch = n, .trans_b = 1,
        .a = smoe_mm_plain(L->hidden, H, R * H), .b = smoe_mm_plain(L->w2, H, D * H), .c = smoe_mm_plain(L->slots_out, D, 0),
        .epi = SMOE_EPI_BIAS, .bias = L->b2, .bias_bs = D,
        .gather = SMOE_GATHER_C_ROW | SMOE_GATHER_COUNT, .idx = L->keep_rows, .idx_off = n, .idx_bs = R,
        .tile_m = rows_per_expert,
    };
    if ((st = smoe_record_matmul(p, &mm, err))) return st;

    /* 10. combine over the kept slots: Y_b = C_b[:, kept] Y~_b, C from the logits with the
     * per-token statistic of all slots, or of the kept ones when renormalising */
    mm = (smoe_matmul){
        .M = m, .N = D, .K = kp, .batch = B,
        .a = smoe_mm_plain(L->logits, S, m * S), .b = smoe_mm_plain(L->slots_out, D, kp * D), .c = smoe_mm_plain(L->y, D, m * D),
        .a_xform = SMOE_XFORM_EXP_ROW, .stat = keep->renormalize ? L->keep_lse : L->lse_row, .stat_bs = m, .scalar = L->scale,
        .gather = SMOE_GATHER_A_COL, .idx = L->keep_slots, .idx_bs = kp,
    };
    return smoe_record_matmul(p, &mm, err);
}

smoe_status smoe_op_softmoe_forward_keep(smoe_exec *ex, const smoe_layer_tensors *L, const smoe_layer_dims *d,
                                         const smoe_keep *keep, uint32_t layer, smoe_err *err)
{
    if (!smoe_keep_active(keep, d->n)) return smoe_op_softmoe_forward(ex, L, d, err);
    if (keep->random && L->keep_state.bytes < SMOE_KEEP_STATE_WORDS * 4)
        return smoe_fail(err, SMOE_ERROR_INTERNAL, "random expert subsets without a state tensor");
    if (ex->gpu) return record_forward_keep(ex->prog, L, d, keep, layer, err);
    smoe_layer_params prm = smoe_layer_host_params(L);
    static const uint32_t no_state[3] = {0, 0, 0};
    const uint32_t *state = keep->random ? smoe_tensor_host(&L->keep_state) : no_state;
    smoe_cpu_layer_forward_keep(d, &prm, smoe_tensor_host(&L->x), smoe_tensor_host(&L->y), smoe_tensor_host(&L->cpu_ws),
                                keep, state, layer);
    return SMOE_OK;
}
