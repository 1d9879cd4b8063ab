/* Instance creation, capability records, device selection, quirks, logical device. */
#define _POSIX_C_SOURCE 200809L
#ifdef _OPENMP
#include <omp.h>
#endif
#include "device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "memory.h"
#include "pipeline.h"
#include "tune.h"

/* ---- Driver quirks: one row per known behaviour, matched on driver ID or device name. ---- */

typedef struct quirk_row {
    VkDriverId driver; /* 0: any */
    const char *name_contains; /* NULL: any */
    uint32_t quirks;
    const char *why;
} quirk_row;

static const quirk_row quirk_table[] = {
    {VK_DRIVER_ID_MESA_LLVMPIPE, NULL, SMOE_QUIRK_CPU_DRIVER,
     "lavapipe runs shaders on the CPU: subgroup and shared-memory operations become scalar loops"},
    {0, "SwiftShader", SMOE_QUIRK_CPU_DRIVER, "SwiftShader runs shaders on the CPU"},
};

uint32_t smoe_device_quirks(const smoe_device_info *info, char *why, size_t why_size)
{
    uint32_t q = 0;
    size_t used = 0;
    if (why && why_size) why[0] = 0;
    for (size_t i = 0; i < sizeof quirk_table / sizeof quirk_table[0]; i++) {
        const quirk_row *r = &quirk_table[i];
        int match = 1;
        if (r->driver && (uint32_t)r->driver != info->driver_id) match = 0;
        if (r->name_contains && !strstr(info->name, r->name_contains)) match = 0;
        if (!match) continue;
        q |= r->quirks;
        if (why && used + 1 < why_size) {
            int n = snprintf(why + used, why_size - used, "%s%s", used ? "; " : "", r->why);
            if (n > 0) used += (size_t)n;
            if (used >= why_size) used = why_size - 1;
        }
    }
    const char *env = getenv("SOFTMOE_FORCE_STAGING");
    if (env && env[0] == '1') q |= SMOE_QUIRK_FORCE_STAGING;
    return q;
}

/* ---- Kinds and ranking ---- */

const char *smoe_device_kind_name(smoe_device_kind kind)
{
    switch (kind) {
    case SMOE_DEVICE_CPU: return "cpu path";
    case SMOE_DEVICE_VULKAN_DISCRETE: return "discrete GPU";
    case SMOE_DEVICE_VULKAN_INTEGRATED: return "integrated GPU";
    case SMOE_DEVICE_VULKAN_VIRTUAL: return "virtual GPU";
    case SMOE_DEVICE_VULKAN_CPU: return "CPU-type Vulkan driver";
    case SMOE_DEVICE_VULKAN_OTHER: return "other Vulkan device";
    }
    return "unknown";
}

int smoe_device_rank(smoe_device_kind kind)
{
    switch (kind) {
    case SMOE_DEVICE_VULKAN_DISCRETE: return 0;
    case SMOE_DEVICE_VULKAN_INTEGRATED: return 1;
    case SMOE_DEVICE_VULKAN_VIRTUAL: return 2;
    case SMOE_DEVICE_VULKAN_OTHER: return 3;
    case SMOE_DEVICE_VULKAN_CPU: return 4;
    case SMOE_DEVICE_CPU: return 5;
    }
    return 6;
}

static smoe_device_kind kind_of(VkPhysicalDeviceType t)
{
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return SMOE_DEVICE_VULKAN_DISCRETE;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return SMOE_DEVICE_VULKAN_INTEGRATED;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return SMOE_DEVICE_VULKAN_VIRTUAL;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return SMOE_DEVICE_VULKAN_CPU;
    default: return SMOE_DEVICE_VULKAN_OTHER;
    }
}

void smoe_cpu_device_info(smoe_device_info *info)
{
    memset(info, 0, sizeof *info);
    info->index = -1;
    info->kind = SMOE_DEVICE_CPU;
#ifdef _OPENMP
    long n = omp_get_max_threads(); /* what the CPU path will use: OMP_NUM_THREADS, else the cores */
#else
    long n = sysconf(_SC_NPROCESSORS_ONLN);
#endif
    info->compute_units = n > 0 ? (uint32_t)n : 1;
    snprintf(info->name, sizeof info->name, "CPU path (OpenBLAS, %u thread%s)", info->compute_units,
             info->compute_units == 1 ? "" : "s");
    snprintf(info->driver_name, sizeof info->driver_name, "softmoe cpu");
}

