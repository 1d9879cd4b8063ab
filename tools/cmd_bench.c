/* softmoe bench: the Soft MoE layer (forward, forward+backward) on the paper's shapes and ViT
 * throughput, on every device asked for, side by side, as ratios to the CPU path and fractions of
 * each device's measured peak; with --routers also the sparse MoE layers (Tokens Choice K=1 and
 * K=2, Experts Choice) with the same experts and as many expert rows as Soft MoE's slots. This
 * file: the options, the order of the measurements (bench_measure.c) and the report. */
#define _POSIX_C_SOURCE 200809L
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "cli.h"

/* ---- Options: one row per option, each with the function that takes it ---- */

typedef struct opt_row opt_row;
/* 0: taken; -1: malformed (the usage is printed); 2: malformed, said why */
typedef int (*opt_set)(bench_opts *o, const opt_row *row, const char *value);
struct opt_row {
    const char *name;
    int takes_value;
    opt_set set;
    size_t field; /* offsetof the bench_opts field it sets */
    long lo, hi;  /* the range of an integer */
};

#define FIELD(f) offsetof(bench_opts, f)

static int set_flag(bench_opts *o, const opt_row *row, const char *value)
{
    (void)value;
    *(int *)((char *)o + row->field) = 1;
    return 0;
}

static int set_text(bench_opts *o, const opt_row *row, const char *value)
{
    *(const char **)((char *)o + row->field) = value;
    return 0;
}

static int set_int(bench_opts *o, const opt_row *row, const char *value)
{
    long v;
    if (!cli_int(value, row->lo, row->hi, &v)) return -1;
    *(int *)((char *)o + row->field) = (int)v;
    return 0;
}

static int add_device(bench_opts *o, const opt_row *row, const char *value)
{
    (void)row;
    if (o->ndev == MAX_DEVICES) return -1;
    o->devices[o->ndev++] = value;
    return 0;
}

static int add_shape(bench_opts *o, const opt_row *row, const char *value)
{
    (void)row;
    if (o->nshape == MAX_SHAPES) return -1;
    int *s = o->shapes[o->nshape];
    if (sscanf(value, "%d,%d,%d,%d,%d", &s[0], &s[1], &s[2], &s[3], &s[4]) != 5 || s[0] < 1 || s[1] < 1 || s[2] < 1 ||
        s[3] < 1 || s[4] < 1) {
        fprintf(stderr, "softmoe bench: --shape wants b,m,d,n,p\n");
        return 2;
    }
    o->nshape++;
    return 0;
}

static int add_matmul(bench_opts *o, const opt_row *row, const char *value)
{
    (void)row;
    if (o->nmatmul == MAX_SHAPES) return -1;
    int *s = o->matmuls[o->nmatmul];
    s[3] = s[4] = 0;
    int n = sscanf(value, "%d,%d,%d,%d,%d", &s[0], &s[1], &s[2], &s[3], &s[4]);
    if ((n != 3 && n != 5) || s[0] < 1 || s[1] < 1 || s[2] < 1 || (unsigned)s[3] > 1 || (unsigned)s[4] > 1) {
        fprintf(stderr, "softmoe bench: --matmul wants M,N,K or M,N,K,trans_a,trans_b (0 or 1)\n");
        return 2;
    }
    o->nmatmul++;
    return 0;
}

static int set_experts(bench_opts *o, const opt_row *row, const char *q)
{
    (void)row;
    o->nexperts = 0;
    for (;;) {
        char *end;
        long n = strtol(q, &end, 10);
        if (end == q || n < 1 || n > 65536 || o->nexperts == MAX_EXPERT_COUNTS || (*end && *end != ',')) {
            fprintf(stderr, "softmoe bench: --experts wants up to %d counts N,N,... (1..65536)\n", MAX_EXPERT_COUNTS);
            return 2;
        }
        o->experts[o->nexperts++] = (int)n;
        if (!*end) return 0;
        q = end + 1;
    }
}

