/* The ViT ops (ops.h) on both paths: on the CPU at once through host/cpu/vit_cpu.h, or recorded
 * into a program on Vulkan. Every matmul is an instance of the matmul family (ops/matmul.h);
 * the rest are the small kernels of shaders/{im2col, layernorm*, softmax_rows*, cross_entropy,
 * broadcast, sum_rows, sum_squares, adamw}.comp. */
#include "ops/ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/interface.h"
#include "cpu/vit_cpu.h"
#include "ops/matmul.h"

#define ROW_WG 64       /* one workgroup per row: a power of two within every device's limits */
#define COL_WG_X 32     /* threads over columns, ... */
#define COL_WG_Y 8      /* ... and over rows (at most; fewer where the device allows less) */
#define SUMSQ_GROUPS 64 /* level-0 workgroups per tensor, at most */

/* ---- Shared helpers ---- */

static smoe_status need(const smoe_tensor *t, uint64_t floats, const char *op, const char *name, smoe_err *err)
{
    if (!t) return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "%s: tensor %s missing", op, name);
    if (t->bytes < floats * 4)
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "%s: tensor %s has %llu bytes, %llu needed", op, name,
                         (unsigned long long)t->bytes, (unsigned long long)(floats * 4));
    return SMOE_OK;
}

static smoe_status fits32(uint64_t n, const char *op, smoe_err *err)
{
    if (n > UINT32_MAX)
        return smoe_fail(err, SMOE_ERROR_TOO_LARGE, "%s: %llu elements exceed 32-bit indexing", op, (unsigned long long)n);
    return SMOE_OK;
}

/* Host memory of a tensor on the CPU path. */
static float *host(const smoe_tensor *t) { return t ? (float *)smoe_tensor_host(t) : NULL; }

static smoe_status host_check(const smoe_tensor *t, const char *op, const char *name, smoe_err *err)
{
    if (t && !smoe_tensor_host(t))
        return smoe_fail(err, SMOE_ERROR_INTERNAL, "%s: tensor %s is not in committed host memory", op, name);
    return SMOE_OK;
}

static uint32_t pow2_floor(uint32_t x)
{
    uint32_t p = 1;
    while (p * 2 <= x) p *= 2;
    return p;
}

/* Workgroup size of elementwise kernels: 256 where the device allows it. */
static uint32_t elem_wg(const smoe_gpu *gpu)
{
    uint32_t lim = gpu->info.max_workgroup_invocations;
    if (gpu->info.max_workgroup_size[0] < lim) lim = gpu->info.max_workgroup_size[0];
    if (lim > 256) lim = 256;
    return pow2_floor(lim ? lim : 1);
}

/* A 2D workgroup {32, y} for column kernels, y a power of two that the device allows; y = 1 (no
 * tree over y, no barrier) where row kernels run an invocation per vector. */
static void col_wg(const smoe_gpu *gpu, uint32_t spec[3])
{
    uint32_t y = gpu->row_serial ? 1 : COL_WG_Y;
    while (y > 1 && (COL_WG_X * y > gpu->info.max_workgroup_invocations || y > gpu->info.max_workgroup_size[1])) y /= 2;
    spec[0] = COL_WG_X;
    spec[1] = y;
    spec[2] = 1;
}

/* One workgroup per row of [rows x cols], or one invocation per row (gpu->row_serial: drivers
 * that run shaders on the CPU; ROW_SERIAL in common/util.glsl). */
static smoe_status record_rows(smoe_program *p, smoe_kernel k, const smoe_binding *b, uint32_t nb,
                               uint32_t rows, uint32_t cols, float alpha, const uint32_t *extra_spec,
                               uint32_t extra_count, smoe_err *err)
{
    uint32_t serial = p->gpu->row_serial != 0;
    uint32_t spec[SMOE_ROW_SPEC_COUNT] = {ROW_WG, 1, 1};
    for (uint32_t i = 0; i < extra_count; i++) spec[3 + i] = extra_spec[i];
    spec[SMOE_ROW_SERIAL_ID] = serial;
    uint32_t groups[3];
    smoe_grid(p->gpu, serial ? smoe_div_up(rows, ROW_WG) : rows, 1, groups);
    smoe_push_rows pc = {rows, cols, groups[0], alpha};
    return smoe_record_kernel(p, k, spec, SMOE_LEN(spec), b, nb, &pc, sizeof pc, groups, err);
}

/* (ops.h) */
smoe_status smoe_record_bcast(smoe_program *p, const smoe_tensor *x, const smoe_tensor *y, uint32_t n, uint32_t rows,
                              uint32_t cols, float alpha, int accumulate, smoe_err *err)
{
    uint32_t spec[3] = {elem_wg(p->gpu), 1, 1};
    uint32_t groups[3];
    smoe_grid(p->gpu, smoe_div_up(n, spec[0]), 1, groups);
    smoe_push_bcast pc = {n, rows, cols, alpha, accumulate != 0, groups[0]};
    smoe_binding b[2] = {{*x, SMOE_READ}, {*y, accumulate ? SMOE_READ_WRITE : SMOE_WRITE}};
    return smoe_record(p, SMOE_K_BROADCAST, spec, b, pc, groups, err);
}

/* (ops.h) */
smoe_status smoe_record_sum_rows(smoe_program *p, const smoe_tensor *x, const smoe_tensor *y, uint32_t rows, uint32_t cols,
                                 uint32_t batch, float alpha, smoe_err *err)
{
    uint32_t spec[3];
    col_wg(p->gpu, spec);
    uint32_t groups[3];
    smoe_grid(p->gpu, smoe_div_up(cols, spec[0]), batch, groups);
    smoe_push_sumrows pc = {rows, cols, alpha, groups[0]};
    smoe_binding b[2] = {{*x, SMOE_READ}, {*y, SMOE_WRITE}};
    return smoe_record(p, SMOE_K_SUM_ROWS, spec, b, pc, groups, err);
}

