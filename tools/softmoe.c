/* The softmoe command: devices here; run, train, eval, classify and bench in cmd_*.c. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include <math.h>
#include <time.h>

#include "cli.h"
#include "train_options.h"

int cli_verbose = 0;

void cli_log(void *user, smoe_log_level level, const char *msg)
{
    (void)user;
    if (level >= SMOE_LOG_WARNING || cli_verbose) fprintf(stderr, "softmoe: %s\n", msg);
}

int cli_fail(smoe_context *ctx, smoe_status st, const char *what)
{
    fprintf(stderr, "softmoe: %s: %s (%s)\n", what, smoe_last_error(ctx), smoe_status_string(st));
    return 1;
}

smoe_context *cli_context(void)
{
    smoe_context *ctx = NULL;
    if (smoe_context_create(&ctx)) {
        fprintf(stderr, "softmoe: out of memory creating a context\n");
        return NULL;
    }
    smoe_set_log_callback(ctx, cli_log, NULL);
    return ctx;
}

int cli_open_device(smoe_context *ctx, const char *device)
{
    smoe_status st = smoe_context_open_device(ctx, device);
    if (!st) return 0;
    cli_fail(ctx, st, "opening the device");
    smoe_context_destroy(ctx);
    return 1;
}

smoe_context *cli_open(const char *device)
{
    smoe_context *ctx = cli_context();
    return ctx && !cli_open_device(ctx, device) ? ctx : NULL;
}

int cli_close(smoe_context *ctx, int rc)
{
    int n = smoe_validation_message_count(ctx);
    if (n) fprintf(stderr, "softmoe: the Vulkan validation layer reported %d message(s)\n", n);
    smoe_context_destroy(ctx);
    return n ? 1 : rc;
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cli_duration(double s, char *buf, size_t size)
{
    long t = s > 0 && s < 1e9 ? (long)(s + 0.5) : 0;
    if (t >= 3600) snprintf(buf, size, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60) snprintf(buf, size, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, size, "%lds", t);
}

int cli_int(const char *s, long lo, long hi, long *out)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

int cli_float(const char *s, double *out)
{
    char *end = NULL;
    double v = strtod(s, &end);
    if (!*s || *end || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

static const char *kind_name(smoe_device_kind k)
{
    switch (k) {
    case SMOE_DEVICE_CPU: return "cpu path";
    case SMOE_DEVICE_VULKAN_DISCRETE: return "discrete GPU";
    case SMOE_DEVICE_VULKAN_INTEGRATED: return "integrated GPU";
    case SMOE_DEVICE_VULKAN_VIRTUAL: return "virtual GPU";
    case SMOE_DEVICE_VULKAN_CPU: return "CPU-type Vulkan driver";
    default: return "other";
    }
}

static void print_info(const smoe_device_info *d)
{
    if (d->index < 0) {
        printf("cpu: %s\n", d->name);
        return;
    }
    printf("vulkan:%d: %s\n", d->index, d->name);
    printf("    type                 %s\n", kind_name(d->kind));
    printf("    vendor/device id     0x%04x / 0x%04x\n", d->vendor_id, d->device_id);
    printf("    driver               %s (%s)\n", d->driver_name[0] ? d->driver_name : "?", d->driver_info);
    printf("    Vulkan API           %u.%u.%u\n", d->api_version >> 22,
           (d->api_version >> 12) & 0x3ffu, d->api_version & 0xfffu);
    printf("    subgroup size        %u (range %u..%u)\n", d->subgroup_size, d->min_subgroup_size, d->max_subgroup_size);
    printf("    shared memory        %u bytes\n", d->max_shared_memory);
    printf("    workgroup            %u invocations, size %u x %u x %u\n", d->max_workgroup_invocations,
           d->max_workgroup_size[0], d->max_workgroup_size[1], d->max_workgroup_size[2]);
    printf("    max storage buffer   %llu bytes\n", (unsigned long long)d->max_storage_buffer_range);
    printf("    max allocation       %llu bytes\n", (unsigned long long)d->max_allocation_size);
    printf("    device-local memory  %llu MiB\n", (unsigned long long)(d->device_local_memory >> 20));
    printf("    16-bit storage       %s, float16 %s\n", d->storage_buffer_16bit ? "yes" : "no",
           d->shader_float16 ? "yes" : "no");
    printf("    timestamps           %s (period %.3g ns, %u valid bits%s)\n", d->timestamps ? "yes" : "no",
           d->timestamp_period_ns, d->timestamp_valid_bits,
           d->timestamp_compute_and_graphics ? ", all compute and graphics queues" : "");
    printf("    texel buffers        %u elements, offsets aligned to %llu bytes, rgba32f %s, r32f %s\n",
           d->max_texel_buffer_elements, (unsigned long long)d->min_texel_buffer_offset_alignment,
           d->texel_buffer_rgba32f ? "yes" : "no", d->texel_buffer_r32f ? "yes" : "no");
    printf("    push descriptors     %s\n", d->push_descriptors ? "yes" : "no");
}

static int cmd_devices(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    smoe_context *ctx = NULL;
    if (smoe_context_create(&ctx)) return cli_fail(NULL, SMOE_ERROR_OUT_OF_HOST_MEMORY, "creating a context");
    smoe_set_log_callback(ctx, cli_log, NULL);
    int n = 0;
    smoe_status st = smoe_device_count(ctx, &n);
    if (st) return cli_fail(ctx, st, "listing devices");
    for (int i = 0; i < n; i++) {
        smoe_device_info info;
        if (smoe_device_get_info(ctx, i, &info) == SMOE_OK) print_info(&info);
    }
    /* What each selection rule picks, without opening anything twice. */
    const char *specs[] = {"vulkan", NULL};
    for (int s = 0; s < 2; s++) {
        smoe_context *probe = NULL;
        if (smoe_context_create(&probe)) break;
        const char *reason = NULL;
        smoe_device_info info;
        st = smoe_context_open_device(probe, specs[s]);
        if (st == SMOE_OK && smoe_context_device(probe, &info, &reason) == SMOE_OK)
            printf("%-8s -> %s: %s\n", specs[s] ? specs[s] : "default", info.index < 0 ? "cpu" : info.name, reason);
        else
            printf("%-8s -> none: %s\n", specs[s] ? specs[s] : "default", smoe_last_error(probe));
        smoe_context_destroy(probe);
    }
    smoe_context_destroy(ctx);
    return 0;
}

