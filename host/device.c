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

/* The device extensions a capability record asks about. */
typedef struct ext_flags {
    int v11, ssc, drv, push, s16, f16;
} ext_flags;

static ext_flags device_extensions(const smoe_vk_instance_fns *fn, VkPhysicalDevice pd, uint32_t api)
{
    uint32_t n = 0;
    fn->vkEnumerateDeviceExtensionProperties(pd, NULL, &n, NULL);
    VkExtensionProperties *ext = calloc(n ? n : 1, sizeof *ext);
    if (ext) fn->vkEnumerateDeviceExtensionProperties(pd, NULL, &n, ext);
    else n = 0;
    int v12 = api >= VK_API_VERSION_1_2, v13 = api >= VK_API_VERSION_1_3;
    ext_flags e = {
        .v11 = api >= VK_API_VERSION_1_1,
        .ssc = v13 || has_extension(ext, n, VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME),
        .drv = v12 || has_extension(ext, n, VK_KHR_DRIVER_PROPERTIES_EXTENSION_NAME),
        .push = has_extension(ext, n, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME),
        .s16 = api >= VK_API_VERSION_1_1 || has_extension(ext, n, VK_KHR_16BIT_STORAGE_EXTENSION_NAME),
        .f16 = v12 || has_extension(ext, n, VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME),
    };
    free(ext);
    return e;
}

/* Subgroup sizes, the largest allocation, the driver's identity (Vulkan 1.1 properties). */
static void fill_properties2(const smoe_vk_instance_fns *fn, VkPhysicalDevice pd, const ext_flags *e,
                             smoe_device_info *info)
{
    VkPhysicalDeviceDriverProperties drv = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
    VkPhysicalDeviceSubgroupProperties sub = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
    VkPhysicalDeviceSubgroupSizeControlProperties ssc = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES};
    VkPhysicalDeviceMaintenance3Properties m3 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
    void *chain = NULL;
    sub.pNext = chain; chain = &sub;
    m3.pNext = chain; chain = &m3;
    if (e->ssc) { ssc.pNext = chain; chain = &ssc; }
    if (e->drv) { drv.pNext = chain; chain = &drv; }
    p2.pNext = chain;
    fn->vkGetPhysicalDeviceProperties2(pd, &p2);
    info->subgroup_size = sub.subgroupSize;
    info->max_allocation_size = m3.maxMemoryAllocationSize;
    if (e->ssc) {
        info->min_subgroup_size = ssc.minSubgroupSize;
        info->max_subgroup_size = ssc.maxSubgroupSize;
    }
    if (e->drv) {
        snprintf(info->driver_name, sizeof info->driver_name, "%s", drv.driverName);
        snprintf(info->driver_info, sizeof info->driver_info, "%s", drv.driverInfo);
        info->driver_id = (uint32_t)drv.driverID;
    }
}

/* 16-bit storage and float16 arithmetic (Vulkan 1.1 features). */
static void fill_features2(const smoe_vk_instance_fns *fn, VkPhysicalDevice pd, const ext_flags *e,
                           smoe_device_info *info)
{
    VkPhysicalDevice16BitStorageFeatures s16 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
    VkPhysicalDeviceShaderFloat16Int8Features f16 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
    void *chain = NULL;
    if (e->s16) { s16.pNext = chain; chain = &s16; }
    if (e->f16) { f16.pNext = chain; chain = &f16; }
    f2.pNext = chain;
    fn->vkGetPhysicalDeviceFeatures2(pd, &f2);
    info->storage_buffer_16bit = e->s16 && s16.storageBuffer16BitAccess;
    info->shader_float16 = e->f16 && f16.shaderFloat16;
}

/* What the Vulkan 1.0 properties say: identity and limits. */
static void fill_limits(const VkPhysicalDeviceProperties *base, smoe_device_info *info)
{
    snprintf(info->name, sizeof info->name, "%s", base->deviceName);
    info->kind = kind_of(base->deviceType);
    info->vendor_id = base->vendorID;
    info->device_id = base->deviceID;
    info->driver_version = base->driverVersion;
    const VkPhysicalDeviceLimits *l = &base->limits;
    info->max_shared_memory = l->maxComputeSharedMemorySize;
    info->max_workgroup_invocations = l->maxComputeWorkGroupInvocations;
    for (int i = 0; i < 3; i++) {
        info->max_workgroup_size[i] = l->maxComputeWorkGroupSize[i];
        info->max_workgroup_count[i] = l->maxComputeWorkGroupCount[i];
    }
    info->max_storage_buffer_range = l->maxStorageBufferRange;
    info->min_storage_buffer_offset_alignment = l->minStorageBufferOffsetAlignment;
    info->timestamp_period_ns = l->timestampPeriod;
    info->timestamp_compute_and_graphics = l->timestampComputeAndGraphics;
    info->max_texel_buffer_elements = l->maxTexelBufferElements;
    info->min_texel_buffer_offset_alignment = l->minTexelBufferOffsetAlignment;
}

