/* Pipelines and their cache. */
#include "pipeline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "disk_cache.h"

#define CACHE_FILE_MAX (256u << 20)

typedef struct smoe_pipeline_cache {
    smoe_pipeline **items; /* stable pointers: items are allocated one by one */
    size_t count, cap;
    VkShaderModule modules[SMOE_KERNEL_COUNT]; /* created on first use */
    char file[128];          /* the VkPipelineCache's file in the cache directory */
} smoe_pipeline_cache;

/* One file per device, driver version and pipelineCacheUUID (the driver checks its own header too). */
static void cache_file_name(smoe_gpu *gpu, char *out, size_t size)
{
    VkPhysicalDeviceProperties props;
    gpu->vi->fn.vkGetPhysicalDeviceProperties(gpu->physical, &props);
    char uuid[2 * VK_UUID_SIZE + 1];
    for (unsigned i = 0; i < VK_UUID_SIZE; i++) snprintf(uuid + 2 * i, 3, "%02x", props.pipelineCacheUUID[i]);
    snprintf(out, size, "pipelines-%04x-%04x-%08x-%s.bin", props.vendorID, props.deviceID, props.driverVersion, uuid);
}

smoe_status smoe_pipeline_cache_create(smoe_gpu *gpu, smoe_err *err)
{
    gpu->pipelines = calloc(1, sizeof *gpu->pipelines);
    if (!gpu->pipelines) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory creating the pipeline cache");
    /* Started from what an earlier run saved, when there is such a file. */
    cache_file_name(gpu, gpu->pipelines->file, sizeof gpu->pipelines->file);
    size_t size = 0;
    void *data = smoe_cache_read(gpu->opts->cache_dir, gpu->pipelines->file, CACHE_FILE_MAX, &size);
    VkPipelineCacheCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO,
                                    .initialDataSize = data ? size : 0, .pInitialData = data};
    VkResult r = gpu->vk.vkCreatePipelineCache(gpu->device, &ci, NULL, &gpu->pipeline_cache);
    if (r != VK_SUCCESS && data) { /* a file the driver refuses: start empty */
        ci.initialDataSize = 0;
        ci.pInitialData = NULL;
        r = gpu->vk.vkCreatePipelineCache(gpu->device, &ci, NULL, &gpu->pipeline_cache);
    }
    free(data);
    if (r != VK_SUCCESS) {
        gpu->pipeline_cache = VK_NULL_HANDLE; /* pipelines still work without one */
    }
    return SMOE_OK;
}

/* Saves the VkPipelineCache for the next run when this one created pipelines. */
static void cache_save(smoe_gpu *gpu)
{
    if (!gpu->pipeline_cache || !gpu->pipelines || !gpu->pipelines->count) return;
    size_t size = 0;
    if (gpu->vk.vkGetPipelineCacheData(gpu->device, gpu->pipeline_cache, &size, NULL) != VK_SUCCESS || !size ||
        size > CACHE_FILE_MAX)
        return;
    void *data = malloc(size);
    if (data && gpu->vk.vkGetPipelineCacheData(gpu->device, gpu->pipeline_cache, &size, data) == VK_SUCCESS)
        smoe_cache_write(gpu->opts->cache_dir, gpu->pipelines->file, data, size);
    free(data);
}

static void pipeline_free(smoe_gpu *gpu, smoe_pipeline *p)
{
    if (p->pipeline) gpu->vk.vkDestroyPipeline(gpu->device, p->pipeline, NULL);
    if (p->layout) gpu->vk.vkDestroyPipelineLayout(gpu->device, p->layout, NULL);
    if (p->set_layout) gpu->vk.vkDestroyDescriptorSetLayout(gpu->device, p->set_layout, NULL);
    free(p);
}

void smoe_pipeline_cache_destroy(smoe_gpu *gpu)
{
    cache_save(gpu);
    smoe_pipeline_cache *c = gpu->pipelines;
    if (c) {
        for (size_t i = 0; i < c->count; i++) pipeline_free(gpu, c->items[i]);
        for (size_t i = 0; i < SMOE_KERNEL_COUNT; i++)
            if (c->modules[i]) gpu->vk.vkDestroyShaderModule(gpu->device, c->modules[i], NULL);
        free(c->items);
        free(c);
    }
    gpu->pipelines = NULL;
    if (gpu->pipeline_cache) gpu->vk.vkDestroyPipelineCache(gpu->device, gpu->pipeline_cache, NULL);
    gpu->pipeline_cache = VK_NULL_HANDLE;
}

