/* softmoe eval (test accuracy and speed on Fashion-MNIST) and softmoe classify (images). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static smoe_model *load_vit(smoe_context *ctx, const char *path)
{
    smoe_model *model = NULL;
    smoe_status st = smoe_model_load_file(ctx, path, &model);
    if (st) {
        cli_fail(ctx, st, "loading the model");
        return NULL;
    }
    if (smoe_model_get_kind(model) != SMOE_MODEL_VIT) {
        fprintf(stderr, "softmoe: %s is a layer model; eval and classify need a ViT\n", path);
        return NULL;
    }
    return model;
}

/* The index of the largest of n logits (the first of equals). */
static int argmax(const float *l, int n)
{
    int best = 0;
    for (int k = 1; k < n; k++)
        if (l[k] > l[best]) best = k;
    return best;
}

typedef struct eval_opts {
    const char *path, *device, *data;
    int json;
    long batch, limit;
    cli_keep keep;
} eval_opts;

static const char eval_usage[] =
    "usage: softmoe eval --model FILE [--device D] [--json] [--batch N] [--limit N] [--data DIR]\n"
    "                    [--keep-experts K [--renormalize] [--random-experts SEED]]\n";

void cmd_eval_help(FILE *f)
{
    fprintf(f, "%s"
               "  --model FILE     the ViT to test (required)\n"
               "  --device D       cpu, vulkan, vulkan:N (default: best GPU, else cpu)\n"
               "  --json           one JSON object instead of text\n"
               "  --batch N        images per forward pass (default 250)\n"
               "  --limit N        only the first N test images (default 0: all)\n"
               "  --data DIR       Fashion-MNIST directory (default /usr/share/datasets/fashion-mnist)\n"
               "  --keep-experts K a count or a fraction (1/8, 0.125) of the experts kept per input (default: all)\n"
               "  --renormalize    rescale the kept experts' combine weights to sum to 1\n"
               "  --random-experts SEED  keep K random experts instead of the top-scoring ones\n",
            eval_usage);
}

/* 0, or the exit code after saying why. */
static int parse_eval(int argc, char **argv, eval_opts *o)
{
    memset(o, 0, sizeof *o);
    o->batch = 250;
    cli_opt keep[4];
    cli_keep_options(&o->keep, keep);
    const cli_opt table[] = {
        {.name = "json", .kind = CLI_FLAG, .dst = &o->json},
        {.name = "model", .kind = CLI_STRING, .dst = &o->path},
        {.name = "device", .kind = CLI_STRING, .dst = &o->device},
        {.name = "data", .kind = CLI_STRING, .dst = &o->data},
        {.name = "batch", .kind = CLI_LONG, .dst = &o->batch, .lo = 1, .hi = 65536},
        {.name = "limit", .kind = CLI_LONG, .dst = &o->limit, .lo = 0, .hi = 1 << 30},
        {.name = "", .kind = CLI_TABLE, .dst = keep},
        {0},
    };
    for (int i = 1; i < argc; i++) {
        int r = cli_option(table, argc, argv, &i);
        if (r == CLI_OK) continue;
        if (r != CLI_REPORTED) fprintf(stderr, "%s", eval_usage);
        return 2;
    }
    if (!o->path) {
        fprintf(stderr, "softmoe eval: --model FILE is required\n");
        return 2;
    }
    return 0;
}

/* The model's input and classes are Fashion-MNIST's: 1, or 0 after saying why not. */
static int fits_fmnist(smoe_model *model, const smoe_dataset *test)
{
    smoe_vit_config c;
    if (smoe_vit_get_config(model, &c) == SMOE_OK && (c.channels != 1 || c.image_size != test->height || c.num_classes != 10)) {
        fprintf(stderr, "softmoe eval: the model takes %dx%dx%d images into %d classes; Fashion-MNIST is 1x%dx%d into 10\n",
                c.channels, c.image_size, c.image_size, c.num_classes, test->height, test->width);
        return 0;
    }
    return 1;
}

typedef struct eval_result {
    long correct;
    double seconds, in_model; /* the whole loop, and inside smoe_vit_infer */
} eval_result;

/* The first n test images in batches, after one warm-up batch (pipeline creation, recording)
 * outside the timing. */
