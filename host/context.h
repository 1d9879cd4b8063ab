/* The context: everything the library holds hangs off it (no global state). */
#ifndef SMOE_CONTEXT_H
#define SMOE_CONTEXT_H

#include "device.h"
#include "softmoe.h"

struct smoe_context {
    smoe_err err;
    smoe_log_fn log;
    void *log_user;
    smoe_options opts; /* the policy, read from the environment at creation (options.h) */

    /* Vulkan instance, created on first need; vk_status says whether that worked. */
    int vk_tried;
    smoe_status vk_status;
    smoe_err vk_err;
    smoe_vk_instance vi;

    /* The opened device: device_index -1 is the CPU path. */
    int opened;
    int device_index;
    smoe_device_info device;
    char reason[512];
    smoe_gpu gpu;

    struct smoe_model **models;
    size_t model_count;
};

/* Stores err as the context's last error and returns status. */
smoe_status smoe_ctx_error(smoe_context *ctx, smoe_status status, const smoe_err *err);
/* Formats the last error directly. */
smoe_status smoe_ctx_fail(smoe_context *ctx, smoe_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void smoe_ctx_log(smoe_context *ctx, smoe_log_level level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The opened gpu, or NULL on the CPU path. */
static inline smoe_gpu *smoe_ctx_gpu(smoe_context *ctx) { return ctx->opened && ctx->device_index >= 0 ? &ctx->gpu : NULL; }

/* Model registry, so that smoe_context_destroy frees what the app forgot. */
smoe_status smoe_ctx_add_model(smoe_context *ctx, struct smoe_model *m);
void smoe_ctx_remove_model(smoe_context *ctx, struct smoe_model *m);
void smoe_model_destroy_internal(struct smoe_model *m);

#endif