static const opt_row options[] = {
    {"--json", 0, set_flag, FIELD(json), 0, 0},
    {"--profile", 0, set_flag, FIELD(profile), 0, 0},
    {"--routers", 0, set_flag, FIELD(routers), 0, 0},
    {"--no-vit", 0, set_flag, FIELD(skip_vit), 0, 0},
    {"--vit-only", 0, set_flag, FIELD(vit_only), 0, 0},
    {"--keep-experts", 0, set_flag, FIELD(keep_sweep), 0, 0},
    {"--device", 1, add_device, 0, 0, 0},
    {"--vit", 1, set_text, FIELD(vit_model), 0, 0},
    {"--variant", 1, set_text, FIELD(variant), 0, 0},
    {"--csv", 1, set_text, FIELD(csv), 0, 0},
    {"--experts", 1, set_experts, 0, 0, 0},
    {"--repeat", 1, set_int, FIELD(repeat), 1, 1000},
    {"--vit-batch", 1, set_int, FIELD(vit_batch), 1, 4096},
    {"--shape", 1, add_shape, 0, 0, 0},
    {"--matmul", 1, add_matmul, 0, 0, 0},
};

void cmd_bench_help(FILE *f)
{
    fprintf(f, "usage: softmoe bench [--device D]... [--shape b,m,d,n,p]... [--matmul M,N,K[,ta,tb]]... [--variant NAME]\n"
               "                     [--json] [--csv FILE] [--repeat N] [--profile] [--no-vit | --vit-only] [--vit MODEL]\n"
               "                     [--vit-batch N] [--keep-experts] [--routers] [--experts N,N,...]\n"
               "default: cpu and every Vulkan device; the paper's shapes (expert hidden 4d) and the ViT\n"
               "--matmul alone: only those products, on every matmul variant of each Vulkan device (or --variant's)\n"
               "--profile: then each Vulkan measurement once more with per-kernel GPU times\n"
               "--keep-experts: instead, the layer forward keeping n, n/2, n/4 and n/8 experts per input\n"
               "--routers: also Tokens Choice (K=1, 2) and Experts Choice layers, n experts with\n"
               "           capacity factor n*p/m (about as many expert rows as Soft MoE's slots)\n"
               "--experts N,N,...: each shape at these expert counts with its n*p slots (p = slots/N)\n"
               "--csv FILE: also every layer measurement as a row of FILE (the device name last)\n"
               "--vit-only: only the ViT (the issue's reference configuration, or --vit MODEL)\n"
               "--repeat N: measurements per shape (default 5); --vit-batch N: the ViT's batch (default 128)\n");
}

static int usage(void)
{
    cmd_bench_help(stderr);
    return 2;
}

static int parse_opts(int argc, char **argv, bench_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const opt_row *row = NULL;
        for (size_t k = 0; k < sizeof options / sizeof options[0] && !row; k++)
            if (!strcmp(argv[i], options[k].name)) row = &options[k];
        if (!row || (row->takes_value && i + 1 >= argc)) return usage();
        int rc = row->set(o, row, row->takes_value ? argv[++i] : NULL);
        if (rc) return rc < 0 ? usage() : rc;
    }
    return 0;
}

/* --experts N,N,...: every --shape (b,m,d,n,p) becomes one shape per expert count n' that divides
 * its slot count n*p, with p' = n*p/n' slots per expert (the paper's Figure 6: cost against the
 * number of experts at a fixed number of slots). Returns 0, or 2 after saying why. */
static int expand_expert_counts(bench_opts *o)
{
    int out[MAX_SHAPES][5], nout = 0;
    for (int s = 0; s < o->nshape; s++) {
        long slots = (long)o->shapes[s][3] * o->shapes[s][4];
        for (int e = 0; e < o->nexperts; e++) {
            int n = o->experts[e];
            if (slots % n) {
                fprintf(stderr, "softmoe bench: %d experts do not divide shape %d's %ld slots\n", n, s + 1, slots);
                return 2;
            }
            if (nout == MAX_SHAPES) {
                fprintf(stderr, "softmoe bench: more than %d shapes with --experts\n", MAX_SHAPES);
                return 2;
            }
            memcpy(out[nout], o->shapes[s], sizeof out[0]);
            out[nout][3] = n, out[nout][4] = (int)(slots / n);
            nout++;
        }
    }
    memcpy(o->shapes, out, sizeof out);
    o->nshape = nout;
    return 0;
}

