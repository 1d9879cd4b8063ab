/* The matmul family: tile table and recording. */
#include "ops/matmul.h"

#include <string.h>

#include "common/interface.h"

/* Tile shapes, best first. A row is usable when its shared-memory tiles and its invocation
 * count fit the device; among usable rows the first whose BM does not exceed the (rounded-up)
 * row count is taken, so that skinny products (the few rows routed to an expert) do not waste a
 * 64-row tile. */
typedef struct tile_row {
    uint32_t bm, bn, bk, tm, tn;
} tile_row;

static const tile_row tiles[] = {
    {64, 64, 16, 4, 4}, /* 256 invocations, 8 KiB shared */
    {32, 64, 16, 2, 4}, /* 256 invocations, 6 KiB */
    {16, 64, 16, 1, 4}, /* 256 invocations, 5 KiB */
    {8, 64, 16, 1, 4},  /* 128 invocations */
    {16, 16, 8, 1, 1},  /* 256 invocations, 1 KiB: any Vulkan device */
};

void smoe_matmul_tile(const smoe_gpu *gpu, uint32_t M, uint32_t N, uint32_t tile[5])
{
    (void)N;
    const tile_row *pick = &tiles[sizeof tiles / sizeof tiles[0] - 1];
    for (size_t i = 0; i < sizeof tiles / sizeof tiles[0]; i++) {
        const tile_row *t = &tiles[i];
        uint32_t threads = (t->bm / t->tm) * (t->bn / t->tn);
        uint32_t shared = (t->bm + t->bn) * t->bk * 4;
        if (threads > gpu->info.max_workgroup_invocations || threads > gpu->info.max_workgroup_size[0] ||
            shared > gpu->info.max_shared_memory)
            continue;
        pick = t;
        if (t->bm <= M || t->bm <= 8) break;
    }
    tile[0] = pick->bm;
    tile[1] = pick->bn;
    tile[2] = pick->bk;
    tile[3] = pick->tm;
    tile[4] = pick->tn;
}

smoe_status smoe_record_matmul(smoe_program *p, const smoe_matmul *mm, smoe_err *err)
{
    if (!mm->M || !mm->N || !mm->batch) return SMOE_OK;
    uint32_t tile[5];
    smoe_matmul_tile(p->gpu, mm->tile_m ? mm->tile_m : mm->M, mm->N, tile);
    uint32_t threads = (tile[0] / tile[3]) * (tile[1] / tile[4]);
    uint32_t spec[SMOE_MM_SPEC_COUNT] = {0};
    spec[0] = threads;
    spec[1] = 1;
    spec[2] = 1;
    spec[SMOE_MM_TRANS_A] = mm->trans_a != 0;
    spec[SMOE_MM_TRANS_B] = mm->trans_b != 0;
    spec[SMOE_MM_BM] = tile[0];
    spec[SMOE_MM_BN] = tile[1];
    spec[SMOE_MM_BK] = tile[2];
    spec[SMOE_MM_TM] = tile[3];
    spec[SMOE_MM_TN] = tile[4];
    spec[SMOE_MM_A_XFORM] = mm->a_xform;
    spec[SMOE_MM_B_XFORM] = mm->b_xform;
    spec[SMOE_MM_EPI] = mm->epi;
    spec[SMOE_MM_GATHER] = mm->gather;
    const smoe_pipeline *pl;
    smoe_status st = smoe_pipeline_get(p->gpu, "matmul", 10, sizeof(smoe_push_matmul), spec, SMOE_MM_SPEC_COUNT, &pl, err);
    if (st) return st;
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
    smoe_binding b[10] = {
        {mm->a.t, SMOE_READ},
        {mm->b.t, SMOE_READ},
        {mm->c.t, (mm->epi & SMOE_EPI_ACCUMULATE) ? SMOE_READ_WRITE : SMOE_WRITE},
        {(mm->epi & SMOE_EPI_BIAS) ? mm->bias : unused, SMOE_READ},
        {(mm->epi & SMOE_EPI_GELU_GRAD) ? mm->aux : unused, SMOE_READ},
        {(mm->a_xform == SMOE_XFORM_EXP_COL || mm->a_xform == SMOE_XFORM_EXP_ROW) ? mm->stat : unused, SMOE_READ},
        {(mm->epi & SMOE_EPI_ROWSCALE) ? mm->rowscale : unused, SMOE_READ},
        {(mm->epi & SMOE_EPI_COLSCALE) ? mm->colscale : unused, SMOE_READ},
        {((mm->epi & SMOE_EPI_SCALAR) || mm->a_xform == SMOE_XFORM_EXP_COL || mm->a_xform == SMOE_XFORM_EXP_ROW)
             ? mm->scalar
             : unused,
         SMOE_READ},
        {mm->gather ? mm->idx : unused, SMOE_READ},
    };
    uint32_t groups[3] = {smoe_div_up(mm->N, tile[1]), smoe_div_up(mm->M, tile[0]), mm->batch};
    return smoe_program_dispatch(p, pl, b, 10, &pc, sizeof pc, groups, err);
}
