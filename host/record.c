/* Command programs: recording, hazard-tracked barriers, submission. */
#include "record.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SETS_PER_POOL 128
#define QUERIES_PER_POOL 512

static smoe_status new_pool(smoe_program *p, smoe_err *err)
{
    VkDescriptorPool *pools = realloc(p->pools, (p->pool_count + 1) * sizeof *pools);
    if (!pools) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory for descriptor pools");
    p->pools = pools;
    VkDescriptorPoolSize sizes[2] = {
        {.type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, .descriptorCount = SETS_PER_POOL * SMOE_MAX_BINDINGS},
        {.type = VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER, .descriptorCount = SETS_PER_POOL * SMOE_MAX_BINDINGS},
    };
    VkDescriptorPoolCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
        .maxSets = SETS_PER_POOL,
        .poolSizeCount = 2,
        .pPoolSizes = sizes,
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

/* ---- Texel buffer views ---- */

int smoe_texel_view_plan(const smoe_gpu *gpu, const smoe_tensor *t, uint32_t texel_floats, smoe_texel_view *v)
{
    const smoe_device_info *in = &gpu->info;
    if (texel_floats == 4 ? !in->texel_buffer_rgba32f : !in->texel_buffer_r32f) return 0;
    if (!t->arena || !t->arena->chunks) return 0;
    uint64_t texel = 4ull * texel_floats, align = in->min_texel_buffer_offset_alignment ? in->min_texel_buffer_offset_alignment : 1;
    uint64_t size = t->arena->chunks[t->chunk].buf.size;
    uint64_t begin = t->offset / align * align;
    uint64_t end = t->offset + (t->bytes ? t->bytes : 4);
    uint64_t range = (end - begin + texel - 1) / texel * texel;
    if ((t->offset - begin) % 4 || begin + range > size || range / texel > in->max_texel_buffer_elements) return 0;
    v->offset = begin;
    v->range = range;
    v->first = (uint32_t)((t->offset - begin) / 4);
    return 1;
}

/* The view of a texel binding, created once per program and distinct range. */
static smoe_status texel_view(smoe_program *p, const smoe_binding *b, VkBufferView *out, smoe_err *err)
{
    smoe_texel_view v;
    uint32_t floats = b->access == SMOE_READ_TEXEL4 ? 4 : 1;
    if (!smoe_texel_view_plan(p->gpu, &b->tensor, floats, &v))
        return smoe_fail(err, SMOE_ERROR_INTERNAL, "a tensor of %llu bytes cannot be viewed as a texel buffer on %s",
                         (unsigned long long)b->tensor.bytes, p->gpu->info.name);
    VkBuffer buf = smoe_tensor_buffer(&b->tensor);
    VkFormat format = floats == 4 ? VK_FORMAT_R32G32B32A32_SFLOAT : VK_FORMAT_R32_SFLOAT;
    for (size_t i = 0; i < p->view_count; i++) {
        const smoe_view_entry *e = &p->views[i];
        if (e->buffer == buf && e->offset == v.offset && e->range == v.range && e->format == format) {
            *out = e->view;
            return SMOE_OK;
        }
    }
    if (p->view_count == p->view_cap) {
        size_t cap = p->view_cap ? 2 * p->view_cap : 16;
        smoe_view_entry *e = realloc(p->views, cap * sizeof *e);
        if (!e) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory for texel buffer views");
        p->views = e;
        p->view_cap = cap;
    }
    VkBufferViewCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO,
        .buffer = buf,
        .format = format,
        .offset = v.offset,
        .range = v.range,
    };
    VkResult r = SMOE_VK(p->gpu, vkCreateBufferView, (p->gpu->device, &ci, NULL, out));
    if (r != VK_SUCCESS) return smoe_gpu_check(p->gpu, r, "vkCreateBufferView", err);
    p->views[p->view_count++] = (smoe_view_entry){buf, v.offset, v.range, format, *out};
    return SMOE_OK;
}

