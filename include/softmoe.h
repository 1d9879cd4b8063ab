/* softmoe: Soft Mixture-of-Experts inference and training on any Vulkan GPU, with a CPU path.
 *
 * Conventions of this header:
 *  - Every call returns an smoe_status. On failure the context (when there is one) keeps a
 *    message that smoe_last_error() returns until the next failing call on that context.
 *  - The library never prints, never exits, and has no global mutable state: all state hangs off
 *    an smoe_context. Different contexts may be used from different threads at the same time;
 *    one context must not be used from two threads at once unless a call says otherwise.
 *  - Tensors are float32, row-major, in host memory owned by the caller unless stated.
 *  - A failing call changes nothing: no model is kept half-loaded, no file is written, the
 *    parameters are as before (smoe_vit_train_step states its one exception); the output arrays
 *    it was to fill hold nothing usable (mostly they are untouched). After
 *    SMOE_ERROR_OUT_OF_DEVICE_MEMORY or SMOE_ERROR_OUT_OF_HOST_MEMORY the call may be made again.
 *    After SMOE_ERROR_DEVICE_LOST the context is dead: every later call that uses its device
 *    fails at once with SMOE_ERROR_DEVICE_LOST (none waits or touches the device), its models
 *    must be loaded again on a new context, and smoe_model_free and smoe_context_destroy still
 *    work (and are still needed).
 *
 * Threads. Each declaration below says which of these rules applies to it:
 *  - "Threads: any." The call may be made from any thread at any time, concurrently with
 *    anything else (it touches no context, or only reads what never changes).
 *  - "Threads: context." The call uses its context (directly, or through a model or job created
 *    from it). It must not run at the same time as another "context" call on the same context;
 *    calls on different contexts never interfere, so an application runs inference on two
 *    threads by giving each thread its own context. A context is not bound to the thread that
 *    created it: it may be handed from one thread to another, as long as the application orders
 *    the calls (a mutex, a queue, a thread join).
 *  - The library starts a thread of its own only for smoe_vit_infer_async on the CPU path; that
 *    thread touches only the model's work buffers and never the context, its error message or
 *    its log callback (see the asynchronous inference section).
 *  - Log callbacks run on the thread of the call that logs.
 * A declaration that names no rule takes a context, a model or a job and follows "context".
 */
#ifndef SOFTMOE_H
#define SOFTMOE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SMOE_VERSION_MAJOR 0
#define SMOE_VERSION_MINOR 2
#define SMOE_VERSION_PATCH 0
#define SMOE_VERSION ((SMOE_VERSION_MAJOR * 10000) + (SMOE_VERSION_MINOR * 100) + SMOE_VERSION_PATCH)

#if defined(_WIN32)
#define SMOE_API
#else
#define SMOE_API __attribute__((visibility("default")))
#endif

typedef enum smoe_status {
    SMOE_OK = 0,
    SMOE_ERROR_INVALID_ARGUMENT = 1, /* a NULL pointer, a bad device name, an inconsistent size */
    SMOE_ERROR_OUT_OF_HOST_MEMORY = 2,
    SMOE_ERROR_OUT_OF_DEVICE_MEMORY = 3,
    SMOE_ERROR_NO_DEVICE = 4,        /* the asked-for device does not exist or Vulkan is absent */
    SMOE_ERROR_UNSUPPORTED = 5,      /* the device lacks a feature or limit the work needs */
    SMOE_ERROR_TOO_LARGE = 6,        /* a buffer exceeds what the device can allocate or bind */
    SMOE_ERROR_DEVICE_LOST = 7,      /* the context must be destroyed; nothing else is valid (see above) */
    SMOE_ERROR_VULKAN = 8,           /* any other Vulkan failure; the message names the call */
    SMOE_ERROR_IO = 9,               /* a file could not be opened, read or written */
    SMOE_ERROR_BAD_FORMAT = 10,      /* a file or tensor does not match the specification */
    SMOE_ERROR_NOT_FINITE = 11,      /* NaN or Inf in an input or a weight */
    SMOE_ERROR_INTERNAL = 12,
    SMOE_NOT_READY = 13              /* not an error: smoe_job_poll's answer while the job still runs */
} smoe_status;

/* A short constant name for a status ("SMOE_ERROR_IO"); never NULL. Threads: any. */
SMOE_API const char *smoe_status_string(smoe_status status);

/* The library's version as SMOE_VERSION encodes it, to compare with the header's. Threads: any. */
SMOE_API int smoe_version(void);

/* What this build is made of, for a --version line and bug reports (smoe_version_details). */
typedef struct smoe_version_info {
    int version;                  /* the library's, as smoe_version() and SMOE_VERSION encode it */
    char library[32];             /* "0.2.0": the project version it was built as */
    uint32_t vulkan_loader;       /* the run-time Vulkan loader's VK_MAKE_API_VERSION; 0: none found */
    char vulkan[128];             /* "1.3.239", or why there is none ("not found: ...") */
    char spirv_compiler[128];     /* the compiler the shaders were built with (its version line) */
} smoe_version_info;

