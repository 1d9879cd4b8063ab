/* smoe_version_details: the library's, the run-time Vulkan loader's and the shader compiler's versions.
 * The build passes SMOE_PROJECT_VERSION and SMOE_SPIRV_COMPILER (CMakeLists.txt). */
#include <stdio.h>
#include <string.h>

#include "vk.h"

#ifndef SMOE_PROJECT_VERSION
#define SMOE_PROJECT_VERSION "unknown"
#endif
#ifndef SMOE_SPIRV_COMPILER
#define SMOE_SPIRV_COMPILER "unknown"
#endif

/* The loader's own version; a loader without vkEnumerateInstanceVersion is Vulkan 1.0. */
static void loader_version(smoe_version_info *out)
{
    void *handle = NULL;
    smoe_vk_instance_fns fns;
    smoe_err err = {{0}};
    if (smoe_vk_open_loader(&handle, &fns, &err) != SMOE_OK) {
        snprintf(out->vulkan, sizeof out->vulkan, "not found: %.100s", err.msg);
        return;
    }
    uint32_t v = VK_API_VERSION_1_0;
    if (fns.vkEnumerateInstanceVersion && fns.vkEnumerateInstanceVersion(&v) != VK_SUCCESS) v = VK_API_VERSION_1_0;
    smoe_vk_close_loader(handle);
    out->vulkan_loader = v;
    snprintf(out->vulkan, sizeof out->vulkan, "%u.%u.%u", VK_API_VERSION_MAJOR(v), VK_API_VERSION_MINOR(v),
             VK_API_VERSION_PATCH(v));
}

smoe_status smoe_version_details(smoe_version_info *out)
{
    if (!out) return SMOE_ERROR_INVALID_ARGUMENT;
    memset(out, 0, sizeof *out);
    out->version = smoe_version();
    snprintf(out->library, sizeof out->library, "%s", SMOE_PROJECT_VERSION);
    snprintf(out->spirv_compiler, sizeof out->spirv_compiler, "%s", SMOE_SPIRV_COMPILER);
    loader_version(out);
    return SMOE_OK;
}
