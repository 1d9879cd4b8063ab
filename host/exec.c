/* The executor: recording once and replaying, the program cache, submit, wait and poll. */
#include "exec.h"

#include <string.h>

void smoe_executor_init(smoe_executor *x, smoe_gpu *gpu)
{
    memset(x, 0, sizeof *x);
    x->gpu = gpu;
}

static void drop(smoe_exec_slot *s)
{
    smoe_program_destroy(&s->prog); /* waits for it first if it is still submitted */
    memset(s, 0, sizeof *s);
}

void smoe_executor_destroy(smoe_executor *x)
{
    for (int i = 0; i < SMOE_EXEC_SLOTS; i++) drop(&x->slot[i]);
}

void smoe_executor_set_profile(smoe_executor *x, struct smoe_profile *prof)
{
    smoe_executor_destroy(x);
    x->profile = prof;
}

void smoe_executor_forget_plan(smoe_executor *x, int plan)
{
    for (int i = 0; i < SMOE_EXEC_SLOTS; i++)
        if (x->slot[i].used && x->slot[i].plan == plan) drop(&x->slot[i]);
}

static smoe_exec_slot *find(smoe_executor *x, int plan, int mode)
{
    for (int i = 0; i < SMOE_EXEC_SLOTS; i++)
        if (x->slot[i].used && x->slot[i].plan == plan && x->slot[i].mode == mode) return &x->slot[i];
    return NULL;
}

/* The recorded program of rq: the cached one while its key is the same, else recorded now. */
static smoe_status program_of(smoe_executor *x, const smoe_exec_request *rq, smoe_program **out, smoe_err *err)
{
    if (rq->key_size > SMOE_EXEC_KEY_MAX) return smoe_fail(err, SMOE_ERROR_INTERNAL, "program key of %zu bytes", rq->key_size);
    smoe_exec_slot *s = find(x, rq->plan, rq->mode);
    if (s && s->key_size == rq->key_size && (!rq->key_size || !memcmp(s->key, rq->key, rq->key_size))) {
        *out = &s->prog;
        return SMOE_OK;
    }
    if (s) drop(s); /* recorded with other settings */
    for (int i = 0; i < SMOE_EXEC_SLOTS && !s; i++)
        if (!x->slot[i].used) s = &x->slot[i];
    if (!s) return smoe_fail(err, SMOE_ERROR_INTERNAL, "more than %d recorded programs in one model", SMOE_EXEC_SLOTS);
    smoe_status st = smoe_program_begin_profiled(x->gpu, &s->prog, x->profile, err);
    smoe_exec ex = {x->gpu, &s->prog};
    if (!st) st = rq->emit(&ex, rq, err);
    if (!st) st = smoe_program_end(&s->prog, err);
    if (st) {
        drop(s);
        return st;
    }
    s->used = 1;
    s->plan = rq->plan;
    s->mode = rq->mode;
    s->key_size = rq->key_size;
    if (rq->key_size) memcpy(s->key, rq->key, rq->key_size);
    *out = &s->prog;
    return SMOE_OK;
}

smoe_status smoe_executor_run_deferred(const smoe_exec_request *rq, smoe_err *err)
{
    smoe_exec ex = {NULL, NULL};
    return rq->emit(&ex, rq, err);
}

smoe_status smoe_executor_submit_async(smoe_executor *x, const smoe_exec_request *rq, smoe_err *err)
{
    if (!x->gpu) return SMOE_OK;
    smoe_program *p;
    smoe_status st = program_of(x, rq, &p, err);
    if (!st) st = smoe_program_submit(p, err);
    return st;
}

smoe_status smoe_executor_start(smoe_executor *x, const smoe_exec_request *rq, int *started, smoe_err *err)
{
    *started = 0;
    if (!x->gpu) {
        smoe_status st = smoe_executor_run_deferred(rq, err);
        *started = !st;
        return st;
    }
    smoe_status st = smoe_executor_submit_async(x, rq, err);
    *started = !st;
    return st;
}

smoe_status smoe_executor_wait(smoe_executor *x, int plan, int mode, int wait, smoe_err *err)
{
    smoe_exec_slot *s = find(x, plan, mode);
    if (!s) return SMOE_OK;
    return wait ? smoe_program_wait(&s->prog, err) : smoe_program_poll(&s->prog, err);
}

smoe_status smoe_executor_run(smoe_executor *x, const smoe_exec_request *rq, int *started, smoe_err *err)
{
    smoe_status st = smoe_executor_start(x, rq, started, err);
    if (!st && x->gpu) st = smoe_executor_wait(x, rq->plan, rq->mode, 1, err);
    return st;
}

smoe_status smoe_executor_settle(smoe_executor *x, smoe_err *err)
{
    smoe_status st = SMOE_OK;
    for (int i = 0; i < SMOE_EXEC_SLOTS && !st; i++) st = smoe_program_wait(&x->slot[i].prog, err);
    return st;
}
