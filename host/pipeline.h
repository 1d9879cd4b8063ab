/* Compute pipelines from the SPIR-V embedded at build time, specialised by constants, cached per
 * device (and in a VkPipelineCache).
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

typedef struct smoe_shader_blob {
    const char *name;
    const uint32_t *code;
    size_t size; /* bytes */
} smoe_shader_blob;

/* Generated at build time from shaders/ (embed_shaders.cmake). */
extern const smoe_shader_blob smoe_shader_blobs[];
extern const size_t smoe_shader_blob_count;
const smoe_shader_blob *smoe_shader_find(const char *name);

typedef struct smoe_pipeline {
    const smoe_shader_blob *shader;
    uint32_t spec[SMOE_MAX_SPEC];
    uint32_t spec_count;
    uint32_t bindings;
    uint32_t texel_mask; /* bit i: binding i is a uniform texel buffer (samplerBuffer), else a storage buffer */
    uint32_t push_size;
    VkDescriptorSetLayout set_layout;
    VkPipelineLayout layout;
    VkPipeline pipeline;
} smoe_pipeline;

/* The pipeline of shader with spec[0..spec_count) (spec[0..2] the workgroup size), created on
 * first use. The pointer stays valid until the gpu is destroyed. */
smoe_status smoe_pipeline_get(smoe_gpu *gpu, const char *shader, uint32_t bindings, uint32_t push_size,
                              const uint32_t *spec, uint32_t spec_count, const smoe_pipeline **out, smoe_err *err);
/* The same for a shader whose bindings in texel_mask are uniform texel buffers. */
smoe_status smoe_pipeline_get_texel(smoe_gpu *gpu, const char *shader, uint32_t bindings, uint32_t texel_mask,
                                    uint32_t push_size, const uint32_t *spec, uint32_t spec_count,
                                    const smoe_pipeline **out, smoe_err *err);

smoe_status smoe_pipeline_cache_create(smoe_gpu *gpu, smoe_err *err);
void smoe_pipeline_cache_destroy(smoe_gpu *gpu);

#endif