static smoe_mm_operand operand(const smoe_tensor *t, uint32_t off, uint32_t ld, uint32_t bs)
{
    smoe_mm_operand o = {*t, off, ld, bs, SMOE_NO_GROUP, 0};
    return o;
}

/* ---- Linear ---- */

smoe_status smoe_op_linear_forward(smoe_exec *ex, int rows, int in, int out, const smoe_tensor *x,
                                   const smoe_tensor *w, const smoe_tensor *b, const smoe_tensor *y, smoe_err *err)
{
    const char *op = "linear forward";
    uint64_t R = (uint64_t)rows, I = (uint64_t)in, O = (uint64_t)out;
    smoe_status st;
    if ((st = need(x, R * I, op, "x", err)) || (st = need(w, O * I, op, "w", err)) ||
        (b && (st = need(b, O, op, "b", err))) || (st = need(y, R * O, op, "y", err)))
        return st;
    if (!ex->gpu) {
        if ((st = host_check(x, op, "x", err)) || (st = host_check(w, op, "w", err)) || (st = host_check(b, op, "b", err)) ||
            (st = host_check(y, op, "y", err)))
            return st;
        smoe_cpu_linear_forward(rows, in, out, host(x), host(w), host(b), host(y));
        return SMOE_OK;
    }
    smoe_matmul mm = {
        .M = (uint32_t)rows, .N = (uint32_t)out, .K = (uint32_t)in, .batch = 1, .trans_b = 1,
        .a = smoe_mm_plain(*x, (uint32_t)in, 0), .b = smoe_mm_plain(*w, (uint32_t)in, 0),
        .c = smoe_mm_plain(*y, (uint32_t)out, 0),
    };
    if (b) {
        mm.epi = SMOE_EPI_BIAS;
        mm.bias = *b;
    }
    return smoe_record_matmul(ex->prog, &mm, err);
}

smoe_status smoe_op_linear_backward(smoe_exec *ex, int rows, int in, int out, const smoe_tensor *x,
                                    const smoe_tensor *w, const smoe_tensor *dy, const smoe_tensor *dx, int accumulate_dx,
                                    const smoe_tensor *dw, const smoe_tensor *db, smoe_err *err)
{
    const char *op = "linear backward";
    uint64_t R = (uint64_t)rows, I = (uint64_t)in, O = (uint64_t)out;
    smoe_status st;
    if ((st = need(x, R * I, op, "x", err)) || (st = need(w, O * I, op, "w", err)) || (st = need(dy, R * O, op, "dy", err)) ||
        (dx && (st = need(dx, R * I, op, "dx", err))) || (st = need(dw, O * I, op, "dw", err)) ||
        (db && (st = need(db, O, op, "db", err))))
        return st;
    if (!ex->gpu) {
        if ((st = host_check(x, op, "x", err)) || (st = host_check(w, op, "w", err)) || (st = host_check(dy, op, "dy", err)) ||
            (st = host_check(dx, op, "dx", err)) || (st = host_check(dw, op, "dw", err)) || (st = host_check(db, op, "db", err)))
            return st;
        if (dx && accumulate_dx) {
            /* the kernel accumulates all three or none: start dw and db from zero */
            memset(host(dw), 0, O * I * 4);
            if (db) memset(host(db), 0, O * 4);
        }
        smoe_cpu_linear_backward(rows, in, out, host(x), host(w), host(dy), host(dx), host(dw), host(db),
                                 dx && accumulate_dx);
        return SMOE_OK;
    }
    smoe_program *p = ex->prog;
    if (dx) {
        smoe_matmul mm = {
            .M = (uint32_t)rows, .N = (uint32_t)in, .K = (uint32_t)out, .batch = 1,
            .a = smoe_mm_plain(*dy, (uint32_t)out, 0), .b = smoe_mm_plain(*w, (uint32_t)in, 0),
            .c = smoe_mm_plain(*dx, (uint32_t)in, 0), .epi = accumulate_dx ? SMOE_EPI_ACCUMULATE : 0,
        };
        if ((st = smoe_record_matmul(p, &mm, err))) return st;
    }
    smoe_matmul mw = {
        .M = (uint32_t)out, .N = (uint32_t)in, .K = (uint32_t)rows, .batch = 1, .trans_a = 1,
        .a = smoe_mm_plain(*dy, (uint32_t)out, 0), .b = smoe_mm_plain(*x, (uint32_t)in, 0),
        .c = smoe_mm_plain(*dw, (uint32_t)in, 0),
    };
    if ((st = smoe_record_matmul(p, &mw, err))) return st;
    if (db) return smoe_record_sum_rows(p, dy, db, (uint32_t)rows, (uint32_t)out, 1, 1.0f, err);
    return SMOE_OK;
}

/* ---- MLP ---- */

