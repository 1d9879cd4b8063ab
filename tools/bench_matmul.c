/* softmoe bench --matmul: one product on every matmul variant, against cblas_sgemm. */
#define _POSIX_C_SOURCE 200809L
#include "bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <cblas.h>

#include "cli.h"
#include "context.h"
#include "ops/matmul.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* CPU seconds of this process so far (the threads of a CPU Vulkan driver included). */
static double cpu_seconds(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + (double)u.ru_stime.tv_sec + 1e-6 * (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

/* t: the runs' ms; cpu: CPU seconds of all of them. GFLOP per CPU second is what a CPU device's
 * kernel achieves per core whatever else the machine runs. */
static void print_row(const char *label, const char *dname, const int *s, const char *variant, double *t, int n,
                      double cpu, double err, int json)
{
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    double flop = 2.0 * s[0] * s[1] * s[2], gf = flop / (t[0] / 1e3) / 1e9, per_cpu = cpu > 0 ? flop * n / cpu / 1e9 : 0;
    if (json)
        printf("{\"device\": \"%s\", \"device_name\": \"%s\", \"kind\": \"matmul\", \"shape\": [%d, %d, %d], "
               "\"trans\": \"%c%c\", \"variant\": \"%s\", \"ms_min\": %.3f, \"ms_median\": %.3f, \"gflops\": %.2f, "
               "\"gflop_per_cpu_second\": %.2f, \"max_error\": %.3g}\n",
               label, dname, s[0], s[1], s[2], s[3] ? 'T' : 'N', s[4] ? 'T' : 'N', variant, t[0], t[n / 2], gf, per_cpu, err);
    else
        printf("%-9s matmul %dx%dx%d %c%c %-22s %9.2f ms (median %9.2f) %7.1f GFLOP/s %7.1f GFLOP/cpu-s  max error %.1g\n",
               label, s[0], s[1], s[2], s[3] ? 'T' : 'N', s[4] ? 'T' : 'N', variant, t[0], t[n / 2], gf, per_cpu, err);
    fflush(stdout);
}

/* Largest |got - want| relative to the largest |want|. */
static double rel_err(const float *got, const float *want, size_t n)
{
    double e = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (d > e || d != d) e = d;
        if (fabs(want[i]) > m) m = fabs(want[i]);
    }
    return m > 0 ? e / m : e;
}

int bench_matmul(smoe_context *ctx, const char *label, const char *dname, const int s[5], int repeat, const char *only,
                 int json)
{
    int M = s[0], N = s[1], K = s[2], ta = s[3], tb = s[4];
    size_t na = (size_t)M * K, nb = (size_t)K * N, nc = (size_t)M * N;
    float *a = malloc(na * 4), *b = malloc(nb * 4), *want = malloc(nc * 4), *got = malloc(nc * 4);
    double *t = calloc((size_t)repeat, sizeof *t);
    int rc = 0;
    if (!a || !b || !want || !got || !t) {
        free(a), free(b), free(want), free(got), free(t);
        return cli_fail(ctx, SMOE_ERROR_OUT_OF_HOST_MEMORY, "matmul operands");
    }
    uint64_t seed = 7;
    for (size_t i = 0; i < na; i++) seed = seed * 6364136223846793005ull + 1, a[i] = (float)(seed >> 40) / 16777216.0f - 0.5f;
    for (size_t i = 0; i < nb; i++) seed = seed * 6364136223846793005ull + 1, b[i] = (float)(seed >> 40) / 16777216.0f - 0.5f;
    /* the reference, and the CPU path's time */
    double cpu0 = 0;
    for (int r = -1; r < repeat; r++) {
        if (r == 0) cpu0 = cpu_seconds();
        double t0 = cli_now();
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, a,
                    ta ? M : K, b, tb ? K : N, 0.0f, want, N);
        if (r >= 0) t[r] = (cli_now() - t0) * 1e3;
    }
    smoe_gpu *gpu = smoe_ctx_gpu(ctx);
    if (!gpu) {
        print_row(label, dname, s, "cblas_sgemm", t, repeat, cpu_seconds() - cpu0, 0.0, json);
        free(a), free(b), free(want), free(got), free(t);
        return 0;
    }
    smoe_err err;
    smoe_arena arena;
    smoe_arena_init(&arena, gpu, "bench matmul");
    smoe_tensor A = {0}, B = {0}, C = {0}; /* copied into mm below even when a reservation failed */
    smoe_status st = smoe_arena_reserve(&arena, na * 4, &A, &err);
    if (!st) st = smoe_arena_reserve(&arena, nb * 4, &B, &err);
    if (!st) st = smoe_arena_reserve(&arena, nc * 4, &C, &err);
    if (!st) st = smoe_arena_commit(&arena, &err);
    if (!st) st = smoe_tensor_upload(&A, 0, a, na * 4, &err);
    if (!st) st = smoe_tensor_upload(&B, 0, b, nb * 4, &err);
    smoe_matmul mm = {
        .M = (uint32_t)M, .N = (uint32_t)N, .K = (uint32_t)K, .batch = 1, .trans_a = ta, .trans_b = tb,
        .a = smoe_mm_plain(A, (uint32_t)(ta ? M : K), 0), .b = smoe_mm_plain(B, (uint32_t)(tb ? K : N), 0),
        .c = smoe_mm_plain(C, (uint32_t)N, 0),
    };
    char forced[sizeof gpu->matmul_variant];
    memcpy(forced, gpu->matmul_variant, sizeof forced);
    /* every variant the device runs, then (i == count) the library's own choice */
    uint32_t count = smoe_matmul_variant_count();
    for (uint32_t i = 0; i <= count && !st; i++) {
        char name[64];
        if (i < count) {
            if (!smoe_matmul_variant_usable(gpu, i) || (only && strcmp(only, smoe_matmul_variant_name(i)))) continue;
            snprintf(gpu->matmul_variant, sizeof gpu->matmul_variant, "%s", smoe_matmul_variant_name(i));
            snprintf(name, sizeof name, "%s", smoe_matmul_variant_name(i));
        } else {
            memcpy(gpu->matmul_variant, forced, sizeof forced);
            const char *c = smoe_matmul_choice(gpu, &mm);
            snprintf(name, sizeof name, "chosen: %s", c ? c : "?");
        }
        fprintf(stderr, "bench: %s matmul %dx%dx%d %s...\n", label, M, N, K, name);
        smoe_program p;
        st = smoe_program_begin(gpu, &p, &err);
        if (!st) st = smoe_record_matmul(&p, &mm, &err);
        if (!st) st = smoe_program_end(&p, &err);
        for (int r = -1; r < repeat && !st; r++) {
            if (r == 0) cpu0 = cpu_seconds();
            double t0 = cli_now();
            st = smoe_program_run(&p, &err);
            if (r >= 0) t[r] = (cli_now() - t0) * 1e3;
        }
        double cpu = cpu_seconds() - cpu0;
        smoe_program_destroy(&p);
        if (!st) st = smoe_tensor_download(&C, 0, got, nc * 4, &err);
        if (!st) print_row(label, dname, s, name, t, repeat, cpu, rel_err(got, want, nc), json);
    }
    memcpy(gpu->matmul_variant, forced, sizeof forced);
    if (st) rc = cli_fail(ctx, smoe_ctx_error(ctx, st, &err), "the matmul");
    smoe_arena_release(&arena);
    free(a), free(b), free(want), free(got), free(t);
    return rc;
}
