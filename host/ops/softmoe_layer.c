/* The Soft MoE layer on Vulkan: forward in 9 dispatches, backward in 17 (soft routing); D and C never stored.
 * A fixed side of the routing ablation (smoe_mixing) replaces its matmuls: uniform weights are a
 * sum over rows and a broadcast (sum_rows.comp, broadcast.comp), identity weights a copy; the
 * logits and their statistics are computed only for a soft side. */
#include "ops/softmoe_layer.h"

#include <string.h>

#include "softmoe.h"

#include "common/interface.h"
#include "ops/expert_subset.h"
#include "ops/experts.h"
#include "ops/matmul.h"

#define REDUCE_WG 64 /* a power of two: tree reductions in shared memory */

static smoe_status reserve(smoe_arena *a, smoe_tensor *t, uint64_t floats, smoe_err *err)
{
    return smoe_arena_reserve(a, floats * 4, t, err);
}

smoe_status smoe_layer_reserve(smoe_layer_tensors *L, const smoe_layer_dims *d, smoe_arena *a, int backward,
                                  smoe_err *err)
{
    if (!a->gpu) return reserve(a, &L->cpu_ws, smoe_cpu_layer_workspace(d), err);
    uint64_t B = (uint64_t)d->b, m = (uint64_t)d->m, D = (uint64_t)d->d, S = (uint64_t)d->n * d->p;
    uint64_t R = B * d->p, H = (uint64_t)d->h, n = (uint64_t)d->n;
    smoe_status st = SMOE_OK;
    if (!st) st = reserve(a, &L->rinv, B * m, err);
    if (!st) st = reserve(a, &L->cinv, S, err);
    if (!st) st = reserve(a, &L->logits, B * m * S, err);
    if (!st) st = reserve(a, &L->lse_col, B * S, err);
    if (!st) st = reserve(a, &L->lse_row, B * m, err);
    if (!st) st = reserve(a, &L->slots, B * S * D, err);
    if (!st) st = reserve(a, &L->pre, n * R * H, err);
    if (!st) st = reserve(a, &L->hidden, n * R * H, err);
    if (!st) st = reserve(a, &L->slots_out, B * S * D, err);
    if (!st) st = reserve(a, &L->mix, B * D, err);
    if (!st) st = smoe_keep_reserve(L, d, a, err);
    if (!backward || st) return st;
    if (!st) st = reserve(a, &L->g_slots_out, B * S * D, err);
    if (!st) st = reserve(a, &L->g_combine, B * m * S, err);
    if (!st) st = reserve(a, &L->g_pre, n * R * H, err);
    if (!st) st = reserve(a, &L->g_slots, B * S * D, err);
    if (!st) st = reserve(a, &L->g_dispatch, B * m * S, err);
    if (!st) st = reserve(a, &L->colsum, B * S, err);
    if (!st) st = reserve(a, &L->partial, B * m, err);
    if (!st) st = reserve(a, &L->q_x, B * m * D, err);
    if (!st) st = reserve(a, &L->q_phi, D * S, err);
    return st;
}

/* The spec of a row kernel (common/util.glsl): a workgroup per vector, or an invocation per vector
 * where the device wants that (gpu->row_serial); c3 and c4 its own constants. */
static void row_spec(const smoe_gpu *gpu, uint32_t c3, uint32_t c4, uint32_t spec[SMOE_ROW_SPEC_COUNT])
{
    memset(spec, 0, SMOE_ROW_SPEC_COUNT * sizeof *spec);
    spec[0] = REDUCE_WG, spec[1] = spec[2] = 1;
    spec[3] = c3, spec[4] = c4;
    spec[SMOE_ROW_SERIAL_ID] = gpu->row_serial != 0;
}

/* Workgroups for count vectors of a row kernel. */
static void row_grid(const smoe_gpu *gpu, uint32_t count, uint32_t batch, uint32_t groups[3])
{
    smoe_grid(gpu, gpu->row_serial ? smoe_div_up(count, REDUCE_WG) : count, batch, groups);
}

