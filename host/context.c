/* Context lifetime, errors, logging, device listing and opening. */
#define _POSIX_C_SOURCE 200809L
#include "context.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

smoe_status smoe_ctx_error(smoe_context *ctx, smoe_status status, const smoe_err *err)
{
    if (ctx && err && err != &ctx->err) memcpy(ctx->err.msg, err->msg, sizeof ctx->err.msg);
    if (ctx && status != SMOE_OK) smoe_ctx_log(ctx, SMOE_LOG_DEBUG, "error: %s", ctx->err.msg);
    return status;
}

smoe_status smoe_ctx_fail(smoe_context *ctx, smoe_status status, const char *fmt, ...)
{
    if (ctx) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->err.msg, sizeof ctx->err.msg, fmt, ap);
        va_end(ap);
    }
    return status;
}

void smoe_ctx_log(smoe_context *ctx, smoe_log_level level, const char *fmt, ...)
{
    if (!ctx || !ctx->log) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    ctx->log(ctx->log_user, level, line);
}

static void on_validation(void *user, const char *msg)
{
    smoe_ctx_log(user, SMOE_LOG_ERROR, "validation: %s", msg);
}

smoe_status smoe_context_create(smoe_context **out)
{
    if (!out) return SMOE_ERROR_INVALID_ARGUMENT;
    *out = calloc(1, sizeof **out);
    if (!*out) return SMOE_ERROR_OUT_OF_HOST_MEMORY;
    (*out)->device_index = -1;
    smoe_options_from_env(&(*out)->opts);
    return SMOE_OK;
}

void smoe_context_destroy(smoe_context *ctx)
{
    if (!ctx) return;
    while (ctx->model_count) smoe_model_destroy_internal(ctx->models[ctx->model_count - 1]);
    free(ctx->models);
    smoe_gpu_destroy(&ctx->gpu);
    smoe_vk_instance_destroy(&ctx->vi);
    free(ctx);
}

const char *smoe_last_error(const smoe_context *ctx)
{
    return ctx ? ctx->err.msg : "no context (smoe_context_create failed or was not called)";
}

void smoe_set_log_callback(smoe_context *ctx, smoe_log_fn fn, void *user)
{
    if (!ctx) return;
    ctx->log = fn;
    ctx->log_user = user;
}

int smoe_validation_message_count(const smoe_context *ctx)
{
    return ctx ? ctx->vi.validation_messages : 0;
}

/* Creates the Vulkan instance once. Failure is not an error for listing: the CPU path remains. */
static void ensure_vulkan(smoe_context *ctx)
{
    if (ctx->vk_tried) return;
    ctx->vk_tried = 1;
    int validate = ctx->opts.validation;
    ctx->vi.on_validation = on_validation;
    ctx->vi.on_validation_user = ctx;
    ctx->vk_status = smoe_vk_instance_create(&ctx->vi, validate, &ctx->vk_err);
    if (ctx->vk_status)
        smoe_ctx_log(ctx, SMOE_LOG_INFO, "Vulkan is not available: %s", ctx->vk_err.msg);
    else
        smoe_ctx_log(ctx, SMOE_LOG_DEBUG, "Vulkan instance created (%u usable devices%s)", ctx->vi.physical_count,
                     validate ? ", validation on" : "");
}

smoe_status smoe_device_count(smoe_context *ctx, int *count)
{
    if (!ctx || !count) return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "smoe_device_count: NULL argument");
    ensure_vulkan(ctx);
    *count = 1 + (ctx->vk_status ? 0 : (int)ctx->vi.physical_count);
    return SMOE_OK;
}

smoe_status smoe_device_get_info(smoe_context *ctx, int i, smoe_device_info *info)
{
    if (!ctx || !info) return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "smoe_device_get_info: NULL argument");
    int n;
    smoe_device_count(ctx, &n);
    if (i < 0 || i >= n) return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "device %d does not exist (there are %d)", i, n);
    if (i == 0) smoe_cpu_device_info(info);
    else *info = ctx->vi.infos[i - 1];
    return SMOE_OK;
}

smoe_status smoe_context_open_device(smoe_context *ctx, const char *spec)
{
    if (!ctx) return SMOE_ERROR_INVALID_ARGUMENT;
    if (ctx->opened)
        return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "this context already opened %s; create another context",
                             ctx->device.name);
    smoe_err err = {{0}};
    int cpu_only = spec && !strcmp(spec, "cpu");
    if (!cpu_only) ensure_vulkan(ctx);
    uint32_t count = ctx->vk_status || cpu_only ? 0 : ctx->vi.physical_count;
    int index = -1;
    smoe_status st = smoe_device_select(ctx->vi.infos, count, spec, ctx->opts.device, &index, ctx->reason, sizeof ctx->reason, &err);
    if (st) {
        if (ctx->vk_status && st == SMOE_ERROR_NO_DEVICE)
            smoe_fail_prefix(&err, st, "%s", ctx->vk_err.msg);
        return smoe_ctx_error(ctx, st, &err);
    }
    if (index >= 0) {
        st = smoe_gpu_create(&ctx->gpu, &ctx->vi, (uint32_t)index, &ctx->opts, &err);
        if (st) return smoe_ctx_error(ctx, st, &err);
        ctx->device = ctx->gpu.info;
        char why[512];
        if (smoe_device_quirks(&ctx->device, why, sizeof why))
            smoe_ctx_log(ctx, SMOE_LOG_INFO, "driver quirks of %s: %s", ctx->device.name, why);
    } else {
        smoe_cpu_device_info(&ctx->device);
        const char *core = smoe_cpu_blas_coretype_hint();
        if (core)
            smoe_ctx_log(ctx, SMOE_LOG_WARNING,
                         "OpenBLAS did not recognise this CPU and uses generic kernels; start the program with "
                         "OPENBLAS_CORETYPE=%s for the CPU path to run about 10x faster", core);
    }
    ctx->device_index = index;
    ctx->opened = 1;
    smoe_ctx_log(ctx, SMOE_LOG_INFO, "device: %s (%s)", ctx->device.name, ctx->reason);
    return SMOE_OK;
}

