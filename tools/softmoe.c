/* The softmoe command: devices, run. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "softmoe.h"

static int verbose = 0;

static void log_stderr(void *user, smoe_log_level level, const char *msg)
{
    (void)user;
    if (level >= SMOE_LOG_WARNING || verbose) fprintf(stderr, "softmoe: %s\n", msg);
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
    printf("    timestamps           %s (period %.3g ns)\n", d->timestamps ? "yes" : "no", d->timestamp_period_ns);
    printf("    push descriptors     %s\n", d->push_descriptors ? "yes" : "no");
}

static int fail(smoe_context *ctx, smoe_status st, const char *what)
{
    fprintf(stderr, "softmoe: %s: %s (%s)\n", what, smoe_last_error(ctx), smoe_status_string(st));
    return 1;
}

static int cmd_devices(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    smoe_context *ctx = NULL;
    if (smoe_context_create(&ctx)) return fail(NULL, SMOE_ERROR_OUT_OF_HOST_MEMORY, "creating a context");
    smoe_set_log_callback(ctx, log_stderr, NULL);
    int n = 0;
    smoe_status st = smoe_device_count(ctx, &n);
    if (st) return fail(ctx, st, "listing devices");
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

static void usage(FILE *f)
{
    fprintf(f, "usage: softmoe [-v] COMMAND [ARGS]\n"
               "commands:\n"
               "  devices                         list devices, their capabilities, and which one is picked\n"
               "  run --model F --input F --output F [--device D]\n"
               "                                  run a model file on an input file (SPEC section 3)\n"
               "devices: cpu, vulkan (best Vulkan device), vulkan:N; default: SOFTMOE_DEVICE, else the best GPU,\n"
               "else cpu\n");
}

int cmd_run(int argc, char **argv);

int main(int argc, char **argv)
{
    int a = 1;
    while (a < argc && argv[a][0] == '-') {
        if (!strcmp(argv[a], "-v")) verbose = 1;
        else if (!strcmp(argv[a], "-h") || !strcmp(argv[a], "--help")) {
            usage(stdout);
            return 0;
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
    if (!strcmp(cmd, "devices")) return cmd_devices(argc - a, argv + a);
    if (!strcmp(cmd, "run")) return cmd_run(argc - a, argv + a);
    fprintf(stderr, "softmoe: unknown command \"%s\"\n", cmd);
    usage(stderr);
    return 2;
}

/* Options of the commands that run a model. */
typedef struct run_opts {
    const char *model, *input, *output, *device;
} run_opts;

static int parse_run(int argc, char **argv, run_opts *o)
{
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        const char **slot = NULL;
        if (!strcmp(argv[i], "--model")) slot = &o->model;
        else if (!strcmp(argv[i], "--input")) slot = &o->input;
        else if (!strcmp(argv[i], "--output")) slot = &o->output;
        else if (!strcmp(argv[i], "--device")) slot = &o->device;
        if (!slot || i + 1 >= argc) {
            fprintf(stderr, "softmoe run: %s \"%s\"\n", slot ? "missing value after" : "unknown option", argv[i]);
            return 2;
        }
        *slot = argv[++i];
    }
    if (!o->model || !o->input || !o->output) {
        fprintf(stderr, "softmoe run: --model, --input and --output are required\n");
        return 2;
    }
    return 0;
}

static smoe_context *open_context(const char *device)
{
    smoe_context *ctx = NULL;
    if (smoe_context_create(&ctx)) {
        fail(NULL, SMOE_ERROR_OUT_OF_HOST_MEMORY, "creating a context");
        return NULL;
    }
    smoe_set_log_callback(ctx, log_stderr, NULL);
    smoe_status st = smoe_context_open_device(ctx, device);
    if (st) {
        fail(ctx, st, "opening the device");
        smoe_context_destroy(ctx);
        return NULL;
    }
    return ctx;
}

