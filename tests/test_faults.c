/* Vulkan faults through the fault-injection hook (host/fault.h), on the default Vulkan device with
 * validation on, with device memory mapped and again through the staging buffer (as on a
 * discrete GPU).
 *  - Out of device memory: loading the golden ViT, its first, a replayed and an asynchronous
 *    inference, its first and a replayed training step, and saving it each run once with the
 *    nth call of one Vulkan command failing with VK_ERROR_OUT_OF_DEVICE_MEMORY, for every command
 *    the operation uses and n its first three calls, a middle one and its last two. Each returns
 *    SMOE_ERROR_OUT_OF_DEVICE_MEMORY with a message naming the command and leaves nothing
 *    half-done: no model registered, logits and loss unwritten, parameters exactly as before the
 *    step (or exactly as after it, with the step counted, when the fault came after the step's
 *    work was submitted), no file written, every device allocation it made freed. The same call
 *    made again then succeeds with the fault-free result.
 *  - Device lost: VK_ERROR_DEVICE_LOST from the first call of each command (in a sequence of
 *    load, inference, asynchronous inference, training steps and a save), and from the submit
 *    and the fence wait of a training step, makes that call return SMOE_ERROR_DEVICE_LOST naming
 *    the command; every later call on the context then fails at once with it (inference,
 *    training, reading parameters, saving, loading, creating), and the context is destroyed
 *    cleanly.
 *  - SOFTMOE_FAULT: its parsing, and arming a context when the device is opened; the hook of one
 *    context does not touch another.
 *  - Limits through the public API: a parameter larger than maxStorageBufferRange and a batch
 *    whose attention scores are, give SMOE_ERROR_TOO_LARGE naming the limit; a model larger than
 *    the device's memory gives SMOE_ERROR_OUT_OF_DEVICE_MEMORY before anything is allocated.
 * SOFTMOE_TEST_TRACE=1 prints each trial before it runs (to find one that crashes). */
#define _POSIX_C_SOURCE 200809L
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fault.h"
#include "memory.h"
#include "model.h"
#include "test_vk.h"

enum { B = 3, STEPS = 3 };
#define SENTINEL -12345.0f

typedef enum op { OP_LOAD, OP_INFER_FIRST, OP_INFER_AGAIN, OP_INFER_ASYNC, OP_TRAIN_FIRST, OP_TRAIN_AGAIN, OP_SAVE, OP_COUNT } op;
static const char *const op_names[OP_COUNT] = {
    "loading the model",         "the first inference",   "a replayed inference", "an asynchronous inference",
    "the first training step",   "a replayed training step", "saving the model",
};

typedef struct fixture {
    uint8_t *model;            /* the golden ViT file */
    size_t model_size;
    smoe_vit_config cfg;
    float *images;
    int32_t labels[B];
    smoe_train_config train;
    size_t nparams, nlogits;
    float *logits_ref;               /* fault-free inference of images */
    float loss_ref[STEPS + 1];       /* loss_ref[k]: the loss of training step k (1-based) */
    float *params_ref[STEPS + 1];    /* every parameter after k steps */
    uint8_t *saved_ref;              /* what smoe_model_save writes for the loaded model */
    size_t saved_size;
    char dir[64], path[128];         /* where saves go */
} fixture;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint8_t *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    uint8_t *data = NULL;
    long n = -1;
    if (f && fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (data = malloc((size_t)n + 1)) && fread(data, 1, (size_t)n, f) != (size_t)n) {
        free(data);
        data = NULL;
    }
    if (f) fclose(f);
    *size = data ? (size_t)n : 0;
    return data;
}

static int exists(const char *path)
{
    struct stat s;
    return stat(path, &s) == 0;
}

/* Opens the default Vulkan device, through the staging buffer when staged. */
static smoe_context *open_vulkan(int staged)
{
    if (staged) setenv("SOFTMOE_FORCE_STAGING", "1", 1);
    smoe_context *ctx = test_open("vulkan");
    unsetenv("SOFTMOE_FORCE_STAGING");
    return ctx;
}

/* Device memory the context holds besides the staging buffer (which lives as long as the gpu). */
static void live_memory(const smoe_gpu *gpu, uint32_t *count, uint64_t *bytes)
{
    *count = gpu->memory_count - (gpu->staging ? 1u : 0u);
    *bytes = gpu->memory_bytes - (gpu->staging ? gpu->staging->allocated : 0);
}

