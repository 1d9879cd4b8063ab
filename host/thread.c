/* Threads: POSIX implementation of thread.h. */
#define _POSIX_C_SOURCE 200809L
#include "thread.h"

#include <errno.h>

static void *trampoline(void *p)
{
    smoe_thread *t = p;
    t->fn(t->arg);
    return NULL;
}

smoe_status smoe_thread_start(smoe_thread *t, smoe_thread_fn fn, void *arg, smoe_err *err)
{
    t->fn = fn;
    t->arg = arg;
    int r = pthread_create(&t->handle, NULL, trampoline, t);
    /* (strerror is not thread-safe everywhere: the two documented causes are named here.) */
    if (r)
        return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "starting a worker thread failed: %s",
                         r == EAGAIN ? "EAGAIN (out of resources or a thread limit)"
                         : r == EPERM ? "EPERM" : "pthread_create error");
    return SMOE_OK;
}

void smoe_thread_join(smoe_thread *t)
{
    pthread_join(t->handle, NULL);
}