/* ---- Capability record ---- */

static int has_extension(const VkExtensionProperties *ext, uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++)
        if (!strcmp(ext[i].extensionName, name)) return 1;
    return 0;
}

static int compute_queue_family(const smoe_vk_instance_fns *fn, VkPhysicalDevice pd,
                                uint32_t *family, uint32_t *timestamp_bits)
{
    uint32_t n = 0;
    fn->vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, NULL);
    VkQueueFamilyProperties props[32];
    if (n > 32) n = 32;
    fn->vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, props);
    int best = -1;
    for (uint32_t i = 0; i < n; i++) {
        if (!(props[i].queueFlags & VK_QUEUE_COMPUTE_BIT) || props[i].queueCount == 0) continue;
        /* A compute-only family (async compute) is preferred: it does not share a queue with graphics. */
        if (best < 0 || !(props[i].queueFlags & VK_QUEUE_GRAPHICS_BIT)) best = (int)i;
    }
    if (best < 0) return 0;
    *family = (uint32_t)best;
    *timestamp_bits = props[best].timestampValidBits;
    return 1;
}

static void fill_info(const smoe_vk_instance_fns *fn, VkPhysicalDevice pd, uint32_t index,
                      smoe_device_info *info)
{
    memset(info, 0, sizeof *info);
    info->index = (int)index;

    VkPhysicalDeviceProperties base;
    fn->vkGetPhysicalDeviceProperties(pd, &base);
    info->api_version = base.apiVersion;

    VkPhysicalDeviceDriverProperties drv = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
    VkPhysicalDeviceSubgroupProperties sub = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
    VkPhysicalDeviceSubgroupSizeControlProperties ssc = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES};
    VkPhysicalDeviceMaintenance3Properties m3 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};

    uint32_t next_count = 0;
    fn->vkEnumerateDeviceExtensionProperties(pd, NULL, &next_count, NULL);
    VkExtensionProperties *ext = calloc(next_count ? next_count : 1, sizeof *ext);
    if (ext) fn->vkEnumerateDeviceExtensionProperties(pd, NULL, &next_count, ext);
    else next_count = 0;

    int v11 = base.apiVersion >= VK_API_VERSION_1_1;
    int v12 = base.apiVersion >= VK_API_VERSION_1_2;
    int v13 = base.apiVersion >= VK_API_VERSION_1_3;
    int has_ssc = v13 || has_extension(ext, next_count, VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
    int has_drv = v12 || has_extension(ext, next_count, VK_KHR_DRIVER_PROPERTIES_EXTENSION_NAME);
    info->push_descriptors = has_extension(ext, next_count, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME);
    int has_16bit = v11 || has_extension(ext, next_count, VK_KHR_16BIT_STORAGE_EXTENSION_NAME);
    int has_f16 = v12 || has_extension(ext, next_count, VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME);

    if (v11 && fn->vkGetPhysicalDeviceProperties2) {
        void *chain = NULL;
        sub.pNext = chain; chain = &sub;
        m3.pNext = chain; chain = &m3;
        if (has_ssc) { ssc.pNext = chain; chain = &ssc; }
        if (has_drv) { drv.pNext = chain; chain = &drv; }
        p2.pNext = chain;
        fn->vkGetPhysicalDeviceProperties2(pd, &p2);
        info->subgroup_size = sub.subgroupSize;
        info->max_allocation_size = m3.maxMemoryAllocationSize;
        if (has_ssc) {
            info->min_subgroup_size = ssc.minSubgroupSize;
            info->max_subgroup_size = ssc.maxSubgroupSize;
        }
        if (has_drv) {
            snprintf(info->driver_name, sizeof info->driver_name, "%s", drv.driverName);
            snprintf(info->driver_info, sizeof info->driver_info, "%s", drv.driverInfo);
            info->driver_id = (uint32_t)drv.driverID;
        }
    }
    if (!info->subgroup_size) info->subgroup_size = 1;
    if (!info->min_subgroup_size) info->min_subgroup_size = info->subgroup_size;
    if (!info->max_subgroup_size) info->max_subgroup_size = info->subgroup_size;
    /* Vulkan 1.0 guarantees allocations of at least 2^30 bytes when the property is absent. */
    if (!info->max_allocation_size) info->max_allocation_size = 1ull << 30;

    if (v11 && fn->vkGetPhysicalDeviceFeatures2) {
        VkPhysicalDevice16BitStorageFeatures s16 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
        VkPhysicalDeviceShaderFloat16Int8Features f16 = {
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES};
        VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
        void *chain = NULL;
        if (has_16bit) { s16.pNext = chain; chain = &s16; }
        if (has_f16) { f16.pNext = chain; chain = &f16; }
        f2.pNext = chain;
        fn->vkGetPhysicalDeviceFeatures2(pd, &f2);
        info->storage_buffer_16bit = has_16bit && s16.storageBuffer16BitAccess;
        info->shader_float16 = has_f16 && f16.shaderFloat16;
    }
    free(ext);

    snprintf(info->name, sizeof info->name, "%s", base.deviceName);
    info->kind = kind_of(base.deviceType);
    info->vendor_id = base.vendorID;
    info->device_id = base.deviceID;
    info->driver_version = base.driverVersion;
    info->max_shared_memory = base.limits.maxComputeSharedMemorySize;
    info->max_workgroup_invocations = base.limits.maxComputeWorkGroupInvocations;
    for (int i = 0; i < 3; i++) {
        info->max_workgroup_size[i] = base.limits.maxComputeWorkGroupSize[i];
        info->max_workgroup_count[i] = base.limits.maxComputeWorkGroupCount[i];
    }
    info->max_storage_buffer_range = base.limits.maxStorageBufferRange;
    info->min_storage_buffer_offset_alignment = base.limits.minStorageBufferOffsetAlignment;
    info->timestamp_period_ns = base.limits.timestampPeriod;
    info->timestamp_compute_and_graphics = base.limits.timestampComputeAndGraphics;
    info->max_texel_buffer_elements = base.limits.maxTexelBufferElements;
    info->min_texel_buffer_offset_alignment = base.limits.minTexelBufferOffsetAlignment;
    /* Both formats are mandatory for uniform texel buffers; asked all the same. */
    if (fn->vkGetPhysicalDeviceFormatProperties) {
        VkFormatProperties fp;
        fn->vkGetPhysicalDeviceFormatProperties(pd, VK_FORMAT_R32G32B32A32_SFLOAT, &fp);
        info->texel_buffer_rgba32f = (fp.bufferFeatures & VK_FORMAT_FEATURE_UNIFORM_TEXEL_BUFFER_BIT) != 0;
        fn->vkGetPhysicalDeviceFormatProperties(pd, VK_FORMAT_R32_SFLOAT, &fp);
        info->texel_buffer_r32f = (fp.bufferFeatures & VK_FORMAT_FEATURE_UNIFORM_TEXEL_BUFFER_BIT) != 0;
    }

    uint32_t family = 0, ts_bits = 0;
    if (compute_queue_family(fn, pd, &family, &ts_bits)) {
        info->timestamp_valid_bits = ts_bits;
        info->timestamps = ts_bits > 0 && base.limits.timestampPeriod > 0;
    }

    VkPhysicalDeviceMemoryProperties mem;
    fn->vkGetPhysicalDeviceMemoryProperties(pd, &mem);
    for (uint32_t i = 0; i < mem.memoryHeapCount; i++)
        if ((mem.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) &&
            mem.memoryHeaps[i].size > info->device_local_memory)
            info->device_local_memory = mem.memoryHeaps[i].size;
    info->compute_units = 0;
}

