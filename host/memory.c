/* Buffers, arenas and staging. */
#include "memory.h"

#include <stdlib.h>
#include <string.h>

#define STAGING_MAX (64ull << 20) /* copies larger than this go through the staging buffer in pieces */

static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

static int device_memory_mappable(const smoe_gpu *gpu)
{
    /* Mapping device-local memory is cheap on unified memory (integrated GPUs, CPU drivers);
     * on a discrete GPU host reads through a BAR mapping are slow, so staging is used. */
    if (gpu->opts->force_staging) return 0;
    return gpu->info.kind != SMOE_DEVICE_VULKAN_DISCRETE;
}

smoe_status smoe_buffer_create(smoe_gpu *gpu, VkDeviceSize size, smoe_mem_usage usage, smoe_buffer *out,
                               smoe_err *err)
{
    memset(out, 0, sizeof *out);
    smoe_status st = smoe_gpu_alive(gpu, err);
    if (st) return st;
    if (size == 0) size = 4; /* Vulkan forbids empty buffers; 0-byte tensors bind a tiny one */
    if (size > gpu->info.max_allocation_size)
        return smoe_fail(err, SMOE_ERROR_TOO_LARGE, "a buffer of %llu bytes exceeds the device's maximum allocation (%llu bytes)",
                         (unsigned long long)size, (unsigned long long)gpu->info.max_allocation_size);
    VkBufferCreateInfo bci = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
        .size = size,
        .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT |
                 VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
    };
    VkResult r = SMOE_VK(gpu, vkCreateBuffer, (gpu->device, &bci, NULL, &out->buffer));
    if (r != VK_SUCCESS) {
        out->buffer = VK_NULL_HANDLE;
        return smoe_gpu_check(gpu, r, "vkCreateBuffer", err);
    }
    VkMemoryRequirements req;
    gpu->vk.vkGetBufferMemoryRequirements(gpu->device, out->buffer, &req);
    int type = -1, map = 0;
    if (usage == SMOE_MEM_DEVICE) {
        if (device_memory_mappable(gpu)) {
            type = smoe_gpu_memory_type(gpu, req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT |
                                                                    VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                                                    VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
            map = type >= 0;
        }
        if (type < 0) type = smoe_gpu_memory_type(gpu, req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
        if (type < 0) type = smoe_gpu_memory_type(gpu, req.memoryTypeBits, 0);
    } else {
        type = smoe_gpu_memory_type(gpu, req.memoryTypeBits, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                                                VK_MEMORY_PROPERTY_HOST_COHERENT_BIT |
                                                                VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
        if (type < 0)
            type = smoe_gpu_memory_type(gpu, req.memoryTypeBits,
                                        VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
        map = 1;
    }
    if (type < 0) {
        smoe_buffer_destroy(gpu, out);
        return smoe_fail(err, SMOE_ERROR_UNSUPPORTED, "%s has no suitable memory type for a %s buffer", gpu->info.name,
                         usage == SMOE_MEM_DEVICE ? "device" : "staging");
    }
    VkMemoryAllocateInfo mai = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
        .allocationSize = req.size,
        .memoryTypeIndex = (uint32_t)type,
    };
    r = SMOE_VK(gpu, vkAllocateMemory, (gpu->device, &mai, NULL, &out->memory));
    if (r != VK_SUCCESS) {
        out->memory = VK_NULL_HANDLE;
        smoe_buffer_destroy(gpu, out);
        smoe_gpu_check(gpu, r, "vkAllocateMemory", err);
        return smoe_fail_prefix(err, r == VK_ERROR_OUT_OF_DEVICE_MEMORY ? SMOE_ERROR_OUT_OF_DEVICE_MEMORY
                                     : r == VK_ERROR_OUT_OF_HOST_MEMORY ? SMOE_ERROR_OUT_OF_HOST_MEMORY
                                     : r == VK_ERROR_DEVICE_LOST        ? SMOE_ERROR_DEVICE_LOST
                                                                        : SMOE_ERROR_VULKAN,
                                "allocating %llu bytes", (unsigned long long)req.size);
    }
    out->allocated = req.size;
    gpu->memory_count++;
    gpu->memory_bytes += req.size;
    const char *what = "vkBindBufferMemory";
    r = SMOE_VK(gpu, vkBindBufferMemory, (gpu->device, out->buffer, out->memory, 0));
    if (r == VK_SUCCESS && map) {
        what = "vkMapMemory";
        r = SMOE_VK(gpu, vkMapMemory, (gpu->device, out->memory, 0, VK_WHOLE_SIZE, 0, &out->mapped));
    }
    if (r != VK_SUCCESS) {
        out->mapped = NULL;
        smoe_buffer_destroy(gpu, out);
        return smoe_gpu_check(gpu, r, what, err);
    }
    out->size = size;
    return SMOE_OK;
}

/* A staged copy whose wait failed may still run; before any memory goes, it must have ended. */
static void transfer_end(smoe_gpu *gpu)
{
    if (gpu->transfer_pending) gpu->vk.vkWaitForFences(gpu->device, 1, &gpu->transfer_fence, VK_TRUE, UINT64_MAX);
    gpu->transfer_pending = 0;
}

void smoe_buffer_destroy(smoe_gpu *gpu, smoe_buffer *b)
{
    transfer_end(gpu);
    if (b->buffer) gpu->vk.vkDestroyBuffer(gpu->device, b->buffer, NULL);
    if (b->memory) {
        gpu->vk.vkFreeMemory(gpu->device, b->memory, NULL); /* unmaps implicitly */
        gpu->memory_count--;
        gpu->memory_bytes -= b->allocated;
    }
    memset(b, 0, sizeof *b);
}

/* ---- Arenas ---- */

void smoe_arena_init(smoe_arena *a, smoe_gpu *gpu, const char *name)
{
    memset(a, 0, sizeof *a);
    a->gpu = gpu;
    a->name = name;
    if (gpu) {
        a->alignment = gpu->info.min_storage_buffer_offset_alignment;
        if (a->alignment < 16) a->alignment = 16; /* vec4 loads stay aligned */
        /* Every tensor can also be viewed as a texel buffer from its first byte (both limits
         * are powers of two, so the larger is a multiple of the smaller). */
        if (gpu->info.min_texel_buffer_offset_alignment > a->alignment)
            a->alignment = gpu->info.min_texel_buffer_offset_alignment;
        uint64_t limit = gpu->info.max_storage_buffer_range;
        if (gpu->info.max_allocation_size < limit) limit = gpu->info.max_allocation_size;
        a->chunk_limit = limit / a->alignment * a->alignment;
    } else {
        a->alignment = 64; /* a cache line, and what AVX-512 loads like */
        a->chunk_limit = UINT64_MAX / 2;
    }
}

smoe_status smoe_arena_reserve(smoe_arena *a, uint64_t bytes, smoe_tensor *out, smoe_err *err)
{
    memset(out, 0, sizeof *out);
    if (a->committed)
        return smoe_fail(err, SMOE_ERROR_INTERNAL, "arena \"%s\": reserve after commit", a->name);
    if (bytes > a->chunk_limit)
        return smoe_fail(err, SMOE_ERROR_TOO_LARGE,
                         "arena \"%s\": a tensor of %llu bytes is larger than one buffer binding can be on %s "
                         "(maxStorageBufferRange %llu, maxMemoryAllocationSize %llu)",
                         a->name, (unsigned long long)bytes, a->gpu ? a->gpu->info.name : "this device",
                         a->gpu ? (unsigned long long)a->gpu->info.max_storage_buffer_range : 0ull,
                         a->gpu ? (unsigned long long)a->gpu->info.max_allocation_size : 0ull);
    uint64_t need = align_up(bytes ? bytes : 4, a->alignment);
    if (need > a->chunk_limit) need = bytes; /* still bindable: the last bytes need no padding */
    if (a->chunk_count == 0 || a->planned[a->chunk_count - 1] + need > a->chunk_limit) {
        uint64_t *p = realloc(a->planned, (a->chunk_count + 1) * sizeof *p);
        if (!p) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory planning arena \"%s\"", a->name);
        a->planned = p;
        a->planned[a->chunk_count++] = 0;
    }
    out->arena = a;
    out->chunk = a->chunk_count - 1;
    out->offset = a->planned[out->chunk];
    out->bytes = bytes;
    a->planned[out->chunk] += need;
    return SMOE_OK;
}

smoe_status smoe_arena_commit(smoe_arena *a, smoe_err *err)
{
    if (a->committed) return SMOE_OK;
    if (!a->gpu) {
        uint64_t total = a->chunk_count ? a->planned[0] : 0; /* host arenas have one chunk */
        a->host = aligned_alloc(a->alignment, align_up(total ? total : a->alignment, a->alignment));
        if (!a->host)
            return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory: arena \"%s\" needs %llu bytes",
                             a->name, (unsigned long long)total);
        memset(a->host, 0, total);
        a->committed = 1;
        return SMOE_OK;
    }
    /* Refused before anything is allocated when it cannot fit: some drivers (CPU ones) would
     * otherwise hand out the memory of the whole machine, others fail only part-way. */
    uint64_t total = smoe_arena_bytes(a), heap = a->gpu->info.device_local_memory;
    if (heap && (total > heap || a->gpu->memory_bytes > heap - total))
        return smoe_fail(err, SMOE_ERROR_OUT_OF_DEVICE_MEMORY,
                         "arena \"%s\" needs %llu bytes of device memory and softmoe already holds %llu, but %s has "
                         "%llu bytes of device-local memory",
                         a->name, (unsigned long long)total, (unsigned long long)a->gpu->memory_bytes, a->gpu->info.name,
                         (unsigned long long)heap);
    a->chunks = calloc(a->chunk_count ? a->chunk_count : 1, sizeof *a->chunks);
    if (!a->chunks) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory committing arena \"%s\"", a->name);
    for (uint32_t i = 0; i < a->chunk_count; i++) {
        smoe_status st = smoe_buffer_create(a->gpu, a->planned[i], SMOE_MEM_DEVICE, &a->chunks[i].buf, err);
        if (st) {
            smoe_fail_prefix(err, st, "arena \"%s\" (%llu bytes)", a->name, (unsigned long long)a->planned[i]);
            for (uint32_t j = 0; j < i; j++) smoe_buffer_destroy(a->gpu, &a->chunks[j].buf);
            free(a->chunks);
            a->chunks = NULL;
            return st;
        }
        a->chunks[i].size = a->planned[i];
        if (a->chunks[i].buf.mapped) memset(a->chunks[i].buf.mapped, 0, a->planned[i]);
    }
    a->committed = 1;
    return SMOE_OK;
}