smoe_status smoe_op_mlp_forward(smoe_exec *ex, int rows, int dim, int hidden, const smoe_tensor *x,
                                const smoe_tensor *w1, const smoe_tensor *b1, const smoe_tensor *w2,
                                const smoe_tensor *b2, const smoe_tensor *pre, const smoe_tensor *y, smoe_err *err)
{
    const char *op = "mlp forward";
    uint64_t R = (uint64_t)rows, D = (uint64_t)dim, H = (uint64_t)hidden;
    smoe_status st;
    if ((st = need(x, R * D, op, "x", err)) || (st = need(w1, H * D, op, "w1", err)) || (st = need(b1, H, op, "b1", err)) ||
        (st = need(w2, D * H, op, "w2", err)) || (st = need(b2, D, op, "b2", err)) || (st = need(pre, R * H, op, "pre", err)) ||
        (st = need(y, R * D, op, "y", err)))
        return st;
    if (!ex->gpu) {
        if ((st = host_check(x, op, "x", err)) || (st = host_check(w1, op, "w1", err)) || (st = host_check(b1, op, "b1", err)) ||
            (st = host_check(w2, op, "w2", err)) || (st = host_check(b2, op, "b2", err)) ||
            (st = host_check(pre, op, "pre", err)) || (st = host_check(y, op, "y", err)))
            return st;
        float *h = malloc(R * H * 4 + 4);
        if (!h) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "%s: out of host memory", op);
        smoe_cpu_linear_forward(rows, dim, hidden, host(x), host(w1), host(b1), host(pre));
        smoe_cpu_gelu_forward(R * H, host(pre), h);
        smoe_cpu_linear_forward(rows, hidden, dim, h, host(w2), host(b2), host(y));
        free(h);
        return SMOE_OK;
    }
    smoe_matmul m1 = {
        .M = (uint32_t)rows, .N = (uint32_t)hidden, .K = (uint32_t)dim, .batch = 1, .trans_b = 1,
        .a = smoe_mm_plain(*x, (uint32_t)dim, 0), .b = smoe_mm_plain(*w1, (uint32_t)dim, 0),
        .c = smoe_mm_plain(*pre, (uint32_t)hidden, 0), .epi = SMOE_EPI_BIAS, .bias = *b1,
    };
    if ((st = smoe_record_matmul(ex->prog, &m1, err))) return st;
    smoe_matmul m2 = {
        .M = (uint32_t)rows, .N = (uint32_t)dim, .K = (uint32_t)hidden, .batch = 1, .trans_b = 1,
        .a = smoe_mm_plain(*pre, (uint32_t)hidden, 0), .b = smoe_mm_plain(*w2, (uint32_t)hidden, 0),
        .c = smoe_mm_plain(*y, (uint32_t)dim, 0), .a_xform = SMOE_XFORM_GELU, .epi = SMOE_EPI_BIAS, .bias = *b2,
    };
    return smoe_record_matmul(ex->prog, &m2, err);
}

smoe_status smoe_op_mlp_backward(smoe_exec *ex, int rows, int dim, int hidden, const smoe_tensor *x,
                                 const smoe_tensor *w1, const smoe_tensor *w2, const smoe_tensor *pre,
                                 const smoe_tensor *dy, const smoe_tensor *dpre, const smoe_tensor *dx,
                                 const smoe_tensor *dw1, const smoe_tensor *db1, const smoe_tensor *dw2,
                                 const smoe_tensor *db2, smoe_err *err)
{
    const char *op = "mlp backward";
    uint64_t R = (uint64_t)rows, D = (uint64_t)dim, H = (uint64_t)hidden;
    smoe_status st;
    if ((st = need(x, R * D, op, "x", err)) || (st = need(w1, H * D, op, "w1", err)) || (st = need(w2, D * H, op, "w2", err)) ||
        (st = need(pre, R * H, op, "pre", err)) || (st = need(dy, R * D, op, "dy", err)) ||
        (st = need(dpre, R * H, op, "dpre", err)) || (st = need(dx, R * D, op, "dx", err)) ||
        (st = need(dw1, H * D, op, "dw1", err)) || (st = need(db1, H, op, "db1", err)) ||
        (st = need(dw2, D * H, op, "dw2", err)) || (st = need(db2, D, op, "db2", err)))
        return st;
    if (!ex->gpu) {
        const smoe_tensor *all[11] = {x, w1, w2, pre, dy, dpre, dx, dw1, db1, dw2, db2};
        for (int i = 0; i < 11; i++)
            if ((st = host_check(all[i], op, "argument", err))) return st;
        float *h = malloc(R * H * 4 + 4);
        if (!h) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "%s: out of host memory", op);
        /* fc2: dh = dy W2 (into dpre), dW2 = dy^T gelu(pre), db2 = colsum(dy) */
        smoe_cpu_gelu_forward(R * H, host(pre), h);
        smoe_cpu_linear_backward(rows, hidden, dim, h, host(w2), host(dy), host(dpre), host(dw2), host(db2), 0);
        /* dpre = dh * gelu'(pre) (through h: no aliasing of the kernel's input and output) */
        smoe_cpu_gelu_backward(R * H, host(pre), host(dpre), h);
        memcpy(host(dpre), h, R * H * 4);
        free(h);
        /* fc1: dx = dpre W1, dW1 = dpre^T x, db1 = colsum(dpre) */
        smoe_cpu_linear_backward(rows, dim, hidden, host(x), host(w1), host(dpre), host(dx), host(dw1), host(db1), 0);
        return SMOE_OK;
    }
    smoe_program *p = ex->prog;
    uint32_t r = (uint32_t)rows, d = (uint32_t)dim, hd = (uint32_t)hidden;
    /* dpre = (dy W2) * gelu'(pre) */
    smoe_matmul mm = {
        .M = r, .N = hd, .K = d, .batch = 1,
        .a = smoe_mm_plain(*dy, d, 0), .b = smoe_mm_plain(*w2, hd, 0), .c = smoe_mm_plain(*dpre, hd, 0),
        .epi = SMOE_EPI_GELU_GRAD, .aux = *pre,
    };
    if ((st = smoe_record_matmul(p, &mm, err))) return st;
    /* dW2 = dy^T gelu(pre), db2 = colsum(dy) */
    mm = (smoe_matmul){
        .M = d, .N = hd, .K = r, .batch = 1, .trans_a = 1,
        .a = smoe_mm_plain(*dy, d, 0), .b = smoe_mm_plain(*pre, hd, 0), .c = smoe_mm_plain(*dw2, hd, 0),
        .b_xform = SMOE_XFORM_GELU,
    };
    if ((st = smoe_record_matmul(p, &mm, err))) return st;
    if ((st = smoe_record_sum_rows(p, dy, db2, r, d, 1, 1.0f, err))) return st;
    /* dW1 = dpre^T x, db1 = colsum(dpre), dx = dpre W1 */
    mm = (smoe_matmul){
        .M = hd, .N = d, .K = r, .batch = 1, .trans_a = 1,
        .a = smoe_mm_plain(*dpre, hd, 0), .b = smoe_mm_plain(*x, d, 0), .c = smoe_mm_plain(*dw1, d, 0),
    };
    if ((st = smoe_record_matmul(p, &mm, err))) return st;
    if ((st = smoe_record_sum_rows(p, dpre, db1, r, hd, 1, 1.0f, err))) return st;
    mm = (smoe_matmul){
        .M = r, .N = d, .K = hd, .batch = 1,
        .a = smoe_mm_plain(*dpre, hd, 0), .b = smoe_mm_plain(*w1, d, 0), .c = smoe_mm_plain(*dx, d, 0),
    };
    return smoe_record_matmul(p, &mm, err);
}