/* Texel buffer formats, the compute queue's timestamps, the largest device-local heap. */
static void fill_formats_queue_memory(const smoe_vk_instance_fns *fn, VkPhysicalDevice pd, float timestamp_period,
                                      smoe_device_info *info)
{
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
        info->timestamps = ts_bits > 0 && timestamp_period > 0;
    }
    VkPhysicalDeviceMemoryProperties mem;
    fn->vkGetPhysicalDeviceMemoryProperties(pd, &mem);
    for (uint32_t i = 0; i < mem.memoryHeapCount; i++)
        if ((mem.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) &&
            mem.memoryHeaps[i].size > info->device_local_memory)
            info->device_local_memory = mem.memoryHeaps[i].size;
}

static void fill_info(const smoe_vk_instance_fns *fn, VkPhysicalDevice pd, uint32_t index,
                      smoe_device_info *info)
{
    memset(info, 0, sizeof *info);
    info->index = (int)index;
    VkPhysicalDeviceProperties base;
    fn->vkGetPhysicalDeviceProperties(pd, &base);
    info->api_version = base.apiVersion;
    ext_flags e = device_extensions(fn, pd, base.apiVersion);
    info->push_descriptors = e.push;
    if (e.v11 && fn->vkGetPhysicalDeviceProperties2) fill_properties2(fn, pd, &e, info);
    if (!info->subgroup_size) info->subgroup_size = 1;
    if (!info->min_subgroup_size) info->min_subgroup_size = info->subgroup_size;
    if (!info->max_subgroup_size) info->max_subgroup_size = info->subgroup_size;
    /* Vulkan 1.0 guarantees allocations of at least 2^30 bytes when the property is absent. */
    if (!info->max_allocation_size) info->max_allocation_size = 1ull << 30;
    if (e.v11 && fn->vkGetPhysicalDeviceFeatures2) fill_features2(fn, pd, &e, info);
    fill_limits(&base, info);
    fill_formats_queue_memory(fn, pd, base.limits.timestampPeriod, info);
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

/* The layers and extensions of a new instance. */
typedef struct instance_setup {
    const char *layers[1];
    uint32_t layer_count;
    const char *exts[2];
    uint32_t ext_count;
    int debug_utils, portability;
    uint32_t loader_version;
} instance_setup;

static smoe_status instance_setup_make(const smoe_vk_instance_fns *fn, int validate, instance_setup *is, smoe_err *err)
{
    memset(is, 0, sizeof *is);
    is->loader_version = VK_API_VERSION_1_0;
    if (fn->vkEnumerateInstanceVersion) fn->vkEnumerateInstanceVersion(&is->loader_version);
    if (is->loader_version < VK_API_VERSION_1_1)
        return smoe_fail(err, SMOE_ERROR_UNSUPPORTED, "the Vulkan loader supports only Vulkan 1.0; softmoe needs 1.1");
    const char *validation = "VK_LAYER_KHRONOS_validation";
    if (validate) {
        if (!has_layer(fn, validation))
            return smoe_fail(err, SMOE_ERROR_UNSUPPORTED,
                             "validation was asked for (SOFTMOE_VALIDATION) but %s is not installed "
                             "(Debian: vulkan-validationlayers)", validation);
        is->layers[is->layer_count++] = validation;
    }
    is->debug_utils = validate && has_instance_extension(fn, NULL, VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
    if (is->debug_utils) is->exts[is->ext_count++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
    is->portability = has_instance_extension(fn, NULL, VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME);
    if (is->portability) is->exts[is->ext_count++] = VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME;
    return SMOE_OK;
}

/* vkCreateInstance, and the messenger that reports validation messages. */
static smoe_status instance_make(smoe_vk_instance *vi, int validate, const instance_setup *is, smoe_err *err)
{
    VkApplicationInfo app = {
        .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
        .pApplicationName = "softmoe",
        .pEngineName = "softmoe",
        .engineVersion = SMOE_VERSION,
        .apiVersion = is->loader_version >= VK_API_VERSION_1_3 ? VK_API_VERSION_1_3 : is->loader_version,
    };
    VkValidationFeatureEnableEXT sync_enable = VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT;
    VkDebugUtilsMessengerCreateInfoEXT dci = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
        .pfnUserCallback = debug_callback,
        .pUserData = vi,
    };
    /* The messenger in pNext also catches messages from vkCreateInstance/vkDestroyInstance;
     * synchronization validation (validate 2) goes first in the chain. */
    VkValidationFeaturesEXT features = {
        .sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT,
        .pNext = &dci,
        .enabledValidationFeatureCount = 1,
        .pEnabledValidationFeatures = &sync_enable,
    };
    const void *next = !is->debug_utils ? NULL : validate >= 2 ? (const void *)&features : (const void *)&dci;
    VkInstanceCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
        .pApplicationInfo = &app,
        .enabledLayerCount = is->layer_count,
        .ppEnabledLayerNames = is->layers,
        .enabledExtensionCount = is->ext_count,
        .ppEnabledExtensionNames = is->exts,
        .flags = is->portability ? VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR : 0,
        .pNext = next,
    };
    VkResult r = vi->fn.vkCreateInstance(&ci, NULL, &vi->instance);
    if (r != VK_SUCCESS) return smoe_vk_fail(err, r, "vkCreateInstance");
    vi->owns_instance = 1;
    smoe_vk_load_instance(&vi->fn, vi->instance);
    if (is->debug_utils && vi->fn.vkCreateDebugUtilsMessengerEXT) {
        r = vi->fn.vkCreateDebugUtilsMessengerEXT(vi->instance, &dci, NULL, &vi->messenger);
        if (r != VK_SUCCESS) return smoe_vk_fail(err, r, "vkCreateDebugUtilsMessengerEXT");
    }
    return SMOE_OK;
}

/* The physical devices that support Vulkan 1.1, with their capability records. */
static smoe_status list_devices(smoe_vk_instance *vi, smoe_err *err)
{
    uint32_t n = 0;
    VkResult r = vi->fn.vkEnumeratePhysicalDevices(vi->instance, &n, NULL);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE) return smoe_vk_fail(err, r, "vkEnumeratePhysicalDevices");
    if (n) {
        vi->physical = calloc(n, sizeof *vi->physical);
        vi->infos = calloc(n, sizeof *vi->infos);
        if (!vi->physical || !vi->infos)
            return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory listing Vulkan devices");
        r = vi->fn.vkEnumeratePhysicalDevices(vi->instance, &n, vi->physical);
        if (r != VK_SUCCESS && r != VK_INCOMPLETE) return smoe_vk_fail(err, r, "vkEnumeratePhysicalDevices");
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

smoe_status smoe_vk_instance_create(smoe_vk_instance *vi, int validate, smoe_err *err)
{
    smoe_status st = smoe_vk_open_loader(&vi->loader, &vi->fn, err);
    if (st) return st;
    instance_setup is;
    st = instance_setup_make(&vi->fn, validate, &is, err);
    if (!st) st = instance_make(vi, validate, &is, err);
    if (!st) st = list_devices(vi, err);
    if (st) smoe_vk_instance_destroy(vi);
    return st;
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

/* "vulkan:N" (spec without its prefix in num). */
static smoe_status select_numbered(uint32_t count, const char *spec, const char *origin, int *index, char *reason,
                                   size_t reason_size, smoe_err *err)
{
    const char *num = spec + 7;
    char *end = NULL;
    long n = strtol(num, &end, 10);
    if (end == num || *end || n < 0)
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "bad device \"%s\"%s: expected vulkan:N with N a number",
                         spec, origin);
    if ((uint32_t)n >= count || n > 1000000)
        return smoe_fail(err, SMOE_ERROR_NO_DEVICE, "no Vulkan device %ld%s: there are %u", n, origin, count);
    *index = (int)n;
    snprintf(reason, reason_size, "vulkan:%ld was asked for%s", n, origin);
    return SMOE_OK;
}

/* The best ranked of devices[0..count), or -1. */
static int best_device(const smoe_device_info *devices, uint32_t count)
{
    int best = -1;
    for (uint32_t i = 0; i < count; i++)
        if (best < 0 || smoe_device_rank(devices[i].kind) < smoe_device_rank(devices[best].kind)) best = (int)i;
    return best;
}

/* No device asked for: the best GPU, else the CPU path (faster than a CPU-type Vulkan driver). */
static void select_default(const smoe_device_info *devices, int best, int *index, char *reason, size_t reason_size)
{
    if (best >= 0 && devices[best].kind != SMOE_DEVICE_VULKAN_CPU) {
        *index = best;
        snprintf(reason, reason_size, "default: %s is the best GPU (%s)", devices[best].name,
                 smoe_device_kind_name(devices[best].kind));
        return;
    }
    *index = -1;
    snprintf(reason, reason_size, "default: %s, so the CPU path (faster than a CPU-type Vulkan driver)",
             best >= 0 ? "the only Vulkan devices run on the CPU" : "no Vulkan device was found");
}

smoe_status smoe_device_select(const smoe_device_info *devices, uint32_t count, const char *spec,
                               const char *env_spec, int *index, char *reason, size_t reason_size, smoe_err *err)
{
    int from_env = 0;
    if ((!spec || !spec[0]) && env_spec && env_spec[0]) {
        spec = env_spec;
        from_env = 1;
    }
    const char *origin = from_env ? " (from SOFTMOE_DEVICE)" : "";
    if (!spec || !spec[0]) {
        select_default(devices, best_device(devices, count), index, reason, reason_size);
        return SMOE_OK;
    }
    if (!strcmp(spec, "cpu")) {
        *index = -1;
        snprintf(reason, reason_size, "the CPU path was asked for%s", origin);
        return SMOE_OK;
    }
    if (!strncmp(spec, "vulkan:", 7)) return select_numbered(count, spec, origin, index, reason, reason_size, err);
    if (strcmp(spec, "vulkan"))
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "unknown device \"%s\"%s: expected cpu, vulkan or vulkan:N",
                         spec, origin);
    int best = best_device(devices, count);
    if (best < 0)
        return smoe_fail(err, SMOE_ERROR_NO_DEVICE, "no Vulkan device%s: none was found (is a Vulkan driver installed?)",
                         origin);
    *index = best;
    snprintf(reason, reason_size, "\"vulkan\"%s picks the best Vulkan device: %s is a %s%s", origin, devices[best].name,
             smoe_device_kind_name(devices[best].kind),
             devices[best].kind == SMOE_DEVICE_VULKAN_CPU ? ", the only kind present" : "");
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

smoe_status smoe_gpu_create(smoe_gpu *gpu, const smoe_vk_instance *vi, uint32_t index, const smoe_options *opts,
                            smoe_err *err)
{
    memset(gpu, 0, sizeof *gpu);
    if (index >= vi->physical_count) return smoe_fail(err, SMOE_ERROR_NO_DEVICE, "no Vulkan device %u", index);
    gpu->vi = vi;
    gpu->opts = opts;
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
 * and the fault the options ask for. */
/* Row kernels: an invocation per row where every barrier of a workgroup reduction is a loop over
 * its invocations (CPU drivers), else a workgroup per row; SOFTMOE_ROW_KERNELS forces either. */
static smoe_status row_mode(smoe_gpu *gpu, smoe_err *err)
{
    const char *want = gpu->opts->row_kernels;
    gpu->row_serial = (gpu->quirks & SMOE_QUIRK_CPU_DRIVER) != 0;
    if (!strcmp(want, "serial")) gpu->row_serial = 1;
    else if (!strcmp(want, "workgroup")) gpu->row_serial = 0;
    else if (want[0])
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "SOFTMOE_ROW_KERNELS is \"%s\"; it must be \"serial\" or \"workgroup\"",
                         want);
    return SMOE_OK;
}

static smoe_status gpu_objects(smoe_gpu *gpu, smoe_err *err)
{
    smoe_status st = row_mode(gpu, err);
    if (st) {
        smoe_gpu_destroy(gpu);
        return st;
    }
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
    st = smoe_pipeline_cache_create(gpu, err);
    /* Fault injection for tests (fault.h): counted from here, the device's own setup excluded. */
    if (!st && gpu->opts->fault[0]) st = smoe_fault_parse(&gpu->fault, gpu->opts->fault, err);
    if (st) {
        smoe_gpu_destroy(gpu);
        return st;
    }
    return SMOE_OK;
}

smoe_status smoe_gpu_adopt(smoe_gpu *gpu, const smoe_vk_instance *vi, const smoe_vulkan_external *ext,
                           const smoe_options *opts, smoe_err *err)
{
    memset(gpu, 0, sizeof *gpu);
    if (vi->physical_count < 1) return smoe_fail(err, SMOE_ERROR_INTERNAL, "no adopted physical device");
    gpu->vi = vi;
    gpu->opts = opts;
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
