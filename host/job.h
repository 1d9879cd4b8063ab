/* Asynchronous jobs (smoe_job_* in softmoe.h): work started by one call and completed by later
 * ones. The work is an executor request (exec.h): on Vulkan a submitted program whose fence is
 * the completion; on the CPU path its ops run on a worker thread (thread.h). The model kind that
 * starts a job supplies the request and how the results are copied out; this file owns the life
 * cycle, and the rule that a model has at most one unfinished job (smoe_model.job). */
#ifndef SMOE_JOB_H
#define SMOE_JOB_H

#include "model.h"

/* After the work: copies the results of a batch of b to out, on the thread of the job call. */
typedef smoe_status (*smoe_job_collect_fn)(smoe_model *m, int b, float *out, smoe_err *err);

/* Starts rq on m's executor as m's job: on Vulkan records it if needed and submits it; on the
 * CPU path starts a worker thread that runs its ops, which may touch only the model's own
 * buffers (never the context: no logging, no last-error message). rq->user must outlive the job
 * (the model itself); rq->key is read only during this call. On failure m stays free and *job is
 * NULL. */
smoe_status smoe_job_launch(smoe_model *m, const smoe_exec_request *rq, smoe_job_collect_fn collect, int b, float *out,
                            smoe_job **job, smoe_err *err);

/* For freeing a model with an unfinished job: waits for the work, ends the job with
 * SMOE_ERROR_INVALID_ARGUMENT (results not collected) and forgets the model. */
void smoe_job_detach(smoe_job *job);

#endif