/* Fills out: the library's version, the version of the Vulkan loader that opening a Vulkan device
 * would use (asked of the loader itself, no device or instance is created) and the SPIR-V
 * compiler the shaders were built with. Errors: SMOE_ERROR_INVALID_ARGUMENT (out NULL); a missing
 * loader is not an error (vulkan_loader 0, the reason in vulkan). Threads: any. */
SMOE_API smoe_status smoe_version_details(smoe_version_info *out);

typedef struct smoe_context smoe_context;

typedef enum smoe_log_level {
    SMOE_LOG_DEBUG = 0,
    SMOE_LOG_INFO = 1,
    SMOE_LOG_WARNING = 2,
    SMOE_LOG_ERROR = 3
} smoe_log_level;

/* Receives the library's log lines (device choice and why, driver quirks applied, ...). The text
 * is valid only during the call. Called on the thread that made the library call. */
typedef void (*smoe_log_fn)(void *user, smoe_log_level level, const char *message);

/* Creates a context with no device opened yet. *out is NULL on failure. The caller owns the
 * context and frees it with smoe_context_destroy. Errors: SMOE_ERROR_INVALID_ARGUMENT (out NULL),
 * SMOE_ERROR_OUT_OF_HOST_MEMORY. Threads: any. */
SMOE_API smoe_status smoe_context_create(smoe_context **out);

/* Destroys the context and everything created from it: models (smoe_model_free is optional),
 * unfinished jobs' work (it waits for it; the smoe_job objects themselves stay the caller's to
 * free), device memory, and the Vulkan device and instance it created. On a context opened with
 * smoe_context_open_vulkan_external it destroys only its own objects, never the application's
 * instance or device. NULL is ignored. Threads: context (and nothing may use ctx afterwards). */
SMOE_API void smoe_context_destroy(smoe_context *ctx);

/* The message of the last failing call on ctx ("" if none). Owned by ctx; valid until the next
 * call on ctx. A NULL ctx returns a fixed message. Threads: context. */
SMOE_API const char *smoe_last_error(const smoe_context *ctx);

/* Sets (or, with fn NULL, removes) the log callback. Threads: context. */
SMOE_API void smoe_set_log_callback(smoe_context *ctx, smoe_log_fn fn, void *user);

/* Validation messages (warnings and errors) the Khronos validation layer reported on this context.
 * The layer is enabled by the environment: SOFTMOE_VALIDATION=1 (or =sync for synchronization
 * validation too). Each message is also logged at SMOE_LOG_ERROR. Always 0 on a context opened
 * with smoe_context_open_vulkan_external (the application's instance reports to the application).
 * Threads: context. */
SMOE_API int smoe_validation_message_count(const smoe_context *ctx);

typedef enum smoe_device_kind {
    SMOE_DEVICE_CPU = 0,            /* the CPU path (OpenBLAS + threads), not a Vulkan device */
    SMOE_DEVICE_VULKAN_DISCRETE = 1,
    SMOE_DEVICE_VULKAN_INTEGRATED = 2,
    SMOE_DEVICE_VULKAN_VIRTUAL = 3,
    SMOE_DEVICE_VULKAN_CPU = 4,     /* a Vulkan driver that runs on the CPU, such as lavapipe */
    SMOE_DEVICE_VULKAN_OTHER = 5
} smoe_device_kind;

/* The capability record of one device. For the CPU path only name, kind and the thread count in
 * compute_units are meaningful. */
typedef struct smoe_device_info {
    int index;                     /* N of "vulkan:N"; -1 for the CPU path */
    smoe_device_kind kind;
    char name[256];
    char driver_name[256];
    char driver_info[256];
    uint32_t vendor_id;
    uint32_t device_id;
    uint32_t api_version;          /* VK_MAKE_API_VERSION encoding */
    uint32_t driver_version;
    uint32_t driver_id;            /* VkDriverId, 0 if unknown */
    uint32_t subgroup_size;        /* default subgroup size */
    uint32_t min_subgroup_size;    /* subgroup size range (VK_EXT_subgroup_size_control or 1.3) */
    uint32_t max_subgroup_size;
    uint32_t max_shared_memory;    /* maxComputeSharedMemorySize, bytes */
    uint32_t max_workgroup_invocations;
    uint32_t max_workgroup_size[3];
    uint32_t max_workgroup_count[3];
    uint64_t max_storage_buffer_range;
    uint64_t max_allocation_size;  /* maxMemoryAllocationSize */
    uint64_t min_storage_buffer_offset_alignment;
    uint64_t device_local_memory;  /* size of the largest device-local heap, bytes */
    int storage_buffer_16bit;      /* storageBuffer16BitAccess */
    int shader_float16;            /* shaderFloat16 */
    int timestamps;                /* compute queue supports timestamps */
    float timestamp_period_ns;
    int push_descriptors;          /* VK_KHR_push_descriptor */
    uint32_t compute_units;        /* CPU path: worker threads */
    uint32_t timestamp_valid_bits; /* timestampValidBits of the compute queue family */
    int timestamp_compute_and_graphics; /* timestampComputeAndGraphics */
    uint32_t max_texel_buffer_elements;           /* maxTexelBufferElements */
    uint64_t min_texel_buffer_offset_alignment;   /* minTexelBufferOffsetAlignment, bytes */
    int texel_buffer_rgba32f;      /* R32G32B32A32_SFLOAT usable as a uniform texel buffer */
    int texel_buffer_r32f;         /* R32_SFLOAT usable as a uniform texel buffer */
} smoe_device_info;

