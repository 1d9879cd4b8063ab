/* volk's generated loaders are compiled here; the library never writes volk's global function
 * pointers (no volkInitialize/volkLoadInstance), so two contexts, or an application that uses
 * volk or Vulkan itself, cannot clash. Only the static table loader is used, with our own
 * vkGetDeviceProcAddr per instance. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>

#include "vk.h"

#include <volk.c>

smoe_status smoe_vk_open_loader(void **handle, smoe_vk_instance_fns *fns, smoe_err *err)
{
    memset(fns, 0, sizeof *fns);
    *handle = NULL;
#if defined(__APPLE__)
    const char *names[] = {"libvulkan.dylib", "libvulkan.1.dylib", "libMoltenVK.dylib"};
#else
    const char *names[] = {"libvulkan.so.1", "libvulkan.so", NULL};
#endif
    void *h = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !h; i++)
        if (names[i]) h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) return smoe_fail(err, SMOE_ERROR_NO_DEVICE, "the Vulkan loader (libvulkan.so.1) is not installed");
    fns->vkGetInstanceProcAddr = (PFN_vkGetInstanceProcAddr)dlsym(h, "vkGetInstanceProcAddr");
    if (!fns->vkGetInstanceProcAddr) {
        dlclose(h);
        return smoe_fail(err, SMOE_ERROR_NO_DEVICE, "the Vulkan loader has no vkGetInstanceProcAddr");
    }
#define LOAD_GLOBAL(name) fns->name = (PFN_##name)fns->vkGetInstanceProcAddr(VK_NULL_HANDLE, #name)
    LOAD_GLOBAL(vkCreateInstance);
    LOAD_GLOBAL(vkEnumerateInstanceVersion);
    LOAD_GLOBAL(vkEnumerateInstanceLayerProperties);
    LOAD_GLOBAL(vkEnumerateInstanceExtensionProperties);
#undef LOAD_GLOBAL
    if (!fns->vkCreateInstance) {
        dlclose(h);
        return smoe_fail(err, SMOE_ERROR_NO_DEVICE, "the Vulkan loader has no vkCreateInstance");
    }
    *handle = h;
    return SMOE_OK;
}

void smoe_vk_close_loader(void *handle)
{
    if (handle) dlclose(handle);
}

void smoe_vk_load_instance(smoe_vk_instance_fns *fns, VkInstance instance)
{
#define LOAD(name) fns->name = (PFN_##name)fns->vkGetInstanceProcAddr(instance, #name)
    LOAD(vkDestroyInstance);
    LOAD(vkEnumeratePhysicalDevices);
    LOAD(vkGetPhysicalDeviceProperties);
    LOAD(vkGetPhysicalDeviceProperties2);
    LOAD(vkGetPhysicalDeviceFeatures2);
    LOAD(vkGetPhysicalDeviceMemoryProperties);
    LOAD(vkGetPhysicalDeviceFormatProperties);
    LOAD(vkGetPhysicalDeviceQueueFamilyProperties);
    LOAD(vkEnumerateDeviceExtensionProperties);
    LOAD(vkCreateDevice);
    LOAD(vkGetDeviceProcAddr);
    LOAD(vkCreateDebugUtilsMessengerEXT);
    LOAD(vkDestroyDebugUtilsMessengerEXT);
#undef LOAD
}

static PFN_vkVoidFunction load_device_fn(void *context, const char *name)
{
    const void **c = context;
    PFN_vkGetDeviceProcAddr gdpa = (PFN_vkGetDeviceProcAddr)(uintptr_t)c[0];
    return gdpa((VkDevice)c[1], name);
}

void smoe_vk_load_device(const smoe_vk_instance_fns *fns, VkDevice device, struct VolkDeviceTable *table)
{
    const void *c[2] = {(const void *)(uintptr_t)fns->vkGetDeviceProcAddr, (const void *)device};
    volkGenLoadDeviceTable(table, (void *)c, load_device_fn);
}

const char *smoe_vk_result_string(VkResult r)
{
    switch (r) {
#define CASE(x) case x: return #x;
    CASE(VK_SUCCESS) CASE(VK_NOT_READY) CASE(VK_TIMEOUT) CASE(VK_INCOMPLETE)
    CASE(VK_ERROR_OUT_OF_HOST_MEMORY) CASE(VK_ERROR_OUT_OF_DEVICE_MEMORY)
    CASE(VK_ERROR_INITIALIZATION_FAILED) CASE(VK_ERROR_DEVICE_LOST) CASE(VK_ERROR_MEMORY_MAP_FAILED)
    CASE(VK_ERROR_LAYER_NOT_PRESENT) CASE(VK_ERROR_EXTENSION_NOT_PRESENT)
    CASE(VK_ERROR_FEATURE_NOT_PRESENT) CASE(VK_ERROR_INCOMPATIBLE_DRIVER)
    CASE(VK_ERROR_TOO_MANY_OBJECTS) CASE(VK_ERROR_FORMAT_NOT_SUPPORTED)
    CASE(VK_ERROR_FRAGMENTED_POOL) CASE(VK_ERROR_OUT_OF_POOL_MEMORY) CASE(VK_ERROR_UNKNOWN)
#undef CASE
    default: return "VK_ERROR_(unnamed)";
    }
}

smoe_status smoe_vk_fail(smoe_err *err, VkResult r, const char *what)
{
    smoe_status s;
    switch (r) {
    case VK_ERROR_OUT_OF_HOST_MEMORY: s = SMOE_ERROR_OUT_OF_HOST_MEMORY; break;
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: s = SMOE_ERROR_OUT_OF_DEVICE_MEMORY; break;
    case VK_ERROR_DEVICE_LOST: s = SMOE_ERROR_DEVICE_LOST; break;
    case VK_ERROR_FEATURE_NOT_PRESENT:
    case VK_ERROR_EXTENSION_NOT_PRESENT:
    case VK_ERROR_INCOMPATIBLE_DRIVER: s = SMOE_ERROR_UNSUPPORTED; break;
    default: s = SMOE_ERROR_VULKAN; break;
    }
    return smoe_fail(err, s, "%s failed: %s", what, smoe_vk_result_string(r));
}