/* ---- Patches ---- */

smoe_status smoe_op_im2col(smoe_exec *ex, int b, int c, int H, int W, int P, const smoe_tensor *images,
                           const smoe_tensor *patches, smoe_err *err)
{
    const char *op = "im2col";
    if (P <= 0 || b < 0 || c < 0 || H < 0 || W < 0)
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "%s: bad shape b %d c %d H %d W %d P %d", op, b, c, H, W, P);
    uint64_t n = (uint64_t)b * (uint64_t)(H / P) * (uint64_t)(W / P) * (uint64_t)c * (uint64_t)P * (uint64_t)P;
    smoe_status st;
    if ((st = need(images, (uint64_t)b * c * H * W, op, "images", err)) || (st = need(patches, n, op, "patches", err)) ||
        (st = fits32((uint64_t)b * c * H * W, op, err)))
        return st;
    if (!ex->gpu) {
        if ((st = host_check(images, op, "images", err)) || (st = host_check(patches, op, "patches", err))) return st;
        smoe_cpu_im2col(b, c, H, W, P, host(images), host(patches));
        return SMOE_OK;
    }
    smoe_program *p = ex->prog;
    uint32_t spec[3] = {elem_wg(p->gpu), 1, 1};
    uint32_t groups[3];
    smoe_grid(p->gpu, smoe_div_up(n, spec[0]), 1, groups);
    smoe_push_im2col pc = {(uint32_t)n, (uint32_t)c, (uint32_t)H, (uint32_t)W, (uint32_t)P, groups[0]};
    smoe_binding bd[2] = {{*images, SMOE_READ}, {*patches, SMOE_WRITE}};
    return smoe_record(p, SMOE_K_IM2COL, spec, bd, pc, groups, err);
}

/* ---- LayerNorm ---- */

#define LN_EPS 1e-6f

smoe_status smoe_op_layernorm_forward(smoe_exec *ex, int rows, int d, const smoe_tensor *x, const smoe_tensor *gamma,
                                      const smoe_tensor *beta, const smoe_tensor *y, const smoe_tensor *mean,
                                      const smoe_tensor *rstd, smoe_err *err)
{
    const char *op = "layernorm forward";
    uint64_t R = (uint64_t)rows, D = (uint64_t)d;
    smoe_status st;
    if ((st = need(x, R * D, op, "x", err)) || (st = need(gamma, D, op, "gamma", err)) || (st = need(beta, D, op, "beta", err)) ||
        (st = need(y, R * D, op, "y", err)) || (st = need(mean, R, op, "mean", err)) || (st = need(rstd, R, op, "rstd", err)) ||
        (st = fits32(R * D, op, err)))
        return st;
    if (!ex->gpu) {
        const smoe_tensor *all[6] = {x, gamma, beta, y, mean, rstd};
        for (int i = 0; i < 6; i++)
            if ((st = host_check(all[i], op, "argument", err))) return st;
        smoe_cpu_layernorm_forward(rows, d, host(x), host(gamma), host(beta), host(y), host(mean), host(rstd));
        return SMOE_OK;
    }
    smoe_binding b[6] = {{*x, SMOE_READ},  {*gamma, SMOE_READ}, {*beta, SMOE_READ},
                         {*y, SMOE_WRITE}, {*mean, SMOE_WRITE}, {*rstd, SMOE_WRITE}};
    return record_rows(ex->prog, SMOE_K_LAYERNORM, b, SMOE_LEN(b), (uint32_t)rows, (uint32_t)d, LN_EPS, NULL, 0, err);
}