/* Lists devices: index 0 is always the CPU path, then every Vulkan physical device in the
 * loader's order (their info.index is N of "vulkan:N"). Works without an opened device and
 * without a Vulkan loader (then only the CPU path is listed). The first call creates the
 * context's Vulkan instance; on a context opened with smoe_context_open_vulkan_external the list
 * is the CPU path and the application's device, and no instance is created. Threads: context. */
SMOE_API smoe_status smoe_device_count(smoe_context *ctx, int *count);
/* The record of device i (0 <= i < count). Errors: SMOE_ERROR_INVALID_ARGUMENT. Threads: context. */
SMOE_API smoe_status smoe_device_get_info(smoe_context *ctx, int i, smoe_device_info *info);

/* Opens the device named by spec:
 *   "cpu"       the CPU path;
 *   "vulkan"    the best Vulkan device: discrete, then integrated, then virtual, then other; a
 *               CPU-type driver (lavapipe) only when it is the only one;
 *   "vulkan:N"  Vulkan physical device N;
 *   NULL or ""  the SOFTMOE_DEVICE environment variable if set, else the best GPU, else "cpu"
 *               (the CPU path is faster than a CPU-type Vulkan driver).
 * A context opens one device once. The choice and the reason are logged and kept (see below).
 * Errors: SMOE_ERROR_INVALID_ARGUMENT (a device is already open, a malformed spec),
 * SMOE_ERROR_NO_DEVICE (no such device, no Vulkan loader), SMOE_ERROR_UNSUPPORTED, and the Vulkan
 * failures of creating the device. Threads: context. */
SMOE_API smoe_status smoe_context_open_device(smoe_context *ctx, const char *spec);

/* The opened device and why it was chosen (a sentence owned by ctx, valid until ctx is
 * destroyed). info and reason may be NULL. Errors: SMOE_ERROR_INVALID_ARGUMENT (no device opened).
 * Threads: context. */
SMOE_API smoe_status smoe_context_device(smoe_context *ctx, smoe_device_info *info, const char **reason);

/* The value of OPENBLAS_CORETYPE that would make OpenBLAS use this CPU's vector units, when the
 * OpenBLAS in use did not recognise the CPU and fell back to generic kernels (about 10x slower on
 * the CPU path); NULL when all is well. OpenBLAS reads it only at load time, so an application
 * sets it in the environment before starting (softmoe's command re-executes itself with it).
 * Opening the "cpu" device also logs this as a warning. Threads: any (it reads the
 * environment: not while the application changes it). */
SMOE_API const char *smoe_cpu_blas_coretype_hint(void);

/* ---- Sharing the application's Vulkan device ---------------------------------------------- */

/* Vulkan handles travel as void * (VkInstance, VkPhysicalDevice, VkDevice and VkQueue are
 * dispatchable handles, pointers on every platform), so this header needs no Vulkan header and
 * applications that do not use Vulkan are not made to install one. An application that has
 * vulkan.h passes its objects with a cast: .instance = (void *)instance. */
#if defined(_WIN32)
#define SMOE_VKAPI_PTR __stdcall /* VKAPI_PTR of vk_platform.h */
#else
#define SMOE_VKAPI_PTR
#endif
typedef void(SMOE_VKAPI_PTR *smoe_vk_void_function)(void);
/* The type of vkGetInstanceProcAddr: cast PFN_vkGetInstanceProcAddr to it. */
typedef smoe_vk_void_function(SMOE_VKAPI_PTR *smoe_vk_get_instance_proc_addr)(void *instance, const char *name);

/* The application's Vulkan objects for smoe_context_open_vulkan_external. Zero it, then fill it. */
typedef struct smoe_vulkan_external {
    uint32_t struct_size;       /* sizeof(smoe_vulkan_external): lets later versions grow the struct */
    smoe_vk_get_instance_proc_addr get_instance_proc_addr; /* the application's vkGetInstanceProcAddr
                                                              (from the loader it uses, or volk's) */
    void *instance;             /* VkInstance, created with VkApplicationInfo.apiVersion >= 1.1 */
    void *physical_device;      /* VkPhysicalDevice the device was created on; Vulkan 1.1 or later */
    void *device;               /* VkDevice */
    uint32_t queue_family_index;/* a family of device with VK_QUEUE_COMPUTE_BIT */
    void *queue;                /* VkQueue of that family (vkGetDeviceQueue) that softmoe submits to */
    /* Optional, both or neither: softmoe calls queue_lock(queue_lock_user) before and
     * queue_unlock(queue_lock_user) after each vkQueueSubmit, on the thread of the softmoe call.
     * Give them when another thread of the application may use the same VkQueue at the same time
     * (Vulkan requires a VkQueue to be used by one thread at a time). */
    void (*queue_lock)(void *user);
    void (*queue_unlock)(void *user);
    void *queue_lock_user;
} smoe_vulkan_external;

