/* Asynchronous jobs (smoe_job_* in softmoe.h): work started by one call and completed by later
 * ones. On Vulkan the work is a submitted program and its fence is the completion; on the CPU
 * path it runs on a worker thread (thread.h). The model code that starts a job supplies what the
 * job does as smoe_job_ops; this file owns the life cycle, and the rule that a model has at most
 * one unfinished job (smoe_model.job). */
#ifndef SMOE_JOB_H
#define SMOE_JOB_H

#include "model.h"

typedef struct smoe_job_ops {
    /* CPU path: the work itself, on the worker thread. It may touch only the model's own buffers
     * (never the context: no logging, no last-error message). */
    smoe_status (*run)(smoe_model *m, smoe_err *err);
    /* Vulkan: whether the submitted work has finished: SMOE_OK, SMOE_NOT_READY (only when wait is
     * 0), or the error the work ended with. With wait, blocks until it has finished. */
    smoe_status (*gpu_poll)(smoe_model *m, int wait, smoe_err *err);
    /* After the work: copies the results of a batch of b to out, on the thread of the job call. */
    smoe_status (*collect)(smoe_model *m, int b, float *out, smoe_err *err);
} smoe_job_ops;

/* Makes the job of model m whose work has just been submitted (Vulkan), or starts its worker
 * thread (CPU path), and marks m busy. ops must outlive the job (static storage). On failure the
 * submitted work is waited for, m stays free and *job is NULL. */
smoe_status smoe_job_launch(smoe_model *m, const smoe_job_ops *ops, int b, float *out, smoe_job **job,
                            smoe_err *err);

/* For freeing a model with an unfinished job: waits for the work, ends the job with
 * SMOE_ERROR_INVALID_ARGUMENT (results not collected) and forgets the model. */
void smoe_job_detach(smoe_job *job);

#endif