/* All parameters of m, concatenated (NULL and a failed check if they cannot be read). */
static float *snapshot(smoe_model *m, size_t total)
{
    float *all = malloc(total * 4), *at = all;
    int n = smoe_model_param_count(m);
    for (int i = 0; i < n && all; i++) {
        smoe_param_info info;
        smoe_model_param_info(m, i, &info);
        if (smoe_model_get_param(m, i, at) != SMOE_OK) {
            CHECK_MSG(0, "reading parameter %s: %s", info.name, smoe_last_error(m->ctx));
            free(all);
            return NULL;
        }
        at += info.count;
    }
    return all;
}

static int same_params(smoe_model *m, const fixture *fx, long step)
{
    float *now_p = snapshot(m, fx->nparams);
    int same = now_p && step >= 0 && step <= STEPS && !memcmp(now_p, fx->params_ref[step], fx->nparams * 4);
    free(now_p);
    return same;
}

static int untouched(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] != SENTINEL) return 0;
    return 1;
}

static smoe_status load(smoe_context *ctx, const fixture *fx, smoe_model **m)
{
    return smoe_model_load_memory(ctx, fx->model, fx->model_size, m);
}

/* The operation itself. */
static smoe_status act(const fixture *fx, smoe_context *ctx, op o, smoe_model **m, float *logits, float *loss)
{
    switch (o) {
    case OP_LOAD: return load(ctx, fx, m);
    case OP_INFER_FIRST:
    case OP_INFER_AGAIN: return smoe_vit_infer(*m, B, fx->images, logits);
    case OP_INFER_ASYNC: {
        smoe_job *job = NULL;
        smoe_status st = smoe_vit_infer_async(*m, B, fx->images, logits, &job);
        if (!st) st = smoe_job_wait(job);
        smoe_job_free(job);
        return st;
    }
    case OP_TRAIN_FIRST:
    case OP_TRAIN_AGAIN: return smoe_vit_train_step(*m, &fx->train, B, fx->images, fx->labels, loss, NULL);
    case OP_SAVE: return smoe_model_save(*m, fx->path, 1);
    default: return SMOE_ERROR_INTERNAL;
    }
}

/* The state the operation starts from, made without faults: NULL for OP_LOAD, else a model. */
static smoe_model *prepare(const fixture *fx, smoe_context *ctx, op o)
{
    smoe_model *m = NULL;
    if (o == OP_LOAD) return NULL;
    CHECK_MSG(load(ctx, fx, &m) == SMOE_OK, "%s", smoe_last_error(ctx));
    float *logits = malloc(fx->nlogits * 4), loss;
    smoe_status st = SMOE_OK;
    if (m && (o == OP_INFER_AGAIN || o == OP_INFER_ASYNC)) st = act(fx, ctx, OP_INFER_FIRST, &m, logits, &loss);
    if (m && o == OP_TRAIN_AGAIN) st = act(fx, ctx, OP_TRAIN_FIRST, &m, logits, &loss);
    CHECK_MSG(st == SMOE_OK, "preparing %s: %s", op_names[o], smoe_last_error(ctx));
    free(logits);
    return m;
}

/* After a failed o: nothing changed (step0 is the model's step count before). */
static void check_unchanged(const fixture *fx, smoe_context *ctx, op o, smoe_model *m, long step0, const float *logits,
                            float loss, const char *trial)
{
    switch (o) {
    case OP_LOAD:
        CHECK_MSG(m == NULL && ctx->model_count == 0, "%s: a model was kept", trial);
        break;
    case OP_INFER_FIRST:
    case OP_INFER_AGAIN:
    case OP_INFER_ASYNC:
        CHECK_MSG(untouched(logits, fx->nlogits), "%s: logits were written", trial);
        break;
    case OP_TRAIN_FIRST:
    case OP_TRAIN_AGAIN: {
        /* Before submission nothing moved; after it the step was taken whole and counted. */
        long step = smoe_model_train_step_count(m);
        CHECK_MSG(step == step0 || step == step0 + 1, "%s: step count %ld after %ld", trial, step, step0);
        CHECK_MSG(same_params(m, fx, step), "%s: the parameters are not those of step %ld", trial, step);
        CHECK_MSG(loss == SENTINEL, "%s: a loss was written", trial);
        break;
    }
    case OP_SAVE: {
        char tmp[160];
        snprintf(tmp, sizeof tmp, "%s.tmp", fx->path);
        CHECK_MSG(!exists(fx->path) && !exists(tmp), "%s: a file was left", trial);
        break;
    }
    default: break;
    }
}