/* ---- Instance ---- */

static VKAPI_ATTR VkBool32 VKAPI_CALL debug_callback(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                                     VkDebugUtilsMessageTypeFlagsEXT type,
                                                     const VkDebugUtilsMessengerCallbackDataEXT *data,
                                                     void *user)
{
    (void)type;
    smoe_vk_instance *vi = user;
    if (severity & (VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT)) {
        vi->validation_messages++;
        if (vi->on_validation) vi->on_validation(vi->on_validation_user, data->pMessage ? data->pMessage : "");
    }
    return VK_FALSE;
}

static int has_layer(const smoe_vk_instance_fns *fn, const char *name)
{
    uint32_t n = 0;
    if (!fn->vkEnumerateInstanceLayerProperties || fn->vkEnumerateInstanceLayerProperties(&n, NULL) != VK_SUCCESS)
        return 0;
    VkLayerProperties *p = calloc(n ? n : 1, sizeof *p);
    if (!p) return 0;
    int found = 0;
    if (fn->vkEnumerateInstanceLayerProperties(&n, p) == VK_SUCCESS)
        for (uint32_t i = 0; i < n; i++)
            if (!strcmp(p[i].layerName, name)) found = 1;
    free(p);
    return found;
}

static int has_instance_extension(const smoe_vk_instance_fns *fn, const char *layer, const char *name)
{
    uint32_t n = 0;
    if (fn->vkEnumerateInstanceExtensionProperties(layer, &n, NULL) != VK_SUCCESS) return 0;
    VkExtensionProperties *p = calloc(n ? n : 1, sizeof *p);
    if (!p) return 0;
    int found = fn->vkEnumerateInstanceExtensionProperties(layer, &n, p) == VK_SUCCESS && has_extension(p, n, name);
    free(p);
    return found;
}