/* ---- Profiling ---- */

/* Writes the timestamp that ends command labels[queries - 1] (or, the first, starts the program). */
static smoe_status timestamp(smoe_program *p, const char *label, smoe_err *err)
{
    uint32_t q = p->queries % QUERIES_PER_POOL;
    if (q == 0) {
        uint32_t n = p->query_pool_count;
        VkQueryPool *pools = realloc(p->query_pools, (n + 1) * sizeof *pools);
        char(*labels)[SMOE_LABEL_MAX] = realloc(p->labels, (size_t)(n + 1) * QUERIES_PER_POOL * sizeof *labels);
        if (pools) p->query_pools = pools;
        if (labels) p->labels = labels;
        if (!pools || !labels) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory for profiling");
        VkQueryPoolCreateInfo ci = {
            .sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
            .queryType = VK_QUERY_TYPE_TIMESTAMP,
            .queryCount = QUERIES_PER_POOL,
        };
        VkResult r = SMOE_VK(p->gpu, vkCreateQueryPool, (p->gpu->device, &ci, NULL, &p->query_pools[n]));
        if (r != VK_SUCCESS) return smoe_gpu_check(p->gpu, r, "vkCreateQueryPool", err);
        p->query_pool_count++;
        /* reset at this point of every replay, before the pool's first write */
        p->gpu->vk.vkCmdResetQueryPool(p->cb, p->query_pools[n], 0, QUERIES_PER_POOL);
    }
    snprintf(p->labels[p->queries], SMOE_LABEL_MAX, "%s", label);
    p->gpu->vk.vkCmdWriteTimestamp(p->cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, p->query_pools[p->queries / QUERIES_PER_POOL],
                                   q);
    p->queries++;
    return SMOE_OK;
}

/* After a profiled program finished: each command's time (from the timestamp before it to the
 * one after it, barriers included) goes to the program's profile under its label. */