/* After o succeeded: the fault-free result. */
static void check_result(const fixture *fx, op o, smoe_model *m, long step0, const float *logits, float loss,
                         const char *trial)
{
    switch (o) {
    case OP_LOAD:
        CHECK_MSG(m && same_params(m, fx, 0), "%s: the parameters loaded differ", trial);
        break;
    case OP_INFER_FIRST:
    case OP_INFER_AGAIN:
    case OP_INFER_ASYNC:
        CHECK_MSG(!memcmp(logits, fx->logits_ref, fx->nlogits * 4), "%s: the logits differ from the fault-free ones", trial);
        break;
    case OP_TRAIN_FIRST:
    case OP_TRAIN_AGAIN: {
        long step = smoe_model_train_step_count(m);
        CHECK_MSG(step == step0 + 1 && step <= STEPS && loss == fx->loss_ref[step],
                  "%s: step %ld loss %.9g, fault-free %.9g", trial, step, loss, step <= STEPS ? fx->loss_ref[step] : 0);
        CHECK_MSG(same_params(m, fx, step), "%s: the parameters after step %ld differ from the fault-free ones", trial, step);
        break;
    }
    case OP_SAVE: {
        size_t size;
        uint8_t *saved = read_all(fx->path, &size);
        CHECK_MSG(saved && size == fx->saved_size && !memcmp(saved, fx->saved_ref, size), "%s: the saved file differs", trial);
        free(saved);
        unlink(fx->path);
        break;
    }
    default: break;
    }
}

/* o with the nth call of kind failing with VK_ERROR_OUT_OF_DEVICE_MEMORY, then again without. */
static void oom_trial(const fixture *fx, smoe_context *ctx, op o, smoe_fault_kind kind, uint64_t nth, const char *variant)
{
    smoe_gpu *gpu = &ctx->gpu;
    char trial[256];
    snprintf(trial, sizeof trial, "%s, %s: %s with %s call %llu out of device memory", variant, "vulkan", op_names[o],
             smoe_fault_kind_name(kind), (unsigned long long)nth);
    uint32_t count0, count1;
    uint64_t bytes0, bytes1;
    if (getenv("SOFTMOE_TEST_TRACE")) fprintf(stderr, "TRIAL %s\n", trial);
    live_memory(gpu, &count0, &bytes0);
    smoe_model *m = prepare(fx, ctx, o);
    if (o != OP_LOAD && !m) return;
    long step0 = m ? smoe_model_train_step_count(m) : 0;
    float *logits = malloc(fx->nlogits * 4), loss = SENTINEL;
    for (size_t i = 0; i < fx->nlogits; i++) logits[i] = SENTINEL;

    smoe_fault_arm(&gpu->fault, kind, nth, VK_ERROR_OUT_OF_DEVICE_MEMORY);
    smoe_status st = act(fx, ctx, o, &m, logits, &loss);
    int fired = gpu->fault.fired;
    smoe_fault_disarm(&gpu->fault);
    const char *msg = smoe_last_error(ctx);
    CHECK_MSG(fired, "%s: that call was not made", trial);
    CHECK_MSG(st == SMOE_ERROR_OUT_OF_DEVICE_MEMORY, "%s: %s (%s)", trial, smoe_status_string(st), msg);
    CHECK_MSG(strstr(msg, smoe_fault_kind_name(kind)) && strstr(msg, "VK_ERROR_OUT_OF_DEVICE_MEMORY"),
              "%s: the message \"%s\" does not name the command and the result", trial, msg);
    check_unchanged(fx, ctx, o, m, step0, logits, loss, trial);

    /* The device is fine again: the same call works and gives the fault-free result. */
    step0 = m ? smoe_model_train_step_count(m) : 0;
    for (size_t i = 0; i < fx->nlogits; i++) logits[i] = SENTINEL;
    st = act(fx, ctx, o, &m, logits, &loss);
    CHECK_MSG(st == SMOE_OK, "%s, then without the fault: %s", trial, smoe_last_error(ctx));
    if (!st) check_result(fx, o, m, step0, logits, loss, trial);
    smoe_model_free(m);
    free(logits);
    live_memory(gpu, &count1, &bytes1);
    CHECK_MSG(count1 == count0 && bytes1 == bytes0, "%s: %u allocations (%llu bytes) of device memory left, %u (%llu) before",
              trial, count1, (unsigned long long)bytes1, count0, (unsigned long long)bytes0);
}

/* Which calls of a command that was called count times to fail: the first three, a middle one and
 * the last two, or with few, the first, a middle one and the last. */
static int picks(uint64_t count, int few, uint64_t out[6])
{
    const uint64_t all[6] = {1, 2, 3, count / 2, count - 1, count}, some[3] = {1, count / 2, count};
    const uint64_t *cand = few ? some : all;
    int n = 0;
    for (int i = 0; i < (few ? 3 : 6); i++) {
        int dup = cand[i] < 1 || cand[i] > count;
        for (int j = 0; j < n && !dup; j++) dup = out[j] == cand[i];
        if (!dup) out[n++] = cand[i];
    }
    return n;
}