smoe_status smoe_vk_instance_create(smoe_vk_instance *vi, int validate, smoe_err *err)
{
    smoe_status st = smoe_vk_open_loader(&vi->loader, &vi->fn, err);
    if (st) return st;
    const smoe_vk_instance_fns *fn = &vi->fn;

    uint32_t loader_version = VK_API_VERSION_1_0;
    if (fn->vkEnumerateInstanceVersion) fn->vkEnumerateInstanceVersion(&loader_version);
    if (loader_version < VK_API_VERSION_1_1) {
        smoe_vk_instance_destroy(vi);
        return smoe_fail(err, SMOE_ERROR_UNSUPPORTED, "the Vulkan loader supports only Vulkan 1.0; softmoe needs 1.1");
    }

    const char *layers[1];
    uint32_t layer_count = 0;
    const char *exts[2];
    uint32_t ext_count = 0;
    const char *validation = "VK_LAYER_KHRONOS_validation";
    if (validate) {
        if (!has_layer(fn, validation)) {
            smoe_vk_instance_destroy(vi);
            return smoe_fail(err, SMOE_ERROR_UNSUPPORTED,
                             "validation was asked for (SOFTMOE_VALIDATION) but %s is not installed "
                             "(Debian: vulkan-validationlayers)", validation);
        }
        layers[layer_count++] = validation;
    }
    int debug_utils = validate && has_instance_extension(fn, NULL, VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
    if (debug_utils) exts[ext_count++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
    int portability = has_instance_extension(fn, NULL, VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME);
    if (portability) exts[ext_count++] = VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME;

    VkApplicationInfo app = {
        .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
        .pApplicationName = "softmoe",
        .pEngineName = "softmoe",
        .engineVersion = SMOE_VERSION,
        .apiVersion = loader_version >= VK_API_VERSION_1_3 ? VK_API_VERSION_1_3 : loader_version,
    };
    VkValidationFeatureEnableEXT sync_enable = VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT;
    VkValidationFeaturesEXT features = {
        .sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT,
        .enabledValidationFeatureCount = 1,
        .pEnabledValidationFeatures = &sync_enable,
    };
    VkDebugUtilsMessengerCreateInfoEXT dci = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
        .pfnUserCallback = debug_callback,
        .pUserData = vi,
    };
    /* The messenger in pNext also catches messages from vkCreateInstance/vkDestroyInstance. */
    if (debug_utils) {
        if (validate >= 2) {
            features.pNext = &dci;
            dci.pNext = NULL;
        }
    }
    VkInstanceCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
        .pApplicationInfo = &app,
        .enabledLayerCount = layer_count,
        .ppEnabledLayerNames = layers,
        .enabledExtensionCount = ext_count,
        .ppEnabledExtensionNames = exts,
        .flags = portability ? VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR : 0,
        .pNext = debug_utils ? (validate >= 2 ? (const void *)&features : (const void *)&dci) : NULL,
    };
    VkResult r = fn->vkCreateInstance(&ci, NULL, &vi->instance);
    if (r != VK_SUCCESS) {
        smoe_vk_instance_destroy(vi);
        return smoe_vk_fail(err, r, "vkCreateInstance");
    }
    vi->owns_instance = 1;
    smoe_vk_load_instance(&vi->fn, vi->instance);
    if (debug_utils && vi->fn.vkCreateDebugUtilsMessengerEXT) {
        dci.pNext = NULL;
        r = vi->fn.vkCreateDebugUtilsMessengerEXT(vi->instance, &dci, NULL, &vi->messenger);
        if (r != VK_SUCCESS) {
            smoe_vk_instance_destroy(vi);
            return smoe_vk_fail(err, r, "vkCreateDebugUtilsMessengerEXT");
        }
    }

    uint32_t n = 0;
    r = vi->fn.vkEnumeratePhysicalDevices(vi->instance, &n, NULL);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE) {
        smoe_vk_instance_destroy(vi);
        return smoe_vk_fail(err, r, "vkEnumeratePhysicalDevices");
    }
    if (n) {
        vi->physical = calloc(n, sizeof *vi->physical);
        vi->infos = calloc(n, sizeof *vi->infos);
        if (!vi->physical || !vi->infos) {
            smoe_vk_instance_destroy(vi);
            return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory listing Vulkan devices");
        }
        r = vi->fn.vkEnumeratePhysicalDevices(vi->instance, &n, vi->physical);
        if (r != VK_SUCCESS && r != VK_INCOMPLETE) {
            smoe_vk_instance_destroy(vi);
            return smoe_vk_fail(err, r, "vkEnumeratePhysicalDevices");
        }
    }
    vi->physical_count = 0;
    for (uint32_t i = 0; i < n; i++) {
        VkPhysicalDeviceProperties p;
        vi->fn.vkGetPhysicalDeviceProperties(vi->physical[i], &p);
        if (p.apiVersion < VK_API_VERSION_1_1) continue; /* not usable: listed nowhere */
        vi->physical[vi->physical_count] = vi->physical[i];
        fill_info(&vi->fn, vi->physical[i], vi->physical_count, &vi->infos[vi->physical_count]);
        vi->physical_count++;
    }
    return SMOE_OK;
}

