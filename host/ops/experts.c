/* The experts of the MoE layers on Vulkan: two batched matmuls forward, four and two column sums
 * backward (see experts.h). */
#include "ops/experts.h"

#include "common/interface.h"

smoe_status smoe_record_colsum(smoe_program *p, smoe_tensor x, smoe_tensor out, uint32_t rows, uint32_t cols, uint32_t ld,
                               uint32_t bs, uint32_t g, uint32_t gs, uint32_t out_bs, uint32_t batch, smoe_err *err)
{
    uint32_t spec[4] = {32, p->gpu->row_serial ? 1 : 8, 1, 0}; /* no tree over y where barriers are loops */
    smoe_push_colsum pc = {rows, cols, ld, bs, g, gs, out_bs};
    smoe_binding b[2] = {{x, SMOE_READ}, {out, SMOE_WRITE}};
    uint32_t groups[3] = {smoe_div_up(cols, 32), 1, batch};
    return smoe_record(p, SMOE_K_COLSUM, spec, b, pc, groups, err);
}

smoe_status smoe_record_experts_forward(smoe_program *p, const smoe_experts_rec *r, smoe_err *err)
{
    /* fc1: pre_e = X_e W1_e^T + b1_e, and gelu(pre_e) */
    smoe_matmul mm = {
        .M = r->rows, .N = r->h, .K = r->d, .batch = r->n, .trans_b = 1,
        .a = r->x, .b = smoe_mm_plain(r->w1, r->d, r->h * r->d), .c = smoe_mm_plain(r->pre, r->h, r->rows * r->h),
        .epi = SMOE_EPI_BIAS | SMOE_EPI_STORE_GELU, .bias = r->b1, .bias_bs = r->h, .gelu_out = r->hidden,
    };
    smoe_status st = smoe_record_matmul(p, &mm, err);
    if (st) return st;
    /* fc2: Y_e = gelu(pre_e) W2_e^T + b2_e */
    mm = (smoe_matmul){
        .M = r->rows, .N = r->d, .K = r->h, .batch = r->n, .trans_b = 1,
        .a = smoe_mm_plain(r->hidden, r->h, r->rows * r->h), .b = smoe_mm_plain(r->w2, r->h, r->d * r->h), .c = r->y,
        .epi = SMOE_EPI_BIAS, .bias = r->b2, .bias_bs = r->d,
    };
    return smoe_record_matmul(p, &mm, err);
}

smoe_status smoe_record_experts_backward(smoe_program *p, const smoe_experts_rec *r, smoe_mm_operand gy, smoe_tensor g_pre,
                                         smoe_mm_operand gx, smoe_tensor g_w1, smoe_tensor g_b1, smoe_tensor g_w2,
                                         smoe_tensor g_b2, smoe_err *err)
{
    const uint32_t n = r->n, R = r->rows, D = r->d, H = r->h;
    smoe_status st;
    /* G_pre_e = (G_Y_e W2_e) * gelu'(pre_e) */
    smoe_matmul mm = {
        .M = R, .N = H, .K = D, .batch = n,
        .a = gy, .b = smoe_mm_plain(r->w2, H, D * H), .c = smoe_mm_plain(g_pre, H, R * H),
        .epi = SMOE_EPI_GELU_GRAD, .aux = r->pre,
    };
    if ((st = smoe_record_matmul(p, &mm, err))) return st;
    /* G_W2_e = G_Y_e^T gelu(pre_e) */
    mm = (smoe_matmul){
        .M = D, .N = H, .K = R, .batch = n, .trans_a = 1,
        .a = gy, .b = smoe_mm_plain(r->hidden, H, R * H), .c = smoe_mm_plain(g_w2, H, D * H),
    };
    if ((st = smoe_record_matmul(p, &mm, err))) return st;
    /* G_b2_e = sum over the rows of G_Y_e */
    if ((st = smoe_record_colsum(p, gy.t, g_b2, R, D, gy.ld, gy.bs, gy.g, gy.gs, D, n, err))) return st;
    /* G_W1_e = G_pre_e^T X_e */
    mm = (smoe_matmul){
        .M = H, .N = D, .K = R, .batch = n, .trans_a = 1,
        .a = smoe_mm_plain(g_pre, H, R * H), .b = r->x, .c = smoe_mm_plain(g_w1, D, H * D),
    };
    if ((st = smoe_record_matmul(p, &mm, err))) return st;
    /* G_b1_e = sum over the rows of G_pre_e */
    if ((st = smoe_record_colsum(p, g_pre, g_b1, R, H, H, R * H, SMOE_NO_GROUP, 0, H, n, err))) return st;
    /* G_X_e = G_pre_e W1_e */
    mm = (smoe_matmul){
        .M = R, .N = D, .K = H, .batch = n,
        .a = smoe_mm_plain(g_pre, H, R * H), .b = smoe_mm_plain(r->w1, D, H * D), .c = gx,
    };
    return smoe_record_matmul(p, &mm, err);
}
