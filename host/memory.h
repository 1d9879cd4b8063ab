/* Memory: buffers, arenas (one allocation per lifetime class, tensors carved out by offset),
 * and staging for uploads and downloads. The same arena type serves the CPU path (host memory)
 * and Vulkan (device memory), so model code never asks which device it runs on. */
#ifndef SMOE_MEMORY_H
#define SMOE_MEMORY_H

#include "device.h"

typedef enum smoe_mem_usage {
    SMOE_MEM_DEVICE = 0,   /* device-local; mapped too where that is cheap (UMA, CPU drivers) */
    SMOE_MEM_STAGING = 1,  /* host-visible, coherent, preferably cached: uploads and downloads */
} smoe_mem_usage;

typedef struct smoe_buffer {
    VkBuffer buffer;
    VkDeviceMemory memory;
    VkDeviceSize size;
    VkDeviceSize allocated; /* bytes of memory (counted in the gpu's memory_bytes) */
    void *mapped; /* non-NULL when the host may read and write it directly */
} smoe_buffer;

smoe_status smoe_buffer_create(smoe_gpu *gpu, VkDeviceSize size, smoe_mem_usage usage, smoe_buffer *out,
                               smoe_err *err);
void smoe_buffer_destroy(smoe_gpu *gpu, smoe_buffer *b);

typedef struct smoe_arena_chunk {
    smoe_buffer buf;
    uint64_t size;
} smoe_arena_chunk;

/* An arena is planned (reserve), then committed (one allocation per chunk), then used.
 * A chunk is never larger than one descriptor can bind (maxStorageBufferRange) nor than one
 * allocation may be; a tensor never straddles chunks. */
typedef struct smoe_arena {
    smoe_gpu *gpu;        /* NULL: host memory, for the CPU path */
    const char *name;     /* lifetime class, for messages: "parameters", "activations", ... */
    uint64_t alignment;
    uint64_t chunk_limit;
    uint32_t chunk_count;
    uint64_t *planned;    /* bytes used per chunk while planning */
    smoe_arena_chunk *chunks;
    void *host;           /* CPU path: the one host allocation */
    int committed;
} smoe_arena;

typedef struct smoe_tensor {
    smoe_arena *arena;
    uint32_t chunk;
    uint64_t offset; /* within the chunk */
    uint64_t bytes;
} smoe_tensor;

void smoe_arena_init(smoe_arena *a, smoe_gpu *gpu, const char *name);
/* Plans a tensor of bytes (0 allowed). Fails with SMOE_ERROR_TOO_LARGE, naming the limit, when a
 * tensor cannot be bound by one descriptor. */
smoe_status smoe_arena_reserve(smoe_arena *a, uint64_t bytes, smoe_tensor *out, smoe_err *err);
smoe_status smoe_arena_commit(smoe_arena *a, smoe_err *err);
void smoe_arena_release(smoe_arena *a);
uint64_t smoe_arena_bytes(const smoe_arena *a);

/* CPU path: the tensor's host memory (arena without gpu, committed). */
void *smoe_tensor_host(const smoe_tensor *t);
/* Vulkan: the buffer and offset a descriptor binds. */
VkBuffer smoe_tensor_buffer(const smoe_tensor *t);

/* Copies bytes between host memory and a tensor, at byte offset within the tensor: directly
 * when the memory is mapped, else through the staging buffer with a fenced copy. */
smoe_status smoe_tensor_upload(const smoe_tensor *t, uint64_t offset, const void *src, uint64_t bytes,
                               smoe_err *err);
smoe_status smoe_tensor_download(const smoe_tensor *t, uint64_t offset, void *dst, uint64_t bytes,
                                 smoe_err *err);

/* Frees the staging resources of a gpu (called by smoe_gpu_destroy). */
void smoe_staging_destroy(smoe_gpu *gpu);

#endif