void smoe_arena_release(smoe_arena *a)
{
    if (a->chunks)
        for (uint32_t i = 0; i < a->chunk_count; i++) smoe_buffer_destroy(a->gpu, &a->chunks[i].buf);
    free(a->chunks);
    free(a->planned);
    free(a->host);
    smoe_gpu *gpu = a->gpu;
    const char *name = a->name;
    smoe_arena_init(a, gpu, name);
}

uint64_t smoe_arena_bytes(const smoe_arena *a)
{
    uint64_t t = 0;
    for (uint32_t i = 0; i < a->chunk_count; i++) t += a->planned[i];
    return t;
}

void *smoe_tensor_host(const smoe_tensor *t)
{
    if (!t->arena || !t->arena->host) return NULL;
    return (char *)t->arena->host + t->offset;
}

VkBuffer smoe_tensor_buffer(const smoe_tensor *t)
{
    return t->arena->chunks[t->chunk].buf.buffer;
}

/* ---- Staging ---- */

static smoe_status staging_ready(smoe_gpu *gpu, smoe_err *err)
{
    if (gpu->staging) return SMOE_OK;
    gpu->staging = calloc(1, sizeof *gpu->staging);
    if (!gpu->staging) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory for staging");
    smoe_status st = smoe_buffer_create(gpu, STAGING_MAX, SMOE_MEM_STAGING, gpu->staging, err);
    VkResult r = VK_SUCCESS;
    if (!st) {
        VkCommandBufferAllocateInfo ai = {
            .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
            .commandPool = gpu->cmd_pool,
            .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
            .commandBufferCount = 1,
        };
        r = SMOE_VK(gpu, vkAllocateCommandBuffers, (gpu->device, &ai, &gpu->transfer_cb));
        if (r != VK_SUCCESS) {
            gpu->transfer_cb = VK_NULL_HANDLE;
            st = smoe_gpu_check(gpu, r, "vkAllocateCommandBuffers (staging)", err);
        }
    }
    if (!st) {
        VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
        r = SMOE_VK(gpu, vkCreateFence, (gpu->device, &fci, NULL, &gpu->transfer_fence));
        if (r != VK_SUCCESS) {
            gpu->transfer_fence = VK_NULL_HANDLE;
            st = smoe_gpu_check(gpu, r, "vkCreateFence (staging)", err);
        }
    }
    if (st) smoe_staging_destroy(gpu);
    return st;
}

