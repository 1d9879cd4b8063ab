/* softmoe bench --matmul: one product on every matmul variant, against cblas_sgemm. */
#define _POSIX_C_SOURCE 200809L
#include "bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <cblas.h>

#include "cli.h"

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

/* The operands (deterministic, in [-0.5, 0.5)) and the reference product. */
typedef struct mm_data {
    const int *s;
    size_t na, nb, nc;
    float *a, *b, *want, *got;
    double *t;
    int repeat;
} mm_data;

static int mm_alloc(mm_data *D, const int s[5], int repeat)
{
    D->s = s;
    D->repeat = repeat;
    D->na = (size_t)s[0] * s[2], D->nb = (size_t)s[2] * s[1], D->nc = (size_t)s[0] * s[1];
    D->a = malloc(D->na * 4), D->b = malloc(D->nb * 4), D->want = malloc(D->nc * 4), D->got = malloc(D->nc * 4);
    D->t = calloc((size_t)repeat, sizeof *D->t);
    if (!D->a || !D->b || !D->want || !D->got || !D->t) return 0;
    uint64_t seed = 7;
    for (size_t i = 0; i < D->na; i++)
        seed = seed * 6364136223846793005ull + 1, D->a[i] = (float)(seed >> 40) / 16777216.0f - 0.5f;
    for (size_t i = 0; i < D->nb; i++)
        seed = seed * 6364136223846793005ull + 1, D->b[i] = (float)(seed >> 40) / 16777216.0f - 0.5f;
    return 1;
}

static void mm_free(mm_data *D) { free(D->a), free(D->b), free(D->want), free(D->got), free(D->t); }

/* The reference with cblas_sgemm, timed: the CPU path's row. Returns the CPU seconds of the runs. */
static double mm_reference(mm_data *D)
{
    int M = D->s[0], N = D->s[1], K = D->s[2], ta = D->s[3], tb = D->s[4];
    double cpu0 = 0;
    for (int r = -1; r < D->repeat; r++) {
        if (r == 0) cpu0 = cpu_seconds();
        double t0 = cli_now();
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, D->a,
                    ta ? M : K, D->b, tb ? K : N, 0.0f, D->want, N);
        if (r >= 0) D->t[r] = (cli_now() - t0) * 1e3;
    }
    return cpu_seconds() - cpu0;
}

/* One row: the product recorded with variant (NULL: the library's choice), timed, checked. */
static smoe_status mm_row(smoe_bench_matmul *bm, mm_data *D, const char *variant, const char *label, const char *dname,
                          int json)
{
    const char *chosen = NULL;
    char name[64];
    smoe_status st = smoe_bench_matmul_record(bm, variant, variant ? NULL : &chosen);
    if (variant) snprintf(name, sizeof name, "%s", variant);
    else snprintf(name, sizeof name, "chosen: %s", chosen ? chosen : "?");
    fprintf(stderr, "bench: %s matmul %dx%dx%d %s...\n", label, D->s[0], D->s[1], D->s[2], name);
    double cpu0 = 0;
    for (int r = -1; r < D->repeat && !st; r++) {
        if (r == 0) cpu0 = cpu_seconds();
        double t0 = cli_now();
        st = smoe_bench_matmul_run(bm);
        if (r >= 0) D->t[r] = (cli_now() - t0) * 1e3;
    }
    double cpu = cpu_seconds() - cpu0;
    if (!st) st = smoe_bench_matmul_result(bm, D->got);
    if (!st) print_row(label, dname, D->s, name, D->t, D->repeat, cpu, rel_err(D->got, D->want, D->nc), json);
    return st;
}

int bench_matmul(smoe_context *ctx, const char *label, const char *dname, const int s[5], int repeat, const char *only,
                 int json)
{
    mm_data D = {0};
    if (!mm_alloc(&D, s, repeat)) {
        mm_free(&D);
        return cli_fail(ctx, SMOE_ERROR_OUT_OF_HOST_MEMORY, "matmul operands");
    }
    double cpu = mm_reference(&D);
    smoe_device_info info;
    smoe_context_device(ctx, &info, NULL);
    if (info.kind == SMOE_DEVICE_CPU) {
        print_row(label, dname, s, "cblas_sgemm", D.t, repeat, cpu, 0.0, json);
        mm_free(&D);
        return 0;
    }
    smoe_bench_matmul *bm = NULL;
    smoe_status st = smoe_bench_matmul_open(ctx, s, D.a, D.b, &bm);
    /* every variant the device runs, then the library's own choice */
    int count = smoe_bench_matmul_variant_count();
    for (int i = 0; i < count && !st; i++) {
        const char *v = smoe_bench_matmul_variant(ctx, i);
        if (v && (!only || !strcmp(only, v))) st = mm_row(bm, &D, v, label, dname, json);
    }
    if (!st) st = mm_row(bm, &D, NULL, label, dname, json);
    smoe_bench_matmul_close(bm);
    mm_free(&D);
    return st ? cli_fail(ctx, st, "the matmul") : 0;
}