static smoe_status create(smoe_gpu *gpu, smoe_pipeline *p, smoe_err *err)
{
    smoe_pipeline_cache *c = gpu->pipelines;
    const smoe_kernel_desc *k = p->desc;
    size_t si = (size_t)p->kernel;
    VkResult r;
    if (!c->modules[si]) {
        VkShaderModuleCreateInfo mci = {
            .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
            .codeSize = k->size,
            .pCode = k->code,
        };
        r = SMOE_VK(gpu, vkCreateShaderModule, (gpu->device, &mci, NULL, &c->modules[si]));
        if (r != VK_SUCCESS) {
            c->modules[si] = VK_NULL_HANDLE;
            return smoe_gpu_check(gpu, r, "vkCreateShaderModule", err);
        }
    }
    VkDescriptorSetLayoutBinding b[SMOE_MAX_BINDINGS];
    for (uint32_t i = 0; i < k->bindings; i++)
        b[i] = (VkDescriptorSetLayoutBinding){
            .binding = i,
            .descriptorType = (k->texel_mask >> i) & 1 ? VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER
                                                        : VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
            .descriptorCount = 1,
            .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
        };
    VkDescriptorSetLayoutCreateInfo dci = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .bindingCount = k->bindings,
        .pBindings = b,
    };
    r = SMOE_VK(gpu, vkCreateDescriptorSetLayout, (gpu->device, &dci, NULL, &p->set_layout));
    if (r != VK_SUCCESS) p->set_layout = VK_NULL_HANDLE;
    if (r != VK_SUCCESS) return smoe_gpu_check(gpu, r, "vkCreateDescriptorSetLayout", err);
    VkPushConstantRange pr = {.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .offset = 0, .size = k->push_size};
    VkPipelineLayoutCreateInfo lci = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
        .setLayoutCount = 1,
        .pSetLayouts = &p->set_layout,
        .pushConstantRangeCount = k->push_size ? 1 : 0,
        .pPushConstantRanges = &pr,
    };
    r = SMOE_VK(gpu, vkCreatePipelineLayout, (gpu->device, &lci, NULL, &p->layout));
    if (r != VK_SUCCESS) p->layout = VK_NULL_HANDLE;
    if (r != VK_SUCCESS) return smoe_gpu_check(gpu, r, "vkCreatePipelineLayout", err);
    VkSpecializationMapEntry entries[SMOE_MAX_SPEC];
    for (uint32_t i = 0; i < k->spec_count; i++)
        entries[i] = (VkSpecializationMapEntry){.constantID = i, .offset = 4 * i, .size = 4};
    VkSpecializationInfo spec = {
        .mapEntryCount = k->spec_count,
        .pMapEntries = entries,
        .dataSize = 4 * k->spec_count,
        .pData = p->spec,
    };
    VkComputePipelineCreateInfo pci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage =
            {
                .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                .module = c->modules[si],
                .pName = "main",
                .pSpecializationInfo = &spec,
            },
        .layout = p->layout,
    };
    r = SMOE_VK(gpu, vkCreateComputePipelines, (gpu->device, gpu->pipeline_cache, 1, &pci, NULL, &p->pipeline));
    if (r != VK_SUCCESS) {
        p->pipeline = VK_NULL_HANDLE;
        return smoe_gpu_check(gpu, r, "vkCreateComputePipelines", err);
    }
    return SMOE_OK;
}

smoe_status smoe_pipeline_get(smoe_gpu *gpu, smoe_kernel kernel, const uint32_t *spec, uint32_t spec_count,
                              const smoe_pipeline **out, smoe_err *err)
{
    *out = NULL;
    if ((unsigned)kernel >= SMOE_KERNEL_COUNT) return smoe_fail(err, SMOE_ERROR_INTERNAL, "no kernel %d", (int)kernel);
    const smoe_kernel_desc *k = &smoe_kernels[kernel];
    if (spec_count != k->spec_count)
        return smoe_fail(err, SMOE_ERROR_INTERNAL, "kernel \"%s\": %u specialization constants given, %u declared", k->name,
                         spec_count, k->spec_count);
    uint32_t invocations = spec[0] * spec[1] * spec[2];
    if (invocations == 0 || invocations > gpu->info.max_workgroup_invocations || spec[0] > gpu->info.max_workgroup_size[0] ||
        spec[1] > gpu->info.max_workgroup_size[1] || spec[2] > gpu->info.max_workgroup_size[2])
        return smoe_fail(err, SMOE_ERROR_UNSUPPORTED, "kernel \"%s\": workgroup %ux%ux%u exceeds the limits of %s",
                         k->name, spec[0], spec[1], spec[2], gpu->info.name);
    smoe_pipeline_cache *c = gpu->pipelines;
    for (size_t i = 0; i < c->count; i++) {
        smoe_pipeline *p = c->items[i];
        if (p->kernel == kernel && !memcmp(p->spec, spec, 4 * spec_count)) {
            *out = p;
            return SMOE_OK;
        }
    }
    if (c->count == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 16;
        smoe_pipeline **items = realloc(c->items, cap * sizeof *items);
        if (!items) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory caching pipelines");
        c->items = items;
        c->cap = cap;
    }
    smoe_status st = smoe_gpu_alive(gpu, err);
    if (st) return st;
    smoe_pipeline *p = calloc(1, sizeof *p);
    if (!p) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory creating a pipeline");
    p->kernel = kernel;
    p->desc = k;
    memcpy(p->spec, spec, 4 * spec_count);
    st = create(gpu, p, err);
    if (st) {
        pipeline_free(gpu, p);
        return smoe_fail_prefix(err, st, "kernel \"%s\"", k->name);
    }
    c->items[c->count++] = p;
    *out = p;
    return SMOE_OK;
}