/* softmoe run on a layer model: x [b, m, d] (and dy) in; y (and grad.*) out. */
static int run_layer_file(smoe_context *ctx, smoe_model *model, const run_opts *o, const smoe_st_file *in)
{
    smoe_layer_shape ls;
    smoe_layer_get_shape(model, &ls);
    smoe_err err;
    const smoe_st_tensor *xt = smoe_st_find(in, "x");
    if (!xt || xt->ndim != 3 || xt->shape[2] != ls.d || xt->shape[0] < 1 || xt->shape[1] < 1 ||
        xt->shape[0] > (1 << 24) || xt->shape[1] > (1 << 24)) {
        fprintf(stderr, "softmoe run: %s: tensor \"x\" %s; expected F32 [b, m, %d]\n", o->input,
                xt ? "has the wrong shape" : "is missing", ls.d);
        return 1;
    }
    int64_t shape[3] = {xt->shape[0], xt->shape[1], ls.d};
    int b = (int)shape[0], m = (int)shape[1];
    const smoe_st_tensor *dyt = NULL;
    if (smoe_st_expect_f32(in, "x", 3, shape, &xt, &err) ||
        (smoe_st_find(in, "dy") && smoe_st_expect_f32(in, "dy", 3, shape, &dyt, &err))) {
        fprintf(stderr, "softmoe run: %s: %s\n", o->input, err.msg);
        return 1;
    }
    size_t io = (size_t)b * m * ls.d;
    size_t pcount[SMOE_LAYER_PARAM_COUNT] = {(size_t)ls.d * ls.n * ls.p, 1, (size_t)ls.n * ls.h * ls.d,
                                             (size_t)ls.n * ls.h, (size_t)ls.n * ls.d * ls.h, (size_t)ls.n * ls.d};
    int64_t pshape[SMOE_LAYER_PARAM_COUNT][3] = {{ls.d, ls.n, ls.p}, {1}, {ls.n, ls.h, ls.d},
                                                 {ls.n, ls.h}, {ls.n, ls.d, ls.h}, {ls.n, ls.d}};
    int pndim[SMOE_LAYER_PARAM_COUNT] = {3, 1, 3, 2, 3, 2};
    float *x = malloc(io * 4), *dy = dyt ? malloc(io * 4) : NULL, *y = malloc(io * 4), *dx = dyt ? malloc(io * 4) : NULL;
    float *grads[SMOE_LAYER_PARAM_COUNT] = {0};
    int rc = 1, ok = x && y && (!dyt || (dy && dx));
    for (int i = 0; i < SMOE_LAYER_PARAM_COUNT && dyt; i++) ok = ok && (grads[i] = malloc(pcount[i] * 4));
    if (!ok) {
        fprintf(stderr, "softmoe run: out of memory\n");
        goto done;
    }
    if (smoe_st_copy_f32(xt, x, &err) || (dyt && smoe_st_copy_f32(dyt, dy, &err))) {
        fprintf(stderr, "softmoe run: %s: %s\n", o->input, err.msg);
        goto done;
    }
    smoe_status st = dyt ? smoe_layer_forward_backward(model, b, m, x, dy, y, dx, grads) : smoe_layer_forward(model, b, m, x, y);
    if (st) {
        fail(ctx, st, "running the layer");
        goto done;
    }
    smoe_st_entry out[2 + SMOE_LAYER_PARAM_COUNT];
    char names[SMOE_LAYER_PARAM_COUNT][128];
    int count = 0;
    out[count++] = (smoe_st_entry){"y", SMOE_F32, 3, {b, m, ls.d}, y};
    if (dyt) {
        out[count++] = (smoe_st_entry){"grad.x", SMOE_F32, 3, {b, m, ls.d}, dx};
        for (int i = 0; i < SMOE_LAYER_PARAM_COUNT; i++) {
            snprintf(names[i], sizeof names[i], "grad.%s", smoe_layer_param_name(i));
            out[count] = (smoe_st_entry){names[i], SMOE_F32, pndim[i], {0}, grads[i]};
            memcpy(out[count].shape, pshape[i], sizeof pshape[i]);
            count++;
        }
    }
    if (smoe_st_write(o->output, out, count, NULL, 0, &err)) {
        fprintf(stderr, "softmoe run: %s\n", err.msg);
        goto done;
    }
    rc = 0;
done:
    free(x), free(dy), free(y), free(dx);
    for (int i = 0; i < SMOE_LAYER_PARAM_COUNT; i++) free(grads[i]);
    return rc;
}

int cmd_run(int argc, char **argv)
{
    run_opts o;
    int rc = parse_run(argc, argv, &o);
    if (rc) return rc;
    smoe_err err;
    smoe_st_file in;
    if (smoe_st_read_file(o.input, &in, &err)) {
        fprintf(stderr, "softmoe run: %s\n", err.msg);
        return 1;
    }
    smoe_context *ctx = open_context(o.device);
    if (!ctx) {
        smoe_st_free(&in);
        return 1;
    }
    smoe_model *model = NULL;
    smoe_status st = smoe_model_load_file(ctx, o.model, &model);
    if (st) rc = fail(ctx, st, "loading the model");
    else rc = run_layer_file(ctx, model, &o, &in);
    smoe_st_free(&in);
    smoe_context_destroy(ctx);
    return rc;
}
