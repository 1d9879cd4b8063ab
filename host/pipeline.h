/* Compute pipelines of the kernels (the shaders embedded at build time, with their table),
 * specialised by constants, cached per device (and in a VkPipelineCache).
 * Convention shared by every shader: specialization constants 0, 1, 2 are the workgroup size
 * (local_size_x_id = 0, ...); a shader's own constants start at 3; bindings are storage buffers
 * (or, where a shader says so, uniform texel buffers) 0..n-1 in one descriptor set; push
 * constants are at most 128 bytes. */
#ifndef SMOE_PIPELINE_H
#define SMOE_PIPELINE_H

#include "device.h"

#define SMOE_MAX_SPEC 24
#define SMOE_MAX_BINDINGS 12
#define SMOE_MAX_PUSH 128

/* What the build reads from a kernel's shader (cmake/kernel_table.c writes smoe_kernels[]). */
typedef struct smoe_kernel_desc {
    const char *name;     /* shaders/NAME.comp */
    const uint32_t *code; /* its SPIR-V */
    size_t size;          /* bytes */
    uint32_t bindings;    /* descriptors 0..bindings-1 of set 0 */
    uint32_t texel_mask;  /* bit i: binding i is a uniform texel buffer (textureBuffer), else a storage buffer */
    uint32_t push_size;   /* sizeof its smoe_push_* struct (common/interface.h), 0: no push constants */
    uint32_t spec_count;  /* specialization constants 0..spec_count-1 */
} smoe_kernel_desc;

/* enum smoe_kernel: SMOE_K_NAME for every shaders/NAME.comp, then SMOE_KERNEL_COUNT. Generated at
 * build time, as is the table: adding a kernel takes its shader (the entry appears by itself), its
 * op function recording it (smoe_record, record.h), its CPU kernel (host/cpu/) and its test. */
#include "smoe_kernels.h"

extern const smoe_kernel_desc smoe_kernels[SMOE_KERNEL_COUNT];

typedef struct smoe_pipeline {
    smoe_kernel kernel;
    const smoe_kernel_desc *desc; /* &smoe_kernels[kernel] */
    uint32_t spec[SMOE_MAX_SPEC];
    VkDescriptorSetLayout set_layout;
    VkPipelineLayout layout;
    VkPipeline pipeline;
} smoe_pipeline;

/* The pipeline of kernel k with spec[0..spec_count) (spec[0..2] the workgroup size; spec_count
 * must be the kernel's), created on first use. The pointer stays valid until the gpu is destroyed. */
smoe_status smoe_pipeline_get(smoe_gpu *gpu, smoe_kernel k, const uint32_t *spec, uint32_t spec_count,
                              const smoe_pipeline **out, smoe_err *err);

smoe_status smoe_pipeline_cache_create(smoe_gpu *gpu, smoe_err *err);
void smoe_pipeline_cache_destroy(smoe_gpu *gpu);

#endif