smoe_status smoe_op_layernorm_backward(smoe_exec *ex, int rows, int d, const smoe_tensor *x, const smoe_tensor *gamma,
                                       const smoe_tensor *mean, const smoe_tensor *rstd, const smoe_tensor *dy,
                                       const smoe_tensor *dx, const smoe_tensor *dgamma, const smoe_tensor *dbeta,
                                       smoe_err *err)
{
    const char *op = "layernorm backward";
    uint64_t R = (uint64_t)rows, D = (uint64_t)d;
    smoe_status st;
    if ((st = need(x, R * D, op, "x", err)) || (st = need(gamma, D, op, "gamma", err)) || (st = need(mean, R, op, "mean", err)) ||
        (st = need(rstd, R, op, "rstd", err)) || (st = need(dy, R * D, op, "dy", err)) || (st = need(dx, R * D, op, "dx", err)) ||
        (st = need(dgamma, D, op, "dgamma", err)) || (st = need(dbeta, D, op, "dbeta", err)) || (st = fits32(R * D, op, err)))
        return st;
    if (!ex->gpu) {
        const smoe_tensor *all[8] = {x, gamma, mean, rstd, dy, dx, dgamma, dbeta};
        for (int i = 0; i < 8; i++)
            if ((st = host_check(all[i], op, "argument", err))) return st;
        smoe_cpu_layernorm_backward(rows, d, host(x), host(gamma), host(mean), host(rstd), host(dy), host(dx), host(dgamma),
                                    host(dbeta));
        return SMOE_OK;
    }
    smoe_program *p = ex->prog;
    smoe_binding bx[6] = {{*x, SMOE_READ},    {*gamma, SMOE_READ}, {*mean, SMOE_READ},
                          {*rstd, SMOE_READ}, {*dy, SMOE_READ},    {*dx, SMOE_WRITE}};
    if ((st = record_rows(p, SMOE_K_LAYERNORM_BWD, bx, SMOE_LEN(bx),
                           (uint32_t)rows, (uint32_t)d, LN_EPS, NULL, 0, err)))
        return st;
    uint32_t spec[3];
    col_wg(p->gpu, spec);
    uint32_t groups[3];
    smoe_grid(p->gpu, smoe_div_up((uint64_t)d, spec[0]), 1, groups);
    smoe_push_rows pc = {(uint32_t)rows, (uint32_t)d, groups[0], 0.0f};
    smoe_binding bp[6] = {{*x, SMOE_READ}, {*mean, SMOE_READ},      {*rstd, SMOE_READ},
                          {*dy, SMOE_READ}, {*dgamma, SMOE_WRITE}, {*dbeta, SMOE_WRITE}};
    return smoe_record(p, SMOE_K_LAYERNORM_PARAMS_BWD, spec, bp, pc, groups, err);
}

/* ---- Attention ---- */

/* Head h of a [b, T, ld] tensor at column base col: operand with batch = the b sequences. */
static smoe_mm_operand head(const smoe_tensor *t, uint32_t col, uint32_t ld, uint32_t T)
{
    return operand(t, col, ld, T * ld);
}

static smoe_status attention_check(const char *op, int b, int T, int dim, int heads, smoe_err *err)
{
    if (b < 0 || T < 0 || dim < 0 || heads <= 0 || dim % heads)
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "%s: dim %d is not a multiple of heads %d", op, dim, heads);
    return SMOE_OK;
}

smoe_status smoe_op_attention_forward(smoe_exec *ex, int b, int T, int dim, int heads, const smoe_tensor *qkv,
                                      const smoe_tensor *att, const smoe_tensor *out, smoe_err *err)
{
    const char *op = "attention forward";
    smoe_status st;
    if ((st = attention_check(op, b, T, dim, heads, err))) return st;
    uint64_t B = (uint64_t)b, TT = (uint64_t)T, D = (uint64_t)dim, NH = (uint64_t)heads;
    if ((st = need(qkv, B * TT * 3 * D, op, "qkv", err)) || (st = need(att, B * NH * TT * TT, op, "att", err)) ||
        (st = need(out, B * TT * D, op, "out", err)) || (st = fits32(B * TT * 3 * D, op, err)) ||
        (st = fits32(B * NH * TT * TT, op, err)))
        return st;
    if (!ex->gpu) {
        if ((st = host_check(qkv, op, "qkv", err)) || (st = host_check(att, op, "att", err)) ||
            (st = host_check(out, op, "out", err)))
            return st;
        smoe_cpu_attention_forward(b, T, dim, heads, host(qkv), host(att), host(out));
        return SMOE_OK;
    }
    smoe_program *p = ex->prog;
    uint32_t t = (uint32_t)T, d = (uint32_t)dim, nh = (uint32_t)heads, hd = d / nh, ld = 3 * d;
    float scale = 1.0f / sqrtf((float)hd);
    /* S_h = Q_h K_h^T / sqrt(hd) for every sequence; one dispatch per head */
    for (uint32_t h = 0; h < nh; h++) {
        smoe_matmul mm = {
            .M = t, .N = t, .K = hd, .batch = (uint32_t)b, .trans_b = 1,
            .a = head(qkv, h * hd, ld, t), .b = head(qkv, d + h * hd, ld, t),
            .c = operand(att, h * t * t, t, nh * t * t), .alpha = scale,
        };
        if ((st = smoe_record_matmul(p, &mm, err))) return st;
    }
    /* P = softmax over every row of every head */
    smoe_binding bs[1] = {{*att, SMOE_READ_WRITE}};
    if ((st = record_rows(p, SMOE_K_SOFTMAX_ROWS, bs, SMOE_LEN(bs), (uint32_t)(B * NH * TT), t, 0.0f, NULL, 0, err))) return st;
    /* out_h = P_h V_h */
    for (uint32_t h = 0; h < nh; h++) {
        smoe_matmul mm = {
            .M = t, .N = hd, .K = t, .batch = (uint32_t)b,
            .a = operand(att, h * t * t, t, nh * t * t), .b = head(qkv, 2 * d + h * hd, ld, t),
            .c = head(out, h * hd, d, t),
        };
        if ((st = smoe_record_matmul(p, &mm, err))) return st;
    }
    return SMOE_OK;
}

