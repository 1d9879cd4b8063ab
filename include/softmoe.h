/* softmoe: Soft Mixture-of-Experts inference and training on any Vulkan GPU, with a CPU path.
 *
 * Conventions of this header:
 *  - Every call returns an smoe_status. On failure the context (when there is one) keeps a
 *    message that smoe_last_error() returns until the next failing call on that context.
 *  - The library never prints, never exits, and has no global mutable state: all state hangs off
 *    an smoe_context. Different contexts may be used from different threads at the same time;
 *    one context must not be used from two threads at once unless a call says otherwise.
 *  - Tensors are float32, row-major, in host memory owned by the caller unless stated.
 */
#ifndef SOFTMOE_H
#define SOFTMOE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SMOE_VERSION_MAJOR 0
#define SMOE_VERSION_MINOR 1
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
    SMOE_ERROR_DEVICE_LOST = 7,      /* the context must be destroyed; nothing else is valid */
    SMOE_ERROR_VULKAN = 8,           /* any other Vulkan failure; the message names the call */
    SMOE_ERROR_IO = 9,               /* a file could not be opened, read or written */
    SMOE_ERROR_BAD_FORMAT = 10,      /* a file or tensor does not match the specification */
    SMOE_ERROR_NOT_FINITE = 11,      /* NaN or Inf in an input or a weight */
    SMOE_ERROR_INTERNAL = 12
} smoe_status;

/* A short constant name for a status ("SMOE_ERROR_IO"); never NULL. Thread-safe. */
SMOE_API const char *smoe_status_string(smoe_status status);

/* The library's version as SMOE_VERSION encodes it, to compare with the header's. Thread-safe. */
SMOE_API int smoe_version(void);

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

/* Creates a context with no device opened yet. *out is NULL on failure. Thread-safe. */
SMOE_API smoe_status smoe_context_create(smoe_context **out);

/* Destroys the context and everything created from it. NULL is ignored. */
SMOE_API void smoe_context_destroy(smoe_context *ctx);

/* The message of the last failing call on ctx ("" if none). Owned by ctx; valid until the next
 * call on ctx. A NULL ctx returns a fixed message. */
SMOE_API const char *smoe_last_error(const smoe_context *ctx);

/* Sets (or, with fn NULL, removes) the log callback. */
SMOE_API void smoe_set_log_callback(smoe_context *ctx, smoe_log_fn fn, void *user);

/* Validation messages (warnings and errors) the Khronos validation layer reported on this context.
 * The layer is enabled by the environment: SOFTMOE_VALIDATION=1 (or =sync for synchronization
 * validation too). Each message is also logged at SMOE_LOG_ERROR. */
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
} smoe_device_info;

/* Lists devices: index 0 is always the CPU path, then every Vulkan physical device in the
 * loader's order (their info.index is N of "vulkan:N"). Works without an opened device and
 * without a Vulkan loader (then only the CPU path is listed). */
SMOE_API smoe_status smoe_device_count(smoe_context *ctx, int *count);
SMOE_API smoe_status smoe_device_get_info(smoe_context *ctx, int i, smoe_device_info *info);

/* Opens the device named by spec:
 *   "cpu"       the CPU path;
 *   "vulkan"    the best Vulkan device: discrete, then integrated, then virtual, then other; a
 *               CPU-type driver (lavapipe) only when it is the only one;
 *   "vulkan:N"  Vulkan physical device N;
 *   NULL or ""  the SOFTMOE_DEVICE environment variable if set, else the best GPU, else "cpu"
 *               (the CPU path is faster than a CPU-type Vulkan driver).
 * A context opens one device once. The choice and the reason are logged and kept (see below). */
SMOE_API smoe_status smoe_context_open_device(smoe_context *ctx, const char *spec);

/* The opened device and why it was chosen (a sentence owned by ctx). */
SMOE_API smoe_status smoe_context_device(smoe_context *ctx, smoe_device_info *info, const char **reason);

/* The value of OPENBLAS_CORETYPE that would make OpenBLAS use this CPU's vector units, when the
 * OpenBLAS in use did not recognise the CPU and fell back to generic kernels (about 10x slower on
 * the CPU path); NULL when all is well. OpenBLAS reads it only at load time, so an application
 * sets it in the environment before starting (softmoe's command re-executes itself with it).
 * Opening the "cpu" device also logs this as a warning. Thread-safe. */
SMOE_API const char *smoe_cpu_blas_coretype_hint(void);

/* ---- Models ------------------------------------------------------------------------------ */

typedef struct smoe_model smoe_model;

typedef enum smoe_model_kind { SMOE_MODEL_LAYER = 0, SMOE_MODEL_VIT = 1 } smoe_model_kind;