/* Opens the application's own Vulkan device as ctx's device instead of creating an instance and
 * a device, so that softmoe shares the GPU with the application's renderer (no second device,
 * no copies between devices). softmoe copies *ext; it takes no ownership of the objects.
 *
 * What softmoe does with them: it reads the physical device's properties into the capability
 * record (smoe_context_device; info.index is 0 and `vulkan:N` does not apply), loads the device's
 * functions through get_instance_proc_addr(instance, "vkGetDeviceProcAddr"), and creates its own
 * objects on device: a command pool on queue_family_index, a pipeline cache, pipelines, buffers,
 * device memory, descriptor pools and fences. It submits to queue (vkQueueSubmit only, with
 * queue_lock if given) and waits on its own fences; it never calls vkQueueWaitIdle or
 * vkDeviceWaitIdle, never creates or destroys an instance or a device, and adds no debug
 * messenger or layer (SOFTMOE_VALIDATION is ignored: the application's validation layer, if it
 * enabled one, sees softmoe's calls and reports to the application's messenger). No device
 * extension and no optional feature is needed.
 *
 * The application's duties: the objects stay valid until smoe_context_destroy(ctx) has returned
 * (destroy the context first, then the device, then the instance); the queue is not used from
 * another thread while a softmoe call on ctx may submit to it (any call that runs or uploads
 * work: loading a model, inference, training, reading parameters, smoe_job_poll/wait), unless
 * queue_lock/queue_unlock are given, which must then guard every use of that VkQueue by the
 * application too. Two contexts may share one device and one queue if they are given the lock.
 * Work of the application and of softmoe on the queue is ordered only by submission order;
 * softmoe's buffers are its own, so no synchronization with the application's work is needed.
 *
 * ctx must have no device opened yet (smoe_device_count before is fine). Errors:
 * SMOE_ERROR_INVALID_ARGUMENT (ctx or ext NULL, struct_size smaller than the first version's, a
 * NULL handle or function, only one of queue_lock/queue_unlock, a device already opened),
 * SMOE_ERROR_UNSUPPORTED (the physical device is older than Vulkan 1.1, the family index is out
 * of range or the family has no compute), SMOE_ERROR_VULKAN / SMOE_ERROR_OUT_OF_*_MEMORY (creating
 * the command pool); on failure ctx stays without a device and may open another one.
 * Threads: context; it does not use the queue. */
SMOE_API smoe_status smoe_context_open_vulkan_external(smoe_context *ctx, const smoe_vulkan_external *ext);

/* ---- Models ------------------------------------------------------------------------------ */

typedef struct smoe_model smoe_model;

typedef enum smoe_model_kind { SMOE_MODEL_LAYER = 0, SMOE_MODEL_VIT = 1 } smoe_model_kind;

/* Loads a model (docs/format.md section 3) from a safetensors file onto the context's opened
 * device. A malformed file is refused with a message naming the tensor and what was expected;
 * nothing is kept. The model belongs to ctx and is freed by smoe_model_free or smoe_context_destroy.
 * smoe_model_load_memory copies what it needs: data may be freed when it returns.
 * Errors: SMOE_ERROR_INVALID_ARGUMENT (no device opened), SMOE_ERROR_IO, SMOE_ERROR_BAD_FORMAT,
 * SMOE_ERROR_NOT_FINITE, SMOE_ERROR_OUT_OF_*_MEMORY, SMOE_ERROR_TOO_LARGE. Threads: context
 * (every call that takes a model is a call on the model's context). */
SMOE_API smoe_status smoe_model_load_file(smoe_context *ctx, const char *path, smoe_model **out);
SMOE_API smoe_status smoe_model_load_memory(smoe_context *ctx, const void *data, size_t size,
                                            smoe_model **out);
/* Frees a model; an unfinished job of the model (smoe_vit_infer_async) is waited for first and
 * ends with an error, its logits unwritten. NULL is ignored. Threads: context. */
SMOE_API void smoe_model_free(smoe_model *model);
SMOE_API smoe_model_kind smoe_model_get_kind(const smoe_model *model);

/* Soft MoE layer shape: d model dim, n experts, p slots per expert, h expert hidden size. */
typedef struct smoe_layer_shape {
    int d, n, p, h;
} smoe_layer_shape;

SMOE_API smoe_status smoe_layer_get_shape(const smoe_model *model, smoe_layer_shape *shape);

/* y[b,m,d] = SoftMoE(x[b,m,d]). */
SMOE_API smoe_status smoe_layer_forward(smoe_model *model, int b, int m, const float *x, float *y);

/* Parameter names of a layer model, in the order smoe_layer_backward fills grads (static
 * strings; NULL outside 0..SMOE_LAYER_PARAM_COUNT-1). Threads: any. */
#define SMOE_LAYER_PARAM_COUNT 6
SMOE_API const char *smoe_layer_param_name(int i);

/* Forward and backward in one call: y as smoe_layer_forward, and given dy[b,m,d] the gradients
 * dx[b,m,d] and, for parameter i (see smoe_layer_param_name), grads[i] with that parameter's
 * shape. Any of dx or grads[i] may be NULL to skip copying it out. */