smoe_status smoe_vk_instance_adopt(smoe_vk_instance *vi, PFN_vkGetInstanceProcAddr gipa, VkInstance instance,
                                   VkPhysicalDevice pd, smoe_err *err)
{
    void (*hook)(void *, const char *) = vi->on_validation;
    void *hook_user = vi->on_validation_user;
    memset(vi, 0, sizeof *vi);
    vi->on_validation = hook;
    vi->on_validation_user = hook_user;
    vi->fn.vkGetInstanceProcAddr = gipa;
    vi->instance = instance;
    vi->owns_instance = 0;
    smoe_vk_load_instance(&vi->fn, instance);
    const smoe_vk_instance_fns *fn = &vi->fn;
    const char *missing = !fn->vkGetPhysicalDeviceProperties                ? "vkGetPhysicalDeviceProperties"
                          : !fn->vkGetPhysicalDeviceMemoryProperties        ? "vkGetPhysicalDeviceMemoryProperties"
                          : !fn->vkGetPhysicalDeviceQueueFamilyProperties   ? "vkGetPhysicalDeviceQueueFamilyProperties"
                          : !fn->vkEnumerateDeviceExtensionProperties       ? "vkEnumerateDeviceExtensionProperties"
                          : !fn->vkGetDeviceProcAddr                        ? "vkGetDeviceProcAddr"
                                                                            : NULL;
    if (missing) {
        smoe_vk_instance_destroy(vi);
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT,
                         "the application's vkGetInstanceProcAddr returned no %s for its instance", missing);
    }
    VkPhysicalDeviceProperties p;
    fn->vkGetPhysicalDeviceProperties(pd, &p);
    if (p.apiVersion < VK_API_VERSION_1_1) {
        smoe_vk_instance_destroy(vi);
        return smoe_fail(err, SMOE_ERROR_UNSUPPORTED, "%s supports Vulkan %u.%u; softmoe needs 1.1", p.deviceName,
                         VK_API_VERSION_MAJOR(p.apiVersion), VK_API_VERSION_MINOR(p.apiVersion));
    }
    vi->physical = calloc(1, sizeof *vi->physical);
    vi->infos = calloc(1, sizeof *vi->infos);
    if (!vi->physical || !vi->infos) {
        smoe_vk_instance_destroy(vi);
        return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    }
    vi->physical[0] = pd;
    fill_info(fn, pd, 0, &vi->infos[0]);
    vi->physical_count = 1;
    return SMOE_OK;
}