/* Loads a model (SPEC section 3) from a safetensors file onto the context's opened device. A
 * malformed file is refused with a message naming the tensor and what was expected; nothing is
 * kept. The model belongs to ctx and is freed by smoe_model_free or smoe_context_destroy. */
SMOE_API smoe_status smoe_model_load_file(smoe_context *ctx, const char *path, smoe_model **out);
SMOE_API smoe_status smoe_model_load_memory(smoe_context *ctx, const void *data, size_t size,
                                            smoe_model **out);
SMOE_API void smoe_model_free(smoe_model *model);
SMOE_API smoe_model_kind smoe_model_get_kind(const smoe_model *model);

/* Soft MoE layer shape: d model dim, n experts, p slots per expert, h expert hidden size. */
typedef struct smoe_layer_shape {
    int d, n, p, h;
} smoe_layer_shape;

SMOE_API smoe_status smoe_layer_get_shape(const smoe_model *model, smoe_layer_shape *shape);

/* y[b,m,d] = SoftMoE(x[b,m,d]). */
SMOE_API smoe_status smoe_layer_forward(smoe_model *model, int b, int m, const float *x, float *y);

/* Parameter names of a layer model, in the order smoe_layer_backward fills grads. */
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
    const char *name; /* SPEC tensor name, owned by the model */
    int ndim;
    int64_t shape[4];
    size_t count;     /* number of floats */
} smoe_param_info;

SMOE_API int smoe_model_param_count(const smoe_model *model);
SMOE_API smoe_status smoe_model_param_info(const smoe_model *model, int i, smoe_param_info *info);
/* Copies parameter i (or, after a backward pass, its gradient) out as float32. */
SMOE_API smoe_status smoe_model_get_param(smoe_model *model, int i, float *out);
SMOE_API smoe_status smoe_model_get_grad(smoe_model *model, int i, float *out);

/* ---- The Soft MoE ViT (SPEC section 2) ----------------------------------------------------- */

typedef struct smoe_vit_config {
    int image_size, patch_size, channels, dim, depth, heads, mlp_dim;
    int moe_layers[64]; /* block indices that use Soft MoE instead of the dense MLP */
    int moe_count;
    int experts, slots_per_expert, num_classes;
} smoe_vit_config;

/* Parses the JSON of "softmoe.config" (SPEC section 3), checking every value. */
SMOE_API smoe_status smoe_vit_config_parse(smoe_context *ctx, const char *json, smoe_vit_config *config);
/* A freshly initialised ViT (SPEC initialisation) on the context's device, from a seed. */
SMOE_API smoe_status smoe_vit_create(smoe_context *ctx, const smoe_vit_config *config, uint64_t seed,
                                     smoe_model **out);
SMOE_API smoe_status smoe_vit_get_config(const smoe_model *model, smoe_vit_config *config);

/* logits[b, classes] for images[b, channels, size, size] (pixels scaled to [0, 1] for the
 * shipped Fashion-MNIST model). Smaller batches reuse the work buffers of the largest seen. */
SMOE_API smoe_status smoe_vit_infer(smoe_model *model, int b, const float *images, float *logits);

/* Forward and backward on a labelled batch: the mean softmax cross-entropy in *loss, the logits
 * (may be NULL), and every parameter's gradient (smoe_model_get_grad). Parameters unchanged. */
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
} smoe_train_config;

/* Default AdamW settings (0.9, 0.999, 1e-8, clipping at 1). */
SMOE_API void smoe_train_config_default(smoe_train_config *cfg);
/* The learning rate of step t (1-based) under cfg: linear warmup, then cosine decay. */
SMOE_API float smoe_train_lr(const smoe_train_config *cfg, long step);

/* One training step (forward, backward, clipping, AdamW) on a labelled batch of size b. On the
 * Vulkan path the whole step is one command buffer recorded on first use and replayed; per step
 * only the batch and {step, lr} go up and the loss and logits come down. The step counter is kept
 * by the model (smoe_model_train_step_count). logits may be NULL. */
SMOE_API smoe_status smoe_vit_train_step(smoe_model *model, const smoe_train_config *cfg, int b, const float *images,
                                         const int32_t *labels, float *loss, float *logits);
SMOE_API long smoe_model_train_step_count(const smoe_model *model);

/* Saves the model as SPEC safetensors, atomically (temp file, fsync, rename). With
 * with_optimizer, the AdamW moments and the step count are saved too (a checkpoint to resume). */
SMOE_API smoe_status smoe_model_save(smoe_model *model, const char *path, int with_optimizer);

#ifdef __cplusplus
}
#endif
#endif