/* Every Vulkan device after the CPU path, when no --device was given. */
static void default_devices(bench_opts *o)
{
    o->devices[o->ndev++] = "cpu";
    smoe_context *probe = NULL;
    int n = 0;
    if (!smoe_context_create(&probe) && !smoe_device_count(probe, &n))
        for (int i = 1; i < n && o->ndev < MAX_DEVICES; i++) {
            snprintf(o->vk_names[o->ndev], sizeof o->vk_names[0], "vulkan:%d", i - 1);
            o->devices[o->ndev] = o->vk_names[o->ndev];
            o->ndev++;
        }
    smoe_context_destroy(probe);
}

/* The defaults and the checks between options: 0, or 2 after saying why. */
static int settle_opts(bench_opts *o)
{
    o->only_matmul = o->nmatmul && !o->nshape;
    if (o->only_matmul) o->skip_vit = 1;
    if (!o->nshape && !o->only_matmul) {
        const int paper[4][5] = {{8, 196, 384, 128, 1}, {8, 196, 384, 32, 4}, {4, 256, 768, 128, 2}, {32, 64, 256, 16, 4}};
        memcpy(o->shapes, paper, sizeof paper);
        o->nshape = 4;
    }
    if (o->nexperts && expand_expert_counts(o)) return 2;
    if (o->vit_only && (o->skip_vit || o->nmatmul || o->keep_sweep)) {
        fprintf(stderr, "softmoe bench: --vit-only goes with neither --no-vit, --matmul nor --keep-experts\n");
        return 2;
    }
    if (o->vit_only) o->nshape = 0;
    if (!o->ndev) default_devices(o);
    return 0;
}

/* s as the inside of a JSON string (quotes, backslashes, control characters escaped). */
static void json_text(const char *s, char *out, size_t size)
{
    size_t n = 0;
    for (; *s && n + 7 < size; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') out[n++] = '\\', out[n++] = (char)c;
        else if (c < 0x20) n += (size_t)snprintf(out + n, size - n, "\\u%04x", c);
        else out[n++] = (char)c;
    }
    out[n] = 0;
}

/* One layer measurement as a row of --csv's file (the header is written where the file opens). */
static void csv_row(FILE *csv, const char *label, const char *dname, const char *router, const int *sh, int pass,
                    const result *r, double gflops)
{
    fprintf(csv, "%s,%s,%d,%d,%d,%d,%d,%s,%.3f,%.3f,%.2f,\"%s\"\n", label, router, sh[0], sh[1], sh[2], sh[3], sh[4],
            pass ? "forward+backward" : "forward", r->ms_min, r->ms_median, gflops, dname);
}

static void device_label(smoe_context *ctx, char *label, size_t size, char *name, size_t name_size)
{
    smoe_device_info info;
    smoe_context_device(ctx, &info, NULL);
    if (info.index < 0) snprintf(label, size, "cpu");
    else snprintf(label, size, "vulkan:%d", info.index);
    snprintf(name, name_size, "%s", info.name);
}

/* ---- Expert-subset inference: the layer forward keeping n, n/2, n/4, n/8 experts ---- */

#define KEEP_STEPS 4