static void collect(smoe_program *p)
{
    smoe_profile *pr = p->profile;
    if (!pr || p->queries < 2) return;
    uint64_t *t = malloc(p->queries * sizeof *t);
    if (!t) {
        pr->failed = 1;
        return;
    }
    for (uint32_t i = 0; i < p->query_pool_count; i++) {
        uint32_t first = i * QUERIES_PER_POOL, n = p->queries - first < QUERIES_PER_POOL ? p->queries - first : QUERIES_PER_POOL;
        VkResult r = p->gpu->vk.vkGetQueryPoolResults(p->gpu->device, p->query_pools[i], 0, n, n * sizeof *t, t + first,
                                                      sizeof *t, VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
        if (r != VK_SUCCESS) {
            pr->failed = 1;
            free(t);
            return;
        }
    }
    uint32_t bits = p->gpu->info.timestamp_valid_bits;
    uint64_t mask = bits >= 64 ? ~0ull : (1ull << bits) - 1;
    for (uint32_t q = 1; q < p->queries; q++)
        smoe_profile_add(pr, p->labels[q], (double)((t[q] - t[q - 1]) & mask) * p->gpu->info.timestamp_period_ns * 1e-6);
    free(t);
}

smoe_status smoe_program_begin(smoe_gpu *gpu, smoe_program *p, smoe_err *err)
{
    return smoe_program_begin_profiled(gpu, p, NULL, err);
}

smoe_status smoe_program_begin_profiled(smoe_gpu *gpu, smoe_program *p, smoe_profile *prof, smoe_err *err)
{
    memset(p, 0, sizeof *p);
    p->gpu = gpu;
    p->profile = prof && gpu->info.timestamps ? prof : NULL;
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
    if (p->profile) {
        st = timestamp(p, "start", err);
        if (st) {
            smoe_program_destroy(p);
            return st;
        }
    }
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

static void binding_range(const smoe_gpu *gpu, const smoe_binding *b, VkBuffer *buf, uint64_t *lo, uint64_t *hi)
{
    *buf = smoe_tensor_buffer(&b->tensor);
    *lo = b->tensor.offset;
    *hi = *lo + (b->tensor.bytes ? b->tensor.bytes : 4);
    smoe_texel_view v;
    if ((b->access & SMOE_TEXEL_BITS) && smoe_texel_view_plan(gpu, &b->tensor, b->access == SMOE_READ_TEXEL4 ? 4 : 1, &v)) {
        *lo = v.offset; /* what the view covers: the rounding included */
        *hi = v.offset + v.range;
    }
}

/* Records a barrier if any binding conflicts with an access since the last barrier (checked for
 * all bindings before any is noted, so that a dispatch never waits on itself), then notes them. */
static smoe_status track_all(smoe_program *p, const smoe_binding *b, uint32_t n, smoe_err *err)
{
    int conflict = 0;
    for (uint32_t i = 0; i < n && !conflict; i++) {
        VkBuffer buf;
        uint64_t lo, hi;
        binding_range(p->gpu, &b[i], &buf, &lo, &hi);
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
        binding_range(p->gpu, &b[i], &r->buffer, &r->begin, &r->end);
        r->write = (b[i].access & SMOE_WRITE) != 0;
    }
    return SMOE_OK;
}

/* A descriptor set of the program's pools holding the bindings of one dispatch. */
static smoe_status write_set(smoe_program *p, const smoe_pipeline *pl, const smoe_binding *bindings, uint32_t binding_count,
                             VkDescriptorSet *out, smoe_err *err)
{
    VkDescriptorSet set;
    smoe_status st = alloc_set(p, pl->set_layout, &set, err);
    if (st) return st;
    VkDescriptorBufferInfo info[SMOE_MAX_BINDINGS];
    VkBufferView views[SMOE_MAX_BINDINGS];
    VkWriteDescriptorSet w[SMOE_MAX_BINDINGS];
    for (uint32_t i = 0; i < binding_count; i++) {
        const smoe_tensor *t = &bindings[i].tensor;
        w[i] = (VkWriteDescriptorSet){
            .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
            .dstSet = set,
            .dstBinding = i,
            .descriptorCount = 1,
            .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
            .pBufferInfo = &info[i],
        };
        if (!(bindings[i].access & SMOE_TEXEL_BITS)) {
            info[i] = (VkDescriptorBufferInfo){smoe_tensor_buffer(t), t->offset, t->bytes ? t->bytes : 4};
            continue;
        }
        if ((st = texel_view(p, &bindings[i], &views[i], err))) return st;
        w[i].descriptorType = VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER;
        w[i].pBufferInfo = NULL;
        w[i].pTexelBufferView = &views[i];
    }
    p->gpu->vk.vkUpdateDescriptorSets(p->gpu->device, binding_count, w, 0, NULL);
    *out = set;
    return SMOE_OK;
}

void smoe_grid(const smoe_gpu *gpu, uint32_t count, uint32_t batch, uint32_t groups[3])
{
    uint32_t maxx = gpu->info.max_workgroup_count[0];
    groups[0] = count < maxx ? count : maxx;
    groups[1] = groups[0] ? smoe_div_up(count, groups[0]) : 0;
    groups[2] = batch;
}

smoe_status smoe_record_kernel(smoe_program *p, smoe_kernel k, const uint32_t *spec, uint32_t spec_count,
                               const smoe_binding *bindings, uint32_t binding_count, const void *push,
                               uint32_t push_size, const uint32_t groups[3], smoe_err *err)
{
    const char *label = p->label; /* the caller's buffer: used (copied) during this call only */
    p->label = NULL;
    if (!p->recording) return smoe_fail(err, SMOE_ERROR_INTERNAL, "dispatch outside recording");
    if ((unsigned)k >= SMOE_KERNEL_COUNT) return smoe_fail(err, SMOE_ERROR_INTERNAL, "no kernel %d", (int)k);
    const smoe_kernel_desc *kd = &smoe_kernels[k];
    if (!label) label = kd->name;
    if (binding_count != kd->bindings || push_size != kd->push_size)
        return smoe_fail(err, SMOE_ERROR_INTERNAL, "kernel \"%s\": %u bindings and %u push bytes given, %u and %u declared",
                         kd->name, binding_count, push_size, kd->bindings, kd->push_size);
    const smoe_pipeline *pl;
    smoe_status st = smoe_pipeline_get(p->gpu, k, spec, spec_count, &pl, err);
    if (st) return st;
    for (int i = 0; i < 3; i++)
        if (groups[i] > p->gpu->info.max_workgroup_count[i])
            return smoe_fail(err, SMOE_ERROR_TOO_LARGE, "kernel \"%s\": %u workgroups in dimension %d exceed the device's %u",
                             kd->name, groups[i], i, p->gpu->info.max_workgroup_count[i]);
    if (!groups[0] || !groups[1] || !groups[2]) return SMOE_OK; /* nothing to do */
    for (uint32_t i = 0; i < binding_count; i++)
        if (((bindings[i].access & SMOE_TEXEL_BITS) != 0) != ((kd->texel_mask >> i) & 1) ||
            ((bindings[i].access & SMOE_TEXEL_BITS) && (bindings[i].access & SMOE_WRITE)))
            return smoe_fail(err, SMOE_ERROR_INTERNAL, "kernel \"%s\": binding %u is not of the kind it declares",
                             kd->name, i);
    VkDescriptorSet set;
    st = write_set(p, pl, bindings, binding_count, &set, err);
    if (st) return st;
    st = track_all(p, bindings, binding_count, err);
    if (st) return st;
    p->gpu->vk.vkCmdBindPipeline(p->cb, VK_PIPELINE_BIND_POINT_COMPUTE, pl->pipeline);
    p->gpu->vk.vkCmdBindDescriptorSets(p->cb, VK_PIPELINE_BIND_POINT_COMPUTE, pl->layout, 0, 1, &set, 0, NULL);
    if (push_size) p->gpu->vk.vkCmdPushConstants(p->cb, pl->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, push_size, push);
    p->gpu->vk.vkCmdDispatch(p->cb, groups[0], groups[1], groups[2]);
    p->dispatches++;
    return p->query_pools ? timestamp(p, label, err) : SMOE_OK;
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
    return p->query_pools ? timestamp(p, "fill", err) : SMOE_OK;
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
    collect(p);
    return SMOE_OK;
}

smoe_status smoe_program_poll(smoe_program *p, smoe_err *err)
{
    if (!p->submitted) return SMOE_OK;
    VkResult r = SMOE_VK(p->gpu, vkGetFenceStatus, (p->gpu->device, p->fence));
    if (r == VK_NOT_READY) return SMOE_NOT_READY;
    if (r != VK_SUCCESS) return smoe_gpu_check(p->gpu, r, "vkGetFenceStatus", err); /* stays submitted, as in wait */
    p->submitted = 0;
    collect(p);
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
    for (size_t i = 0; i < p->view_count; i++) gpu->vk.vkDestroyBufferView(gpu->device, p->views[i].view, NULL);
    free(p->views);
    for (uint32_t i = 0; i < p->query_pool_count; i++) gpu->vk.vkDestroyQueryPool(gpu->device, p->query_pools[i], NULL);
    free(p->query_pools);
    free(p->labels);
    free(p->pending);
    if (p->fence) gpu->vk.vkDestroyFence(gpu->device, p->fence, NULL);
    if (p->cb) gpu->vk.vkFreeCommandBuffers(gpu->device, gpu->cmd_pool, 1, &p->cb);
    memset(p, 0, sizeof *p);
}