void smoe_staging_destroy(smoe_gpu *gpu)
{
    transfer_end(gpu);
    if (gpu->transfer_fence) gpu->vk.vkDestroyFence(gpu->device, gpu->transfer_fence, NULL);
    if (gpu->transfer_cb) gpu->vk.vkFreeCommandBuffers(gpu->device, gpu->cmd_pool, 1, &gpu->transfer_cb);
    if (gpu->staging) {
        smoe_buffer_destroy(gpu, gpu->staging);
        free(gpu->staging);
    }
    gpu->staging = NULL;
    gpu->transfer_cb = VK_NULL_HANDLE;
    gpu->transfer_fence = VK_NULL_HANDLE;
}

/* Waits for the submitted staged copy, if any. After a failed wait the copy stays pending: it is
 * waited for again before the next copy reuses the command buffer, or when staging is freed. */
static smoe_status transfer_wait(smoe_gpu *gpu, smoe_err *err)
{
    if (!gpu->transfer_pending) return SMOE_OK;
    VkResult r = SMOE_VK(gpu, vkWaitForFences, (gpu->device, 1, &gpu->transfer_fence, VK_TRUE, UINT64_MAX));
    if (r != VK_SUCCESS) return smoe_gpu_check(gpu, r, "vkWaitForFences (staged copy)", err);
    gpu->transfer_pending = 0;
    return SMOE_OK;
}

