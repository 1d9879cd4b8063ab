/* Contexts and devices: listing, capability records, selection rules, two contexts at once. */
#define _POSIX_C_SOURCE 200809L
#include "device.h"
#include "test_vk.h"

static void test_listing(void)
{
    smoe_context *ctx = NULL;
    CHECK(smoe_context_create(&ctx) == SMOE_OK);
    int n = 0;
    CHECK(smoe_device_count(ctx, &n) == SMOE_OK);
    CHECK_MSG(n >= 2, "expected the CPU path and at least one Vulkan device, got %d", n);
    smoe_device_info info;
    CHECK(smoe_device_get_info(ctx, 0, &info) == SMOE_OK);
    CHECK(info.kind == SMOE_DEVICE_CPU && info.index == -1 && info.compute_units >= 1);
    for (int i = 1; i < n; i++) {
        CHECK(smoe_device_get_info(ctx, i, &info) == SMOE_OK);
        printf("  vulkan:%d %s, driver %s, subgroup %u..%u, shared %u, storage range %llu, alloc %llu\n", info.index,
               info.name, info.driver_name, info.min_subgroup_size, info.max_subgroup_size, info.max_shared_memory,
               (unsigned long long)info.max_storage_buffer_range, (unsigned long long)info.max_allocation_size);
        CHECK(info.index == i - 1);
        CHECK(info.name[0] != 0);
        CHECK(info.api_version >= VK_API_VERSION_1_1);
        CHECK(info.subgroup_size >= 1 && info.min_subgroup_size <= info.subgroup_size &&
              info.subgroup_size <= info.max_subgroup_size);
        CHECK(info.max_shared_memory >= 16384);          /* Vulkan's required minimum */
        CHECK(info.max_storage_buffer_range >= 134217728 || info.max_storage_buffer_range >= (1u << 27));
        CHECK(info.max_allocation_size >= (1ull << 30));
        CHECK(info.max_workgroup_invocations >= 128);
        CHECK(info.min_storage_buffer_offset_alignment >= 1);
    }
    /* the driver CI asked for (its second Vulkan implementation) is the one listed */
    const char *want = getenv("SOFTMOE_EXPECT_DRIVER");
    if (want && want[0]) {
        int found = 0;
        for (int i = 1; i < n; i++)
            if (smoe_device_get_info(ctx, i, &info) == SMOE_OK && strstr(info.driver_info, want)) found = 1;
        CHECK_MSG(found, "no Vulkan device has the driver SOFTMOE_EXPECT_DRIVER names (\"%s\")", want);
        printf("  expected driver \"%s\": %s\n", want, found ? "present" : "missing");
    }
    CHECK(smoe_device_get_info(ctx, n, &info) == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(smoe_last_error(ctx), "does not exist") != NULL);
    CHECK(smoe_validation_message_count(ctx) == 0);
    smoe_context_destroy(ctx);
}