/* One workgroup (or invocation) per row or column vector of a [rows x cols] matrix per batch. */
static smoe_status record_vectors(smoe_program *p, smoe_kernel k, uint32_t bindings, uint32_t axis,
                                  uint32_t extra_spec, const smoe_binding *b, uint32_t rows, uint32_t cols,
                                  uint32_t batch, uint32_t in_bs, uint32_t out_bs, smoe_err *err)
{
    uint32_t spec[SMOE_ROW_SPEC_COUNT];
    row_spec(p->gpu, axis, extra_spec, spec);
    uint32_t groups[3];
    row_grid(p->gpu, axis == SMOE_AXIS_ROWS ? rows : cols, batch, groups);
    smoe_push_reduce pc = {rows, cols, in_bs, out_bs, groups[0]};
    return smoe_record_kernel(p, k, spec, SMOE_LEN(spec), b, bindings, &pc, sizeof pc, groups, err);
}

/* The rows of the slot tensor [b, S, d] routed to expert e, as an operand with e the batch index:
 * row r of expert e is slot e*p + r%p of sequence r/p. */
static smoe_mm_operand expert_rows(smoe_tensor t, const smoe_layer_dims *d)
{
    uint32_t S = (uint32_t)(d->n * d->p);
    smoe_mm_operand o = {t, 0, (uint32_t)d->d, (uint32_t)(d->p * d->d), (uint32_t)d->p, S * (uint32_t)d->d};
    return o;
}

/* The experts' matmuls over those rows (ops/experts.h). */
static smoe_experts_rec experts_of(const smoe_layer_tensors *L, const smoe_layer_dims *d)
{
    uint32_t R = (uint32_t)(d->b * d->p);
    smoe_experts_rec ex = {.n = (uint32_t)d->n, .rows = R, .d = (uint32_t)d->d, .h = (uint32_t)d->h, .w1 = L->w1,
                           .b1 = L->b1, .w2 = L->w2, .b2 = L->b2, .pre = L->pre, .hidden = L->hidden,
                           .x = expert_rows(L->slots, d), .y = expert_rows(L->slots_out, d)};
    return ex;
}

smoe_status smoe_layer_record_router(smoe_program *p, const smoe_layer_tensors *L, const smoe_layer_dims *d,
                                     smoe_err *err)
{
    uint32_t B = (uint32_t)d->b, m = (uint32_t)d->m, D = (uint32_t)d->d, S = (uint32_t)(d->n * d->p);
    smoe_status st;

    /* 1-2. inverse norms of the tokens (rows of X) and of the slot parameters (columns of phi) */
    smoe_binding bx[2] = {{L->x, SMOE_READ}, {L->rinv, SMOE_WRITE}};
    st = record_vectors(p, SMOE_K_L2NORM, SMOE_LEN(bx), SMOE_AXIS_ROWS, 0, bx, B * m, D, 1, 0, 0, err);
    if (st) return st;
    smoe_binding bp[2] = {{L->phi, SMOE_READ}, {L->cinv, SMOE_WRITE}};
    st = record_vectors(p, SMOE_K_L2NORM, SMOE_LEN(bp), SMOE_AXIS_COLS, 0, bp, D, S, 1, 0, 0, err);
    if (st) return st;

    /* 3. logits P = diag(r) X phi diag(c), all sequences as one [b*m x S] product */
    smoe_matmul mm = {
        .M = B * m, .N = S, .K = D, .batch = 1,
        .a = smoe_mm_plain(L->x, D, 0), .b = smoe_mm_plain(L->phi, S, 0), .c = smoe_mm_plain(L->logits, S, 0),
        .epi = SMOE_EPI_ROWSCALE | SMOE_EPI_COLSCALE, .rowscale = L->rinv, .colscale = L->cinv,
    };
    st = smoe_record_matmul(p, &mm, err);
    if (st) return st;

    /* 4. log-sum-exp of scale*P per slot (over tokens: a soft D) and per token (over slots: a
     * soft C) */
    smoe_binding bs1[3] = {{L->logits, SMOE_READ}, {L->scale, SMOE_READ}, {L->lse_col, SMOE_WRITE}};
    if (d->dispatch == SMOE_MIX_SOFT &&
        (st = record_vectors(p, SMOE_K_SOFTMAX_STATS, SMOE_LEN(bs1), SMOE_AXIS_COLS, 0, bs1, m, S, B, m * S, S, err)))
        return st;
    smoe_binding bs2[3] = {{L->logits, SMOE_READ}, {L->scale, SMOE_READ}, {L->lse_row, SMOE_WRITE}};
    if (d->combine != SMOE_MIX_SOFT) return SMOE_OK;
    return record_vectors(p, SMOE_K_SOFTMAX_STATS, SMOE_LEN(bs2), SMOE_AXIS_ROWS, 0, bs2, m, S, B, m * S, m, err);
}