/* One fenced copy between the staging buffer and a tensor; the previous one has been waited for. */
static smoe_status staged_copy(smoe_gpu *gpu, VkBuffer dst_or_src, uint64_t offset, uint64_t bytes, int upload,
                               smoe_err *err)
{
    VkCommandBufferBeginInfo bi = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
        .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
    };
    VkResult r = SMOE_VK(gpu, vkBeginCommandBuffer, (gpu->transfer_cb, &bi));
    if (r != VK_SUCCESS) return smoe_gpu_check(gpu, r, "vkBeginCommandBuffer", err);
    /* Order against earlier compute work on the queue, and make the copy visible to later work. */
    VkMemoryBarrier before = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_SHADER_READ_BIT,
        .dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
    };
    gpu->vk.vkCmdPipelineBarrier(gpu->transfer_cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT,
                                 0, 1, &before, 0, NULL, 0, NULL);
    VkBufferCopy region = {.srcOffset = upload ? 0 : offset, .dstOffset = upload ? offset : 0, .size = bytes};
    if (upload) gpu->vk.vkCmdCopyBuffer(gpu->transfer_cb, gpu->staging->buffer, dst_or_src, 1, &region);
    else gpu->vk.vkCmdCopyBuffer(gpu->transfer_cb, dst_or_src, gpu->staging->buffer, 1, &region);
    VkMemoryBarrier after = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = upload ? (VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT) : VK_ACCESS_HOST_READ_BIT,
    };
    gpu->vk.vkCmdPipelineBarrier(gpu->transfer_cb, VK_PIPELINE_STAGE_TRANSFER_BIT,
                                 upload ? VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT : VK_PIPELINE_STAGE_HOST_BIT, 0, 1,
                                 &after, 0, NULL, 0, NULL);
    r = SMOE_VK(gpu, vkEndCommandBuffer, (gpu->transfer_cb));
    if (r != VK_SUCCESS) {
        /* Out of the recording state, so that the next copy may begin it again. */
        gpu->vk.vkResetCommandBuffer(gpu->transfer_cb, 0);
        return smoe_gpu_check(gpu, r, "vkEndCommandBuffer (staged copy)", err);
    }
    VkSubmitInfo si = {
        .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
        .commandBufferCount = 1,
        .pCommandBuffers = &gpu->transfer_cb,
    };
    r = SMOE_VK(gpu, vkResetFences, (gpu->device, 1, &gpu->transfer_fence));
    if (r != VK_SUCCESS) return smoe_gpu_check(gpu, r, "vkResetFences (staged copy)", err);
    r = smoe_gpu_queue_submit(gpu, &si, gpu->transfer_fence);
    if (r != VK_SUCCESS) return smoe_gpu_check(gpu, r, "vkQueueSubmit (staged copy)", err);
    gpu->transfer_pending = 1;
    return transfer_wait(gpu, err);
}

