#define _POSIX_C_SOURCE 200809L /* setenv in test_vk.h */
/* The executor (host/exec.h): on the CPU path every run emits the ops again; on Vulkan a program
 * is recorded once per (plan, mode) and replayed while its key is the same, recorded again when
 * the key changes or its plan is forgotten, and can be submitted and then polled or waited for. */
#include "exec.h"
#include "test_vk.h"

#define N 64

typedef struct work {
    int emits;
    smoe_tensor x, y;
} work;

/* y += x */
static smoe_status emit(smoe_exec *ex, const smoe_exec_request *rq, smoe_err *err)
{
    work *w = rq->user;
    w->emits++;
    return smoe_op_add(ex, N, &w->x, &w->y, err);
}

static float y0_of(const work *w)
{
    float y[N];
    smoe_err err = {{0}};
    CHECK(smoe_tensor_download(&w->y, 0, y, sizeof y, &err) == SMOE_OK);
    for (int i = 1; i < N; i++) CHECK(y[i] == y[0]);
    return y[0];
}

static void run(const char *spec)
{
    smoe_context *ctx = test_open(spec);
    if (!ctx) return;
    smoe_gpu *gpu = smoe_ctx_gpu(ctx);
    smoe_err err = {{0}};
    smoe_arena a;
    smoe_arena_init(&a, gpu, "test");
    work w = {0};
    CHECK(smoe_arena_reserve(&a, N * 4, &w.x, &err) == SMOE_OK);
    CHECK(smoe_arena_reserve(&a, N * 4, &w.y, &err) == SMOE_OK);
    CHECK(smoe_arena_commit(&a, &err) == SMOE_OK);
    float ones[N], zeros[N] = {0};
    for (int i = 0; i < N; i++) ones[i] = 1.0f;
    CHECK(smoe_tensor_upload(&w.x, 0, ones, sizeof ones, &err) == SMOE_OK);
    CHECK(smoe_tensor_upload(&w.y, 0, zeros, sizeof zeros, &err) == SMOE_OK);

    smoe_executor x;
    smoe_executor_init(&x, gpu);
    int key = 1, started = 0;
    smoe_exec_request rq = {0, 0, &key, sizeof key, emit, &w};
    for (int i = 0; i < 3; i++) {
        CHECK(smoe_executor_run(&x, &rq, &started, &err) == SMOE_OK && started);
    }
    CHECK(y0_of(&w) == 3.0f);
    int recorded = gpu ? 1 : 3; /* Vulkan: replayed; CPU: emitted at each run */
    CHECK_MSG(w.emits == recorded, "%s: %d emits, expected %d", spec, w.emits, recorded);

    key = 2; /* another setting: recorded again, then replayed */
    CHECK(smoe_executor_run(&x, &rq, &started, &err) == SMOE_OK);
    CHECK(smoe_executor_run(&x, &rq, &started, &err) == SMOE_OK);
    recorded += gpu ? 1 : 2;
    CHECK_MSG(w.emits == recorded, "%s: %d emits after a new key, expected %d", spec, w.emits, recorded);

    rq.mode = 1; /* another mode of the same plan: a program of its own */
    CHECK(smoe_executor_run(&x, &rq, &started, &err) == SMOE_OK);
    rq.mode = 0;
    CHECK(smoe_executor_run(&x, &rq, &started, &err) == SMOE_OK);
    recorded += gpu ? 1 : 2;
    CHECK_MSG(w.emits == recorded, "%s: %d emits over two modes, expected %d", spec, w.emits, recorded);

    smoe_executor_forget_plan(&x, 0); /* its buffers would move: recorded again */
    CHECK(smoe_executor_run(&x, &rq, &started, &err) == SMOE_OK);
    recorded += 1;
    CHECK_MSG(w.emits == recorded, "%s: %d emits after forgetting the plan, expected %d", spec, w.emits, recorded);
    CHECK(y0_of(&w) == 8.0f);

    /* submitted now, finished later (the CPU path runs it on the caller's thread here) */
    CHECK(smoe_executor_submit_async(&x, &rq, &err) == SMOE_OK);
    if (!gpu) CHECK(smoe_executor_run_deferred(&rq, &err) == SMOE_OK);
    smoe_status st;
    while ((st = smoe_executor_wait(&x, 0, 0, 0, &err)) == SMOE_NOT_READY) {
    }
    CHECK(st == SMOE_OK);
    CHECK(smoe_executor_settle(&x, &err) == SMOE_OK);
    CHECK(y0_of(&w) == 9.0f);

    smoe_executor_destroy(&x);
    smoe_arena_release(&a);
    test_close(ctx);
}

int main(void)
{
    run("cpu");
    run("vulkan");
    return test_finish("test_exec");
}
