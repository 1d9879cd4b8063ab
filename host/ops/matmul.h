/* Recording the matmul family. Every matmul of the Soft MoE layer and the ViT is described by an
 * smoe_matmul and recorded with smoe_record_matmul, which chooses among the family's variants
 * (matmul.c: a table filtered by the device's capability record, and autotuning). */
#ifndef SMOE_OPS_MATMUL_H
#define SMOE_OPS_MATMUL_H

#include "record.h"

#define SMOE_NO_GROUP 0xffffffffu

/* A stored matrix operand: element (r, c) of batch z at
 * off + z*bs + (r / g)*gs + (r % g)*ld + c, in floats from the tensor's start. */
typedef struct smoe_mm_operand {
    smoe_tensor t;
    uint32_t off, ld, bs, g, gs;
} smoe_mm_operand;

/* A plain row-major [rows x ld] matrix per batch with batch stride bs. */
static inline smoe_mm_operand smoe_mm_plain(smoe_tensor t, uint32_t ld, uint32_t bs)
{
    smoe_mm_operand o = {t, 0, ld, bs, SMOE_NO_GROUP, 0};
    return o;
}

typedef struct smoe_matmul {
    uint32_t M, N, K, batch;
    int trans_a, trans_b;          /* A stored K x M, B stored N x K */
    smoe_mm_operand a, b, c;
    uint32_t a_xform, b_xform;     /* SMOE_XFORM_* */
    uint32_t epi;                  /* SMOE_EPI_* */
    float alpha;                   /* 0 means 1 */
    smoe_tensor bias, aux, stat, rowscale, colscale, scalar, gelu_out; /* as the flags need them */
    uint32_t bias_bs, stat_bs, rs_bs, cs_bs;
    /* SMOE_GATHER_*: rows or columns through the uint index tensor idx (see interface.h) */
    uint32_t gather, idx_off, idx_bs;
    smoe_tensor idx;
    uint32_t tile_m; /* the rows to pick the tile for, when fewer than M are expected (0: M) */
} smoe_matmul;

/* Records mm with the variant chosen for it: the one the options force (SOFTMOE_MATMUL_VARIANT,
 * gpu->opts->matmul_variant) where it can run mm, else the one autotuning measured fastest on mm's
 * shape class (when gpu->opts->autotune; measured on first use, kept in tune.h's file), else the
 * table's (matmul.c). */
smoe_status smoe_record_matmul(smoe_program *p, const smoe_matmul *mm, smoe_err *err);
/* As smoe_record_matmul with variant (a name) forced for this product instead of the options'
 * (benchmarks and tests that time or check one variant); NULL: the options' (smoe_record_matmul). */
smoe_status smoe_record_matmul_variant(smoe_program *p, const smoe_matmul *mm, const char *variant, smoe_err *err);

/* The variants (shared-memory tiles: shaders/matmul.comp; register tiles over texel buffers:
 * shaders/matmul_texel.comp), by index: their names, and whether gpu can run them at all. */
uint32_t smoe_matmul_variant_count(void);
const char *smoe_matmul_variant_name(uint32_t i);
int smoe_matmul_variant_usable(const smoe_gpu *gpu, uint32_t i);
/* The shader of variant i: the rows of one shader differ only in their constants. */
const char *smoe_matmul_variant_shader(uint32_t i);
/* The variant smoe_record_matmul_variant(mm, variant) would use now, autotuning aside (NULL: a bad
 * forced name). */
const char *smoe_matmul_choice(smoe_gpu *gpu, const smoe_matmul *mm, const char *variant);

#endif
