/* Command programs: recording, hazard-tracked barriers, submission. */
#include "record.h"

#include <stdlib.h>
#include <string.h>

#define SETS_PER_POOL 128

static smoe_status new_pool(smoe_program *p, smoe_err *err)
{
    VkDescriptorPool *pools = realloc(p->pools, (p->pool_count + 1) * sizeof *pools);
    if (!pools) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory for descriptor pools");
    p->pools = pools;
    VkDescriptorPoolSize size = {.type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, .descriptorCount = SETS_PER_POOL * SMOE_MAX_BINDINGS};
    VkDescriptorPoolCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
        .maxSets = SETS_PER_POOL,
        .poolSizeCount = 1,
        .pPoolSizes = &size,
    };
    VkResult r = SMOE_VK(p->gpu, vkCreateDescriptorPool, (p->gpu->device, &ci, NULL, &p->pools[p->pool_count]));
    if (r != VK_SUCCESS) return smoe_gpu_check(p->gpu, r, "vkCreateDescriptorPool", err);
    p->pool_count++;
    return SMOE_OK;
}

static smoe_status alloc_set(smoe_program *p, VkDescriptorSetLayout layout, VkDescriptorSet *set, smoe_err *err)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (p->pool_count) {
            VkDescriptorSetAllocateInfo ai = {
                .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                .descriptorPool = p->pools[p->pool_count - 1],
                .descriptorSetCount = 1,
                .pSetLayouts = &layout,
            };
            VkResult r = SMOE_VK(p->gpu, vkAllocateDescriptorSets, (p->gpu->device, &ai, set));
            if (r == VK_SUCCESS) return SMOE_OK;
            if (r != VK_ERROR_OUT_OF_POOL_MEMORY && r != VK_ERROR_FRAGMENTED_POOL)
                return smoe_gpu_check(p->gpu, r, "vkAllocateDescriptorSets", err);
        }
        smoe_status st = new_pool(p, err);
        if (st) return st;
    }
    return smoe_fail(err, SMOE_ERROR_INTERNAL, "a fresh descriptor pool could not hold one set");
}

smoe_status smoe_program_begin(smoe_gpu *gpu, smoe_program *p, smoe_err *err)
{
    memset(p, 0, sizeof *p);
    p->gpu = gpu;
    smoe_status st = smoe_gpu_alive(gpu, err);
    if (st) return st;
    VkCommandBufferAllocateInfo ai = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
        .commandPool = gpu->cmd_pool,
        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
        .commandBufferCount = 1,
    };
    VkResult r = SMOE_VK(gpu, vkAllocateCommandBuffers, (gpu->device, &ai, &p->cb));
    if (r != VK_SUCCESS) {
        p->cb = VK_NULL_HANDLE;
        return smoe_gpu_check(gpu, r, "vkAllocateCommandBuffers", err);
    }
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    r = SMOE_VK(gpu, vkCreateFence, (gpu->device, &fci, NULL, &p->fence));
    if (r != VK_SUCCESS) {
        p->fence = VK_NULL_HANDLE;
        smoe_program_destroy(p);
        return smoe_gpu_check(gpu, r, "vkCreateFence", err);
    }
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    r = SMOE_VK(gpu, vkBeginCommandBuffer, (p->cb, &bi));
    if (r != VK_SUCCESS) {
        smoe_program_destroy(p);
        return smoe_gpu_check(gpu, r, "vkBeginCommandBuffer", err);
    }
    /* Work submitted before this program (uploads, an earlier replay) is ordered before it. */
    VkMemoryBarrier mb = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_HOST_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
    };
    gpu->vk.vkCmdPipelineBarrier(p->cb,
                                 VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT |
                                     VK_PIPELINE_STAGE_HOST_BIT,
                                 VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &mb, 0,
                                 NULL, 0, NULL);
    p->recording = 1;
    return SMOE_OK;
}

static int overlaps(const smoe_range *a, VkBuffer buf, uint64_t begin, uint64_t end)
{
    return a->buffer == buf && a->begin < end && begin < a->end;
}

static void barrier(smoe_program *p)
{
    VkMemoryBarrier mb = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
    };
    p->gpu->vk.vkCmdPipelineBarrier(p->cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                                    VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &mb, 0,
                                    NULL, 0, NULL);
    p->barriers++;
    p->pending_count = 0;
}

static void binding_range(const smoe_binding *b, VkBuffer *buf, uint64_t *lo, uint64_t *hi)
{
    *buf = smoe_tensor_buffer(&b->tensor);
    *lo = b->tensor.offset;
    *hi = *lo + (b->tensor.bytes ? b->tensor.bytes : 4);
}