void smoe_vk_instance_destroy(smoe_vk_instance *vi)
{
    if (vi->messenger && vi->fn.vkDestroyDebugUtilsMessengerEXT)
        vi->fn.vkDestroyDebugUtilsMessengerEXT(vi->instance, vi->messenger, NULL);
    if (vi->instance && vi->owns_instance && vi->fn.vkDestroyInstance) vi->fn.vkDestroyInstance(vi->instance, NULL);
    free(vi->physical);
    free(vi->infos);
    smoe_vk_close_loader(vi->loader);
    void (*hook)(void *, const char *) = vi->on_validation;
    void *hook_user = vi->on_validation_user;
    int seen = vi->validation_messages;
    memset(vi, 0, sizeof *vi);
    vi->on_validation = hook;
    vi->on_validation_user = hook_user;
    vi->validation_messages = seen;
}

/* ---- Selection ---- */

smoe_status smoe_device_select(const smoe_device_info *devices, uint32_t count, const char *spec,
                               int *index, char *reason, size_t reason_size, smoe_err *err)
{
    int from_env = 0;
    if (!spec || !spec[0]) {
        const char *env = getenv("SOFTMOE_DEVICE");
        if (env && env[0]) {
            spec = env;
            from_env = 1;
        }
    }
    const char *origin = from_env ? " (from SOFTMOE_DEVICE)" : "";
    if (spec && !strcmp(spec, "cpu")) {
        *index = -1;
        snprintf(reason, reason_size, "the CPU path was asked for%s", origin);
        return SMOE_OK;
    }
    if (spec && !strncmp(spec, "vulkan:", 7)) {
        char *end = NULL;
        long n = strtol(spec + 7, &end, 10);
        if (end == spec + 7 || *end || n < 0)
            return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "bad device \"%s\"%s: expected vulkan:N with N a number",
                             spec, origin);
        if ((uint32_t)n >= count || n > 1000000)
            return smoe_fail(err, SMOE_ERROR_NO_DEVICE, "no Vulkan device %ld%s: there are %u", n, origin, count);
        *index = (int)n;
        snprintf(reason, reason_size, "vulkan:%ld was asked for%s", n, origin);
        return SMOE_OK;
    }
    int best = -1;
    for (uint32_t i = 0; i < count; i++)
        if (best < 0 || smoe_device_rank(devices[i].kind) < smoe_device_rank(devices[best].kind)) best = (int)i;
    if (spec && !strcmp(spec, "vulkan")) {
        if (best < 0)
            return smoe_fail(err, SMOE_ERROR_NO_DEVICE, "no Vulkan device%s: none was found (is a Vulkan driver installed?)",
                             origin);
        *index = best;
        snprintf(reason, reason_size, "\"vulkan\"%s picks the best Vulkan device: %s is a %s%s", origin,
                 devices[best].name, smoe_device_kind_name(devices[best].kind),
                 devices[best].kind == SMOE_DEVICE_VULKAN_CPU ? ", the only kind present" : "");
        return SMOE_OK;
    }
    if (spec && spec[0])
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "unknown device \"%s\"%s: expected cpu, vulkan or vulkan:N",
                         spec, origin);
    if (best >= 0 && devices[best].kind != SMOE_DEVICE_VULKAN_CPU) {
        *index = best;
        snprintf(reason, reason_size, "default: %s is the best GPU (%s)", devices[best].name,
                 smoe_device_kind_name(devices[best].kind));
    } else {
        *index = -1;
        snprintf(reason, reason_size, "default: %s, so the CPU path (faster than a CPU-type Vulkan driver)",
                 best >= 0 ? "the only Vulkan devices run on the CPU" : "no Vulkan device was found");
    }
    return SMOE_OK;
}

/* ---- Logical device ---- */

static int find_memory_type(const VkPhysicalDeviceMemoryProperties *mem, uint32_t bits, VkMemoryPropertyFlags want)
{
    for (uint32_t i = 0; i < mem->memoryTypeCount; i++)
        if ((bits & (1u << i)) && (mem->memoryTypes[i].propertyFlags & want) == want) return (int)i;
    return -1;
}
int smoe_gpu_memory_type(const smoe_gpu *gpu, uint32_t bits, VkMemoryPropertyFlags want)
{
    return find_memory_type(&gpu->mem, bits, want);
}

static smoe_status gpu_objects(smoe_gpu *gpu, smoe_err *err);

