/* The executor: how a model kind's work runs, written once for every kind. A kind describes its
 * work as a request: which plan (a set of buffers of one shape) and mode it is, the settings the
 * recorded commands depend on (key bytes), and an emit callback that issues the ops (ops/ops.h).
 * On the CPU path the executor calls emit at each run and the ops execute at once. On Vulkan it
 * records emit's ops once into a program per (plan, mode), keeps it while the key stays the same
 * (records again when it changes), and replays it: submit, then wait or poll its fence.
 * A replay allocates nothing and copies nothing. */
#ifndef SMOE_EXEC_H
#define SMOE_EXEC_H

#include "ops/ops.h"

#define SMOE_EXEC_SLOTS 8     /* programs cached per model: plans x modes of the largest kind */
#define SMOE_EXEC_KEY_MAX 64  /* bytes of settings recorded into one program */

typedef struct smoe_exec_request {
    int plan, mode;
    /* The settings baked into the recorded commands (compared byte for byte; no padding). */
    const void *key;
    size_t key_size;
    /* Issues the work as ops on ex; it reads what it needs from the request (user: the kind's). */
    smoe_status (*emit)(smoe_exec *ex, const struct smoe_exec_request *rq, smoe_err *err);
    void *user;
} smoe_exec_request;

typedef struct smoe_exec_slot {
    int used, plan, mode;
    size_t key_size;
    unsigned char key[SMOE_EXEC_KEY_MAX];
    smoe_program prog;
} smoe_exec_slot;

typedef struct smoe_executor {
    smoe_gpu *gpu; /* the model's device (smoe_ctx_gpu); NULL: the CPU path */
    struct smoe_profile *profile; /* programs record per-dispatch GPU times into it (bench), or NULL */
    smoe_exec_slot slot[SMOE_EXEC_SLOTS];
} smoe_executor;

void smoe_executor_init(smoe_executor *x, smoe_gpu *gpu);
/* Waits for what is still submitted and frees every program. */
void smoe_executor_destroy(smoe_executor *x);
/* Programs recorded from now on time every dispatch into prof (NULL: none); the cached ones are
 * dropped, to be recorded again so. prof is to outlive the executor's programs. */
void smoe_executor_set_profile(smoe_executor *x, struct smoe_profile *prof);
/* Drops the programs of a plan whose buffers are about to be released or moved. */
void smoe_executor_forget_plan(smoe_executor *x, int plan);

/* Starts the work of rq. CPU path: runs it now. Vulkan: records it if no program of
 * (plan, mode) holds the same key, then submits it. *started becomes 1 once the work is sure to
 * run (CPU: it ran; Vulkan: it was submitted). */
smoe_status smoe_executor_start(smoe_executor *x, const smoe_exec_request *rq, int *started, smoe_err *err);
/* start, then wait: the work of rq to completion. */
smoe_status smoe_executor_run(smoe_executor *x, const smoe_exec_request *rq, int *started, smoe_err *err);
/* Vulkan: records rq if needed and submits it; CPU path: nothing, the work runs later by
 * smoe_executor_run_deferred (on another thread, for an asynchronous job). */
smoe_status smoe_executor_submit_async(smoe_executor *x, const smoe_exec_request *rq, smoe_err *err);
/* CPU path: the ops of rq, now, on the calling thread. */
smoe_status smoe_executor_run_deferred(const smoe_exec_request *rq, smoe_err *err);
/* Vulkan: whether the submitted program of (plan, mode) has finished: SMOE_OK (also when
 * nothing is submitted), SMOE_NOT_READY (only without wait), or the error it ended with. */
smoe_status smoe_executor_wait(smoe_executor *x, int plan, int mode, int wait, smoe_err *err);
/* Waits for every program still submitted, as a failed fence wait leaves one: until it has
 * ended, reading or writing the buffers it uses would race with it. */
smoe_status smoe_executor_settle(smoe_executor *x, smoe_err *err);

#endif