static int keep_shape(smoe_context *ctx, const bench_opts *o, const char *label, const char *dname, const int *sh,
                      int reps)
{
    int n = sh[3], done[KEEP_STEPS] = {0};
    result all = {0};
    for (int step = 0; step < KEEP_STEPS; step++) {
        int k = n >> step > 0 ? n >> step : 1;
        if (step && k == done[step - 1]) break; /* n too small for this fraction */
        done[step] = k;
        fprintf(stderr, "bench: %s layer (%d,%d,%d,%d,%d) forward keeping %d of %d experts...\n", label, sh[0], sh[1],
                sh[2], sh[3], sh[4], k, n);
        result r = {0};
        int rc = bench_time_layer(ctx, sh, 0, reps, k, &r, NULL);
        if (rc) return rc;
        if (r.skipped[0]) break; /* a shape this device cannot hold, said on stderr */
        if (!step) all = r;
        double speedup = all.ms_min / r.ms_min;
        if (o->json)
            printf("{\"device\": \"%s\", \"device_name\": \"%s\", \"kind\": \"layer_keep\", \"shape\": [%d, %d, %d, %d, "
                   "%d], \"keep\": %d, \"experts\": %d, \"ms_min\": %.3f, \"ms_median\": %.3f, \"speedup_vs_all\": %.3f}\n",
                   label, dname, sh[0], sh[1], sh[2], sh[3], sh[4], k, n, r.ms_min, r.ms_median, speedup);
        else
            printf("%-9s (%3d,%3d,%3d,%3d,%d) forward keeping %3d/%-3d %9.2f ms (median %9.2f)  %5.2fx vs all\n", label,
                   sh[0], sh[1], sh[2], sh[3], sh[4], k, n, r.ms_min, r.ms_median, speedup);
        fflush(stdout);
    }
    return 0;
}

static int bench_keep(const bench_opts *o)
{
    for (int dv = 0; dv < o->ndev; dv++) {
        smoe_context *ctx = cli_open(o->devices[dv]);
        if (!ctx) return 1;
        char label[32], dname[256];
        device_label(ctx, label, sizeof label, dname, sizeof dname);
        int reps = smoe_bench_cpu_driver(ctx) && o->repeat > 3 ? 3 : o->repeat;
        for (int s = 0; s < o->nshape; s++) {
            int rc = keep_shape(ctx, o, label, dname, o->shapes[s], reps);
            if (rc) {
                smoe_context_destroy(ctx);
                return rc;
            }
        }
        int rc = cli_close(ctx, 0);
        if (rc) return rc;
    }
    return 0;
}

/* ---- The measurements of one device ---- */

static const char *pass_name(int pass) { return pass ? "forward+backward" : "forward"; }

/* One Soft MoE layer shape and pass once more, profiled, and its table. */
static int profile_shape(smoe_context *ctx, const bench_opts *o, const bench_results *R, int dv, const int *sh, int pass)
{
    fprintf(stderr, "bench: %s layer (%d,%d,%d,%d,%d) %s, profiled...\n", R->label[dv], sh[0], sh[1], sh[2], sh[3],
            sh[4], pass_name(pass));
    smoe_profile prof = {0};
    result ignored;
    int rc = bench_time_layer(ctx, sh, pass, 2, 0, &ignored, &prof);
    char what[96];
    snprintf(what, sizeof what, "layer (%d,%d,%d,%d,%d) %s", sh[0], sh[1], sh[2], sh[3], sh[4], pass_name(pass));
    if (!rc) bench_print_profile(R->label[dv], R->dname[dv], what, &prof, 2, o->json);
    smoe_profile_clear(&prof);
    return rc;
}

static int measure_shape(smoe_context *ctx, const bench_opts *o, bench_results *R, int dv, int s, int pass, int reps,
                         int profiling)
{
    const int *sh = o->shapes[s];
    const char *pname = pass_name(pass);
    fprintf(stderr, "bench: %s layer (%d,%d,%d,%d,%d) %s...\n", R->label[dv], sh[0], sh[1], sh[2], sh[3], sh[4], pname);
    int rc = bench_time_layer(ctx, sh, pass, reps, 0, &R->res[dv][s][pass], NULL);
    for (int r = 0; r < ROUTERS && o->routers && !rc; r++) {
        fprintf(stderr, "bench: %s %s layer %s...\n", R->label[dv], bench_router_names[r], pname);
        rc = bench_time_sparse(ctx, sh, r, pass, reps, &R->sres[dv][s][r][pass]);
    }
    if (rc || !profiling || R->res[dv][s][pass].skipped[0]) return rc;
    return profile_shape(ctx, o, R, dv, sh, pass);
}

