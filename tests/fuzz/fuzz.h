/* What the fuzz targets share: the readable input form, a CPU context made once, and the check
 * that ends a run when the library breaks a promise (the sanitizers catch the rest). */
#ifndef SMOE_FUZZ_H
#define SMOE_FUZZ_H

#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* setenv; this header comes first */
#endif

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "context.h"

/* A broken promise: print it and abort, which libFuzzer reports as a crash with the input. */
#define FUZZ_ASSERT(cond, ...)                                                 \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz: %s:%d: %s: ", __FILE__, __LINE__, #cond);   \
            fprintf(stderr, __VA_ARGS__);                                      \
            fprintf(stderr, "\n");                                             \
            abort();                                                           \
        }                                                                      \
    } while (0)

/* The safetensors image an input stands for. An input that starts with '{' is the readable form
 * "JSON header, NUL byte, data": the 8-byte header length is put in front here, so that the
 * fuzzer's changes to the header reach the parser as files with a consistent length. Any other
 * input is the file itself (truncations, bad lengths and all). Returns a malloc'd image. */
static inline uint8_t *fuzz_image(const uint8_t *data, size_t size, size_t *image_size)
{
    size_t head = size, skip = 0;
    if (size && data[0] == '{') {
        const uint8_t *nul = memchr(data, 0, size);
        head = nul ? (size_t)(nul - data) : size;
        skip = nul ? 1 : 0;
    }
    int readable = size && data[0] == '{';
    size_t n = readable ? 8 + size - skip : size;
    uint8_t *img = malloc(n ? n : 1);
    if (!img) abort();
    if (!readable) {
        if (size) memcpy(img, data, size);
    } else {
        for (int i = 0; i < 8; i++) img[i] = (uint8_t)((uint64_t)head >> (8 * i));
        memcpy(img + 8, data, head);
        memcpy(img + 8 + head, data + head + skip, size - head - skip);
    }
    *image_size = n;
    return img;
}

/* One CPU context for the whole run (one thread: runs must not depend on timing). */
static inline smoe_context *fuzz_context(void)
{
    static smoe_context *ctx;
    if (!ctx) {
        setenv("OMP_NUM_THREADS", "1", 1);
        if (smoe_context_create(&ctx) || smoe_context_open_device(ctx, "cpu")) abort();
    }
    return ctx;
}

/* A failed call: a status the call documents, a message, nothing kept. */
static inline void fuzz_check_failure(smoe_context *ctx, smoe_status st, const char *what)
{
    FUZZ_ASSERT(st == SMOE_ERROR_BAD_FORMAT || st == SMOE_ERROR_NOT_FINITE || st == SMOE_ERROR_TOO_LARGE ||
                    st == SMOE_ERROR_INVALID_ARGUMENT,
                "%s: unexpected status %s (%s)", what, smoe_status_string(st), smoe_last_error(ctx));
    FUZZ_ASSERT(smoe_last_error(ctx)[0], "%s failed with %s and no message", what, smoe_status_string(st));
    FUZZ_ASSERT(ctx->model_count == 0, "%s failed and kept a model", what);
}

#endif