smoe_status smoe_op_attention_backward(smoe_exec *ex, int b, int T, int dim, int heads, const smoe_tensor *qkv,
                                       const smoe_tensor *att, const smoe_tensor *dout, const smoe_tensor *datt,
                                       const smoe_tensor *dqkv, smoe_err *err)
{
    const char *op = "attention backward";
    smoe_status st;
    if ((st = attention_check(op, b, T, dim, heads, err))) return st;
    uint64_t B = (uint64_t)b, TT = (uint64_t)T, D = (uint64_t)dim, NH = (uint64_t)heads;
    if ((st = need(qkv, B * TT * 3 * D, op, "qkv", err)) || (st = need(att, B * NH * TT * TT, op, "att", err)) ||
        (st = need(dout, B * TT * D, op, "dout", err)) || (st = need(datt, B * NH * TT * TT, op, "datt", err)) ||
        (st = need(dqkv, B * TT * 3 * D, op, "dqkv", err)) || (st = fits32(B * TT * 3 * D, op, err)) ||
        (st = fits32(B * NH * TT * TT, op, err)))
        return st;
    if (!ex->gpu) {
        if ((st = host_check(qkv, op, "qkv", err)) || (st = host_check(att, op, "att", err)) ||
            (st = host_check(dout, op, "dout", err)) || (st = host_check(dqkv, op, "dqkv", err)))
            return st;
        smoe_cpu_attention_backward(b, T, dim, heads, host(qkv), host(att), host(dout), host(dqkv));
        return SMOE_OK;
    }
    smoe_program *p = ex->prog;
    uint32_t t = (uint32_t)T, d = (uint32_t)dim, nh = (uint32_t)heads, hd = d / nh, ld = 3 * d, bb = (uint32_t)b;
    float scale = 1.0f / sqrtf((float)hd);
    for (uint32_t h = 0; h < nh; h++) {
        /* dP_h = dout_h V_h^T */
        smoe_matmul mm = {
            .M = t, .N = t, .K = hd, .batch = bb, .trans_b = 1,
            .a = head(dout, h * hd, d, t), .b = head(qkv, 2 * d + h * hd, ld, t),
            .c = operand(datt, h * t * t, t, nh * t * t),
        };
        if ((st = smoe_record_matmul(p, &mm, err))) return st;
        /* dV_h = P_h^T dout_h */
        mm = (smoe_matmul){
            .M = t, .N = hd, .K = t, .batch = bb, .trans_a = 1,
            .a = operand(att, h * t * t, t, nh * t * t), .b = head(dout, h * hd, d, t),
            .c = head(dqkv, 2 * d + h * hd, ld, t),
        };
        if ((st = smoe_record_matmul(p, &mm, err))) return st;
    }
    /* dS = P * (dP - rowsum(dP * P)), in place */
    smoe_binding bs[2] = {{*att, SMOE_READ}, {*datt, SMOE_READ_WRITE}};
    if ((st = record_rows(p, SMOE_K_SOFTMAX_ROWS_BWD, bs, SMOE_LEN(bs), (uint32_t)(B * NH * TT), t, 0.0f, NULL, 0, err))) return st;
    for (uint32_t h = 0; h < nh; h++) {
        /* dQ_h = dS_h K_h / sqrt(hd) */
        smoe_matmul mm = {
            .M = t, .N = hd, .K = t, .batch = bb,
            .a = operand(datt, h * t * t, t, nh * t * t), .b = head(qkv, d + h * hd, ld, t),
            .c = head(dqkv, h * hd, ld, t), .alpha = scale,
        };
        if ((st = smoe_record_matmul(p, &mm, err))) return st;
        /* dK_h = dS_h^T Q_h / sqrt(hd) */
        mm = (smoe_matmul){
            .M = t, .N = hd, .K = t, .batch = bb, .trans_a = 1,
            .a = operand(datt, h * t * t, t, nh * t * t), .b = head(qkv, h * hd, ld, t),
            .c = head(dqkv, d + h * hd, ld, t), .alpha = scale,
        };
        if ((st = smoe_record_matmul(p, &mm, err))) return st;
    }
    return SMOE_OK;
}

/* ---- Additions, sums, pooling ---- */

smoe_status smoe_op_add(smoe_exec *ex, size_t n, const smoe_tensor *x, const smoe_tensor *y, smoe_err *err)
{
    const char *op = "add";
    smoe_status st;
    if ((st = need(x, n, op, "x", err)) || (st = need(y, n, op, "y", err)) || (st = fits32(n, op, err))) return st;
    if (!ex->gpu) {
        if ((st = host_check(x, op, "x", err)) || (st = host_check(y, op, "y", err))) return st;
        const float *xs = host(x);
        float *ys = host(y);
        for (size_t i = 0; i < n; i++) ys[i] += xs[i];
        return SMOE_OK;
    }
    return smoe_record_bcast(ex->prog, x, y, (uint32_t)n, 1, (uint32_t)(n ? n : 1), 1.0f, 1, err);
}

smoe_status smoe_op_add_broadcast(smoe_exec *ex, int b, size_t n, const smoe_tensor *x, const smoe_tensor *y,
                                  smoe_err *err)
{
    const char *op = "add broadcast";
    uint64_t total = (uint64_t)b * n;
    smoe_status st;
    if ((st = need(x, n, op, "x", err)) || (st = need(y, total, op, "y", err)) || (st = fits32(total, op, err))) return st;
    if (!ex->gpu) {
        if ((st = host_check(x, op, "x", err)) || (st = host_check(y, op, "y", err))) return st;
        const float *xs = host(x);
        float *ys = host(y);
        for (int i = 0; i < b; i++)
            for (size_t j = 0; j < n; j++) ys[(size_t)i * n + j] += xs[j];
        return SMOE_OK;
    }
    return smoe_record_bcast(ex->prog, x, y, (uint32_t)total, (uint32_t)b, (uint32_t)(n ? n : 1), 1.0f, 1, err);
}

smoe_status smoe_op_sum_rows(smoe_exec *ex, int b, size_t n, const smoe_tensor *x, const smoe_tensor *y, smoe_err *err)
{
    const char *op = "sum rows";
    uint64_t total = (uint64_t)b * n;
    smoe_status st;
    if ((st = need(x, total, op, "x", err)) || (st = need(y, n, op, "y", err)) || (st = fits32(total, op, err))) return st;
    if (!ex->gpu) {
        if ((st = host_check(x, op, "x", err)) || (st = host_check(y, op, "y", err))) return st;
        const float *xs = host(x);
        float *ys = host(y);
        for (size_t j = 0; j < n; j++) ys[j] = 0.0f;
        for (int i = 0; i < b; i++)
            for (size_t j = 0; j < n; j++) ys[j] += xs[(size_t)i * n + j];
        return SMOE_OK;
    }
    return smoe_record_sum_rows(ex->prog, x, y, (uint32_t)b, (uint32_t)n, 1, 1.0f, err);
}