static int measure_vit(smoe_context *ctx, const bench_opts *o, bench_results *R, int dv, int profiling)
{
    fprintf(stderr, "bench: %s ViT...\n", R->label[dv]);
    int rc = bench_time_vit(ctx, o, &R->vit_inf[dv], &R->vit_train[dv], R->vit_name, sizeof R->vit_name, NULL);
    if (rc || !profiling) return rc;
    double ignored[2];
    smoe_profile prof[2] = {{0}};
    fprintf(stderr, "bench: %s ViT, profiled...\n", R->label[dv]);
    rc = bench_time_vit(ctx, o, &ignored[0], &ignored[1], R->vit_name, sizeof R->vit_name, prof);
    char what[2][320];
    snprintf(what[0], sizeof what[0], "ViT inference, batch %d", o->vit_batch);
    snprintf(what[1], sizeof what[1], "ViT training step, batch %d", o->vit_batch);
    for (int mode = 0; mode < 2 && !rc; mode++)
        bench_print_profile(R->label[dv], R->dname[dv], what[mode], &prof[mode], 1, o->json);
    smoe_profile_clear(&prof[0]);
    smoe_profile_clear(&prof[1]);
    return rc;
}

/* The peak, the layer shapes and the ViT. */
static int measure_layers(smoe_context *ctx, const bench_opts *o, bench_results *R, int dv, int is_cpu, int reps)
{
    fprintf(stderr, "bench: %s (%s): peak...\n", R->label[dv], R->dname[dv]);
    R->peak[dv] = is_cpu ? bench_cpu_peak() : smoe_bench_vulkan_peak(ctx);
    if (is_cpu) R->gemm = bench_sgemm_peak();
    int profiling = o->profile && smoe_bench_can_profile(ctx);
    int rc = 0;
    for (int s = 0; s < o->nshape && !rc; s++)
        for (int pass = 0; pass < 2 && !rc; pass++) rc = measure_shape(ctx, o, R, dv, s, pass, reps, profiling);
    if (!o->skip_vit && !rc) rc = measure_vit(ctx, o, R, dv, profiling);
    return rc;
}

static int measure_device(const bench_opts *o, bench_results *R, int dv)
{
    smoe_context *ctx = cli_open(o->devices[dv]);
    if (!ctx) return 1;
    device_label(ctx, R->label[dv], sizeof R->label[dv], R->dname[dv], sizeof R->dname[dv]);
    smoe_device_info info;
    smoe_context_device(ctx, &info, NULL);
    int is_cpu = info.kind == SMOE_DEVICE_CPU;
    if (is_cpu) R->cpu_index = dv;
    int reps = smoe_bench_cpu_driver(ctx) && o->repeat > 3 ? 3 : o->repeat;
    int rc = 0;
    for (int s = 0; s < o->nmatmul && !rc; s++)
        rc = bench_matmul(ctx, R->label[dv], R->dname[dv], o->matmuls[s], reps, o->variant, o->json);
    if (!rc && !o->only_matmul) rc = measure_layers(ctx, o, R, dv, is_cpu, reps);
    smoe_context_destroy(ctx);
    return rc;
}

/* ---- The report ---- */

static double layer_gflop(const int *sh, int backward)
{
    double b = sh[0], m = sh[1], d = sh[2], S = (double)sh[3] * sh[4], h = 4.0 * sh[2];
    double fwd = b * (6 * m * S * d + 4 * S * d * h);
    return (backward ? 3 * fwd : fwd) / 1e9;
}

/* Bytes of expert weights one pass streams (read once forward; read and gradients written backward). */
static double layer_weight_bytes(const int *sh, int backward)
{
    double w = 2.0 * sh[3] * sh[2] * 4.0 * sh[2] * 4;
    return backward ? 3 * w : w;
}

