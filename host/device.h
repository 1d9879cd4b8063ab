/* Devices: the Vulkan instance of a context, the capability record of every physical device,
 * the selection rules, the driver quirks table, and the opened logical device (smoe_gpu). */
#ifndef SMOE_DEVICE_H
#define SMOE_DEVICE_H

#include "fault.h"
#include "options.h"
#include "vk.h"

/* Known driver behaviours that change how kernels are chosen; see quirks table in device.c. */
enum {
    SMOE_QUIRK_CPU_DRIVER = 1u << 0,         /* runs on the CPU: shared memory and subgroup ops are slow loops */
};

/* The Vulkan side of a context: loader, instance, and what every physical device can do. */
typedef struct smoe_vk_instance {
    void *loader;
    smoe_vk_instance_fns fn;
    VkInstance instance;
    VkDebugUtilsMessengerEXT messenger;
    int owns_instance;
    uint32_t physical_count;
    VkPhysicalDevice *physical;
    smoe_device_info *infos;
    /* Validation messages seen (warnings and errors); the hook logs them through ctx. */
    int validation_messages;
    void (*on_validation)(void *user, const char *msg);
    void *on_validation_user;
} smoe_vk_instance;

/* Creates the instance (with the Khronos validation layer when validate is 1, plus
 * synchronization validation when 2) and fills the capability records. */
smoe_status smoe_vk_instance_create(smoe_vk_instance *vi, int validate, smoe_err *err);
/* Takes the application's instance (smoe_context_open_vulkan_external) without owning it: loads
 * the instance functions through gipa (no loader is opened) and lists the one physical device pd,
 * with its capability record. smoe_vk_instance_destroy then frees only softmoe's memory. */
smoe_status smoe_vk_instance_adopt(smoe_vk_instance *vi, PFN_vkGetInstanceProcAddr gipa, VkInstance instance,
                                   VkPhysicalDevice pd, smoe_err *err);
void smoe_vk_instance_destroy(smoe_vk_instance *vi);

typedef struct smoe_gpu {
    const smoe_vk_instance *vi;
    VkPhysicalDevice physical;
    VkDevice device;
    struct VolkDeviceTable vk;
    VkQueue queue;
    uint32_t queue_family;
    smoe_device_info info;
    uint32_t quirks;
    VkPhysicalDeviceMemoryProperties mem;
    VkCommandPool cmd_pool;
    VkPipelineCache pipeline_cache;
    struct smoe_pipeline_cache *pipelines; /* pipeline.c */
    const smoe_options *opts;              /* the context's policy (options.h): read, never changed */
    struct smoe_tune *tune;                /* autotune choices (tune.h), read on first use */
    uint32_t tunings;                      /* autotune measurements made (tests) */
    int row_serial;                        /* row kernels: an invocation per row (CPU drivers, or
                                              SOFTMOE_ROW_KERNELS=serial), not a workgroup */
    int lost;                              /* set once VK_ERROR_DEVICE_LOST was seen */
    char lost_by[64];                      /* the call that reported it */
    int owns_device;                       /* 0: the application's device (smoe_gpu_adopt) */
    void (*queue_lock)(void *user);        /* the application's queue lock, or NULL */
    void (*queue_unlock)(void *user);
    void *queue_lock_user;
    /* Staging for uploads and downloads (memory.c), created on first use. */
    struct smoe_buffer *staging;
    VkCommandBuffer transfer_cb;
    VkFence transfer_fence;
    int transfer_pending;                  /* a staged copy was submitted and not yet waited for */
    /* Live VkDeviceMemory of this gpu (memory.c): allocations and their bytes. */
    uint32_t memory_count;
    uint64_t memory_bytes;
    smoe_fault fault;                      /* fault injection state (fault.h), armed from opts->fault */
} smoe_gpu;

/* Opens vi's physical device index under the policy opts (kept by pointer: it outlives the gpu). */
smoe_status smoe_gpu_create(smoe_gpu *gpu, const smoe_vk_instance *vi, uint32_t index, const smoe_options *opts,
                            smoe_err *err);
/* The application's device on vi's physical device 0 (vi from smoe_vk_instance_adopt): loads its
 * functions, creates softmoe's command pool and pipeline cache on it. Destroying the gpu then
 * leaves the device alone and never waits on it as a whole (vkDeviceWaitIdle would need every
 * queue of the application locked): softmoe's work is waited for through its own fences. */
smoe_status smoe_gpu_adopt(smoe_gpu *gpu, const smoe_vk_instance *vi, const smoe_vulkan_external *ext,
                           const smoe_options *opts, smoe_err *err);
void smoe_gpu_destroy(smoe_gpu *gpu);

/* vkQueueSubmit of one batch to the gpu's queue, inside the application's queue lock if any. */
VkResult smoe_gpu_queue_submit(smoe_gpu *gpu, const VkSubmitInfo *submit, VkFence fence);

/* Index of a memory type allowed by bits with all of want, or -1. */
int smoe_gpu_memory_type(const smoe_gpu *gpu, uint32_t bits, VkMemoryPropertyFlags want);

/* Checks a VkResult from gpu work: records device loss, formats the message. */
smoe_status smoe_gpu_check(smoe_gpu *gpu, VkResult r, const char *what, smoe_err *err);
/* SMOE_ERROR_DEVICE_LOST with a message once the device was lost, else SMOE_OK: the check that
 * makes every later use of a lost device fail at once instead of touching it. */
smoe_status smoe_gpu_alive(const smoe_gpu *gpu, smoe_err *err);

/* Quirks that apply to a device, and a sentence listing them (for the log). */
uint32_t smoe_device_quirks(const smoe_device_info *info, char *why, size_t why_size);

/* Selection. devices[0..count) are the Vulkan devices. Parses spec ("cpu", "vulkan", "vulkan:N",
 * NULL or "" for the default); a NULL or empty spec takes env_spec (SOFTMOE_DEVICE's value, options.h)
 * where that is given. *index becomes -1 for the CPU path. reason gets a sentence. */
smoe_status smoe_device_select(const smoe_device_info *devices, uint32_t count, const char *spec,
                               const char *env_spec, int *index, char *reason, size_t reason_size, smoe_err *err);

/* Rank of a device kind for "vulkan" (lower is better). */
int smoe_device_rank(smoe_device_kind kind);

/* Fills the CPU path's record. */
void smoe_cpu_device_info(smoe_device_info *info);

const char *smoe_device_kind_name(smoe_device_kind kind);

#endif
