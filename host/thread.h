/* Threads, behind a small platform layer (POSIX threads here; a Windows implementation goes in
 * thread.c beside it). Used only by asynchronous jobs (job.c). */
#ifndef SMOE_THREAD_H
#define SMOE_THREAD_H

#include "error.h"

#if defined(_WIN32)
#error "host/thread.c has no Windows implementation yet (CreateThread / WaitForSingleObject)"
#else
#include <pthread.h>
#endif

typedef void (*smoe_thread_fn)(void *arg);

/* A thread handle. It must stay at the same address from smoe_thread_start to smoe_thread_join
 * (the new thread reads fn and arg from it). */
typedef struct smoe_thread {
    pthread_t handle;
    smoe_thread_fn fn;
    void *arg;
} smoe_thread;

/* Runs fn(arg) on a new thread. Errors: SMOE_ERROR_OUT_OF_HOST_MEMORY (the system refused a
 * thread), with the reason in err. */
smoe_status smoe_thread_start(smoe_thread *t, smoe_thread_fn fn, void *arg, smoe_err *err);

/* Waits for the thread to return. Exactly once per started thread. */
void smoe_thread_join(smoe_thread *t);

#endif