static smoe_status run_eval(smoe_model *model, const smoe_dataset *test, int n, int batch, eval_result *r)
{
    memset(r, 0, sizeof *r);
    float *images = malloc((size_t)batch * test->height * test->width * 4), *logits = malloc((size_t)batch * 10 * 4);
    int32_t *labels = malloc((size_t)batch * 4);
    int *idx = malloc((size_t)batch * sizeof *idx);
    smoe_status st = images && logits && labels && idx ? SMOE_OK : SMOE_ERROR_OUT_OF_HOST_MEMORY;
    int first = batch < n ? batch : n;
    for (int i = 0; i < first && !st; i++) idx[i] = i;
    if (!st) smoe_dataset_batch(test, idx, first, images, labels);
    if (!st) st = smoe_vit_infer(model, first, images, logits);
    double t0 = cli_now();
    for (int start = 0; start < n && !st; start += batch) {
        int b = n - start < batch ? n - start : batch;
        for (int i = 0; i < b; i++) idx[i] = start + i;
        smoe_dataset_batch(test, idx, b, images, labels);
        double t1 = cli_now();
        st = smoe_vit_infer(model, b, images, logits);
        r->in_model += cli_now() - t1;
        for (int i = 0; i < b && !st; i++) r->correct += argmax(logits + i * 10, 10) == labels[i];
    }
    r->seconds = cli_now() - t0;
    free(images), free(logits), free(labels), free(idx);
    return st;
}

/* The result line, as text or JSON. */
static void print_eval(smoe_context *ctx, const eval_opts *o, int n, const eval_result *r, int kept, int experts)
{
    smoe_device_info dev;
    smoe_context_device(ctx, &dev, NULL);
    char devname[32];
    if (dev.index < 0) snprintf(devname, sizeof devname, "cpu");
    else snprintf(devname, sizeof devname, "vulkan:%d", dev.index);
    double acc = (double)r->correct / n, ips = n / (r->in_model > 0 ? r->in_model : 1);
    char subset[160] = "", seed[48] = "";
    if (o->keep.given && o->json) {
        if (o->keep.random) snprintf(seed, sizeof seed, ", \"random_seed\": %llu", (unsigned long long)o->keep.seed);
        snprintf(subset, sizeof subset, ", \"keep_experts\": %d, \"experts\": %d, \"renormalize\": %d%s", kept, experts,
                 o->keep.renormalize, seed);
    } else if (o->keep.given) {
        char what[120];
        cli_keep_describe(&o->keep, kept, experts, what, sizeof what);
        snprintf(subset, sizeof subset, ", keeping %s per image", what);
    }
    if (o->json)
        printf("{\"accuracy\": %.4f, \"images\": %d, \"images_per_second\": %.1f, \"seconds\": %.3f, "
               "\"device\": \"%s\", \"device_name\": \"%s\", \"model\": \"%s\"%s}\n",
               acc, n, ips, r->seconds, devname, dev.name, o->path, subset);
    else
        printf("%s: accuracy %.2f%% on %d Fashion-MNIST test images, %.0f images/s on %s (%s)%s\n", o->path, 100 * acc, n,
               ips, devname, dev.name, subset);
}

int cmd_eval(int argc, char **argv)
{
    eval_opts o;
    int rc = parse_eval(argc, argv, &o), kept = 0, experts = 0;
    if (rc) return rc;
    smoe_context *ctx = cli_context();
    smoe_dataset test = {0};
    if (!ctx) return 1;
    smoe_status st = smoe_fmnist_read(ctx, o.data, 0, &test);
    if (st) {
        fprintf(stderr, "softmoe eval: %s\n", smoe_last_error(ctx));
        smoe_context_destroy(ctx);
        return 1;
    }
    if (cli_open_device(ctx, o.device)) {
        smoe_dataset_free(&test);
        return 1;
    }
    smoe_model *model = load_vit(ctx, o.path);
    rc = 1;
    if (model && !cli_keep_apply(ctx, model, &o.keep, &kept, &experts) && fits_fmnist(model, &test)) {
        int n = o.limit && o.limit < test.count ? (int)o.limit : test.count;
        eval_result r;
        st = run_eval(model, &test, n, (int)o.batch, &r);
        if (st) cli_fail(ctx, st, "evaluating");
        else print_eval(ctx, &o, n, &r, kept, experts);
        rc = st ? 1 : 0;
    }
    smoe_dataset_free(&test);
    return cli_close(ctx, rc);
}

static const char classify_usage[] =
    "usage: softmoe classify --model FILE [--device D] [--top K]\n"
    "                        [--keep-experts K [--renormalize] [--random-experts SEED]] IMAGE...\n";

