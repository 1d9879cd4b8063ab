/* Long inference on one context uses no more memory at the end than after the first rounds, on
 * the CPU path and on Vulkan: device memory the library holds (live VkDeviceMemory bytes and
 * allocations, exactly), the heap in use (glibc's mallinfo2, every arena) and the resident set
 * (/proc/self/statm), within the bounds below. The golden ViT runs N inferences (argv[2],
 * default 300; `test_long_inference tests/golden 10000` by hand) with batch sizes cycling
 * through 1..B (smaller batches reuse the plan of the largest), every third one asynchronous,
 * and every answer equals the first one for its batch size. The sanitizer build keeps freed
 * memory in quarantine, so there only the device memory is checked (LeakSanitizer sees the
 * host). */
#define _POSIX_C_SOURCE 200809L
#include <malloc.h>
#include <unistd.h>

#include "test_vk.h"

#if defined(__SANITIZE_ADDRESS__)
#define HOST_MEMORY_CHECKED 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HOST_MEMORY_CHECKED 0
#endif
#endif
#ifndef HOST_MEMORY_CHECKED
#define HOST_MEMORY_CHECKED 1
#endif

enum { B = 4, WARMUP = 3 * B * 2 };
/* Bytes the heap in use may grow by, whatever N: leaks of malloc'd memory show here. */
#define HEAP_BOUND (64u << 10)
/* Bytes the resident set may grow by: a coarse bound for what malloc does not see (mappings).
 * Freed memory stays resident, and lavapipe's own threads fragment their malloc arenas during
 * the first ~1500 inferences (measured: +4 MiB, flat from there to 10,000). */
#define RSS_BOUND (16u << 20)

static const char *golden_dir;

typedef struct usage {
    size_t heap, rss;
    uint32_t device_allocations;
    uint64_t device_bytes;
} usage;

static usage measure(smoe_context *ctx)
{
    usage u = {0};
    struct mallinfo2 mi = mallinfo2();
    u.heap = mi.uordblks + mi.hblkhd; /* in use from the arenas, and in mmap'd blocks */
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    if (f && fscanf(f, "%lu %lu", &size, &resident) == 2) u.rss = resident * (size_t)sysconf(_SC_PAGESIZE);
    if (f) fclose(f);
    const smoe_gpu *gpu = smoe_ctx_gpu(ctx);
    if (gpu) {
        u.device_allocations = gpu->memory_count;
        u.device_bytes = gpu->memory_bytes;
    }
    return u;
}

/* Inference number i: batch size 1 + i % B, asynchronous every third time. */
static smoe_status infer(smoe_model *m, long i, const float *images, float *logits)
{
    int b = 1 + (int)(i % B);
    if (i % 3 != 2) return smoe_vit_infer(m, b, images, logits);
    smoe_job *job = NULL;
    smoe_status st = smoe_vit_infer_async(m, b, images, logits, &job);
    if (!st) st = smoe_job_wait(job);
    smoe_job_free(job);
    return st;
}

static void run(const char *device, long n)
{
    smoe_context *ctx = test_open(device);
    if (!ctx) return;
    char path[4096];
    snprintf(path, sizeof path, "%s/vit_d32_L2_b3.model.safetensors", golden_dir);
    smoe_model *m = NULL;
    CHECK_MSG(smoe_model_load_file(ctx, path, &m) == SMOE_OK, "%s", smoe_last_error(ctx));
    if (!m) {
        test_close(ctx);
        return;
    }
    smoe_vit_config c;
    smoe_vit_get_config(m, &c);
    size_t per = (size_t)c.channels * c.image_size * c.image_size, nl = (size_t)c.num_classes;
    float *images = malloc(per * B * 4), *want = malloc(nl * B * B * 4), *got = malloc(nl * B * 4);
    uint64_t seed = 21;
    for (size_t i = 0; i < per * B; i++) images[i] = 0.5f * (test_rand(&seed) + 1.0f);
    /* Warm-up: every batch size both ways; the last round's answers (on the plan of the largest
     * batch, as every later one runs) are the ones to compare with. */
    for (long i = 0; i < WARMUP; i++) {
        int b = 1 + (int)(i % B);
        CHECK_MSG(infer(m, i, images, got) == SMOE_OK, "%s", smoe_last_error(ctx));
        if (i >= WARMUP - B) memcpy(want + (size_t)(b - 1) * nl * B, got, (size_t)b * nl * 4);
    }
    usage before = measure(ctx);
    long differ = 0, failed = 0;
    for (long i = 0; i < n; i++) {
        int b = 1 + (int)(i % B);
        if (infer(m, i, images, got) != SMOE_OK) {
            if (!failed++) CHECK_MSG(0, "%s: inference %ld: %s", device, i, smoe_last_error(ctx));
        } else if (memcmp(got, want + (size_t)(b - 1) * nl * B, (size_t)b * nl * 4)) {
            differ++;
        }
    }
    usage after = measure(ctx);
    CHECK_MSG(!failed && !differ, "%s: %ld inferences failed and %ld gave other logits than the first", device, failed,
              differ);
    long long heap = (long long)after.heap - (long long)before.heap, rss = (long long)after.rss - (long long)before.rss;
    printf("  %s: %ld inferences: device memory %u allocations, %llu bytes before and %u, %llu after; heap in use "
           "%+lld bytes, resident set %+lld KiB (%zu KiB)\n",
           device, n, before.device_allocations, (unsigned long long)before.device_bytes, after.device_allocations,
           (unsigned long long)after.device_bytes, heap, rss / 1024, after.rss / 1024);
    CHECK_MSG(after.device_allocations == before.device_allocations && after.device_bytes == before.device_bytes,
              "%s: device memory grew", device);
    if (HOST_MEMORY_CHECKED) {
        CHECK_MSG(heap <= HEAP_BOUND, "%s: the heap in use grew by %lld bytes (bound %u)", device, heap, HEAP_BOUND);
        CHECK_MSG(rss <= RSS_BOUND, "%s: the resident set grew by %lld bytes (bound %u)", device, rss, RSS_BOUND);
    }
    free(images), free(want), free(got);
    test_close(ctx);
}

int main(int argc, char **argv)
{
    golden_dir = argc > 1 ? argv[1] : "tests/golden";
    long n = argc > 2 ? strtol(argv[2], NULL, 10) : 300;
    if (n < 1) n = 1;
    run("cpu", n);
    run("vulkan", n);
    return test_finish("test_long_inference");
}