SMOE_API smoe_status smoe_layer_forward_backward(smoe_model *model, int b, int m, const float *x,
                                                 const float *dy, float *y, float *dx,
                                                 float *const grads[SMOE_LAYER_PARAM_COUNT]);

/* ---- Parameters of any model ------------------------------------------------------------ */

typedef struct smoe_param_info {
    const char *name; /* tensor name (docs/format.md sections 1 and 2), owned by the model */
    int ndim;
    int64_t shape[4];
    size_t count;     /* number of floats */
} smoe_param_info;

SMOE_API int smoe_model_param_count(const smoe_model *model);
SMOE_API smoe_status smoe_model_param_info(const smoe_model *model, int i, smoe_param_info *info);
/* Copies parameter i (or, after a backward pass, its gradient) out as float32. */
SMOE_API smoe_status smoe_model_get_param(smoe_model *model, int i, float *out);
SMOE_API smoe_status smoe_model_get_grad(smoe_model *model, int i, float *out);

/* ---- The Soft MoE ViT (docs/format.md section 2) ------------------------------------------ */

/* The MoE layer of the moe_layers blocks. */
typedef enum smoe_moe_kind {
    SMOE_MOE_SOFT = 0,            /* Soft MoE (docs/format.md section 1): the default */
    SMOE_MOE_TOKENS_CHOICE = 1,   /* sparse: each token picks its top_k experts, Batch Priority Routing,
                                   * capacity, importance and load losses (vmoe's
                                   * NoisyTopExpertsPerItemRouter) */
    SMOE_MOE_EXPERTS_CHOICE = 2   /* sparse: each expert picks its top tokens (vmoe's
                                   * NoisyTopItemsPerExpertRouter) */
} smoe_moe_kind;

/* Soft MoE's dispatch weights D and combine weights C (docs/format.md section 1), each side set on
 * its own: the routing ablation of the Soft MoE paper's Table 2. The fixed kinds leave phi and the
 * logit scale in the model (every variant has the same parameters); where neither side is soft
 * they get zero gradients and the logits are not computed. */
typedef enum smoe_mixing {
    SMOE_MIX_SOFT = 0,     /* the softmax of the logits: over the m tokens (D), over the n*p slots (C) */
    SMOE_MIX_UNIFORM = 1,  /* D = 1/m: every slot the mean of the tokens; C = 1/(n*p): every token the
                            * mean of the slots' outputs */
    SMOE_MIX_IDENTITY = 2  /* slot s takes token s alone and token i slot i's output alone: a fixed
                            * token-to-slot assignment. Needs n*p = m, and both sides identity. */
} smoe_mixing;

typedef struct smoe_vit_config {
    int image_size, patch_size, channels, dim, depth, heads, mlp_dim;
    int moe_layers[64]; /* block indices that use an MoE layer instead of the dense MLP */
    int moe_count;
    int experts, slots_per_expert, num_classes; /* slots_per_expert: Soft MoE only */
    /* The MoE layer kind and the sparse routers' settings. A zeroed field takes its default, so
     * a config zeroed before it is filled in is a Soft MoE ViT as before. */
    int moe_kind;          /* smoe_moe_kind; 0: SMOE_MOE_SOFT */
    int top_k;             /* Tokens Choice: experts per token, 1 or 2 (0: 1) */
    float capacity_factor; /* sparse routers: c; Tokens Choice capacity ceil(top_k*g*c/n) rounded
                            * up to a multiple of 4, Experts Choice capacity round(g*c/n), for a
                            * group of g tokens and n experts (0: 1.0) */
    int group_size;        /* sparse routers: tokens per routing group (0: one image). A group
                            * larger than an image spans consecutive images of the batch, which then
                            * compete for the experts' capacity. */
    int expert_mlp_dim;    /* hidden size of every MoE expert, for all MoE kinds (0: mlp_dim, which
                            * then sets the dense blocks' MLP and the experts alike) */
    int dispatch, combine; /* Soft MoE: smoe_mixing of D and of C (0: SMOE_MIX_SOFT); identity needs
                            * experts * slots_per_expert = the tokens of an image */
} smoe_vit_config;

/* Parses the JSON of "softmoe.config" (docs/format.md section 3.2), checking every value. */
SMOE_API smoe_status smoe_vit_config_parse(smoe_context *ctx, const char *json, smoe_vit_config *config);
/* A freshly initialised ViT (docs/format.md section 2.5) on the context's device, from a seed. */
SMOE_API smoe_status smoe_vit_create(smoe_context *ctx, const smoe_vit_config *config, uint64_t seed,
                                     smoe_model **out);
SMOE_API smoe_status smoe_vit_get_config(const smoe_model *model, smoe_vit_config *config);

/* logits[b, classes] for images[b, channels, size, size] (pixels scaled to [0, 1] for the
 * shipped Fashion-MNIST model). Smaller batches reuse the work buffers of the largest seen.
 * Errors: SMOE_ERROR_INVALID_ARGUMENT (not a ViT, b outside 1..65536, NULL pointers, the model has
 * an unfinished job), SMOE_ERROR_NOT_FINITE (NaN or Inf in images), SMOE_ERROR_OUT_OF_*_MEMORY,
 * SMOE_ERROR_TOO_LARGE, SMOE_ERROR_DEVICE_LOST, SMOE_ERROR_VULKAN. Threads: context. */