static int is_pipeline_kind(int k)
{
    return k == SMOE_FAULT_vkCreateShaderModule || k == SMOE_FAULT_vkCreateDescriptorSetLayout ||
           k == SMOE_FAULT_vkCreatePipelineLayout || k == SMOE_FAULT_vkCreateComputePipelines;
}

/* The trials of o, on shared or (shared NULL) each on a fresh context. On a fresh context only
 * the commands of pipeline creation are failed, which a warm context no longer calls; loading
 * makes none, so there every command is. */
static int sweep_op(const fixture *fx, int staged, op o, smoe_context *shared, const char *variant)
{
    int cold = !shared && o != OP_LOAD, trials = 0;
    smoe_context *dry = shared ? shared : open_vulkan(staged);
    if (!dry) return 0;
    /* The calls o makes, counted in a fault-free run. */
    smoe_model *m = prepare(fx, dry, o);
    float *logits = malloc(fx->nlogits * 4), loss;
    uint64_t before[SMOE_FAULT_KIND_COUNT], used[SMOE_FAULT_KIND_COUNT];
    memcpy(before, dry->gpu.fault.calls, sizeof before);
    CHECK_MSG(act(fx, dry, o, &m, logits, &loss) == SMOE_OK, "%s: %s: %s", variant, op_names[o], smoe_last_error(dry));
    for (int k = 0; k < SMOE_FAULT_KIND_COUNT; k++) used[k] = dry->gpu.fault.calls[k] - before[k];
    smoe_model_free(m);
    unlink(fx->path);
    free(logits);
    if (!shared) test_close(dry);
    for (int k = 0; k < SMOE_FAULT_KIND_COUNT; k++) {
        if (cold && !is_pipeline_kind(k)) continue;
        CHECK_MSG(cold || !shared || !is_pipeline_kind(k) || !used[k], "%s: %s creates pipelines on a warm context",
                  variant, op_names[o]);
        uint64_t nth[6];
        int n = picks(used[k], cold || staged, nth);
        for (int i = 0; i < n; i++) {
            smoe_context *c = shared ? shared : open_vulkan(staged);
            if (!c) continue;
            oom_trial(fx, c, o, (smoe_fault_kind)k, nth[i], variant);
            trials++;
            if (!shared) test_close(c);
        }
    }
    return trials;
}

static void oom_sweep(const fixture *fx, int staged)
{
    const char *variant = staged ? "staged" : "mapped";
    smoe_context *ctx = open_vulkan(staged);
    if (!ctx) return;
    double t0 = now();
    /* Warm: every pipeline the operations use exists already. */
    smoe_model *m = prepare(fx, ctx, OP_TRAIN_AGAIN);
    float *logits = malloc(fx->nlogits * 4);
    CHECK(m && smoe_vit_infer(m, B, fx->images, logits) == SMOE_OK);
    smoe_model_free(m);
    free(logits);
    int trials = 0;
    for (op o = 0; o < OP_COUNT; o++) {
        /* Through staging, only what moves data differs from the mapped case. */
        int moves = o == OP_LOAD || o == OP_INFER_AGAIN || o == OP_TRAIN_FIRST || o == OP_SAVE;
        if (!staged || moves) trials += sweep_op(fx, staged, o, o == OP_LOAD ? NULL : ctx, variant);
    }
    /* Creating pipelines fails on a cold context (the ops of inference and training share the calls). */
    if (!staged) trials += sweep_op(fx, staged, OP_INFER_FIRST, NULL, "cold");
    printf("  %s: %d out-of-device-memory trials in %.1f s\n", variant, trials, now() - t0);
    test_close(ctx);
}