/* Records a barrier if any binding conflicts with an access since the last barrier (checked for
 * all bindings before any is noted, so that a dispatch never waits on itself), then notes them. */
static smoe_status track_all(smoe_program *p, const smoe_binding *b, uint32_t n, smoe_err *err)
{
    int conflict = 0;
    for (uint32_t i = 0; i < n && !conflict; i++) {
        VkBuffer buf;
        uint64_t lo, hi;
        binding_range(&b[i], &buf, &lo, &hi);
        int w = (b[i].access & SMOE_WRITE) != 0;
        for (size_t j = 0; j < p->pending_count && !conflict; j++)
            conflict = (p->pending[j].write || w) && overlaps(&p->pending[j], buf, lo, hi);
    }
    if (conflict) barrier(p);
    if (p->pending_count + n > p->pending_cap) {
        size_t cap = p->pending_cap ? 2 * p->pending_cap : 32;
        while (cap < p->pending_count + n) cap *= 2;
        smoe_range *r = realloc(p->pending, cap * sizeof *r);
        if (!r) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory recording");
        p->pending = r;
        p->pending_cap = cap;
    }
    for (uint32_t i = 0; i < n; i++) {
        smoe_range *r = &p->pending[p->pending_count++];
        binding_range(&b[i], &r->buffer, &r->begin, &r->end);
        r->write = (b[i].access & SMOE_WRITE) != 0;
    }
    return SMOE_OK;
}

smoe_status smoe_program_dispatch(smoe_program *p, const smoe_pipeline *pl, const smoe_binding *bindings,
                                  uint32_t binding_count, const void *push, uint32_t push_size,
                                  const uint32_t groups[3], smoe_err *err)
{
    if (!p->recording) return smoe_fail(err, SMOE_ERROR_INTERNAL, "dispatch outside recording");
    if (binding_count != pl->bindings || push_size != pl->push_size)
        return smoe_fail(err, SMOE_ERROR_INTERNAL, "shader \"%s\": %u bindings and %u push bytes given, %u and %u declared",
                         pl->shader->name, binding_count, push_size, pl->bindings, pl->push_size);
    for (int i = 0; i < 3; i++)
        if (groups[i] > p->gpu->info.max_workgroup_count[i])
            return smoe_fail(err, SMOE_ERROR_TOO_LARGE, "shader \"%s\": %u workgroups in dimension %d exceed the device's %u",
                             pl->shader->name, groups[i], i, p->gpu->info.max_workgroup_count[i]);
    if (!groups[0] || !groups[1] || !groups[2]) return SMOE_OK; /* nothing to do */
    VkDescriptorSet set;
    smoe_status st = alloc_set(p, pl->set_layout, &set, err);
    if (st) return st;
    VkDescriptorBufferInfo info[SMOE_MAX_BINDINGS];
    VkWriteDescriptorSet w[SMOE_MAX_BINDINGS];
    for (uint32_t i = 0; i < binding_count; i++) {
        const smoe_tensor *t = &bindings[i].tensor;
        info[i] = (VkDescriptorBufferInfo){smoe_tensor_buffer(t), t->offset, t->bytes ? t->bytes : 4};
        w[i] = (VkWriteDescriptorSet){
            .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
            .dstSet = set,
            .dstBinding = i,
            .descriptorCount = 1,
            .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
            .pBufferInfo = &info[i],
        };
    }
    p->gpu->vk.vkUpdateDescriptorSets(p->gpu->device, binding_count, w, 0, NULL);
    st = track_all(p, bindings, binding_count, err);
    if (st) return st;
    p->gpu->vk.vkCmdBindPipeline(p->cb, VK_PIPELINE_BIND_POINT_COMPUTE, pl->pipeline);
    p->gpu->vk.vkCmdBindDescriptorSets(p->cb, VK_PIPELINE_BIND_POINT_COMPUTE, pl->layout, 0, 1, &set, 0, NULL);
    if (push_size) p->gpu->vk.vkCmdPushConstants(p->cb, pl->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, push_size, push);
    p->gpu->vk.vkCmdDispatch(p->cb, groups[0], groups[1], groups[2]);
    p->dispatches++;
    return SMOE_OK;
}

