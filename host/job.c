/* Asynchronous jobs: life cycle, completion by polling or waiting, detaching from a freed model. */
#include "job.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "thread.h"

struct smoe_job {
    smoe_model *model;       /* NULL once the job is final */
    smoe_exec_request rq;    /* the work */
    smoe_job_collect_fn collect;
    int b;
    float *out;
    int on_gpu;
    /* CPU path */
    smoe_thread thread;
    int thread_live;         /* started and not yet joined */
    atomic_int done;         /* set by the worker after run returned (release; read with acquire) */
    smoe_status run_status;  /* the worker's result, read after done or the join */
    smoe_err run_err;
    /* the outcome */
    int final;
    smoe_status status;
};

static void worker(void *arg)
{
    smoe_job *j = arg;
    j->run_status = smoe_executor_run_deferred(&j->rq, &j->run_err);
    atomic_store_explicit(&j->done, 1, memory_order_release);
}

/* Whether the work has ended (with wait: once it has); SMOE_NOT_READY only without wait. */
static smoe_status work_done(smoe_job *j, int wait, smoe_err *err)
{
    if (j->on_gpu) return smoe_executor_wait(&j->model->exec, j->rq.plan, j->rq.mode, wait, err);
    if (!wait && !atomic_load_explicit(&j->done, memory_order_acquire)) return SMOE_NOT_READY;
    if (j->thread_live) {
        smoe_thread_join(&j->thread);
        j->thread_live = 0;
    }
    if (j->run_status) memcpy(err, &j->run_err, sizeof *err);
    return j->run_status;
}

static void make_final(smoe_job *j, smoe_status st)
{
    j->final = 1;
    j->status = st;
    if (j->model) j->model->job = NULL;
    j->model = NULL;
}

smoe_status smoe_job_launch(smoe_model *m, const smoe_exec_request *rq, smoe_job_collect_fn collect, int b, float *out,
                            smoe_job **job, smoe_err *err)
{
    *job = NULL;
    smoe_job *j = calloc(1, sizeof *j);
    if (!j) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory for a job");
    j->model = m;
    j->rq = *rq;
    j->rq.key = NULL; /* only the recording reads it, in this call */
    j->rq.key_size = 0;
    j->collect = collect;
    j->b = b;
    j->out = out;
    j->on_gpu = m->exec.gpu != NULL;
    atomic_init(&j->done, 0);
    smoe_status st = j->on_gpu ? smoe_executor_submit_async(&m->exec, rq, err) : smoe_thread_start(&j->thread, worker, j, err);
    if (st) {
        free(j);
        return st;
    }
    j->thread_live = !j->on_gpu;
    m->job = j;
    *job = j;
    return SMOE_OK;
}

static smoe_status finish(smoe_job *j, int wait)
{
    if (!j) return SMOE_ERROR_INVALID_ARGUMENT;
    if (j->final) return j->status;
    smoe_model *m = j->model;
    smoe_err err = {{0}};
    smoe_status st = work_done(j, wait, &err);
    if (st == SMOE_NOT_READY) return st;
    if (!st) st = j->collect(m, j->b, j->out, &err);
    make_final(j, st);
    return st ? smoe_ctx_error(m->ctx, st, &err) : SMOE_OK;
}

smoe_status smoe_job_poll(smoe_job *job) { return finish(job, 0); }
smoe_status smoe_job_wait(smoe_job *job) { return finish(job, 1); }

void smoe_job_detach(smoe_job *j)
{
    if (!j || j->final) return;
    smoe_err ignored;
    (void)work_done(j, 1, &ignored);
    make_final(j, SMOE_ERROR_INVALID_ARGUMENT);
}

void smoe_job_free(smoe_job *j)
{
    if (!j) return;
    smoe_job_detach(j);
    free(j);
}