smoe_status smoe_op_meanpool_forward(smoe_exec *ex, int b, int T, int d, const smoe_tensor *x, const smoe_tensor *y,
                                     smoe_err *err)
{
    const char *op = "meanpool forward";
    uint64_t B = (uint64_t)b, TT = (uint64_t)T, D = (uint64_t)d;
    smoe_status st;
    if ((st = need(x, B * TT * D, op, "x", err)) || (st = need(y, B * D, op, "y", err)) || (st = fits32(B * TT * D, op, err)))
        return st;
    if (!ex->gpu) {
        if ((st = host_check(x, op, "x", err)) || (st = host_check(y, op, "y", err))) return st;
        smoe_cpu_meanpool_forward(b, T, d, host(x), host(y));
        return SMOE_OK;
    }
    return smoe_record_sum_rows(ex->prog, x, y, (uint32_t)T, (uint32_t)d, (uint32_t)b, T ? 1.0f / (float)T : 0.0f, err);
}

smoe_status smoe_op_meanpool_backward(smoe_exec *ex, int b, int T, int d, const smoe_tensor *dy,
                                      const smoe_tensor *dx, smoe_err *err)
{
    const char *op = "meanpool backward";
    uint64_t B = (uint64_t)b, TT = (uint64_t)T, D = (uint64_t)d;
    smoe_status st;
    if ((st = need(dy, B * D, op, "dy", err)) || (st = need(dx, B * TT * D, op, "dx", err)) ||
        (st = fits32(B * TT * D, op, err)))
        return st;
    if (!ex->gpu) {
        if ((st = host_check(dy, op, "dy", err)) || (st = host_check(dx, op, "dx", err))) return st;
        smoe_cpu_meanpool_backward(b, T, d, host(dy), host(dx));
        return SMOE_OK;
    }
    if (!T || !d) return SMOE_OK;
    return smoe_record_bcast(ex->prog, dy, dx, (uint32_t)(B * TT * D), (uint32_t)T, (uint32_t)d, 1.0f / (float)T, 0, err);
}

/* ---- Loss ---- */

smoe_status smoe_op_cross_entropy(smoe_exec *ex, int b, int classes, const smoe_tensor *logits,
                                  const smoe_tensor *labels, const smoe_tensor *probs, const smoe_tensor *losses,
                                  const smoe_tensor *loss, const smoe_tensor *dlogits, smoe_err *err)
{
    const char *op = "cross entropy";
    uint64_t B = (uint64_t)b, C = (uint64_t)classes;
    smoe_status st;
    if ((st = need(logits, B * C, op, "logits", err)) || (st = need(labels, B, op, "labels", err)) ||
        (st = need(probs, B * C, op, "probs", err)) || (st = need(losses, B, op, "losses", err)) ||
        (st = need(loss, 1, op, "loss", err)) || (dlogits && (st = need(dlogits, B * C, op, "dlogits", err))) ||
        (st = fits32(B * C, op, err)))
        return st;
    if (!ex->gpu) {
        const smoe_tensor *all[6] = {logits, labels, probs, losses, loss, dlogits};
        for (int i = 0; i < 6; i++)
            if ((st = host_check(all[i], op, "argument", err))) return st;
        const int32_t *lab = (const int32_t *)smoe_tensor_host(labels);
        for (int i = 0; i < b; i++)
            if (lab[i] < 0 || lab[i] >= classes)
                return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "%s: label %d of example %d is not in [0, %d)", op, lab[i], i,
                                 classes);
        host(loss)[0] = smoe_cpu_cross_entropy_forward(b, classes, host(logits), lab, host(probs));
        if (dlogits) smoe_cpu_cross_entropy_backward(b, classes, host(probs), lab, host(dlogits));
        return SMOE_OK;
    }
    smoe_program *p = ex->prog;
    uint32_t has_d = dlogits != NULL;
    /* without dlogits, binding 4 is given probs (written by this dispatch anyway: no new hazard) */
    smoe_binding bd[5] = {
        {*logits, SMOE_READ}, {*labels, SMOE_READ}, {*probs, SMOE_WRITE}, {*losses, SMOE_WRITE},
        {dlogits ? *dlogits : *probs, dlogits ? SMOE_WRITE : SMOE_READ},
    };
    float inv_b = b ? 1.0f / (float)b : 0.0f;
    if ((st = record_rows(p, SMOE_K_CROSS_ENTROPY, bd, SMOE_LEN(bd),
                           (uint32_t)b, (uint32_t)classes, inv_b, &has_d, 1, err)))
        return st;
    return smoe_record_sum_rows(p, losses, loss, (uint32_t)b, 1, 1, inv_b, err);
}

/* ---- Gradient norm ---- */

/* Level-0 workgroups for a tensor of n floats, and its segment of the partials (padded so that
 * every segment starts at a storage-buffer offset the device accepts: the dispatches of the
 * tensors write disjoint bindings and need no barriers between them). */
static uint32_t sumsq_groups(uint64_t n, uint32_t wg)
{
    uint64_t g = (n + (uint64_t)wg * 4 - 1) / ((uint64_t)wg * 4);
    return (uint32_t)(g < SUMSQ_GROUPS ? g : SUMSQ_GROUPS);
}

static uint64_t sumsq_align(const smoe_gpu *gpu)
{
    uint64_t a = gpu->info.min_storage_buffer_offset_alignment;
    if (a < 16) a = 16;
    return a / 4; /* floats */
}