smoe_status smoe_program_fill(smoe_program *p, const smoe_tensor *t, uint32_t pattern, smoe_err *err)
{
    if (!p->recording) return smoe_fail(err, SMOE_ERROR_INTERNAL, "fill outside recording");
    if (t->bytes % 4) return smoe_fail(err, SMOE_ERROR_INTERNAL, "fill of %llu bytes: not a multiple of 4", (unsigned long long)t->bytes);
    if (!t->bytes) return SMOE_OK;
    smoe_binding b = {*t, SMOE_WRITE};
    smoe_status st = track_all(p, &b, 1, err);
    if (st) return st;
    p->gpu->vk.vkCmdFillBuffer(p->cb, smoe_tensor_buffer(t), t->offset, t->bytes, pattern);
    return SMOE_OK;
}

smoe_status smoe_program_end(smoe_program *p, smoe_err *err)
{
    if (!p->recording) return smoe_fail(err, SMOE_ERROR_INTERNAL, "end outside recording");
    /* Results become visible to the host (mapped memory) and to transfers (staged downloads). */
    VkMemoryBarrier mb = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_HOST_READ_BIT | VK_ACCESS_TRANSFER_READ_BIT,
    };
    p->gpu->vk.vkCmdPipelineBarrier(p->cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                                    VK_PIPELINE_STAGE_HOST_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &mb, 0, NULL, 0,
                                    NULL);
    VkResult r = SMOE_VK(p->gpu, vkEndCommandBuffer, (p->cb));
    p->recording = 0;
    free(p->pending);
    p->pending = NULL;
    p->pending_count = p->pending_cap = 0;
    if (r != VK_SUCCESS) return smoe_gpu_check(p->gpu, r, "vkEndCommandBuffer", err);
    return SMOE_OK;
}

smoe_status smoe_program_submit(smoe_program *p, smoe_err *err)
{
    if (p->recording || !p->cb) return smoe_fail(err, SMOE_ERROR_INTERNAL, "submit of a program that is not recorded");
    smoe_status st = smoe_gpu_alive(p->gpu, err);
    if (!st && p->submitted) st = smoe_program_wait(p, err);
    if (st) return st;
    VkResult r = SMOE_VK(p->gpu, vkResetFences, (p->gpu->device, 1, &p->fence));
    if (r != VK_SUCCESS) return smoe_gpu_check(p->gpu, r, "vkResetFences", err);
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &p->cb};
    r = smoe_gpu_queue_submit(p->gpu, &si, p->fence);
    if (r != VK_SUCCESS) return smoe_gpu_check(p->gpu, r, "vkQueueSubmit", err);
    p->submitted = 1;
    return SMOE_OK;
}

smoe_status smoe_program_wait(smoe_program *p, smoe_err *err)
{
    if (!p->submitted) return SMOE_OK;
    smoe_status st = smoe_gpu_alive(p->gpu, err); /* a lost device has nothing left to wait for */
    if (st) return st;
    /* After a failed wait the work may still run: it stays submitted, to be waited for again by
     * the next submit or by smoe_program_destroy before anything it uses is freed. */
    VkResult r = SMOE_VK(p->gpu, vkWaitForFences, (p->gpu->device, 1, &p->fence, VK_TRUE, UINT64_MAX));
    if (r != VK_SUCCESS) return smoe_gpu_check(p->gpu, r, "vkWaitForFences", err);
    p->submitted = 0;
    return SMOE_OK;
}

smoe_status smoe_program_poll(smoe_program *p, smoe_err *err)
{
    if (!p->submitted) return SMOE_OK;
    VkResult r = SMOE_VK(p->gpu, vkGetFenceStatus, (p->gpu->device, p->fence));
    if (r == VK_NOT_READY) return SMOE_NOT_READY;
    if (r != VK_SUCCESS) return smoe_gpu_check(p->gpu, r, "vkGetFenceStatus", err); /* stays submitted, as in wait */
    p->submitted = 0;
    return SMOE_OK;
}

smoe_status smoe_program_run(smoe_program *p, smoe_err *err)
{
    smoe_status st = smoe_program_submit(p, err);
    if (st) return st;
    return smoe_program_wait(p, err);
}

void smoe_program_destroy(smoe_program *p)
{
    smoe_gpu *gpu = p->gpu;
    if (!gpu) return;
    if (p->submitted && p->fence) gpu->vk.vkWaitForFences(gpu->device, 1, &p->fence, VK_TRUE, UINT64_MAX);
    for (uint32_t i = 0; i < p->pool_count; i++) gpu->vk.vkDestroyDescriptorPool(gpu->device, p->pools[i], NULL);
    free(p->pools);
    free(p->pending);
    if (p->fence) gpu->vk.vkDestroyFence(gpu->device, p->fence, NULL);
    if (p->cb) gpu->vk.vkFreeCommandBuffers(gpu->device, gpu->cmd_pool, 1, &p->cb);
    memset(p, 0, sizeof *p);
}
