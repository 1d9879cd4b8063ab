/* Command programs: a sequence of dispatches recorded once into one command buffer and replayed
 * any number of times. A barrier is recorded only where a dispatch touches a range that an
 * earlier dispatch since the last barrier wrote (read-after-write, write-after-write), or writes
 * a range one of them read (write-after-read). Completion is waited for with a fence. */
#ifndef SMOE_RECORD_H
#define SMOE_RECORD_H

#include "memory.h"
#include "pipeline.h"
#include "profile.h"

/* A binding is a storage buffer, or, read through a uniform texel buffer of rgba32f (TEXEL4) or
 * r32f (TEXEL1) texels, a VkBufferView the program creates when the dispatch is recorded and
 * frees with itself. */
typedef enum smoe_access {
    SMOE_READ = 1,
    SMOE_WRITE = 2,
    SMOE_READ_WRITE = 3,
    SMOE_READ_TEXEL4 = 1 | 4,
    SMOE_READ_TEXEL1 = 1 | 8,
} smoe_access;
#define SMOE_TEXEL_BITS 12u

typedef struct smoe_binding {
    smoe_tensor tensor;
    smoe_access access;
} smoe_binding;

/* The texel view of a tensor: it starts at the tensor's first byte rounded down to
 * minTexelBufferOffsetAlignment and covers the tensor rounded up to whole texels, within its
 * buffer and maxTexelBufferElements. */
typedef struct smoe_texel_view {
    uint64_t offset, range; /* bytes in the buffer */
    uint32_t first;         /* the tensor's first float, counted from the view's start */
} smoe_texel_view;

/* Plans the view of t with texel_floats floats per texel (4 or 1); 0 when the device cannot
 * view it so (format unsupported, too many texels, no room to round up at the buffer's end). */
int smoe_texel_view_plan(const smoe_gpu *gpu, const smoe_tensor *t, uint32_t texel_floats, smoe_texel_view *v);

typedef struct smoe_view_entry {
    VkBuffer buffer;
    uint64_t offset, range;
    VkFormat format;
    VkBufferView view;
} smoe_view_entry;

typedef struct smoe_range {
    VkBuffer buffer;
    uint64_t begin, end;
    int write;
} smoe_range;

typedef struct smoe_program {
    smoe_gpu *gpu;
    VkCommandBuffer cb;
    VkFence fence;
    VkDescriptorPool *pools;
    uint32_t pool_count;
    smoe_range *pending; /* accesses since the last barrier */
    size_t pending_count, pending_cap;
    smoe_view_entry *views; /* texel buffer views of the recorded dispatches */
    size_t view_count, view_cap;
    uint32_t dispatches, barriers;
    int recording, submitted;
    /* Profiling (begun with a profile and the queue has timestamps): query q+1 is written after
     * command q, query 0 at the start; labels[q] names command q; the times go to profile. */
    struct smoe_profile *profile;
    const char *label; /* the next dispatch's label (then cleared); NULL: its kernel's name */
    VkQueryPool *query_pools;
    uint32_t query_pool_count, queries;
    char (*labels)[SMOE_LABEL_MAX];
} smoe_program;

/* Begins a program (not profiled). */
smoe_status smoe_program_begin(smoe_gpu *gpu, smoe_program *p, smoe_err *err);
/* Begins a program whose every run adds its dispatches' GPU times to prof (NULL: none). */
smoe_status smoe_program_begin_profiled(smoe_gpu *gpu, smoe_program *p, struct smoe_profile *prof, smoe_err *err);
/* Records one dispatch of kernel k with spec[0..spec_count) over groups[0..2] workgroups:
 * bindings[i] is bound at binding i, push holds its push constants (push_size bytes). The counts
 * and the size are checked against the kernel's table entry (pipeline.h). Call it through
 * smoe_record, which counts the arrays and sizes the push struct itself. */
smoe_status smoe_record_kernel(smoe_program *p, smoe_kernel k, const uint32_t *spec, uint32_t spec_count,
                               const smoe_binding *bindings, uint32_t binding_count, const void *push,
                               uint32_t push_size, const uint32_t groups[3], smoe_err *err);
/* Elements of an array (GCC's -Wsizeof-pointer-div rejects a pointer). */
#define SMOE_LEN(a) ((uint32_t)(sizeof(a) / sizeof((a)[0])))
/* spec and bindings arrays, push a struct (an lvalue). */
#define smoe_record(p, k, spec, bindings, push, groups, err)                                                  \
    smoe_record_kernel(p, k, spec, SMOE_LEN(spec), bindings, SMOE_LEN(bindings), &(push), (uint32_t)sizeof(push), \
                       groups, err)
/* Records a fill of a tensor with a 32-bit pattern (bytes a multiple of 4). */
smoe_status smoe_program_fill(smoe_program *p, const smoe_tensor *t, uint32_t pattern, smoe_err *err);
smoe_status smoe_program_end(smoe_program *p, smoe_err *err);
/* Submits the recorded program; smoe_program_wait waits for it. run = submit + wait. */
smoe_status smoe_program_submit(smoe_program *p, smoe_err *err);
smoe_status smoe_program_wait(smoe_program *p, smoe_err *err);
/* Without blocking: SMOE_OK once the submitted program has finished (or none was submitted),
 * SMOE_NOT_READY while it runs. */
smoe_status smoe_program_poll(smoe_program *p, smoe_err *err);
smoe_status smoe_program_run(smoe_program *p, smoe_err *err);
void smoe_program_destroy(smoe_program *p);

/* Workgroups needed to cover n items with groups of size g. */
static inline uint32_t smoe_div_up(uint64_t n, uint32_t g) { return (uint32_t)((n + g - 1) / g); }
/* count workgroups as x * y within the device's limit on x (y = count / x rounded up, so a shader
 * finds its index as y * groups_x + x and skips the few past count); z = batch. */
void smoe_grid(const smoe_gpu *gpu, uint32_t count, uint32_t batch, uint32_t groups[3]);

#endif