/* A fixed side applied to the rows of every sequence: out [b, rows_out, d] = W in [b, rows_in, d],
 * W all w (the sum of the rows, times w, into L->mix, then broadcast over the output rows) or the
 * identity (a copy; rows_out = rows_in). accumulate adds to out instead. */
static smoe_status record_mix(smoe_program *p, const smoe_layer_tensors *L, const smoe_layer_dims *d, int mode,
                              smoe_tensor in, smoe_tensor out, uint32_t rows_in, uint32_t rows_out, float w, int accumulate,
                              smoe_err *err)
{
    uint32_t B = (uint32_t)d->b, D = (uint32_t)d->d, n = B * rows_out * D;
    if (mode == SMOE_MIX_IDENTITY) return smoe_record_bcast(p, &in, &out, n, 1, n, 1.0f, accumulate, err);
    smoe_status st = smoe_record_sum_rows(p, &in, &L->mix, rows_in, D, B, w, err);
    if (!st) st = smoe_record_bcast(p, &L->mix, &out, n, rows_out, D, 1.0f, accumulate, err);
    return st;
}

static smoe_status record_forward(smoe_program *p, const smoe_layer_tensors *L, const smoe_layer_dims *d,
                                         smoe_err *err)
{
    uint32_t B = (uint32_t)d->b, m = (uint32_t)d->m, D = (uint32_t)d->d, S = (uint32_t)(d->n * d->p);
    const int soft_d = d->dispatch == SMOE_MIX_SOFT, soft_c = d->combine == SMOE_MIX_SOFT;
    smoe_status st = SMOE_OK;

    /* 1-4. norms, logits, softmax statistics */
    if (soft_d || soft_c) st = smoe_layer_record_router(p, L, d, err);
    if (st) return st;

    /* 5. dispatch: X~_b = D_b^T X_b, a soft D rebuilt from P on load */
    smoe_matmul mm = (smoe_matmul){
        .M = S, .N = D, .K = m, .batch = B, .trans_a = 1,
        .a = smoe_mm_plain(L->logits, S, m * S), .b = smoe_mm_plain(L->x, D, m * D), .c = smoe_mm_plain(L->slots, D, S * D),
        .a_xform = SMOE_XFORM_EXP_COL, .stat = L->lse_col, .stat_bs = S, .scalar = L->scale,
    };
    st = soft_d ? smoe_record_matmul(p, &mm, err) : record_mix(p, L, d, d->dispatch, L->x, L->slots, m, S, 1.0f / m, 0, err);
    if (st) return st;

    /* 6-7. the experts: pre_e = X~_e W1_e^T + b1_e, Y~_e = gelu(pre_e) W2_e^T + b2_e, over the
     * b*p rows of expert e, written back in slot order */
    smoe_experts_rec ex = experts_of(L, d);
    st = smoe_record_experts_forward(p, &ex, err);
    if (st) return st;

    /* 8. combine: Y_b = C_b Y~_b, a soft C rebuilt from P on load */
    mm = (smoe_matmul){
        .M = m, .N = D, .K = S, .batch = B,
        .a = smoe_mm_plain(L->logits, S, m * S), .b = smoe_mm_plain(L->slots_out, D, S * D), .c = smoe_mm_plain(L->y, D, m * D),
        .a_xform = SMOE_XFORM_EXP_ROW, .stat = L->lse_row, .stat_bs = m, .scalar = L->scale,
    };
    if (soft_c) return smoe_record_matmul(p, &mm, err);
    return record_mix(p, L, d, d->combine, L->slots_out, L->y, S, m, 1.0f / S, 0, err);
}