smoe_status smoe_gpu_create(smoe_gpu *gpu, const smoe_vk_instance *vi, uint32_t index, smoe_err *err)
{
    memset(gpu, 0, sizeof *gpu);
    if (index >= vi->physical_count) return smoe_fail(err, SMOE_ERROR_NO_DEVICE, "no Vulkan device %u", index);
    gpu->vi = vi;
    gpu->physical = vi->physical[index];
    gpu->info = vi->infos[index];
    gpu->quirks = smoe_device_quirks(&gpu->info, NULL, 0);
    const smoe_vk_instance_fns *fn = &vi->fn;
    uint32_t ts_bits = 0;
    if (!compute_queue_family(fn, gpu->physical, &gpu->queue_family, &ts_bits))
        return smoe_fail(err, SMOE_ERROR_UNSUPPORTED, "%s has no compute queue", gpu->info.name);
    fn->vkGetPhysicalDeviceMemoryProperties(gpu->physical, &gpu->mem);

    float priority = 1.0f;
    VkDeviceQueueCreateInfo qci = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
        .queueFamilyIndex = gpu->queue_family,
        .queueCount = 1,
        .pQueuePriorities = &priority,
    };
    /* Only what is present is enabled; kernels choose variants from the capability record. */
    VkPhysicalDevice16BitStorageFeatures s16 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES,
        .storageBuffer16BitAccess = gpu->info.storage_buffer_16bit ? VK_TRUE : VK_FALSE,
    };
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &s16};
    VkDeviceCreateInfo dci = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
        .pNext = &f2,
        .queueCreateInfoCount = 1,
        .pQueueCreateInfos = &qci,
    };
    VkResult r = fn->vkCreateDevice(gpu->physical, &dci, NULL, &gpu->device);
    if (r != VK_SUCCESS) {
        gpu->device = VK_NULL_HANDLE;
        return smoe_vk_fail(err, r, "vkCreateDevice");
    }
    gpu->owns_device = 1;
    smoe_vk_load_device(fn, gpu->device, &gpu->vk);
    gpu->vk.vkGetDeviceQueue(gpu->device, gpu->queue_family, 0, &gpu->queue);
    return gpu_objects(gpu, err);
}

/* What softmoe creates on any device, its own or the application's: command pool, pipeline cache;
 * and the kernel choice settings from the environment. */
static smoe_status gpu_objects(smoe_gpu *gpu, smoe_err *err)
{
    const char *env = getenv("SOFTMOE_AUTOTUNE");
    gpu->autotune = !(env && !strcmp(env, "0"));
    env = getenv("SOFTMOE_MATMUL_VARIANT");
    snprintf(gpu->matmul_variant, sizeof gpu->matmul_variant, "%s", env ? env : "");
    /* where every barrier of a workgroup reduction is a loop over its invocations */
    gpu->row_serial = (gpu->quirks & SMOE_QUIRK_CPU_DRIVER) != 0;
    VkCommandPoolCreateInfo pci = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
        .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
        .queueFamilyIndex = gpu->queue_family,
    };
    VkResult r = gpu->vk.vkCreateCommandPool(gpu->device, &pci, NULL, &gpu->cmd_pool);
    if (r != VK_SUCCESS) {
        gpu->cmd_pool = VK_NULL_HANDLE;
        smoe_gpu_destroy(gpu);
        return smoe_vk_fail(err, r, "vkCreateCommandPool");
    }
    smoe_status st = smoe_pipeline_cache_create(gpu, err);
    /* Fault injection for tests (fault.h): counted from here, the device's own setup excluded. */
    const char *fault = getenv("SOFTMOE_FAULT");
    if (!st && fault && fault[0]) st = smoe_fault_parse(&gpu->fault, fault, err);
    if (st) {
        smoe_gpu_destroy(gpu);
        return st;
    }
    return SMOE_OK;
}