SMOE_API smoe_status smoe_vit_infer(smoe_model *model, int b, const float *images, float *logits);

/* ---- Expert-subset inference ------------------------------------------------------------ */

/* Chung et al., "Beyond Parameter Count: Implicit Bias in Soft Mixture of Experts" (arXiv
 * 2409.00879): a Soft MoE with many small experts keeps most of its accuracy when each input runs
 * only a few of them. With k > 0, every Soft MoE layer of the model, for each input (each image
 * of a ViT batch, each of the b sequences of smoe_layer_forward):
 *  - scores every expert by its combine mass: the sum of its combine weights C (docs/format.md
 *    section 1) over all tokens and over its slots;
 *  - keeps the k highest-scoring experts (of equal scores, the lower expert index first);
 *  - runs only those: the dropped experts' slots output zero and the kept slots are combined with
 *    the original C (each token's weights then sum to less than 1), or, with renormalize = 1,
 *    with each token's kept weights rescaled to sum to 1.
 * The work falls with k on both paths: the dispatch, the experts' matmuls and the combine run over
 * the kept slots only (on Vulkan the choice is made on the device and the inference program is
 * recorded once per setting, then replayed). Inputs of one batch keep different experts, and an
 * expert's weights are read once per batch if any input keeps it: the time saved is largest for
 * small batches, or where the experts' arithmetic rather than their weights dominates.
 *
 * k = 0, or k >= the number of experts n, means all experts: the plain layer, bit for bit. The
 * setting applies to smoe_layer_forward, smoe_vit_infer and smoe_vit_infer_async, and stays until
 * changed; a model starts with all experts. Gradients need all experts: while the setting drops
 * experts, smoe_layer_forward_backward, smoe_vit_loss_grads and smoe_vit_train_step fail with
 * SMOE_ERROR_INVALID_ARGUMENT (set k = 0 first).
 * Errors: SMOE_ERROR_INVALID_ARGUMENT (model NULL, k < 0, renormalize not 0 or 1, k > 0 for a ViT
 * without Soft MoE layers, 0 < k < n for Soft MoE layers whose dispatch or combine is not the
 * softmax (smoe_mixing), the model has an unfinished job); nothing changes on failure.
 * Threads: context. */
SMOE_API smoe_status smoe_model_set_keep_experts(smoe_model *model, int k, int renormalize);

/* The baseline the method is measured against: as smoe_model_set_keep_experts, but each input of
 * each layer keeps k experts drawn at random (uniformly, without replacement) instead of the k
 * highest-scoring. The draws follow from seed and the count of inference calls since this call:
 * a sequence of calls is reproducible from the seed, while each call, each input and each layer
 * draws afresh. Both paths draw the same experts. Errors and threads: as
 * smoe_model_set_keep_experts. */
SMOE_API smoe_status smoe_model_set_random_experts(smoe_model *model, int k, int renormalize, uint64_t seed);

/* The current setting: *k (0: all experts), *renormalize, *random (1 after
 * smoe_model_set_random_experts with 0 < k < n). Any output pointer may be NULL.
 * Errors: SMOE_ERROR_INVALID_ARGUMENT (model NULL). Threads: context. */
SMOE_API smoe_status smoe_model_get_keep_experts(const smoe_model *model, int *k, int *renormalize, int *random);

/* ---- Asynchronous inference ------------------------------------------------------------- */

/* A running smoe_vit_infer_async; owned by the caller, freed with smoe_job_free. */
typedef struct smoe_job smoe_job;

/* Starts the inference smoe_vit_infer does and returns without waiting for it. images is read
 * before the call returns (it may be reused at once); logits[b, classes] must stay valid until
 * smoe_job_wait or smoe_job_poll has returned a final status (or smoe_job_free), and is written
 * only by those calls, only when they return SMOE_OK.
 *  - Vulkan: the batch is uploaded, the model's recorded inference program is submitted to the
 *    queue, and the call returns; the submission's fence is the job's completion, and the logits
 *    are downloaded by the smoe_job_poll/smoe_job_wait that sees it signalled.
 *  - CPU path: the batch is copied into the model's work buffers and a worker thread that the
 *    library starts runs the forward pass; that thread touches only this model's buffers (it
 *    reads the parameters), never the context.
 * One job per model at a time: while a job of model is unfinished, smoe_vit_infer,
 * smoe_vit_infer_async, smoe_vit_loss_grads and smoe_vit_train_step on model fail with
 * SMOE_ERROR_INVALID_ARGUMENT; calls that only read the model (smoe_model_get_param,
 * smoe_model_save, ...) and calls on other models of the context are allowed. On success *job is
 * the caller's to free; on failure *job is NULL and nothing runs. Errors: those of smoe_vit_infer.
 * Threads: context, and the job calls below are calls on the model's context too. */
SMOE_API smoe_status smoe_vit_infer_async(smoe_model *model, int b, const float *images, float *logits,
                                          smoe_job **job);