static smoe_status record_backward(smoe_program *p, const smoe_layer_tensors *L, const smoe_layer_dims *d,
                                          smoe_err *err)
{
    uint32_t B = (uint32_t)d->b, m = (uint32_t)d->m, D = (uint32_t)d->d, S = (uint32_t)(d->n * d->p);
    const int soft_d = d->dispatch == SMOE_MIX_SOFT, soft_c = d->combine == SMOE_MIX_SOFT;
    smoe_status st;
    smoe_matmul mm;

    /* 1. G_Y~_b = C_b^T G_Y_b */
    mm = (smoe_matmul){
        .M = S, .N = D, .K = m, .batch = B, .trans_a = 1,
        .a = smoe_mm_plain(L->logits, S, m * S), .b = smoe_mm_plain(L->dy, D, m * D),
        .c = smoe_mm_plain(L->g_slots_out, D, S * D),
        .a_xform = SMOE_XFORM_EXP_ROW, .stat = L->lse_row, .stat_bs = m, .scalar = L->scale,
    };
    st = soft_c ? smoe_record_matmul(p, &mm, err)
                : record_mix(p, L, d, d->combine, L->dy, L->g_slots_out, m, S, 1.0f / S, 0, err);
    if (st) return st;

    /* 2. G_C_b = G_Y_b Y~_b^T (a soft C only) */
    mm = (smoe_matmul){
        .M = m, .N = S, .K = D, .batch = B, .trans_b = 1,
        .a = smoe_mm_plain(L->dy, D, m * D), .b = smoe_mm_plain(L->slots_out, D, S * D),
        .c = smoe_mm_plain(L->g_combine, S, m * S),
    };
    if (soft_c && (st = smoe_record_matmul(p, &mm, err))) return st;

    /* 3-8. the experts' backward: G_pre, G_W2, G_b2, G_W1, G_b1, and G_X~ back in slot order */
    smoe_experts_rec ex = experts_of(L, d);
    if ((st = smoe_record_experts_backward(p, &ex, expert_rows(L->g_slots_out, d), L->g_pre, expert_rows(L->g_slots, d),
                                           L->g_w1, L->g_b1, L->g_w2, L->g_b2, err)))
        return st;

    /* 9. G_D_b = X_b G_X~_b^T (a soft D only) */
    mm = (smoe_matmul){
        .M = m, .N = S, .K = D, .batch = B, .trans_b = 1,
        .a = smoe_mm_plain(L->x, D, m * D), .b = smoe_mm_plain(L->g_slots, D, S * D),
        .c = smoe_mm_plain(L->g_dispatch, S, m * S),
    };
    if (soft_d && (st = smoe_record_matmul(p, &mm, err))) return st;

    /* 10. dx_b = D_b G_X~_b (the gradient through the mixed values) */
    mm = (smoe_matmul){
        .M = m, .N = D, .K = S, .batch = B,
        .a = smoe_mm_plain(L->logits, S, m * S), .b = smoe_mm_plain(L->g_slots, D, S * D), .c = smoe_mm_plain(L->dx, D, m * D),
        .a_xform = SMOE_XFORM_EXP_COL, .stat = L->lse_col, .stat_bs = S, .scalar = L->scale,
    };
    st = soft_d ? smoe_record_matmul(p, &mm, err) : record_mix(p, L, d, d->dispatch, L->g_slots, L->dx, S, m, 1.0f / m, 0, err);
    if (st) return st;

    /* Neither side soft: the logits play no part; phi and the scale get zero gradients */
    if (!soft_d && !soft_c) {
        if ((st = smoe_program_fill(p, &L->g_phi, 0, err))) return st;
        return smoe_program_fill(p, &L->g_scale, 0, err);
    }

    /* 11-12. softmax backward: column sums (a soft D), then G_L per row from the soft sides, U
     * over G_D, scale partials */
    uint32_t spec[SMOE_ROW_SPEC_COUNT];
    smoe_binding rb[10] = {
        {L->logits, SMOE_READ},  {L->lse_col, SMOE_READ}, {L->lse_row, SMOE_READ}, {L->g_dispatch, SMOE_READ_WRITE},
        {L->g_combine, SMOE_READ}, {L->colsum, SMOE_READ_WRITE}, {L->rinv, SMOE_READ}, {L->cinv, SMOE_READ},
        {L->scale, SMOE_READ},   {L->partial, SMOE_WRITE},
    };
    const uint32_t sides = (soft_d ? SMOE_ROUTER_SOFT_DISPATCH : 0) | (soft_c ? SMOE_ROUTER_SOFT_COMBINE : 0);
    for (uint32_t phase = soft_d ? 0 : 1; phase < 2; phase++) {
        row_spec(p->gpu, phase, sides, spec);
        uint32_t groups[3];
        row_grid(p->gpu, phase == 0 ? S : m, B, groups);
        smoe_push_router pc = {m, S, groups[0]};
        if ((st = smoe_record(p, SMOE_K_ROUTER_BWD, spec, rb, pc, groups, err))) return st;
    }

    /* 13. G_scale = sum of the partials */
    if ((st = smoe_record_colsum(p, L->partial, L->g_scale, B * m, 1, 1, 0, SMOE_NO_GROUP, 0, 0, 1, err))) return st;

    /* 14. Q_x = U phi^T (= r * G_X^), all sequences at once */
    mm = (smoe_matmul){
        .M = B * m, .N = D, .K = S, .batch = 1, .trans_b = 1,
        .a = smoe_mm_plain(L->g_dispatch, S, 0), .b = smoe_mm_plain(L->phi, S, 0), .c = smoe_mm_plain(L->q_x, D, 0),
    };
    if ((st = smoe_record_matmul(p, &mm, err))) return st;

    /* 15. Q_phi = X^T U summed over the batch (= c * G_Phi^) */
    mm = (smoe_matmul){
        .M = D, .N = S, .K = B * m, .batch = 1, .trans_a = 1,
        .a = smoe_mm_plain(L->x, D, 0), .b = smoe_mm_plain(L->g_dispatch, S, 0), .c = smoe_mm_plain(L->q_phi, S, 0),
    };
    if ((st = smoe_record_matmul(p, &mm, err))) return st;

    /* 16-17. l2-normalisation backward: dx += per token row, G_phi per slot column */
    smoe_binding lx[4] = {{L->x, SMOE_READ}, {L->q_x, SMOE_READ}, {L->rinv, SMOE_READ}, {L->dx, SMOE_READ_WRITE}};
    if ((st = record_vectors(p, SMOE_K_L2NORM_BWD, SMOE_LEN(lx), SMOE_AXIS_ROWS, 1, lx, B * m, D, 1, 0, 0, err))) return st;
    smoe_binding lp[4] = {{L->phi, SMOE_READ}, {L->q_phi, SMOE_READ}, {L->cinv, SMOE_READ}, {L->g_phi, SMOE_WRITE}};
    return record_vectors(p, SMOE_K_L2NORM_BWD, SMOE_LEN(lp), SMOE_AXIS_COLS, 0, lp, D, S, 1, 0, 0, err);
}

