/* Fault injection: makes the Nth call of one Vulkan command on one gpu fail with a chosen
 * VkResult, as a driver does when memory runs out or the device is lost, so that the tests can
 * reach every error path. The state lives in the gpu (no global state); it is armed from the
 * context's options (SOFTMOE_FAULT, options.h) when the device is opened, or by smoe_fault_arm. Every
 * fallible Vulkan call of the library's work goes through SMOE_VK, which also counts the calls
 * (the tests size their sweeps from the counts). Calls on the way out (destroying, and the
 * waits that destroying needs) are never counted nor failed. */
#ifndef SMOE_FAULT_H
#define SMOE_FAULT_H

#include "vk.h"

/* The commands that can be made to fail, one kind each. */
#define SMOE_FAULT_COMMANDS(X)                                                                      \
    X(vkAllocateMemory) X(vkCreateBuffer) X(vkBindBufferMemory) X(vkMapMemory) X(vkQueueSubmit)    \
    X(vkWaitForFences) X(vkGetFenceStatus) X(vkResetFences) X(vkCreateFence)                        \
    X(vkAllocateCommandBuffers) X(vkBeginCommandBuffer) X(vkEndCommandBuffer)                       \
    X(vkCreateDescriptorPool) X(vkAllocateDescriptorSets) X(vkCreateShaderModule)                   \
    X(vkCreateDescriptorSetLayout) X(vkCreatePipelineLayout) X(vkCreateComputePipelines)                \
    X(vkCreateBufferView) X(vkCreateQueryPool)

typedef enum smoe_fault_kind {
#define SMOE_FAULT_ENUM(fn) SMOE_FAULT_##fn,
    SMOE_FAULT_COMMANDS(SMOE_FAULT_ENUM)
#undef SMOE_FAULT_ENUM
    SMOE_FAULT_KIND_COUNT
} smoe_fault_kind;

typedef struct smoe_fault {
    int armed;
    smoe_fault_kind kind;
    uint64_t nth;        /* the call of kind, counted from arming (1 = the next one), that fails */
    uint64_t seen;       /* calls of kind since arming */
    VkResult result;     /* what the failing call returns */
    int fired;           /* the failure was injected */
    int lost;            /* VK_ERROR_DEVICE_LOST was injected: every later call returns it too */
    VkResult injected;   /* the result of the last call that smoe_fault_hit failed */
    uint64_t calls[SMOE_FAULT_KIND_COUNT]; /* every call made, by kind */
} smoe_fault;

/* Counts a call of kind; returns 1 (and sets f->injected) when that call is to fail. */
int smoe_fault_hit(smoe_fault *f, smoe_fault_kind kind);

/* Makes the nth call of kind from now fail with result (nth >= 1); smoe_fault_disarm undoes it
 * (a device loss already injected stays). */
void smoe_fault_arm(smoe_fault *f, smoe_fault_kind kind, uint64_t nth, VkResult result);
void smoe_fault_disarm(smoe_fault *f);

/* Arms f from a SOFTMOE_FAULT value "COMMAND:N[:RESULT]", e.g. "vkQueueSubmit:3:VK_ERROR_DEVICE_LOST":
 * COMMAND one of SMOE_FAULT_COMMANDS, N >= 1, RESULT VK_ERROR_OUT_OF_DEVICE_MEMORY (the default),
 * VK_ERROR_OUT_OF_HOST_MEMORY or VK_ERROR_DEVICE_LOST. */
smoe_status smoe_fault_parse(smoe_fault *f, const char *spec, smoe_err *err);

/* "vkQueueSubmit" for SMOE_FAULT_vkQueueSubmit; NULL out of range. */
const char *smoe_fault_kind_name(smoe_fault_kind kind);

/* Calls gpu->vk.fn args unless the fault state of gpu fails it: the VkResult either way. */
#define SMOE_VK(gpu, fn, args) \
    (smoe_fault_hit(&(gpu)->fault, SMOE_FAULT_##fn) ? (gpu)->fault.injected : (gpu)->vk.fn args)

#endif