static uint64_t sumsq_segment(uint64_t n, const smoe_gpu *gpu)
{
    uint64_t g = sumsq_groups(n, elem_wg(gpu)), a = sumsq_align(gpu);
    return (g + a - 1) / a * a;
}

size_t smoe_op_sum_squares_scratch(int count, const smoe_tensor *tensors)
{
    const smoe_gpu *gpu = NULL;
    for (int i = 0; i < count && !gpu; i++)
        if (tensors[i].arena) gpu = tensors[i].arena->gpu;
    if (!gpu) return 1; /* the CPU path needs none */
    uint64_t total = 0;
    for (int i = 0; i < count; i++) total += sumsq_segment(tensors[i].bytes / 4, gpu);
    return (size_t)(total ? total : 1);
}

smoe_status smoe_op_sum_squares(smoe_exec *ex, int count, const smoe_tensor *tensors, const smoe_tensor *partial,
                                const smoe_tensor *out, smoe_err *err)
{
    const char *op = "sum of squares";
    smoe_status st;
    if ((st = need(out, 1, op, "out", err))) return st;
    if (!ex->gpu) {
        if ((st = host_check(out, op, "out", err))) return st;
        double s = 0;
        for (int i = 0; i < count; i++) {
            if ((st = host_check(&tensors[i], op, "input", err))) return st;
            s += smoe_cpu_sum_squares(tensors[i].bytes / 4, host(&tensors[i]));
        }
        host(out)[0] = (float)s;
        return SMOE_OK;
    }
    smoe_program *p = ex->prog;
    uint64_t total = 0;
    for (int i = 0; i < count; i++) {
        if ((st = fits32(tensors[i].bytes / 4, op, err))) return st;
        total += sumsq_segment(tensors[i].bytes / 4, p->gpu);
    }
    if ((st = need(partial, total, op, "partial", err)) || (st = fits32(total, op, err))) return st;
    uint32_t wg = elem_wg(p->gpu);
    uint32_t spec0[4] = {wg, 1, 1, 0}, spec1[4] = {wg, 1, 1, 1}; /* level 0, level 1 */
    uint64_t off = 0;
    for (int i = 0; i < count; i++) {
        uint64_t n = tensors[i].bytes / 4, seg = sumsq_segment(n, p->gpu);
        if (!seg) continue;
        smoe_tensor part = *partial;
        part.offset += off * 4;
        part.bytes = seg * 4;
        smoe_push_sumsq pc = {(uint32_t)n, (uint32_t)seg};
        uint32_t groups[3] = {sumsq_groups(n, wg), 1, 1};
        smoe_binding b[2] = {{tensors[i], SMOE_READ}, {part, SMOE_WRITE}};
        if (groups[0] && (st = smoe_record(p, SMOE_K_SUM_SQUARES, spec0, b, pc, groups, err))) return st;
        off += seg;
    }
    smoe_push_sumsq pc = {(uint32_t)total, 0};
    uint32_t groups[3] = {1, 1, 1};
    smoe_tensor whole = *partial;
    if (total) whole.bytes = total * 4;
    smoe_binding b[2] = {{whole, SMOE_READ}, {*out, SMOE_WRITE}};
    return smoe_record(p, SMOE_K_SUM_SQUARES, spec1, b, pc, groups, err);
}

/* ---- Optimizer ---- */

smoe_status smoe_op_adamw(smoe_exec *ex, size_t n, const smoe_tensor *p, const smoe_tensor *g, const smoe_tensor *m,
                          const smoe_tensor *v, const smoe_tensor *state, const smoe_tensor *norm2,
                          const smoe_adamw_cfg *cfg, smoe_err *err)
{
    const char *op = "adamw";
    smoe_status st;
    if ((st = need(p, n, op, "p", err)) || (st = need(g, n, op, "g", err)) || (st = need(m, n, op, "m", err)) ||
        (st = need(v, n, op, "v", err)) || (st = need(state, 2, op, "state", err)) || (st = need(norm2, 1, op, "norm2", err)) ||
        (st = fits32(n, op, err)))
        return st;
    if (!ex->gpu) {
        const smoe_tensor *all[6] = {p, g, m, v, state, norm2};
        for (int i = 0; i < 6; i++)
            if ((st = host_check(all[i], op, "argument", err))) return st;
        const float *s = host(state);
        float scale = 1.0f;
        if (cfg->max_norm > 0) {
            float q = cfg->max_norm / (sqrtf(host(norm2)[0]) + 1e-6f);
            scale = q < 1.0f ? q : 1.0f;
        }
        smoe_cpu_adamw(n, host(p), host(g), host(m), host(v), s[1] * (cfg->lr_mult > 0 ? cfg->lr_mult : 1.0f), cfg->beta1, cfg->beta2, cfg->eps, cfg->wd, scale,
                       (int)s[0]);
        return SMOE_OK;
    }
    smoe_program *pr = ex->prog;
    uint32_t spec[3] = {elem_wg(pr->gpu), 1, 1};
    uint32_t groups[3];
    smoe_grid(pr->gpu, smoe_div_up(n, spec[0]), 1, groups);
    smoe_push_adamw pc = {(uint32_t)n, cfg->beta1, cfg->beta2, cfg->eps, cfg->wd, cfg->max_norm, groups[0],
                          cfg->lr_mult > 0 ? cfg->lr_mult : 1.0f};
    smoe_binding b[6] = {{*p, SMOE_READ_WRITE}, {*g, SMOE_READ},     {*m, SMOE_READ_WRITE},
                         {*v, SMOE_READ_WRITE}, {*state, SMOE_READ}, {*norm2, SMOE_READ}};
    return smoe_record(pr, SMOE_K_ADAMW, spec, b, pc, groups, err);
}