/* Every call on a context whose device was lost fails at once with SMOE_ERROR_DEVICE_LOST. */
static void check_dead(const fixture *fx, smoe_context *ctx, smoe_model *m, const char *by, const char *trial)
{
    double t0 = now();
    float *buf = malloc((fx->nlogits > fx->nparams ? fx->nlogits : fx->nparams) * 4), loss;
    smoe_model *other = (smoe_model *)&other;
    if (m) {
        CHECK_MSG(smoe_vit_infer(m, B, fx->images, buf) == SMOE_ERROR_DEVICE_LOST, "%s: inference", trial);
        const char *msg = smoe_last_error(ctx);
        CHECK_MSG(strstr(msg, "lost") && strstr(msg, by), "%s: the message \"%s\" does not say the device was lost by %s",
                  trial, msg, by);
        CHECK_MSG(smoe_vit_train_step(m, &fx->train, B, fx->images, fx->labels, &loss, NULL) == SMOE_ERROR_DEVICE_LOST,
                  "%s: training", trial);
        smoe_job *job = (smoe_job *)&job;
        CHECK_MSG(smoe_vit_infer_async(m, B, fx->images, buf, &job) == SMOE_ERROR_DEVICE_LOST && job == NULL,
                  "%s: asynchronous inference", trial);
        CHECK_MSG(smoe_model_get_param(m, 0, buf) == SMOE_ERROR_DEVICE_LOST, "%s: reading a parameter", trial);
        CHECK_MSG(smoe_model_save(m, fx->path, 1) == SMOE_ERROR_DEVICE_LOST && !exists(fx->path), "%s: saving", trial);
    }
    CHECK_MSG(load(ctx, fx, &other) == SMOE_ERROR_DEVICE_LOST && other == NULL, "%s: loading", trial);
    other = (smoe_model *)&other;
    CHECK_MSG(smoe_vit_create(ctx, &fx->cfg, 1, &other) == SMOE_ERROR_DEVICE_LOST && other == NULL, "%s: creating", trial);
    CHECK_MSG(now() - t0 < 5.0, "%s: the calls after the loss took %.1f s", trial, now() - t0);
    free(buf);
}

/* The sequence load, inference twice, asynchronous inference (polled), two training steps and a
 * save, stopping at the first failure. */
static smoe_status sequence(const fixture *fx, smoe_context *ctx, smoe_model **m)
{
    float *logits = malloc(fx->nlogits * 4), loss;
    smoe_status st = load(ctx, fx, m);
    for (int i = 0; i < 2 && !st; i++) st = smoe_vit_infer(*m, B, fx->images, logits);
    if (!st) {
        smoe_job *job = NULL;
        st = smoe_vit_infer_async(*m, B, fx->images, logits, &job);
        if (!st && (st = smoe_job_poll(job)) == SMOE_NOT_READY) st = smoe_job_wait(job);
        smoe_job_free(job);
    }
    for (int i = 0; i < 2 && !st; i++) st = smoe_vit_train_step(*m, &fx->train, B, fx->images, fx->labels, &loss, NULL);
    if (!st) st = smoe_model_save(*m, fx->path, 1);
    unlink(fx->path);
    free(logits);
    return st;
}

static void lost_trial(const fixture *fx, int staged, smoe_fault_kind kind, op o)
{
    const char *what = smoe_fault_kind_name(kind);
    char trial[256];
    snprintf(trial, sizeof trial, "%s: %s lost by the first %s", staged ? "staged" : "mapped",
             o == OP_COUNT ? "the sequence" : op_names[o], what);
    if (getenv("SOFTMOE_TEST_TRACE")) fprintf(stderr, "TRIAL %s\n", trial);
    smoe_context *ctx = open_vulkan(staged);
    if (!ctx) return;
    smoe_model *m = o == OP_COUNT ? NULL : prepare(fx, ctx, o);
    smoe_fault_arm(&ctx->gpu.fault, kind, 1, VK_ERROR_DEVICE_LOST);
    float *logits = malloc(fx->nlogits * 4), loss;
    smoe_status st = o == OP_COUNT ? sequence(fx, ctx, &m) : act(fx, ctx, o, &m, logits, &loss);
    free(logits);
    if (!ctx->gpu.fault.fired) {
        CHECK_MSG(st == SMOE_OK, "%s: %s", trial, smoe_last_error(ctx)); /* the command is not used there */
    } else {
        const char *msg = smoe_last_error(ctx);
        CHECK_MSG(st == SMOE_ERROR_DEVICE_LOST, "%s: %s (%s)", trial, smoe_status_string(st), msg);
        CHECK_MSG(strstr(msg, what) && strstr(msg, "VK_ERROR_DEVICE_LOST"), "%s: the message \"%s\" does not name the "
                  "command and the result", trial, msg);
        CHECK_MSG(ctx->gpu.lost, "%s: the context did not note the loss", trial);
        check_dead(fx, ctx, m, what, trial);
    }
    test_close(ctx); /* destroys the model too */
}