smoe_status smoe_context_open_vulkan_external(smoe_context *ctx, const smoe_vulkan_external *ext)
{
    if (!ctx) return SMOE_ERROR_INVALID_ARGUMENT;
    const char *what = "smoe_context_open_vulkan_external";
    if (ctx->opened)
        return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "%s: this context already opened %s; create another context",
                             what, ctx->device.name);
    if (!ext) return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "%s: NULL ext", what);
    /* The first version of the struct ends with queue_lock_user; later versions may add fields. */
    size_t first_size = offsetof(smoe_vulkan_external, queue_lock_user) + sizeof ext->queue_lock_user;
    if (ext->struct_size < first_size)
        return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT,
                             "%s: ext->struct_size is %u; set it to sizeof(smoe_vulkan_external)", what, ext->struct_size);
    const char *null = !ext->get_instance_proc_addr ? "get_instance_proc_addr"
                       : !ext->instance             ? "instance"
                       : !ext->physical_device      ? "physical_device"
                       : !ext->device               ? "device"
                       : !ext->queue                ? "queue"
                                                    : NULL;
    if (null) return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "%s: ext->%s is NULL", what, null);
    if (!ext->queue_lock != !ext->queue_unlock)
        return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "%s: give both queue_lock and queue_unlock, or neither", what);

    /* An instance of our own, made for an earlier device listing, is not needed any more. */
    if (ctx->vk_tried) smoe_vk_instance_destroy(&ctx->vi);
    ctx->vk_tried = 0;
    ctx->vi.on_validation = on_validation;
    ctx->vi.on_validation_user = ctx;
    smoe_err err = {{0}};
    /* The handle types differ between this header and Vulkan's only in name (void * against
     * dispatchable handles, one function pointer type against another of the same signature). */
    PFN_vkGetInstanceProcAddr gipa = (PFN_vkGetInstanceProcAddr)(void (*)(void))ext->get_instance_proc_addr;
    smoe_status st = smoe_vk_instance_adopt(&ctx->vi, gipa, (VkInstance)ext->instance,
                                            (VkPhysicalDevice)ext->physical_device, &err);
    if (!st) {
        st = smoe_gpu_adopt(&ctx->gpu, &ctx->vi, ext, &ctx->opts, &err);
        if (st) smoe_vk_instance_destroy(&ctx->vi);
    }
    if (st) return smoe_ctx_error(ctx, st, &err);
    /* Listing devices now gives the CPU path and this device; no instance is ever created. */
    ctx->vk_tried = 1;
    ctx->vk_status = SMOE_OK;
    ctx->device = ctx->gpu.info;
    ctx->device_index = 0;
    ctx->opened = 1;
    snprintf(ctx->reason, sizeof ctx->reason, "the application's Vulkan device (smoe_context_open_vulkan_external)");
    char why[512];
    if (smoe_device_quirks(&ctx->device, why, sizeof why))
        smoe_ctx_log(ctx, SMOE_LOG_INFO, "driver quirks of %s: %s", ctx->device.name, why);
    smoe_ctx_log(ctx, SMOE_LOG_INFO, "device: %s (%s)", ctx->device.name, ctx->reason);
    return SMOE_OK;
}

smoe_status smoe_context_device(smoe_context *ctx, smoe_device_info *info, const char **reason)
{
    if (!ctx) return SMOE_ERROR_INVALID_ARGUMENT;
    if (!ctx->opened) return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "no device opened yet (smoe_context_open_device)");
    if (info) *info = ctx->device;
    if (reason) *reason = ctx->reason;
    return SMOE_OK;
}

smoe_status smoe_ctx_add_model(smoe_context *ctx, struct smoe_model *m)
{
    struct smoe_model **n = realloc(ctx->models, (ctx->model_count + 1) * sizeof *n);
    if (!n) return smoe_ctx_fail(ctx, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    ctx->models = n;
    ctx->models[ctx->model_count++] = m;
    return SMOE_OK;
}

void smoe_ctx_remove_model(smoe_context *ctx, struct smoe_model *m)
{
    for (size_t i = 0; i < ctx->model_count; i++)
        if (ctx->models[i] == m) {
            ctx->models[i] = ctx->models[--ctx->model_count];
            return;
        }
}
