/* A trivial shader dispatched and checked; record once, replay; barriers only on hazards. */
#define _POSIX_C_SOURCE 200809L
#include "common/interface.h"
#include "record.h"
#include "test_vk.h"

static void run(smoe_gpu *gpu)
{
    enum { N = 1000 };
    smoe_err err;
    smoe_arena arena;
    smoe_arena_init(&arena, gpu, "dispatch");
    smoe_tensor x, y, z;
    CHECK(smoe_arena_reserve(&arena, N * 4, &x, &err) == SMOE_OK);
    CHECK(smoe_arena_reserve(&arena, N * 4, &y, &err) == SMOE_OK);
    CHECK(smoe_arena_reserve(&arena, N * 4, &z, &err) == SMOE_OK);
    CHECK(smoe_arena_commit(&arena, &err) == SMOE_OK);
    float hx[N], hy[N], out[N];
    for (int i = 0; i < N; i++) {
        hx[i] = (float)i;
        hy[i] = 1.0f;
    }
    CHECK(smoe_tensor_upload(&x, 0, hx, sizeof hx, &err) == SMOE_OK);
    CHECK(smoe_tensor_upload(&y, 0, hy, sizeof hy, &err) == SMOE_OK);
    CHECK(smoe_tensor_upload(&z, 0, hy, sizeof hy, &err) == SMOE_OK);

    const uint32_t spec[3] = {64, 1, 1};
    const smoe_pipeline *pl;
    CHECK_MSG(smoe_pipeline_get(gpu, SMOE_K_AXPY, spec, 3, &pl, &err) == SMOE_OK, "%s", err.msg);
    const smoe_pipeline *again;
    CHECK(smoe_pipeline_get(gpu, SMOE_K_AXPY, spec, 3, &again, &err) == SMOE_OK && again == pl);
    CHECK(smoe_pipeline_get(gpu, SMOE_KERNEL_COUNT, spec, 3, &again, &err) == SMOE_ERROR_INTERNAL); /* no such kernel */
    CHECK(smoe_pipeline_get(gpu, SMOE_K_AXPY, spec, 4, &again, &err) == SMOE_ERROR_INTERNAL);     /* axpy has 3 constants */
    /* the table read from the shader: axpy.comp's 2 storage buffers and its push constants */
    CHECK(smoe_kernels[SMOE_K_AXPY].bindings == 2 && smoe_kernels[SMOE_K_AXPY].texel_mask == 0 &&
          smoe_kernels[SMOE_K_AXPY].push_size == sizeof(smoe_push_axpy));
    CHECK(smoe_kernels[SMOE_K_MATMUL_TEXEL].texel_mask == 3u);

    smoe_program p;
    CHECK(smoe_program_begin(gpu, &p, &err) == SMOE_OK);
    smoe_push_axpy push = {N, 2.0f, 1.0f};
    uint32_t groups[3] = {smoe_div_up(N, 64), 1, 1};
    /* y += 2x; z += 2x: independent, no barrier. Then z += 2y: reads y, which was written. */
    smoe_binding b1[2] = {{x, SMOE_READ}, {y, SMOE_READ_WRITE}};
    smoe_binding b2[2] = {{x, SMOE_READ}, {z, SMOE_READ_WRITE}};
    smoe_binding b3[2] = {{y, SMOE_READ}, {z, SMOE_READ_WRITE}};
    CHECK(smoe_record(&p, SMOE_K_AXPY, spec, b1, push, groups, &err) == SMOE_OK);
    CHECK(smoe_record(&p, SMOE_K_AXPY, spec, b2, push, groups, &err) == SMOE_OK);
    CHECK(p.barriers == 0);
    CHECK(smoe_record(&p, SMOE_K_AXPY, spec, b3, push, groups, &err) == SMOE_OK);
    CHECK(p.barriers == 1);
    /* a binding or push byte short of what the shader declares */
    CHECK(smoe_record_kernel(&p, SMOE_K_AXPY, spec, 3, b1, 1, &push, sizeof push, groups, &err) == SMOE_ERROR_INTERNAL);
    CHECK(smoe_record_kernel(&p, SMOE_K_AXPY, spec, 3, b1, 2, &push, sizeof push - 4, groups, &err) == SMOE_ERROR_INTERNAL);
    CHECK(p.dispatches == 3);
    CHECK(smoe_program_end(&p, &err) == SMOE_OK);
    /* Replay three times: y_k = 1 + 2k x, z_k = z_{k-1} + 2x + 2 y_k. */
    double ey[N], ez[N];
    for (int i = 0; i < N; i++) {
        ey[i] = 1;
        ez[i] = 1;
    }
    for (int rep = 0; rep < 3; rep++) {
        CHECK_MSG(smoe_program_run(&p, &err) == SMOE_OK, "%s", err.msg);
        for (int i = 0; i < N; i++) {
            ey[i] += 2 * hx[i];
            ez[i] += 2 * hx[i] + 2 * ey[i];
        }
        CHECK(smoe_tensor_download(&y, 0, out, sizeof out, &err) == SMOE_OK);
        int bad = 0;
        for (int i = 0; i < N; i++) bad += out[i] != (float)ey[i];
        CHECK_MSG(bad == 0, "replay %d: %d wrong values of y", rep, bad);
        CHECK(smoe_tensor_download(&z, 0, out, sizeof out, &err) == SMOE_OK);
        bad = 0;
        for (int i = 0; i < N; i++) bad += out[i] != (float)ez[i];
        CHECK_MSG(bad == 0, "replay %d: %d wrong values of z", rep, bad);
    }
    smoe_program_destroy(&p);
    smoe_arena_release(&arena);
}

int main(void)
{
    smoe_context *ctx = test_open("vulkan");
    if (ctx) {
        run(&ctx->gpu);
        test_close(ctx);
    }
    return test_finish("test_dispatch");
}