static smoe_status check_range(const smoe_tensor *t, uint64_t offset, uint64_t bytes, const void *p, smoe_err *err)
{
    if (!t || !t->arena || !t->arena->committed)
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "copy to or from a tensor that has no memory");
    if (offset > t->bytes || bytes > t->bytes - offset)
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "copy of %llu bytes at offset %llu overruns a tensor of %llu bytes",
                         (unsigned long long)bytes, (unsigned long long)offset, (unsigned long long)t->bytes);
    if (bytes && !p) return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "copy with a NULL host pointer");
    return SMOE_OK;
}

static smoe_status tensor_copy(const smoe_tensor *t, uint64_t offset, void *host, uint64_t bytes, int upload,
                               smoe_err *err)
{
    smoe_status st = check_range(t, offset, bytes, host, err);
    if (st || bytes == 0) return st;
    smoe_arena *a = t->arena;
    if (!a->gpu) {
        char *dev = (char *)a->host + t->offset + offset;
        if (upload) memcpy(dev, host, bytes);
        else memcpy(host, dev, bytes);
        return SMOE_OK;
    }
    smoe_gpu *gpu = a->gpu;
    st = smoe_gpu_alive(gpu, err);
    if (st) return st;
    smoe_buffer *chunk = &a->chunks[t->chunk].buf;
    if (chunk->mapped) {
        /* Coherent memory: host writes are visible at the next submit, device writes after the
         * fence wait that ended the work that made them. */
        char *dev = (char *)chunk->mapped + t->offset + offset;
        if (upload) memcpy(dev, host, bytes);
        else memcpy(host, dev, bytes);
        return SMOE_OK;
    }
    st = staging_ready(gpu, err);
    if (st) return st;
    for (uint64_t done = 0; done < bytes;) {
        uint64_t n = bytes - done < STAGING_MAX ? bytes - done : STAGING_MAX;
        st = transfer_wait(gpu, err); /* a copy left pending may still use the staging buffer */
        if (st) return st;
        if (upload) memcpy(gpu->staging->mapped, (char *)host + done, n);
        st = staged_copy(gpu, chunk->buffer, t->offset + offset + done, n, upload, err);
        if (st) return st;
        if (!upload) memcpy((char *)host + done, gpu->staging->mapped, n);
        done += n;
    }
    return SMOE_OK;
}

smoe_status smoe_tensor_upload(const smoe_tensor *t, uint64_t offset, const void *src, uint64_t bytes, smoe_err *err)
{
    return tensor_copy(t, offset, (void *)src, bytes, 1, err);
}

smoe_status smoe_tensor_download(const smoe_tensor *t, uint64_t offset, void *dst, uint64_t bytes, smoe_err *err)
{
    return tensor_copy(t, offset, dst, bytes, 0, err);
}
