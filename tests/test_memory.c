/* Arenas and transfers: round trips of odd and empty sizes, mapped and staged, chunking, limits. */
#define _POSIX_C_SOURCE 200809L
#include "memory.h"
#include "test_vk.h"

static void round_trips(smoe_gpu *gpu, const char *label)
{
    const uint64_t sizes[] = {0, 1, 3, 4, 5, 7, 4097, (1u << 20) + 3, (70u << 20) + 1};
    const int n = sizeof sizes / sizeof sizes[0];
    smoe_arena arena;
    smoe_arena_init(&arena, gpu, "test");
    smoe_tensor t[sizeof sizes / sizeof sizes[0]];
    smoe_err err;
    for (int i = 0; i < n; i++) CHECK(smoe_arena_reserve(&arena, sizes[i], &t[i], &err) == SMOE_OK);
    CHECK_MSG(smoe_arena_commit(&arena, &err) == SMOE_OK, "%s", err.msg);
    for (int i = 0; i < n; i++) {
        CHECK(t[i].offset % arena.alignment == 0);
        for (int j = 0; j < i; j++) /* tensors never overlap */
            CHECK(t[i].chunk != t[j].chunk || t[i].offset >= t[j].offset + t[j].bytes ||
                  t[j].offset >= t[i].offset + t[i].bytes);
    }
    for (int i = 0; i < n; i++) {
        uint64_t sz = sizes[i];
        unsigned char *src = malloc(sz + 1), *dst = malloc(sz + 1);
        for (uint64_t k = 0; k < sz; k++) src[k] = (unsigned char)(k * 131 + i);
        memset(dst, 0xAB, sz + 1);
        CHECK_MSG(smoe_tensor_upload(&t[i], 0, src, sz, &err) == SMOE_OK, "%s", err.msg);
        CHECK_MSG(smoe_tensor_download(&t[i], 0, dst, sz, &err) == SMOE_OK, "%s", err.msg);
        CHECK_MSG(memcmp(src, dst, sz) == 0, "%s: round trip of %llu bytes", label, (unsigned long long)sz);
        CHECK(dst[sz] == 0xAB); /* nothing written past the end */
        if (sz >= 3) { /* partial copies at odd offsets */
            unsigned char two[2] = {0x11, 0x22}, back[3];
            CHECK(smoe_tensor_upload(&t[i], 1, two, 2, &err) == SMOE_OK);
            CHECK(smoe_tensor_download(&t[i], 0, back, 3, &err) == SMOE_OK);
            CHECK(back[0] == src[0] && back[1] == 0x11 && back[2] == 0x22);
        }
        /* Out of range is refused and changes nothing. */
        CHECK(smoe_tensor_upload(&t[i], sz, src, 1, &err) == SMOE_ERROR_INVALID_ARGUMENT);
        CHECK(smoe_tensor_download(&t[i], 0, dst, sz + 1, &err) == SMOE_ERROR_INVALID_ARGUMENT);
        free(src);
        free(dst);
    }
    smoe_arena_release(&arena);
}

static void limits(smoe_gpu *gpu)
{
    smoe_err err;
    smoe_arena arena;
    smoe_arena_init(&arena, gpu, "limits");
    smoe_tensor t;
    uint64_t range = gpu->info.max_storage_buffer_range;
    /* A tensor one descriptor cannot bind is refused with a message naming the limit. */
    CHECK(smoe_arena_reserve(&arena, range + 1, &t, &err) == SMOE_ERROR_TOO_LARGE);
    CHECK(strstr(err.msg, "maxStorageBufferRange") != NULL);
    /* Tensors that together exceed one binding are split into chunks, none over the limit. */
    if (range <= (256ull << 20)) {
        smoe_tensor parts[3];
        uint64_t part = range / 2 + 4096;
        for (int i = 0; i < 3; i++) CHECK(smoe_arena_reserve(&arena, part, &parts[i], &err) == SMOE_OK);
        CHECK(arena.chunk_count == 3);
        for (uint32_t c = 0; c < arena.chunk_count; c++) CHECK(arena.planned[c] <= range);
        CHECK_MSG(smoe_arena_commit(&arena, &err) == SMOE_OK, "%s", err.msg);
        float v = 42.0f, w = 0;
        CHECK(smoe_tensor_upload(&parts[2], part - 4, &v, 4, &err) == SMOE_OK);
        CHECK(smoe_tensor_download(&parts[2], part - 4, &w, 4, &err) == SMOE_OK && w == 42.0f);
    }
    smoe_arena_release(&arena);
    /* A buffer larger than the device may allocate. */
    smoe_buffer b;
    CHECK(smoe_buffer_create(gpu, gpu->info.max_allocation_size + 1, SMOE_MEM_DEVICE, &b, &err) == SMOE_ERROR_TOO_LARGE);
}

static void host_arena(void)
{
    smoe_arena arena;
    smoe_arena_init(&arena, NULL, "host");
    smoe_tensor a, b;
    smoe_err err;
    CHECK(smoe_arena_reserve(&arena, 10, &a, &err) == SMOE_OK);
    CHECK(smoe_arena_reserve(&arena, 0, &b, &err) == SMOE_OK);
    CHECK(smoe_arena_commit(&arena, &err) == SMOE_OK);
    CHECK(smoe_tensor_host(&a) != NULL && ((uintptr_t)smoe_tensor_host(&a) % 64) == 0);
    char s[10] = "abcdefghi", d[10] = {0};
    CHECK(smoe_tensor_upload(&a, 0, s, 10, &err) == SMOE_OK);
    CHECK(smoe_tensor_download(&a, 0, d, 10, &err) == SMOE_OK && !memcmp(s, d, 10));
    CHECK(smoe_tensor_upload(&b, 0, s, 0, &err) == SMOE_OK);
    smoe_arena_release(&arena);
}

int main(void)
{
    host_arena();
    unsetenv("SOFTMOE_FORCE_STAGING");
    smoe_context *ctx = test_open("vulkan");
    if (ctx) {
        round_trips(&ctx->gpu, "mapped where possible");
        limits(&ctx->gpu);
        test_close(ctx);
    }
    /* The staging path, as a discrete GPU takes it. */
    setenv("SOFTMOE_FORCE_STAGING", "1", 1);
    ctx = test_open("vulkan");
    if (ctx) {
        CHECK(ctx->gpu.opts->force_staging);
        round_trips(&ctx->gpu, "staged");
        test_close(ctx);
    }
    unsetenv("SOFTMOE_FORCE_STAGING");
    return test_finish("test_memory");
}