static void skipped_row(const bench_opts *o, const bench_results *R, int dv, const int *sh, int pass, const result *r)
{
    char why[2048];
    json_text(r->skipped, why, sizeof why);
    if (o->json)
        printf("{\"device\": \"%s\", \"device_name\": \"%s\", \"kind\": \"layer\", \"shape\": [%d, %d, %d, "
               "%d, %d], \"pass\": \"%s\", \"skipped\": \"%s\"}\n",
               R->label[dv], R->dname[dv], sh[0], sh[1], sh[2], sh[3], sh[4], pass_name(pass), why);
    else
        printf("%-9s (%3d,%3d,%3d,%3d,%d) %-16s skipped: %s\n", R->label[dv], sh[0], sh[1], sh[2], sh[3], sh[4],
               pass_name(pass), r->skipped);
}

static void layer_row(const bench_opts *o, const bench_results *R, int dv, int s, int pass, FILE *csv)
{
    const int *sh = o->shapes[s];
    const result *r = &R->res[dv][s][pass];
    if (r->skipped[0]) {
        skipped_row(o, R, dv, sh, pass, r);
        return;
    }
    const result *cpu = R->cpu_index >= 0 ? &R->res[R->cpu_index][s][pass] : NULL;
    double gf = layer_gflop(sh, pass) / (r->ms_min / 1e3), peak = R->peak[dv];
    double vs_cpu = cpu && !cpu->skipped[0] ? cpu->ms_min / r->ms_min : 0;
    double gbs = layer_weight_bytes(sh, pass) / (r->ms_min / 1e3) / 1e9;
    if (csv) csv_row(csv, R->label[dv], R->dname[dv], "soft", sh, pass, r, gf);
    if (o->json)
        printf("{\"device\": \"%s\", \"device_name\": \"%s\", \"kind\": \"layer\", \"router\": \"soft\", \"shape\": [%d, %d, %d, %d, %d], "
               "\"pass\": \"%s\", \"ms_min\": %.3f, \"ms_median\": %.3f, \"gflops\": %.2f, \"speedup_vs_cpu\": %.3f, "
               "\"fraction_of_peak\": %.4f, \"weight_gbytes_per_second\": %.2f}\n",
               R->label[dv], R->dname[dv], sh[0], sh[1], sh[2], sh[3], sh[4], pass_name(pass), r->ms_min, r->ms_median,
               gf, vs_cpu, peak > 0 ? gf / peak : 0, gbs);
    else
        printf("%-9s (%3d,%3d,%3d,%3d,%d) %-16s %9.2f ms (median %9.2f) %7.1f GFLOP/s  %5.2fx cpu  %5.1f%% of peak  "
               "weights %.1f GB/s\n",
               R->label[dv], sh[0], sh[1], sh[2], sh[3], sh[4], pass_name(pass), r->ms_min, r->ms_median, gf, vs_cpu,
               peak > 0 ? 100 * gf / peak : 0, gbs);
}

static void router_row(const bench_opts *o, const bench_results *R, int dv, int s, int r, int pass, FILE *csv)
{
    const int *sh = o->shapes[s];
    const result *q = &R->sres[dv][s][r][pass], *soft = &R->res[dv][s][pass];
    if (q->skipped[0]) return; /* said on stderr */
    const result *cpu = R->cpu_index >= 0 ? &R->sres[R->cpu_index][s][r][pass] : NULL;
    double soft_time = soft->skipped[0] ? 0 : q->ms_min / soft->ms_min;
    double gf = smoe_bench_sparse_gflop(sh, r, pass) / (q->ms_min / 1e3);
    double vs_cpu = cpu && !cpu->skipped[0] ? cpu->ms_min / q->ms_min : 0;
    if (csv) csv_row(csv, R->label[dv], R->dname[dv], bench_router_names[r], sh, pass, q, gf);
    if (o->json)
        printf("{\"device\": \"%s\", \"device_name\": \"%s\", \"kind\": \"layer\", \"router\": \"%s\", "
               "\"shape\": [%d, %d, %d, %d, %d], \"pass\": \"%s\", \"ms_min\": %.3f, \"ms_median\": %.3f, "
               "\"gflops\": %.2f, \"speedup_vs_cpu\": %.3f, \"time_vs_soft\": %.3f}\n",
               R->label[dv], R->dname[dv], bench_router_names[r], sh[0], sh[1], sh[2], sh[3], sh[4], pass_name(pass),
               q->ms_min, q->ms_median, gf, vs_cpu, soft_time);
    else
        printf("%-9s (%3d,%3d,%3d,%3d,%d) %-16s %-17s %9.2f ms (median %9.2f) %7.1f GFLOP/s  %5.2fx cpu  %5.2fx "
               "soft's time\n",
               R->label[dv], sh[0], sh[1], sh[2], sh[3], sh[4], pass_name(pass), bench_router_names[r], q->ms_min,
               q->ms_median, gf, vs_cpu, soft_time);
}

