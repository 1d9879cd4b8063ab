/* Asynchronous inference (smoe_vit_infer_async, smoe_job_*) on the CPU path and on Vulkan: the
 * logits equal smoe_vit_infer's whether the job is polled until done or waited for; a job freed
 * without a wait writes nothing; the model refuses other inference while a job is unfinished;
 * freeing the model or the context with a job outstanding is safe; two models' jobs overlap;
 * bad arguments fail with a status and a message and leave no job. */
#define _POSIX_C_SOURCE 200809L
#include <time.h>

#include "test_vk.h"

static const char *golden_dir;

static smoe_model *load_vit(smoe_context *ctx)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/vit_d32_L2_b3.model.safetensors", golden_dir);
    smoe_model *m = NULL;
    CHECK_MSG(smoe_model_load_file(ctx, path, &m) == SMOE_OK, "%s", smoe_last_error(ctx));
    return m;
}

static void random_images(const smoe_vit_config *c, int b, uint64_t seed, float *out)
{
    size_t n = (size_t)b * c->channels * c->image_size * c->image_size;
    for (size_t i = 0; i < n; i++) out[i] = 0.5f * (test_rand(&seed) + 1.0f);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {0, (long)ms * 1000000L};
    nanosleep(&ts, NULL);
}

static void run(const char *device)
{
    smoe_context *ctx = test_open(device);
    if (!ctx) return;
    smoe_model *m = load_vit(ctx), *m2 = load_vit(ctx);
    if (!m || !m2) {
        test_close(ctx);
        return;
    }
    smoe_vit_config c;
    CHECK(smoe_vit_get_config(m, &c) == SMOE_OK);
    enum { B = 5 };
    size_t per = (size_t)c.channels * c.image_size * c.image_size, nl = (size_t)B * c.num_classes;
    float *images = malloc(per * B * 4), *images2 = malloc(per * B * 4);
    float *want = malloc(nl * 4), *want2 = malloc(nl * 4), *got = malloc(nl * 4), *got2 = malloc(nl * 4);
    random_images(&c, B, 11, images);
    random_images(&c, B, 12, images2);
    CHECK_MSG(smoe_vit_infer(m, B, images, want) == SMOE_OK, "%s", smoe_last_error(ctx));
    CHECK(smoe_vit_infer(m, B, images2, want2) == SMOE_OK);

    /* poll until done; images may be overwritten as soon as the call returns */
    smoe_job *job = NULL;
    memcpy(got, want2, nl * 4);
    float *scratch = malloc(per * B * 4);
    memcpy(scratch, images, per * B * 4);
    CHECK_MSG(smoe_vit_infer_async(m, B, scratch, got, &job) == SMOE_OK, "%s", smoe_last_error(ctx));
    CHECK(job != NULL);
    memset(scratch, 0xff, per * B * 4); /* NaNs: would fail or change the result if still read */
    if (job) {
        /* the model is busy until the job is collected, however fast the device */
        float *tmp = malloc((size_t)c.num_classes * 4);
        CHECK(smoe_vit_infer(m, 1, images, tmp) == SMOE_ERROR_INVALID_ARGUMENT);
        CHECK(strstr(smoe_last_error(ctx), "unfinished job") != NULL);
        smoe_job *other = (smoe_job *)&other;
        CHECK(smoe_vit_infer_async(m, 1, images, tmp, &other) == SMOE_ERROR_INVALID_ARGUMENT && other == NULL);
        int32_t label = 0;
        float loss;
        CHECK(smoe_vit_loss_grads(m, 1, images, &label, &loss, NULL) == SMOE_ERROR_INVALID_ARGUMENT);
        free(tmp);
        int polls = 0;
        smoe_status st;
        while ((st = smoe_job_poll(job)) == SMOE_NOT_READY) {
            polls++;
            sleep_ms(1);
        }
        CHECK_MSG(st == SMOE_OK, "%s", smoe_last_error(ctx));
        CHECK_MSG(test_rel_err(got, want, nl) == 0, "%s: polled async logits differ from smoe_vit_infer's by %.3g",
                  device, test_rel_err(got, want, nl));
        CHECK(smoe_job_poll(job) == SMOE_OK && smoe_job_wait(job) == SMOE_OK); /* final status repeats */
        printf("  %s: polled job finished after %d polls\n", device, polls);
        smoe_job_free(job);
    }
    free(scratch);

    /* wait; a smaller batch reuses the plan */
    memset(got, 0, nl * 4);
    CHECK(smoe_vit_infer_async(m, 2, images2, got, &job) == SMOE_OK);
    CHECK(smoe_job_wait(job) == SMOE_OK);
    CHECK(test_rel_err(got, want2, 2 * (size_t)c.num_classes) == 0);
    smoe_job_free(job);

    /* free without a wait: nothing is written, and the model is usable again */
    for (size_t i = 0; i < nl; i++) got[i] = -12345.0f;
    CHECK(smoe_vit_infer_async(m, B, images, got, &job) == SMOE_OK);
    smoe_job_free(job);
    int untouched = 1;
    for (size_t i = 0; i < nl; i++) untouched &= got[i] == -12345.0f;
    CHECK_MSG(untouched, "a job freed without a wait wrote its logits");
    CHECK(smoe_vit_infer(m, B, images, got) == SMOE_OK && test_rel_err(got, want, nl) == 0);

    /* two models' jobs at once, collected in the other order; sync inference meanwhile on a third */
    smoe_job *ja = NULL, *jb = NULL;
    CHECK(smoe_vit_infer_async(m, B, images, got, &ja) == SMOE_OK);
    CHECK(smoe_vit_infer_async(m2, B, images2, got2, &jb) == SMOE_OK);
    smoe_model *m3 = load_vit(ctx);
    float *got3 = malloc(nl * 4);
    CHECK(m3 && smoe_vit_infer(m3, B, images, got3) == SMOE_OK && test_rel_err(got3, want, nl) == 0);
    CHECK(smoe_job_wait(jb) == SMOE_OK && smoe_job_wait(ja) == SMOE_OK);
    CHECK(test_rel_err(got, want, nl) == 0 && test_rel_err(got2, want2, nl) == 0);
    smoe_job_free(ja);
    smoe_job_free(jb);
    free(got3);

    /* bad arguments: a status, a message, no job */
    float *bad = malloc(per * 4);
    for (size_t i = 0; i < per; i++) bad[i] = i == 3 ? NAN : 0.5f;
    job = (smoe_job *)&job;
    CHECK(smoe_vit_infer_async(m, 1, bad, got, &job) == SMOE_ERROR_NOT_FINITE && job == NULL);
    CHECK(smoe_vit_infer_async(m, 0, images, got, &job) == SMOE_ERROR_INVALID_ARGUMENT && job == NULL);
    CHECK(smoe_vit_infer_async(m, 1, images, NULL, &job) == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK(smoe_vit_infer_async(m, 1, images, got, NULL) == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK(smoe_job_poll(NULL) == SMOE_ERROR_INVALID_ARGUMENT && smoe_job_wait(NULL) == SMOE_ERROR_INVALID_ARGUMENT);
    smoe_job_free(NULL);
    CHECK(smoe_vit_infer(m, B, images, got) == SMOE_OK); /* failures left the model free */
    free(bad);

    /* a layer model has no asynchronous inference */
    char path[4096];
    snprintf(path, sizeof path, "%s/layer_b2_m16_d32_n4_p2_h64.model.safetensors", golden_dir);
    smoe_model *layer = NULL;
    CHECK(smoe_model_load_file(ctx, path, &layer) == SMOE_OK);
    CHECK(smoe_vit_infer_async(layer, 1, images, got, &job) == SMOE_ERROR_INVALID_ARGUMENT && job == NULL);

    /* the model freed under an unfinished job: the job ends with an error, logits unwritten */
    for (size_t i = 0; i < nl; i++) got[i] = -12345.0f;
    CHECK(smoe_vit_infer_async(m2, B, images, got, &job) == SMOE_OK);
    smoe_model_free(m2);
    CHECK(smoe_job_poll(job) == SMOE_ERROR_INVALID_ARGUMENT && smoe_job_wait(job) == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK(got[0] == -12345.0f);
    smoe_job_free(job);

    /* the context destroyed under an unfinished job; the job is freed afterwards */
    CHECK(smoe_vit_infer_async(m, B, images, got, &job) == SMOE_OK);
    test_close(ctx);
    CHECK(smoe_job_wait(job) == SMOE_ERROR_INVALID_ARGUMENT);
    smoe_job_free(job);

    free(images), free(images2), free(want), free(want2), free(got), free(got2);
}

int main(int argc, char **argv)
{
    golden_dir = argc > 1 ? argv[1] : "tests/golden";
    run("cpu");
    run("vulkan");
    return test_finish("test_async");
}
