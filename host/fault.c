/* Fault injection (see fault.h). */
#include "fault.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[SMOE_FAULT_KIND_COUNT] = {
#define SMOE_FAULT_NAME(fn) #fn,
    SMOE_FAULT_COMMANDS(SMOE_FAULT_NAME)
#undef SMOE_FAULT_NAME
};

const char *smoe_fault_kind_name(smoe_fault_kind kind)
{
    return (int)kind >= 0 && kind < SMOE_FAULT_KIND_COUNT ? kind_names[kind] : NULL;
}

int smoe_fault_hit(smoe_fault *f, smoe_fault_kind kind)
{
    f->calls[kind]++;
    if (f->lost) {
        /* A lost device stays lost: whatever is called afterwards fails the same way. */
        f->injected = VK_ERROR_DEVICE_LOST;
        return 1;
    }
    if (!f->armed || kind != f->kind || ++f->seen != f->nth) return 0;
    f->armed = 0;
    f->fired = 1;
    f->injected = f->result;
    if (f->result == VK_ERROR_DEVICE_LOST) f->lost = 1;
    return 1;
}

void smoe_fault_arm(smoe_fault *f, smoe_fault_kind kind, uint64_t nth, VkResult result)
{
    f->armed = nth >= 1;
    f->kind = kind;
    f->nth = nth;
    f->seen = 0;
    f->result = result;
    f->fired = 0;
}

void smoe_fault_disarm(smoe_fault *f)
{
    f->armed = 0;
}

smoe_status smoe_fault_parse(smoe_fault *f, const char *spec, smoe_err *err)
{
    static const VkResult results[] = {VK_ERROR_OUT_OF_DEVICE_MEMORY, VK_ERROR_OUT_OF_HOST_MEMORY,
                                       VK_ERROR_DEVICE_LOST};
    const char *colon = strchr(spec, ':');
    size_t len = colon ? (size_t)(colon - spec) : 0;
    int kind = -1;
    for (int k = 0; k < SMOE_FAULT_KIND_COUNT && colon; k++)
        if (strlen(kind_names[k]) == len && !strncmp(spec, kind_names[k], len)) kind = k;
    char *end = NULL;
    errno = 0;
    long long nth = colon ? strtoll(colon + 1, &end, 10) : 0;
    VkResult result = VK_ERROR_OUT_OF_DEVICE_MEMORY;
    int ok = kind >= 0 && end != colon + 1 && errno == 0 && nth >= 1 && (*end == 0 || *end == ':');
    if (ok && *end == ':') {
        ok = 0;
        for (size_t i = 0; i < sizeof results / sizeof results[0]; i++)
            if (!strcmp(end + 1, smoe_vk_result_string(results[i]))) {
                result = results[i];
                ok = 1;
            }
    }
    if (!ok)
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT,
                         "SOFTMOE_FAULT \"%s\" is not COMMAND:N[:RESULT] (COMMAND a Vulkan command such as "
                         "vkQueueSubmit or vkAllocateMemory, N >= 1, RESULT VK_ERROR_OUT_OF_DEVICE_MEMORY, "
                         "VK_ERROR_OUT_OF_HOST_MEMORY or VK_ERROR_DEVICE_LOST)",
                         spec);
    smoe_fault_arm(f, (smoe_fault_kind)kind, (uint64_t)nth, result);
    return SMOE_OK;
}
