/* Two contexts on two threads infer at the same time and both get the answers a single-threaded
 * run gets: one CPU context with one Vulkan context, two Vulkan contexts, and two CPU contexts.
 * Each thread creates its own context, opens its device, loads the model and runs inference
 * (synchronous and asynchronous) several times; a barrier makes the two threads start each round
 * together. The reference logits come from one thread before any other thread runs. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>

#include "test_vk.h"

enum { B = 4, ROUNDS = 6, MAX_LOGITS = 4096 };

static const char *golden_dir;

typedef struct worker {
    const char *device;
    uint64_t seed;            /* of this thread's images */
    const float *want;        /* single-threaded logits for this device and these images */
    pthread_barrier_t *barrier;
    int failures;
    char message[512];
} worker;

static void images_for(int per, uint64_t seed, float *out)
{
    for (int i = 0; i < B * per; i++) out[i] = 0.5f * (test_rand(&seed) + 1.0f);
}

/* Logits of B images from seed on device, or a failure message. Used on and off threads. */
static int infer_on(const char *device, uint64_t seed, int rounds, const float *want, pthread_barrier_t *barrier,
                    float *out, char *msg, size_t msg_size)
{
    smoe_context *ctx = NULL;
    smoe_model *m = NULL;
    int bad = 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/vit_d32_L2_b3.model.safetensors", golden_dir);
    if (smoe_context_create(&ctx) || smoe_context_open_device(ctx, device) || smoe_model_load_file(ctx, path, &m)) {
        snprintf(msg, msg_size, "%s: setup: %s", device, smoe_last_error(ctx));
        bad = 1;
    }
    smoe_vit_config c = {0};
    if (!bad) smoe_vit_get_config(m, &c);
    int per = c.channels * c.image_size * c.image_size;
    float *images = bad ? NULL : malloc((size_t)B * per * 4), got[MAX_LOGITS];
    if (images) images_for(per, seed, images);
    for (int r = 0; r < rounds; r++) {
        if (barrier) pthread_barrier_wait(barrier); /* even after a failure: the other thread waits */
        if (bad) continue;
        smoe_status st;
        if (r % 2) {
            smoe_job *job = NULL;
            st = smoe_vit_infer_async(m, B, images, got, &job);
            if (!st) st = smoe_job_wait(job);
            smoe_job_free(job);
        } else {
            st = smoe_vit_infer(m, B, images, got);
        }
        if (st) {
            snprintf(msg, msg_size, "%s round %d: %s", device, r, smoe_last_error(ctx));
            bad = 1;
        } else if (want && test_rel_err(got, want, (size_t)B * c.num_classes) != 0) {
            snprintf(msg, msg_size, "%s round %d: logits differ from the single-threaded run by %.3g", device, r,
                     test_rel_err(got, want, (size_t)B * c.num_classes));
            bad = 1;
        }
        if (out && !bad) memcpy(out, got, (size_t)B * c.num_classes * 4);
    }
    if (!bad && smoe_validation_message_count(ctx)) {
        snprintf(msg, msg_size, "%s: %d validation messages", device, smoe_validation_message_count(ctx));
        bad = 1;
    }
    free(images);
    smoe_context_destroy(ctx);
    return bad;
}

static void *thread_main(void *arg)
{
    worker *w = arg;
    w->failures = infer_on(w->device, w->seed, ROUNDS, w->want, w->barrier, NULL, w->message, sizeof w->message);
    return NULL;
}

static void pair(const char *a, const char *b)
{
    float want[2][MAX_LOGITS];
    char msg[512] = "";
    const char *dev[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        int bad = infer_on(dev[k], 100 + (uint64_t)k, 1, NULL, NULL, want[k], msg, sizeof msg);
        CHECK_MSG(!bad, "%s", msg);
        if (bad) return;
    }
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, 2);
    worker w[2];
    pthread_t t[2];
    for (int k = 0; k < 2; k++) {
        w[k] = (worker){.device = dev[k], .seed = 100 + (uint64_t)k, .want = want[k], .barrier = &barrier};
        CHECK(pthread_create(&t[k], NULL, thread_main, &w[k]) == 0);
    }
    for (int k = 0; k < 2; k++) {
        pthread_join(t[k], NULL);
        CHECK_MSG(!w[k].failures, "%s", w[k].message);
    }
    pthread_barrier_destroy(&barrier);
    printf("  %s + %s on two threads, %d rounds each: %s\n", a, b, ROUNDS,
           w[0].failures || w[1].failures ? "FAILED" : "same logits as single-threaded");
}

int main(int argc, char **argv)
{
    golden_dir = argc > 1 ? argv[1] : "tests/golden";
    pair("cpu", "vulkan");
    pair("vulkan", "vulkan");
    pair("cpu", "cpu");
    return test_finish("test_threads");
}