smoe_status smoe_gpu_adopt(smoe_gpu *gpu, const smoe_vk_instance *vi, const smoe_vulkan_external *ext, smoe_err *err)
{
    memset(gpu, 0, sizeof *gpu);
    if (vi->physical_count < 1) return smoe_fail(err, SMOE_ERROR_INTERNAL, "no adopted physical device");
    gpu->vi = vi;
    gpu->physical = vi->physical[0];
    gpu->info = vi->infos[0];
    gpu->quirks = smoe_device_quirks(&gpu->info, NULL, 0);
    const smoe_vk_instance_fns *fn = &vi->fn;

    uint32_t n = 0;
    fn->vkGetPhysicalDeviceQueueFamilyProperties(gpu->physical, &n, NULL);
    VkQueueFamilyProperties *props = calloc(n ? n : 1, sizeof *props);
    if (!props) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    fn->vkGetPhysicalDeviceQueueFamilyProperties(gpu->physical, &n, props);
    uint32_t family = ext->queue_family_index;
    int compute = family < n && (props[family].queueFlags & VK_QUEUE_COMPUTE_BIT);
    uint32_t ts_bits = family < n ? props[family].timestampValidBits : 0;
    free(props);
    if (family >= n)
        return smoe_fail(err, SMOE_ERROR_UNSUPPORTED, "queue family %u does not exist on %s (it has %u)", family,
                         gpu->info.name, n);
    if (!compute)
        return smoe_fail(err, SMOE_ERROR_UNSUPPORTED, "queue family %u of %s has no compute (VK_QUEUE_COMPUTE_BIT)",
                         family, gpu->info.name);
    gpu->info.timestamp_valid_bits = ts_bits;
    gpu->info.timestamps = ts_bits > 0 && gpu->info.timestamp_period_ns > 0;
    fn->vkGetPhysicalDeviceMemoryProperties(gpu->physical, &gpu->mem);

    gpu->device = (VkDevice)ext->device;
    gpu->owns_device = 0;
    gpu->queue = (VkQueue)ext->queue;
    gpu->queue_family = family;
    gpu->queue_lock = ext->queue_lock;
    gpu->queue_unlock = ext->queue_unlock;
    gpu->queue_lock_user = ext->queue_lock_user;
    smoe_vk_load_device(fn, gpu->device, &gpu->vk);
    if (!gpu->vk.vkQueueSubmit || !gpu->vk.vkCreateCommandPool || !gpu->vk.vkGetFenceStatus) {
        memset(gpu, 0, sizeof *gpu);
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "vkGetDeviceProcAddr gave no core functions for the device");
    }
    return gpu_objects(gpu, err);
}

void smoe_gpu_destroy(smoe_gpu *gpu)
{
    if (!gpu->device) {
        memset(gpu, 0, sizeof *gpu);
        return;
    }
    /* Our own device: wait for everything. The application's: every submission of ours was
     * waited for through its fence already (programs and jobs when their models were freed,
     * staged copies at once), and the application's queues are not ours to wait on. */
    if (gpu->owns_device) gpu->vk.vkDeviceWaitIdle(gpu->device);
    smoe_pipeline_cache_destroy(gpu);
    smoe_tune_free(gpu);
    smoe_staging_destroy(gpu);
    if (gpu->cmd_pool) gpu->vk.vkDestroyCommandPool(gpu->device, gpu->cmd_pool, NULL);
    if (gpu->owns_device) gpu->vk.vkDestroyDevice(gpu->device, NULL);
    memset(gpu, 0, sizeof *gpu);
}

VkResult smoe_gpu_queue_submit(smoe_gpu *gpu, const VkSubmitInfo *submit, VkFence fence)
{
    if (gpu->queue_lock) gpu->queue_lock(gpu->queue_lock_user);
    VkResult r = SMOE_VK(gpu, vkQueueSubmit, (gpu->queue, 1, submit, fence));
    if (gpu->queue_unlock) gpu->queue_unlock(gpu->queue_lock_user);
    return r;
}

smoe_status smoe_gpu_check(smoe_gpu *gpu, VkResult r, const char *what, smoe_err *err)
{
    if (r == VK_SUCCESS) return SMOE_OK;
    if (r == VK_ERROR_DEVICE_LOST && !gpu->lost) {
        gpu->lost = 1;
        snprintf(gpu->lost_by, sizeof gpu->lost_by, "%s", what);
    }
    return smoe_vk_fail(err, r, what);
}

smoe_status smoe_gpu_alive(const smoe_gpu *gpu, smoe_err *err)
{
    if (!gpu->lost) return SMOE_OK;
    return smoe_fail(err, SMOE_ERROR_DEVICE_LOST,
                     "the Vulkan device %s was lost (%s reported VK_ERROR_DEVICE_LOST): destroy the context and "
                     "create a new one", gpu->info.name, gpu->lost_by);
}
