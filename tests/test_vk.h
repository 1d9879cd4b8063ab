/* Helpers for tests that open a device: log to stderr, and fail on any validation message. */
#ifndef SMOE_TEST_VK_H
#define SMOE_TEST_VK_H

#include <stdlib.h>
#include <string.h>

#include "context.h"
#include "test_util.h"

static void test_log(void *user, smoe_log_level level, const char *msg)
{
    (void)user;
    if (level >= SMOE_LOG_INFO) fprintf(stderr, "  [softmoe] %s\n", msg);
}

/* Opens spec on a new context, or returns NULL (with a failed check) if that fails. */
static inline smoe_context *test_open(const char *spec)
{
    smoe_context *ctx = NULL;
    CHECK(smoe_context_create(&ctx) == SMOE_OK);
    if (!ctx) return NULL;
    smoe_set_log_callback(ctx, test_log, NULL);
    smoe_status st = smoe_context_open_device(ctx, spec);
    CHECK_MSG(st == SMOE_OK, "opening %s: %s", spec ? spec : "(default)", smoe_last_error(ctx));
    if (st) {
        smoe_context_destroy(ctx);
        return NULL;
    }
    /* CI's second Vulkan implementation: the loader falls back to the system driver without a
     * word when the one asked for does not load, so the tests check the driver they got. */
    const char *want = getenv("SOFTMOE_EXPECT_DRIVER");
    smoe_device_info info;
    if (want && want[0] && smoe_context_device(ctx, &info, NULL) == SMOE_OK && info.index >= 0)
        CHECK_MSG(strstr(info.driver_info, want) != NULL, "SOFTMOE_EXPECT_DRIVER is \"%s\", the driver is \"%s\" (%s)",
                  want, info.driver_info, info.driver_name);
    return ctx;
}

/* test_open on a context created with the environment variable name set to value (the options
 * are read when a context is created); the environment is left as it was. */
static inline smoe_context *test_open_env(const char *spec, const char *name, const char *value)
{
    const char *was = getenv(name);
    char saved[256];
    snprintf(saved, sizeof saved, "%s", was ? was : "");
    setenv(name, value, 1);
    smoe_context *ctx = test_open(spec);
    if (was) setenv(name, saved, 1);
    else unsetenv(name);
    return ctx;
}

/* A context whose options force the matmul variant (SOFTMOE_MATMUL_VARIANT). */
static inline smoe_context *test_open_forced(const char *spec, const char *variant)
{
    return test_open_env(spec, "SOFTMOE_MATMUL_VARIANT", variant);
}

/* A Vulkan context whose row kernels run the other way than gpu's (SOFTMOE_ROW_KERNELS). */
static inline smoe_context *test_open_other_rows(const smoe_gpu *gpu)
{
    return test_open_env("vulkan", "SOFTMOE_ROW_KERNELS", gpu->row_serial ? "workgroup" : "serial");
}

/* Destroys ctx after checking that validation reported nothing. */
static inline void test_close(smoe_context *ctx)
{
    if (!ctx) return;
    CHECK_MSG(smoe_validation_message_count(ctx) == 0, "%d validation messages", smoe_validation_message_count(ctx));
    smoe_context_destroy(ctx);
}

/* Deterministic pseudo-random floats in [-1, 1) (xorshift), no global state. */
static inline float test_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (float)((*s >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

/* Variant index i is the first usable row of its shader (the tests of whole ops force one row per
 * shader; tests/test_matmul.c forces every row on every feature of the family). */
#ifdef SMOE_OPS_MATMUL_H
static inline int test_first_of_shader(const smoe_gpu *gpu, uint32_t i)
{
    if (!smoe_matmul_variant_usable(gpu, i)) return 0;
    for (uint32_t j = 0; j < i; j++)
        if (smoe_matmul_variant_usable(gpu, j) && !strcmp(smoe_matmul_variant_shader(j), smoe_matmul_variant_shader(i)))
            return 0;
    return 1;
}
#endif

#endif