void cmd_classify_help(FILE *f)
{
    fprintf(f, "%s"
               "  --model FILE     the ViT (required)\n"
               "  --device D       cpu, vulkan, vulkan:N (default: best GPU, else cpu)\n"
               "  --top K          classes printed per image (default 3)\n"
               "  --keep-experts K, --renormalize, --random-experts SEED   as in softmoe eval --help\n"
               "IMAGE: PNG, PGM or JPEG\n",
            classify_usage);
}

typedef struct classify_opts {
    const char *path, *device;
    long top;
    int first_image;
    cli_keep keep;
} classify_opts;

/* Options up to the first image: 0, or the exit code after saying why. */
static int parse_classify(int argc, char **argv, classify_opts *o)
{
    memset(o, 0, sizeof *o);
    o->top = 3;
    o->first_image = argc;
    cli_opt keep[4];
    cli_keep_options(&o->keep, keep);
    const cli_opt table[] = {
        {.name = "model", .kind = CLI_STRING, .dst = &o->path},
        {.name = "device", .kind = CLI_STRING, .dst = &o->device},
        {.name = "top", .kind = CLI_LONG, .dst = &o->top, .lo = 1, .hi = 1000},
        {.name = "", .kind = CLI_TABLE, .dst = keep},
        {0},
    };
    for (int i = 1; i < argc; i++) {
        int r = cli_option(table, argc, argv, &i);
        if (r == CLI_OK) continue;
        if (r == CLI_UNKNOWN && argv[i][0] != '-') {
            o->first_image = i;
            break;
        }
        if (r != CLI_REPORTED) fprintf(stderr, "%s", classify_usage);
        return 2;
    }
    if (!o->path || o->first_image >= argc) {
        fprintf(stderr, "%s", classify_usage);
        return 2;
    }
    return 0;
}

/* "name: Class 91.2%, Class 5.0%": the top classes of one image's logits (l is consumed). */
static void print_top(const char *name, float *l, int classes, long top)
{
    double mx = l[argmax(l, classes)], sum = 0;
    for (int k = 0; k < classes; k++) sum += exp(l[k] - mx);
    printf("%s:", name);
    for (int t = 0; t < top && t < classes; t++) {
        int best = -1;
        for (int k = 0; k < classes; k++)
            if (!isnan(l[k]) && (best < 0 || l[k] > l[best])) best = k;
        if (best < 0) break;
        const char *cls = classes == 10 ? smoe_fmnist_class_name(best) : NULL;
        char num[24];
        snprintf(num, sizeof num, "class %d", best);
        printf("%s %s %.1f%%", t ? "," : "", cls ? cls : num, 100 * exp(l[best] - mx) / sum);
        l[best] = NAN;
    }
    printf("\n");
}

/* The images as the model's input, and the logits: 0, or 1 after saying why. */
static int classify_images(smoe_context *ctx, smoe_model *model, const smoe_vit_config *c, char **files, int n, long top)
{
    size_t per = (size_t)c->image_size * c->image_size;
    float *images = malloc(per * n * 4), *logits = malloc((size_t)n * c->num_classes * 4);
    int rc = !images || !logits;
    for (int i = 0; i < n && images; i++)
        if (smoe_image_read_gray(ctx, files[i], c->image_size, c->image_size, images + per * i)) {
            fprintf(stderr, "softmoe classify: %s\n", smoe_last_error(ctx));
            rc = 1;
        }
    smoe_status st = SMOE_OK;
    if (!rc) st = smoe_vit_infer(model, n, images, logits);
    if (st) rc = cli_fail(ctx, st, "classifying");
    for (int i = 0; i < n && !rc; i++) print_top(files[i], logits + (size_t)i * c->num_classes, c->num_classes, top);
    free(images), free(logits);
    return rc;
}

int cmd_classify(int argc, char **argv)
{
    classify_opts o;
    int rc = parse_classify(argc, argv, &o), kept = 0, experts = 0;
    if (rc) return rc;
    smoe_context *ctx = cli_open(o.device);
    smoe_model *model = ctx ? load_vit(ctx, o.path) : NULL;
    if (!model || cli_keep_apply(ctx, model, &o.keep, &kept, &experts)) {
        smoe_context_destroy(ctx);
        return 1;
    }
    smoe_vit_config c;
    smoe_vit_get_config(model, &c);
    if (c.channels != 1) {
        fprintf(stderr, "softmoe classify: the model takes %d channels; only grayscale models are supported\n", c.channels);
        smoe_context_destroy(ctx);
        return 1;
    }
    rc = classify_images(ctx, model, &c, argv + o.first_image, argc - o.first_image, o.top);
    return cli_close(ctx, rc);
}