/* The rules of smoe_device_select on made-up device lists. */
static void test_selection_rules(void)
{
    smoe_device_info devs[3];
    memset(devs, 0, sizeof devs);
    strcpy(devs[0].name, "llvmpipe");
    devs[0].kind = SMOE_DEVICE_VULKAN_CPU;
    strcpy(devs[1].name, "iGPU");
    devs[1].kind = SMOE_DEVICE_VULKAN_INTEGRATED;
    strcpy(devs[2].name, "dGPU");
    devs[2].kind = SMOE_DEVICE_VULKAN_DISCRETE;
    char why[512];
    smoe_err err;
    int idx = 99;
    CHECK(smoe_device_select(devs, 3, "vulkan", NULL, &idx, why, sizeof why, &err) == SMOE_OK && idx == 2);
    CHECK(smoe_device_select(devs, 2, "vulkan", NULL, &idx, why, sizeof why, &err) == SMOE_OK && idx == 1);
    CHECK(smoe_device_select(devs, 1, "vulkan", NULL, &idx, why, sizeof why, &err) == SMOE_OK && idx == 0);
    CHECK(smoe_device_select(devs, 3, NULL, NULL, &idx, why, sizeof why, &err) == SMOE_OK && idx == 2);
    CHECK(smoe_device_select(devs, 1, NULL, NULL, &idx, why, sizeof why, &err) == SMOE_OK && idx == -1);
    CHECK(strstr(why, "CPU path") != NULL);
    CHECK(smoe_device_select(devs, 0, "", NULL, &idx, why, sizeof why, &err) == SMOE_OK && idx == -1);
    CHECK(smoe_device_select(devs, 3, "vulkan:0", NULL, &idx, why, sizeof why, &err) == SMOE_OK && idx == 0);
    CHECK(smoe_device_select(devs, 3, "cpu", NULL, &idx, why, sizeof why, &err) == SMOE_OK && idx == -1);
    CHECK(smoe_device_select(devs, 3, "vulkan:3", NULL, &idx, why, sizeof why, &err) == SMOE_ERROR_NO_DEVICE);
    CHECK(smoe_device_select(devs, 3, "vulkan:x", NULL, &idx, why, sizeof why, &err) == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK(smoe_device_select(devs, 3, "vulkan:-1", NULL, &idx, why, sizeof why, &err) == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK(smoe_device_select(devs, 3, "gpu", NULL, &idx, why, sizeof why, &err) == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(err.msg, "gpu") != NULL);
    CHECK(smoe_device_select(devs, 0, "vulkan", NULL, &idx, why, sizeof why, &err) == SMOE_ERROR_NO_DEVICE);
    /* SOFTMOE_DEVICE's value (the context's options) for a caller that names no device */
    CHECK(smoe_device_select(devs, 3, NULL, "vulkan:1", &idx, why, sizeof why, &err) == SMOE_OK && idx == 1);
    CHECK(strstr(why, "SOFTMOE_DEVICE") != NULL);
    CHECK(smoe_device_select(devs, 3, "cpu", "vulkan:1", &idx, why, sizeof why, &err) == SMOE_OK && idx == -1);
}

static void test_open_devices(void)
{
    /* The real default on this machine: the best GPU, or the CPU path without one. */
    smoe_context *ctx = test_open(NULL);
    smoe_device_info info;
    const char *reason = NULL;
    if (ctx) {
        CHECK(smoe_context_device(ctx, &info, &reason) == SMOE_OK);
        CHECK(reason && reason[0]);
        printf("  default -> %s (%s)\n", info.name, reason);
        if (info.kind == SMOE_DEVICE_CPU) CHECK(strstr(reason, "CPU path") != NULL);
        CHECK(smoe_context_open_device(ctx, "cpu") == SMOE_ERROR_INVALID_ARGUMENT); /* opened once */
        test_close(ctx);
    }
    ctx = test_open("cpu");
    if (ctx) {
        CHECK(smoe_context_device(ctx, &info, NULL) == SMOE_OK && info.kind == SMOE_DEVICE_CPU);
        test_close(ctx);
    }
    ctx = test_open("vulkan");
    if (ctx) {
        CHECK(smoe_context_device(ctx, &info, &reason) == SMOE_OK && info.kind != SMOE_DEVICE_CPU);
        printf("  vulkan -> %s (%s)\n", info.name, reason);
        test_close(ctx);
    }
    ctx = test_open("vulkan:0");
    test_close(ctx);
    smoe_context *bad = NULL;
    CHECK(smoe_context_create(&bad) == SMOE_OK);
    CHECK(smoe_context_open_device(bad, "vulkan:4096") == SMOE_ERROR_NO_DEVICE);
    CHECK(strstr(smoe_last_error(bad), "4096") != NULL);
    CHECK(smoe_context_open_device(bad, "tpu") == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK(smoe_context_device(bad, &info, NULL) == SMOE_ERROR_INVALID_ARGUMENT);
    smoe_context_destroy(bad);
    /* Environment variable for apps that pass no device. */
    setenv("SOFTMOE_DEVICE", "vulkan", 1);
    ctx = test_open(NULL);
    if (ctx) {
        CHECK(smoe_context_device(ctx, &info, &reason) == SMOE_OK && info.kind != SMOE_DEVICE_CPU);
        CHECK(strstr(reason, "SOFTMOE_DEVICE") != NULL);
        test_close(ctx);
    }
    unsetenv("SOFTMOE_DEVICE");
    /* A row-kernel mode that does not exist is refused when the device opens, naming it. */
    setenv("SOFTMOE_ROW_KERNELS", "sideways", 1);
    bad = NULL;
    CHECK(smoe_context_create(&bad) == SMOE_OK);
    unsetenv("SOFTMOE_ROW_KERNELS"); /* read at creation: the context keeps "sideways" */
    CHECK(smoe_context_open_device(bad, "vulkan") == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(smoe_last_error(bad), "sideways") != NULL);
    smoe_context_destroy(bad);
}

static void test_two_contexts(void)
{
    smoe_context *a = test_open("vulkan"), *b = test_open("vulkan");
    CHECK(a && b);
    if (a && b) CHECK(a->gpu.device != b->gpu.device && a->vi.instance != b->vi.instance);
    test_close(a); /* destroying one leaves the other working */
    if (b) {
        int n;
        CHECK(smoe_device_count(b, &n) == SMOE_OK && n >= 2);
    }
    test_close(b);
}

/* The validation hook really sees misuse: an invalid call must be counted (and so fail tests). */
static void test_validation_hook(void)
{
    const char *v = getenv("SOFTMOE_VALIDATION");
    if (!v || !v[0] || !strcmp(v, "0")) {
        printf("  validation off: hook test skipped\n");
        return;
    }
    smoe_context *ctx = test_open("vulkan");
    if (!ctx) return;
    VkBufferCreateInfo bad = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = 0,
                              .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT};
    VkBuffer buf = VK_NULL_HANDLE;
    VkResult r = ctx->gpu.vk.vkCreateBuffer(ctx->gpu.device, &bad, NULL, &buf); /* size 0 is invalid */
    CHECK_MSG(smoe_validation_message_count(ctx) >= 1, "a zero-size buffer was not reported by validation");
    if (r == VK_SUCCESS && buf) ctx->gpu.vk.vkDestroyBuffer(ctx->gpu.device, buf, NULL);
    smoe_context_destroy(ctx);
}

static void test_api_misuse(void)
{
    CHECK(smoe_context_create(NULL) == SMOE_ERROR_INVALID_ARGUMENT);
    smoe_context_destroy(NULL);
    CHECK(strlen(smoe_last_error(NULL)) > 0);
    CHECK(strcmp(smoe_status_string(SMOE_ERROR_DEVICE_LOST), "SMOE_ERROR_DEVICE_LOST") == 0);
    CHECK(smoe_version() == SMOE_VERSION);
    CHECK(smoe_version_details(NULL) == SMOE_ERROR_INVALID_ARGUMENT);
    smoe_version_info v;
    CHECK(smoe_version_details(&v) == SMOE_OK);
    CHECK(v.version == SMOE_VERSION && v.library[0] && v.spirv_compiler[0] && v.vulkan[0]);
}

int main(void)
{
    test_api_misuse();
    test_selection_rules();
    test_listing();
    test_open_devices();
    test_two_contexts();
    test_validation_hook();
    return test_finish("test_device");
}