/* softmoe --version: the library, the Vulkan loader found at run time, the shader compiler. */
static int print_version(void)
{
    smoe_version_info v;
    if (smoe_version_details(&v) != SMOE_OK) return 1;
    printf("softmoe %s\nVulkan loader %s\nSPIR-V compiler %s\n", v.library, v.vulkan, v.spirv_compiler);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: softmoe [-v] COMMAND [ARGS]   (softmoe --version, softmoe COMMAND --help)\n"
               "commands:\n"
               "  devices                         list devices, their capabilities, and which one is picked\n"
               "  run --model F --input F --output F [--device D]\n"
               "                                  run a layer or ViT model file on an input file (docs/format.md section 3)\n"
               "  train [--config F.json] [options]  train a Soft MoE ViT on Fashion-MNIST (softmoe train --help)\n"
               "  eval --model F [--device D] [--json]  test accuracy and images/s on Fashion-MNIST\n"
               "  classify --model F [--device D] [--top K] IMAGE...  top classes of PNG/PGM/JPEG images\n"
               "  bench [--device D]... [--shape b,m,d,n,p]... [--json]  speed of every device, side by side\n"
               "devices: cpu, vulkan (best Vulkan device), vulkan:N; default: SOFTMOE_DEVICE, else the best GPU,\n"
               "else cpu\n");
}

static void devices_help(FILE *f)
{
    fprintf(f, "usage: softmoe devices\n"
               "lists every device with its capabilities, then which one each selection rule picks:\n"
               "cpu, vulkan (the best Vulkan device), vulkan:N; default: SOFTMOE_DEVICE, else the best GPU, else cpu\n");
}

static void run_help(FILE *f)
{
    fprintf(f, "usage: softmoe run --model FILE --input FILE --output FILE [--device D]\n"
               "                   [--keep-experts K [--renormalize] [--random-experts SEED]]\n"
               "runs a layer or ViT model file on an input file and writes the outputs (docs/format.md section 3)\n"
               "  --device D       cpu, vulkan, vulkan:N (default: best GPU, else cpu)\n"
               "  --keep-experts K, --renormalize, --random-experts SEED   as in softmoe eval --help\n");
}

/* The subcommands: how each runs and its --help. */
static const struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    void (*help)(FILE *f);
} commands[] = {
    {"devices", cmd_devices, devices_help},   {"run", cmd_run, run_help},
    {"train", cmd_train, train_help},         {"eval", cmd_eval, cmd_eval_help},
    {"classify", cmd_classify, cmd_classify_help}, {"bench", cmd_bench, cmd_bench_help},
};

/* OpenBLAS reads OPENBLAS_CORETYPE only when it loads: if it fell back to generic kernels on a CPU
 * it did not recognise, run again with the right core type (once: the variable is then set). */
static void fix_blas_coretype(char **argv)
{
    const char *core = smoe_cpu_blas_coretype_hint();
    if (!core || getenv("OPENBLAS_CORETYPE")) return;
    setenv("OPENBLAS_CORETYPE", core, 1);
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the generic kernels (the library logs a warning) */
}

int main(int argc, char **argv)
{
    fix_blas_coretype(argv);
    int a = 1;
    while (a < argc && argv[a][0] == '-') {
        if (!strcmp(argv[a], "-v")) cli_verbose = 1;
        else if (!strcmp(argv[a], "-h") || !strcmp(argv[a], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[a], "--version")) {
            return print_version();
        } else {
            usage(stderr);
            return 2;
        }
        a++;
    }
    if (a >= argc) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[a];
    for (size_t c = 0; c < sizeof commands / sizeof commands[0]; c++) {
        if (strcmp(cmd, commands[c].name)) continue;
        if (cli_asks_help(argc - a, argv + a)) {
            commands[c].help(stdout);
            return 0;
        }
        static char label[32];
        snprintf(label, sizeof label, "softmoe %s", cmd);
        cli_command = label;
        return commands[c].run(argc - a, argv + a);
    }
    fprintf(stderr, "softmoe: unknown command \"%s\"\n", cmd);
    usage(stderr);
    return 2;
}