static void lost_sweep(const fixture *fx, int staged)
{
    double t0 = now();
    for (int k = 0; k < SMOE_FAULT_KIND_COUNT; k++) lost_trial(fx, staged, (smoe_fault_kind)k, OP_COUNT);
    /* In the middle of training: before and after the step's work reached the device. */
    lost_trial(fx, staged, SMOE_FAULT_vkQueueSubmit, OP_TRAIN_AGAIN);
    lost_trial(fx, staged, SMOE_FAULT_vkWaitForFences, OP_TRAIN_AGAIN);
    printf("  %s: device-lost trials in %.1f s\n", staged ? "staged" : "mapped", now() - t0);
}

/* vkGetFenceStatus (smoe_job_poll) out of memory: the job ends with the error, the model works on. */
static void poll_fault(const fixture *fx)
{
    smoe_context *ctx = open_vulkan(0), *other = open_vulkan(0);
    if (!ctx || !other) {
        test_close(ctx);
        test_close(other);
        return;
    }
    smoe_model *m = prepare(fx, ctx, OP_INFER_AGAIN), *m2 = prepare(fx, other, OP_INFER_AGAIN);
    float *logits = malloc(fx->nlogits * 4);
    for (size_t i = 0; i < fx->nlogits; i++) logits[i] = SENTINEL;
    smoe_job *job = NULL;
    smoe_fault_arm(&ctx->gpu.fault, SMOE_FAULT_vkGetFenceStatus, 1, VK_ERROR_OUT_OF_DEVICE_MEMORY);
    if (m && m2) {
        CHECK(smoe_vit_infer_async(m, B, fx->images, logits, &job) == SMOE_OK);
        smoe_status st = smoe_job_poll(job);
        CHECK_MSG(st == SMOE_ERROR_OUT_OF_DEVICE_MEMORY && strstr(smoe_last_error(ctx), "vkGetFenceStatus"),
                  "a failing poll: %s (%s)", smoe_status_string(st), smoe_last_error(ctx));
        CHECK(smoe_job_wait(job) == st && untouched(logits, fx->nlogits));
        smoe_job_free(job);
        /* the other context's hook is its own: its polls are not failed */
        smoe_fault_arm(&ctx->gpu.fault, SMOE_FAULT_vkQueueSubmit, 1, VK_ERROR_DEVICE_LOST);
        CHECK_MSG(smoe_vit_infer(m2, B, fx->images, logits) == SMOE_OK, "%s", smoe_last_error(other));
        CHECK(!memcmp(logits, fx->logits_ref, fx->nlogits * 4));
        smoe_fault_disarm(&ctx->gpu.fault);
        CHECK_MSG(smoe_vit_infer(m, B, fx->images, logits) == SMOE_OK, "%s", smoe_last_error(ctx));
        CHECK(!memcmp(logits, fx->logits_ref, fx->nlogits * 4));
    }
    free(logits);
    test_close(ctx);
    test_close(other);
}

