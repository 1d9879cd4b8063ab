/* Vulkan entry points without global state: volk supplies the per-device function table
 * (VolkDeviceTable); instance-level functions live in smoe_vk_instance_fns, one per context. */
#ifndef SMOE_VK_H
#define SMOE_VK_H

#include <volk.h>

#include "error.h"

/* Loader and instance-level functions this library calls. */
typedef struct smoe_vk_instance_fns {
    PFN_vkGetInstanceProcAddr vkGetInstanceProcAddr;
    PFN_vkCreateInstance vkCreateInstance;
    PFN_vkEnumerateInstanceVersion vkEnumerateInstanceVersion;
    PFN_vkEnumerateInstanceLayerProperties vkEnumerateInstanceLayerProperties;
    PFN_vkEnumerateInstanceExtensionProperties vkEnumerateInstanceExtensionProperties;
    PFN_vkDestroyInstance vkDestroyInstance;
    PFN_vkEnumeratePhysicalDevices vkEnumeratePhysicalDevices;
    PFN_vkGetPhysicalDeviceProperties vkGetPhysicalDeviceProperties;
    PFN_vkGetPhysicalDeviceProperties2 vkGetPhysicalDeviceProperties2;
    PFN_vkGetPhysicalDeviceFeatures2 vkGetPhysicalDeviceFeatures2;
    PFN_vkGetPhysicalDeviceMemoryProperties vkGetPhysicalDeviceMemoryProperties;
    PFN_vkGetPhysicalDeviceFormatProperties vkGetPhysicalDeviceFormatProperties;
    PFN_vkGetPhysicalDeviceQueueFamilyProperties vkGetPhysicalDeviceQueueFamilyProperties;
    PFN_vkEnumerateDeviceExtensionProperties vkEnumerateDeviceExtensionProperties;
    PFN_vkCreateDevice vkCreateDevice;
    PFN_vkGetDeviceProcAddr vkGetDeviceProcAddr;
    PFN_vkCreateDebugUtilsMessengerEXT vkCreateDebugUtilsMessengerEXT;
    PFN_vkDestroyDebugUtilsMessengerEXT vkDestroyDebugUtilsMessengerEXT;
} smoe_vk_instance_fns;

/* Opens the Vulkan loader (dlopen, reference-counted by the OS) and loads the global-level
 * functions. *handle must be passed to smoe_vk_close_loader. */
smoe_status smoe_vk_open_loader(void **handle, smoe_vk_instance_fns *fns, smoe_err *err);
void smoe_vk_close_loader(void *handle);

/* Loads the instance-level functions for instance. */
void smoe_vk_load_instance(smoe_vk_instance_fns *fns, VkInstance instance);

/* Fills a per-device table through the instance's vkGetDeviceProcAddr (not volk's globals). */
void smoe_vk_load_device(const smoe_vk_instance_fns *fns, VkDevice device, struct VolkDeviceTable *table);

/* "VK_ERROR_OUT_OF_DEVICE_MEMORY" and so on. */
const char *smoe_vk_result_string(VkResult r);

/* Maps a VkResult to a status and formats "what failed: VK_ERROR_..." into err. */
smoe_status smoe_vk_fail(smoe_err *err, VkResult r, const char *what);

#endif