smoe_layer_params smoe_layer_host_params(const smoe_layer_tensors *L)
{
    smoe_layer_params prm = {smoe_tensor_host(&L->phi), smoe_tensor_host(&L->scale), smoe_tensor_host(&L->w1),
                             smoe_tensor_host(&L->b1),  smoe_tensor_host(&L->w2),    smoe_tensor_host(&L->b2)};
    return prm;
}

smoe_status smoe_op_softmoe_forward(smoe_exec *ex, const smoe_layer_tensors *L, const smoe_layer_dims *d, smoe_err *err)
{
    if (ex->gpu) return record_forward(ex->prog, L, d, err);
    smoe_layer_params prm = smoe_layer_host_params(L);
    smoe_cpu_layer_forward(d, &prm, smoe_tensor_host(&L->x), smoe_tensor_host(&L->y), smoe_tensor_host(&L->cpu_ws));
    return SMOE_OK;
}

smoe_status smoe_op_softmoe_backward(smoe_exec *ex, const smoe_layer_tensors *L, const smoe_layer_dims *d,
                                     smoe_err *err)
{
    if (ex->gpu) return record_backward(ex->prog, L, d, err);
    smoe_layer_params prm = smoe_layer_host_params(L);
    smoe_layer_grads g = {smoe_tensor_host(&L->g_phi), smoe_tensor_host(&L->g_scale), smoe_tensor_host(&L->g_w1),
                          smoe_tensor_host(&L->g_b1),  smoe_tensor_host(&L->g_w2),    smoe_tensor_host(&L->g_b2)};
    smoe_cpu_layer_backward(d, &prm, smoe_tensor_host(&L->x), smoe_tensor_host(&L->dy), smoe_tensor_host(&L->cpu_ws),
                            smoe_tensor_host(&L->dx), &g);
    return SMOE_OK;
}