/* Does not block. SMOE_NOT_READY while the job runs; otherwise its final status: SMOE_OK (the
 * logits are written), or the error it ended with (the message goes to the context's
 * smoe_last_error the first time it is returned). Once final, every later smoe_job_poll and
 * smoe_job_wait returns the same status again. A NULL job gives SMOE_ERROR_INVALID_ARGUMENT.
 * A job whose model was freed before it finished ends with SMOE_ERROR_INVALID_ARGUMENT.
 * Threads: context (it may download the logits through the context's device). */
SMOE_API smoe_status smoe_job_poll(smoe_job *job);

/* Blocks until the job has finished and returns its final status, as smoe_job_poll would.
 * Threads: context. */
SMOE_API smoe_status smoe_job_wait(smoe_job *job);

/* Frees a job. An unfinished job is waited for (work already submitted cannot be cancelled) and
 * its result discarded: the logits are not written. Works after the model or even the context
 * was destroyed. NULL is ignored. Threads: context while the context exists. */
SMOE_API void smoe_job_free(smoe_job *job);

/* Forward and backward on a labelled batch: the mean softmax cross-entropy in *loss, the logits
 * (may be NULL), and every parameter's gradient (smoe_model_get_grad). Parameters unchanged.
 * For a Tokens Choice ViT the loss includes the routers' importance losses (0.005 each); the
 * routing is deterministic here (no noise: that is smoe_vit_train_step's). */
SMOE_API smoe_status smoe_vit_loss_grads(smoe_model *model, int b, const float *images, const int32_t *labels,
                                         float *loss, float *logits);

typedef struct smoe_train_config {
    float lr;            /* peak learning rate */
    float min_lr;        /* the cosine decays to this */
    int warmup_steps;    /* linear warmup from 0 */
    int total_steps;     /* warmup + cosine decay length */
    float weight_decay;  /* AdamW, decoupled; none on biases, norms, phi, scale and pos_embed */
    float beta1, beta2, eps;
    float clip_norm;     /* global gradient-norm clipping; <= 0: off */
    float scale_lr_mult; /* learning-rate multiplier of the Soft MoE logit scales (<= 0: 1). With
                          * l2-normalised logits the scale starts at 1 and Adam moves it by about
                          * lr per step, so routing stays nearly uniform for a long time in short
                          * runs; a larger rate lets it sharpen. */
} smoe_train_config;

/* Default AdamW settings (0.9, 0.999, 1e-8, clipping at 1). Threads: any. */
SMOE_API void smoe_train_config_default(smoe_train_config *cfg);
/* The learning rate of step t (1-based) under cfg: linear warmup, then cosine decay. Threads: any. */
SMOE_API float smoe_train_lr(const smoe_train_config *cfg, long step);

/* One training step (forward, backward, clipping, AdamW) on a labelled batch of size b. On the
 * Vulkan path the whole step is one command buffer recorded on first use and replayed; per step
 * only the batch and {step, lr} go up and the loss and logits come down. The step counter is kept
 * by the model (smoe_model_train_step_count). logits may be NULL. The sparse routers add
 * N(0, 1/n^2) noise to their logits, drawn from (step, block, token, expert) alike on every
 * device, so a run is reproducible and resumes exactly; for Tokens Choice *loss includes the
 * importance and load losses (0.005 each, summed over the MoE blocks).
 * On failure the model is as before the call (parameters, optimizer moments, step count), except
 * when the failure came after the step's work had been submitted to the device (waiting for it or
 * reading the loss back failed): then the step was taken whole, its parameters, moments and step
 * count all advanced together, and only *loss and logits are unwritten. */
SMOE_API smoe_status smoe_vit_train_step(smoe_model *model, const smoe_train_config *cfg, int b, const float *images,
                                         const int32_t *labels, float *loss, float *logits);
SMOE_API long smoe_model_train_step_count(const smoe_model *model);

/* Saves the model as a safetensors file (docs/format.md section 3), atomically (temp file, fsync,
 * rename). With with_optimizer, the AdamW moments and the step count are saved too (a checkpoint
 * to resume). A parameter or moment that is NaN or Inf (training diverged) is refused with
 * SMOE_ERROR_NOT_FINITE naming it, and path is left as it was. */
SMOE_API smoe_status smoe_model_save(smoe_model *model, const char *path, int with_optimizer);

/* ---- User metadata ---------------------------------------------------------------------- */

/* Limits of smoe_model_set_metadata, in bytes of UTF-8 (without the terminating NUL), and keys. */
#define SMOE_METADATA_MAX_KEY 128
#define SMOE_METADATA_MAX_VALUE 65536
#define SMOE_METADATA_MAX_ENTRIES 64