/* The ViT, the peak and (the CPU path) cblas_sgemm. */
static void device_rows(const bench_opts *o, const bench_results *R, int dv)
{
    const char *label = R->label[dv], *dname = R->dname[dv];
    if (!o->skip_vit && o->json)
        printf("{\"device\": \"%s\", \"device_name\": \"%s\", \"kind\": \"vit\", \"model\": \"%s\", \"batch\": %d, "
               "\"inference_images_per_second\": %.1f, \"training_images_per_second\": %.1f}\n",
               label, dname, R->vit_name, o->vit_batch, R->vit_inf[dv], R->vit_train[dv]);
    else if (!o->skip_vit)
        printf("%-9s ViT (%s), batch %d: inference %.0f images/s, training %.0f images/s\n", label, R->vit_name,
               o->vit_batch, R->vit_inf[dv], R->vit_train[dv]);
    if (o->json)
        printf("{\"device\": \"%s\", \"device_name\": \"%s\", \"kind\": \"peak\", \"fma_gflops\": %.1f}\n", label, dname,
               R->peak[dv]);
    else
        printf("%-9s peak FMA %.1f GFLOP/s\n", label, R->peak[dv]);
    if (dv != R->cpu_index) return;
    if (o->json)
        printf("{\"device\": \"cpu\", \"kind\": \"sgemm\", \"shape\": [1024, 1024, 1024], \"gflops\": %.1f}\n", R->gemm);
    else
        printf("cpu       cblas_sgemm 1024^3: %.1f GFLOP/s\n", R->gemm);
}

static int report(const bench_opts *o, const bench_results *R)
{
    FILE *csv = NULL;
    if (o->csv) {
        csv = fopen(o->csv, "w");
        if (!csv) {
            fprintf(stderr, "softmoe bench: cannot write %s\n", o->csv);
            return 1;
        }
        fprintf(csv, "device,router,b,m,d,n,p,pass,ms_min,ms_median,gflops,device_name\n");
    }
    for (int dv = 0; dv < o->ndev; dv++) {
        for (int s = 0; s < o->nshape; s++)
            for (int pass = 0; pass < 2; pass++) layer_row(o, R, dv, s, pass, csv);
        for (int s = 0; s < o->nshape && o->routers; s++)
            for (int r = 0; r < ROUTERS; r++)
                for (int pass = 0; pass < 2; pass++) router_row(o, R, dv, s, r, pass, csv);
        device_rows(o, R, dv);
    }
    if (csv && fclose(csv)) {
        fprintf(stderr, "softmoe bench: writing %s failed\n", o->csv);
        return 1;
    }
    return 0;
}

int cmd_bench(int argc, char **argv)
{
    bench_opts o = {.repeat = 5, .vit_batch = 128};
    int rc = parse_opts(argc, argv, &o);
    if (!rc) rc = settle_opts(&o);
    if (rc) return rc;
    if (o.keep_sweep) return bench_keep(&o);
    bench_results *R = calloc(1, sizeof *R);
    if (!R) {
        fprintf(stderr, "softmoe bench: out of host memory\n");
        return 1;
    }
    R->cpu_index = -1;
    for (int dv = 0; dv < o.ndev && !rc; dv++) rc = measure_device(&o, R, dv);
    if (!rc && !o.only_matmul) rc = report(&o, R);
    free(R);
    return rc;
}