/* SOFTMOE_FAULT: the syntax, and arming at device opening. */
static void fault_env(const fixture *fx)
{
    smoe_fault f;
    memset(&f, 0, sizeof f);
    smoe_err err;
    CHECK(smoe_fault_parse(&f, "vkQueueSubmit:3:VK_ERROR_DEVICE_LOST", &err) == SMOE_OK && f.armed &&
          f.kind == SMOE_FAULT_vkQueueSubmit && f.nth == 3 && f.result == VK_ERROR_DEVICE_LOST);
    CHECK(smoe_fault_parse(&f, "vkAllocateMemory:1", &err) == SMOE_OK && f.kind == SMOE_FAULT_vkAllocateMemory &&
          f.result == VK_ERROR_OUT_OF_DEVICE_MEMORY);
    CHECK(smoe_fault_parse(&f, "vkMapMemory:2:VK_ERROR_OUT_OF_HOST_MEMORY", &err) == SMOE_OK &&
          f.result == VK_ERROR_OUT_OF_HOST_MEMORY);
    const char *bad[] = {"", "vkQueueSubmit", "vkQueueSubmit:", "vkQueueSubmit:0", "vkQueueSubmit:-1", "vkQueueSubmit:x",
                         "vkQueueSubmit:1x", "vkQueueSubmit:1:", "vkQueueSubmit:1:VK_SUCCESS", "vkFoo:1", "vkqueuesubmit:1",
                         ":1", "vkQueueSubmit:99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&f, 0, sizeof f);
        CHECK_MSG(smoe_fault_parse(&f, bad[i], &err) == SMOE_ERROR_INVALID_ARGUMENT && !f.armed &&
                      strstr(err.msg, "SOFTMOE_FAULT"),
                  "\"%s\" was accepted", bad[i]);
    }
    /* counting: only the nth call of the kind fails, once */
    memset(&f, 0, sizeof f);
    smoe_fault_arm(&f, SMOE_FAULT_vkCreateBuffer, 2, VK_ERROR_OUT_OF_DEVICE_MEMORY);
    CHECK(!smoe_fault_hit(&f, SMOE_FAULT_vkAllocateMemory) && !smoe_fault_hit(&f, SMOE_FAULT_vkCreateBuffer));
    CHECK(smoe_fault_hit(&f, SMOE_FAULT_vkCreateBuffer) && f.injected == VK_ERROR_OUT_OF_DEVICE_MEMORY && f.fired);
    CHECK(!smoe_fault_hit(&f, SMOE_FAULT_vkCreateBuffer) && f.calls[SMOE_FAULT_vkCreateBuffer] == 3);
    /* a lost device stays lost */
    smoe_fault_arm(&f, SMOE_FAULT_vkQueueSubmit, 1, VK_ERROR_DEVICE_LOST);
    CHECK(smoe_fault_hit(&f, SMOE_FAULT_vkQueueSubmit) && smoe_fault_hit(&f, SMOE_FAULT_vkCreateBuffer) &&
          f.injected == VK_ERROR_DEVICE_LOST);

    /* from the environment (read when the context is created), armed when the device is opened */
    smoe_context *ctx = NULL;
    setenv("SOFTMOE_FAULT", "vkQueueSubmit", 1);
    CHECK(smoe_context_create(&ctx) == SMOE_OK);
    CHECK(smoe_context_open_device(ctx, "vulkan") == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK_MSG(strstr(smoe_last_error(ctx), "SOFTMOE_FAULT"), "%s", smoe_last_error(ctx));
    test_close(ctx);
    setenv("SOFTMOE_FAULT", "vkQueueSubmit:2:VK_ERROR_DEVICE_LOST", 1);
    ctx = test_open("vulkan");
    unsetenv("SOFTMOE_FAULT");
    if (ctx) {
        smoe_model *m = NULL;
        float *logits = malloc(fx->nlogits * 4);
        CHECK(load(ctx, fx, &m) == SMOE_OK);
        CHECK(m && smoe_vit_infer(m, B, fx->images, logits) == SMOE_OK);
        CHECK(m && smoe_vit_infer(m, B, fx->images, logits) == SMOE_ERROR_DEVICE_LOST);
        CHECK_MSG(strstr(smoe_last_error(ctx), "vkQueueSubmit failed: VK_ERROR_DEVICE_LOST"), "%s", smoe_last_error(ctx));
        check_dead(fx, ctx, m, "vkQueueSubmit", "SOFTMOE_FAULT");
        free(logits);
        test_close(ctx);
    }
}

/* Limits of the device, reached through the public API. */
static void limits(void)
{
    smoe_context *ctx = test_open("vulkan");
    if (!ctx) return;
    smoe_device_info info;
    smoe_context_device(ctx, &info, NULL);
    smoe_vit_config c = {.image_size = 8, .patch_size = 4, .channels = 1, .dim = 64, .depth = 1, .heads = 1,
                         .mlp_dim = 64, .num_classes = 10};
    smoe_model *m = (smoe_model *)&m;
    /* head.weight [classes, 64] larger than one binding */
    c.num_classes = (int)(info.max_storage_buffer_range / (64 * 4)) + 1;
    if (c.num_classes <= 1000000) {
        CHECK(smoe_vit_create(ctx, &c, 1, &m) == SMOE_ERROR_TOO_LARGE && m == NULL);
        const char *msg = smoe_last_error(ctx);
        CHECK_MSG(strstr(msg, "head.weight") && strstr(msg, "maxStorageBufferRange"), "%s", msg);
    }
    CHECK(ctx->model_count == 0 && ctx->gpu.memory_count == 0);
    /* parameters larger than the device's memory, each tensor small: refused before allocating */
    smoe_vit_config big = {.image_size = 8, .patch_size = 4, .channels = 1, .dim = 1024, .depth = 64, .heads = 8,
                           .mlp_dim = 4096, .num_classes = 10};
    uint64_t bytes = 64ull * (4 * 1024 * 1024 + 2 * 1024 * 4096) * 4;
    if (bytes > info.device_local_memory) {
        m = (smoe_model *)&m;
        double t0 = now();
        CHECK(smoe_vit_create(ctx, &big, 1, &m) == SMOE_ERROR_OUT_OF_DEVICE_MEMORY && m == NULL);
        const char *msg = smoe_last_error(ctx);
        CHECK_MSG(strstr(msg, "parameters") && strstr(msg, "device-local memory"), "%s", msg);
        CHECK(ctx->model_count == 0 && ctx->gpu.memory_count == 0 && now() - t0 < 5);
    }
    /* attention scores of a batch larger than one binding: [b, heads, T, T] with T = 1024 */
    smoe_vit_config wide = {.image_size = 32, .patch_size = 1, .channels = 1, .dim = 8, .depth = 1, .heads = 1,
                            .mlp_dim = 8, .num_classes = 2};
    m = NULL;
    CHECK_MSG(smoe_vit_create(ctx, &wide, 1, &m) == SMOE_OK, "%s", smoe_last_error(ctx));
    int b = (int)(info.max_storage_buffer_range / (1024 * 1024 * 4)) + 1;
    if (m && b <= 65536) {
        float *images = calloc((size_t)b * 1024, 4), *out = calloc((size_t)b * 2, 4), logits[2 * 4];
        uint32_t count = ctx->gpu.memory_count;
        CHECK(images && out && smoe_vit_infer(m, b, images, out) == SMOE_ERROR_TOO_LARGE);
        const char *msg = smoe_last_error(ctx);
        CHECK_MSG(strstr(msg, "maxStorageBufferRange") && strstr(msg, "batch"), "%s", msg);
        CHECK(ctx->gpu.memory_count == count);
        CHECK_MSG(smoe_vit_infer(m, 4, images, logits) == SMOE_OK, "%s", smoe_last_error(ctx)); /* still usable */
        free(images);
        free(out);
    }
    test_close(ctx);
}

/* The fault-free results every trial is compared with. */
static int setup(fixture *fx, const char *golden_dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/vit_d32_L2_b3.model.safetensors", golden_dir);
    fx->model = read_all(path, &fx->model_size);
    CHECK_MSG(fx->model, "cannot read %s", path);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/softmoe_faults_XXXXXX");
    CHECK(mkdtemp(fx->dir) != NULL);
    snprintf(fx->path, sizeof fx->path, "%s/saved.safetensors", fx->dir);
    smoe_train_config_default(&fx->train);
    fx->train.warmup_steps = 1;
    smoe_context *ctx = open_vulkan(0);
    smoe_model *m = NULL;
    if (!fx->model || !ctx || load(ctx, fx, &m) != SMOE_OK) {
        CHECK_MSG(0, "setup: %s", smoe_last_error(ctx));
        test_close(ctx);
        return 0;
    }
    smoe_vit_get_config(m, &fx->cfg);
    size_t per = (size_t)fx->cfg.channels * fx->cfg.image_size * fx->cfg.image_size;
    fx->images = malloc(per * B * 4);
    uint64_t seed = 5;
    for (size_t i = 0; i < per * B; i++) fx->images[i] = 0.5f * (test_rand(&seed) + 1.0f);
    for (int i = 0; i < B; i++) fx->labels[i] = i % fx->cfg.num_classes;
    fx->nlogits = (size_t)B * fx->cfg.num_classes;
    for (int i = 0; i < smoe_model_param_count(m); i++) {
        smoe_param_info info;
        smoe_model_param_info(m, i, &info);
        fx->nparams += info.count;
    }
    fx->logits_ref = malloc(fx->nlogits * 4);
    CHECK(smoe_vit_infer(m, B, fx->images, fx->logits_ref) == SMOE_OK);
    CHECK(smoe_model_save(m, fx->path, 1) == SMOE_OK);
    fx->saved_ref = read_all(fx->path, &fx->saved_size);
    unlink(fx->path);
    fx->params_ref[0] = snapshot(m, fx->nparams);
    for (int k = 1; k <= STEPS; k++) {
        CHECK(smoe_vit_train_step(m, &fx->train, B, fx->images, fx->labels, &fx->loss_ref[k], NULL) == SMOE_OK);
        fx->params_ref[k] = snapshot(m, fx->nparams);
    }
    test_close(ctx);
    return fx->saved_ref && fx->params_ref[STEPS] && !test_failures;
}

int main(int argc, char **argv)
{
    fixture fx;
    memset(&fx, 0, sizeof fx);
    unsetenv("SOFTMOE_FAULT");
    if (setup(&fx, argc > 1 ? argv[1] : "tests/golden")) {
        fault_env(&fx);
        oom_sweep(&fx, 0);
        oom_sweep(&fx, 1);
        lost_sweep(&fx, 0);
        lost_sweep(&fx, 1);
        poll_fault(&fx);
    }
    limits();
    free(fx.model), free(fx.images), free(fx.logits_ref), free(fx.saved_ref);
    for (int k = 0; k <= STEPS; k++) free(fx.params_ref[k]);
    if (fx.dir[0]) rmdir(fx.dir);
    return test_finish("test_faults");
}