/* Sets the text value of key in the model's own metadata (value NULL removes key; removing an
 * absent key is fine). The pairs stay with the model: smoe_model_save writes them into the file's
 * "__metadata__" beside the library's keys, and smoe_model_load_file/memory read back every key
 * of a file that is not the library's (class names, a training run's progress, provenance). A key
 * is 1..SMOE_METADATA_MAX_KEY bytes of UTF-8 without control characters and must not start with
 * "softmoe." (the library's own keys); a value is UTF-8 of at most SMOE_METADATA_MAX_VALUE bytes;
 * a model has at most SMOE_METADATA_MAX_ENTRIES keys (loading a file beyond these limits is
 * SMOE_ERROR_BAD_FORMAT). Both strings are copied. Errors: SMOE_ERROR_INVALID_ARGUMENT (model or
 * key NULL, a key or value outside these rules, a new key beyond the count), SMOE_ERROR_OUT_OF_HOST_MEMORY;
 * nothing changes on failure. Threads: context. */
SMOE_API smoe_status smoe_model_set_metadata(smoe_model *model, const char *key, const char *value);

/* *value: the value of key in the model's own metadata, or NULL when it has none (the library's
 * "softmoe.*" keys are never user metadata). The string is owned by the model, valid until key is
 * set again or the model is freed. Errors: SMOE_ERROR_INVALID_ARGUMENT (a NULL argument).
 * Threads: context. */
SMOE_API smoe_status smoe_model_get_metadata(const smoe_model *model, const char *key, const char **value);

/* ---- Images and class names (for the shipped Fashion-MNIST classifier) ------------------ */

/* Reads an image file and writes it as grayscale floats in [0, 1] into out[height * width]
 * (row-major), the input smoe_vit_infer takes for a one-channel model (height = width = the
 * config's image_size). Formats: PNG, JPEG (baseline and progressive) and binary PGM/PPM (P5/P6,
 * any maxval). Colour becomes luma (0.299 R + 0.587 G + 0.114 B); alpha is composited over black;
 * the image is resized to height x width (area averaging when shrinking, bilinear when growing,
 * each axis on its own). Needs no opened device: ctx only receives the error message and may be
 * NULL (then only the status says what failed). out is untouched on failure.
 * Errors: SMOE_ERROR_INVALID_ARGUMENT (path or out NULL, height or width outside 1..16384),
 * SMOE_ERROR_IO (cannot be opened or read, not a regular file, larger than 256 MiB),
 * SMOE_ERROR_BAD_FORMAT (not one of the formats, corrupt, more than 64 Mi pixels),
 * SMOE_ERROR_OUT_OF_HOST_MEMORY. Threads: context (with ctx NULL: any). */
SMOE_API smoe_status smoe_image_read_gray(smoe_context *ctx, const char *path, int height, int width, float *out);

/* The same from an encoded image in memory (size bytes at data, read only during the call); an
 * image of more than 256 MiB is SMOE_ERROR_BAD_FORMAT here. Threads: as smoe_image_read_gray. */
SMOE_API smoe_status smoe_image_read_gray_memory(smoe_context *ctx, const void *data, size_t size, int height,
                                                 int width, float *out);

/* The Fashion-MNIST class name of a label: "T-shirt/top", "Trouser", "Pullover", "Dress",
 * "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot" for 0..9, "unknown" otherwise. Never
 * NULL; static storage. Threads: any. */
SMOE_API const char *smoe_fmnist_class_name(int label);

/* ---- The Fashion-MNIST dataset (to train and evaluate on) ------------------------------- */

/* One split of the dataset in memory, as the files hold it. Zero it before smoe_fmnist_read. */
typedef struct smoe_dataset {
    int count, height, width;
    uint8_t *pixels; /* count * height * width bytes, row-major, example after example */
    uint8_t *labels; /* count, each < 10 */
} smoe_dataset;

/* Reads the training split (train = 1, 60000 images) or the test split (train = 0, 10000) of
 * Fashion-MNIST as Debian's dataset-fashion-mnist installs it: the gzipped IDX files
 * {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz in dir; dir NULL or "" means
 * $SOFTMOE_FMNIST_DIR when set, else /usr/share/datasets/fashion-mnist. Needs no opened device:
 * ctx only receives the error message and may be NULL. *out is zeroed first and stays zeroed on
 * failure; free it with smoe_dataset_free. Errors: SMOE_ERROR_INVALID_ARGUMENT (out NULL, a path
 * too long), SMOE_ERROR_IO (a file cannot be read; the message names it and the package),
 * SMOE_ERROR_BAD_FORMAT (a malformed or truncated file, counts that disagree, a label >= 10),
 * SMOE_ERROR_OUT_OF_HOST_MEMORY. Threads: context (with ctx NULL: any, while nothing changes the
 * environment). */
SMOE_API smoe_status smoe_fmnist_read(smoe_context *ctx, const char *dir, int train, smoe_dataset *out);

/* Frees the arrays and zeroes *d; NULL and a zeroed dataset are fine. Threads: any. */
SMOE_API void smoe_dataset_free(smoe_dataset *d);

/* Gathers examples idx[0..n) as smoe_vit_infer and smoe_vit_train_step take them: images (may be
 * NULL) as float32 [n, 1, height, width] = pixel / 255, labels (may be NULL) as int32 [n]. An
 * index outside [0, count) gives an all-zero image and label -1. Threads: any. */
SMOE_API void smoe_dataset_batch(const smoe_dataset *d, const int *idx, int n, float *images, int32_t *labels);

#ifdef __cplusplus
}
#endif
#endif
