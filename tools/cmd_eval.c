/* softmoe eval (test accuracy and speed on Fashion-MNIST) and softmoe classify (images). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fashion_mnist.h"
#include "image.h"

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

int cmd_eval(int argc, char **argv)
{
    const char *path = NULL, *device = NULL, *data = NULL;
    int json = 0, kept = 0, experts = 0;
    long batch = 250, limit = 0;
    cli_keep keep = {0};
    for (int i = 1; i < argc; i++) {
        int k = cli_keep_option(argc, argv, &i, &keep);
        if (k < 0) return 2;
        if (k) continue;
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--model") && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--device") && i + 1 < argc) device = argv[++i];
        else if (!strcmp(argv[i], "--data") && i + 1 < argc) data = argv[++i];
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc && cli_int(argv[i + 1], 1, 65536, &batch)) i++;
        else if (!strcmp(argv[i], "--limit") && i + 1 < argc && cli_int(argv[i + 1], 0, 1 << 30, &limit)) i++;
        else {
            fprintf(stderr, "usage: softmoe eval --model FILE [--device D] [--json] [--batch N] [--limit N] [--data DIR]\n"
                            "                    [--keep-experts K [--renormalize] [--random-experts SEED]]\n");
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "softmoe eval: --model FILE is required\n");
        return 2;
    }
    smoe_err err;
    smoe_dataset test = {0};
    if (smoe_fmnist_load(data, 0, &test, &err)) {
        fprintf(stderr, "softmoe eval: %s\n", err.msg);
        return 1;
    }
    smoe_context *ctx = cli_open(device);
    smoe_model *model = ctx ? load_vit(ctx, path) : NULL;
    if (model && cli_keep_apply(ctx, model, &keep, &kept, &experts)) model = NULL;
    int rc = 1;
    smoe_vit_config c;
    if (model && smoe_vit_get_config(model, &c) == SMOE_OK &&
        (c.channels != 1 || c.image_size != test.height || c.num_classes != 10)) {
        fprintf(stderr, "softmoe eval: the model takes %dx%dx%d images into %d classes; Fashion-MNIST is 1x%dx%d into 10\n",
                c.channels, c.image_size, c.image_size, c.num_classes, test.height, test.width);
        model = NULL;
    }
    int n = limit && limit < test.count ? (int)limit : test.count;
    float *images = malloc((size_t)batch * test.height * test.width * 4), *logits = malloc((size_t)batch * 10 * 4);
    int32_t *labels = malloc((size_t)batch * 4);
    int *idx = malloc((size_t)batch * sizeof *idx);
    if (model && images && logits && labels && idx) {
        /* one warm-up batch (pipeline creation, recording) outside the timing */
        for (int i = 0; i < batch && i < n; i++) idx[i] = i;
        smoe_dataset_batch(&test, idx, (int)(batch < n ? batch : n), images, labels);
        smoe_status st = smoe_vit_infer(model, (int)(batch < n ? batch : n), images, logits);
        long correct = 0;
        double t0 = cli_now(), in_model = 0;
        for (int start = 0; start < n && !st; start += (int)batch) {
            int b = n - start < batch ? n - start : (int)batch;
            for (int i = 0; i < b; i++) idx[i] = start + i;
            smoe_dataset_batch(&test, idx, b, images, labels);
            double t1 = cli_now();
            st = smoe_vit_infer(model, b, images, logits);
            in_model += cli_now() - t1;
            for (int i = 0; i < b && !st; i++) {
                int best = 0;
                for (int k = 1; k < 10; k++)
                    if (logits[i * 10 + k] > logits[i * 10 + best]) best = k;
                correct += best == labels[i];
            }
        }
        double total = cli_now() - t0;
        if (st) {
            cli_fail(ctx, st, "evaluating");
        } else {
            smoe_device_info dev;
            const char *reason = "";
            smoe_context_device(ctx, &dev, &reason);
            char devname[32];
            if (dev.index < 0) snprintf(devname, sizeof devname, "cpu");
            else snprintf(devname, sizeof devname, "vulkan:%d", dev.index);
            double acc = (double)correct / n, ips = n / (in_model > 0 ? in_model : 1);
            char subset[160] = "", seed[48] = "";
            if (keep.given && json) {
                if (keep.random) snprintf(seed, sizeof seed, ", \"random_seed\": %llu", (unsigned long long)keep.seed);
                snprintf(subset, sizeof subset, ", \"keep_experts\": %d, \"experts\": %d, \"renormalize\": %d%s", kept, experts,
                         keep.renormalize, seed);
            } else if (keep.given) {
                char what[120];
                cli_keep_describe(&keep, kept, experts, what, sizeof what);
                snprintf(subset, sizeof subset, ", keeping %s per image", what);
            }
            if (json)
                printf("{\"accuracy\": %.4f, \"images\": %d, \"images_per_second\": %.1f, \"seconds\": %.3f, "
                       "\"device\": \"%s\", \"device_name\": \"%s\", \"model\": \"%s\"%s}\n",
                       acc, n, ips, total, devname, dev.name, path, subset);
            else
                printf("%s: accuracy %.2f%% on %d Fashion-MNIST test images, %.0f images/s on %s (%s)%s\n", path, 100 * acc, n,
                       ips, devname, dev.name, subset);
            rc = 0;
        }
    }
    free(images), free(logits), free(labels), free(idx);
    smoe_dataset_free(&test);
    return cli_close(ctx, rc);
}

static const char classify_usage[] =
    "usage: softmoe classify --model FILE [--device D] [--top K]\n"
    "                        [--keep-experts K [--renormalize] [--random-experts SEED]] IMAGE...\n";

int cmd_classify(int argc, char **argv)
{
    const char *path = NULL, *device = NULL;
    long top = 3;
    int first_image = argc, kept = 0, experts = 0;
    cli_keep keep = {0};
    for (int i = 1; i < argc; i++) {
        int k = cli_keep_option(argc, argv, &i, &keep);
        if (k < 0) return 2;
        if (k) continue;
        if (!strcmp(argv[i], "--model") && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--device") && i + 1 < argc) device = argv[++i];
        else if (!strcmp(argv[i], "--top") && i + 1 < argc && cli_int(argv[i + 1], 1, 1000, &top)) i++;
        else if (argv[i][0] == '-') {
            fprintf(stderr, "%s", classify_usage);
            return 2;
        } else {
            first_image = i;
            break;
        }
    }
    if (!path || first_image >= argc) {
        fprintf(stderr, "%s", classify_usage);
        return 2;
    }
    smoe_context *ctx = cli_open(device);
    smoe_model *model = ctx ? load_vit(ctx, path) : NULL;
    if (!model || cli_keep_apply(ctx, model, &keep, &kept, &experts)) {
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
    int n = argc - first_image, rc = 0;
    size_t per = (size_t)c.image_size * c.image_size;
    float *images = malloc(per * n * 4), *logits = malloc((size_t)n * c.num_classes * 4);
    smoe_err err;
    for (int i = 0; i < n && images; i++)
        if (smoe_image_load_gray(argv[first_image + i], c.image_size, c.image_size, images + per * i, &err)) {
            fprintf(stderr, "softmoe classify: %s\n", err.msg);
            rc = 1;
        }
    smoe_status st = SMOE_OK;
    if (!rc && images && logits) st = smoe_vit_infer(model, n, images, logits);
    if (st) rc = cli_fail(ctx, st, "classifying");
    for (int i = 0; i < n && !rc; i++) {
        float *l = logits + (size_t)i * c.num_classes;
        double mx = l[0], sum = 0;
        for (int k = 1; k < c.num_classes; k++)
            if (l[k] > mx) mx = l[k];
        for (int k = 0; k < c.num_classes; k++) sum += exp(l[k] - mx);
        printf("%s:", argv[first_image + i]);
        for (int t = 0; t < top && t < c.num_classes; t++) {
            int best = -1;
            for (int k = 0; k < c.num_classes; k++)
                if (!isnan(l[k]) && (best < 0 || l[k] > l[best])) best = k;
            if (best < 0) break;
            const char *name = c.num_classes == 10 ? smoe_fmnist_class_name(best) : NULL;
            char num[24];
            snprintf(num, sizeof num, "class %d", best);
            printf("%s %s %.1f%%", t ? "," : "", name ? name : num, 100 * exp(l[best] - mx) / sum);
            l[best] = NAN;
        }
        printf("\n");
    }
    free(images), free(logits);
    return cli_close(ctx, rc);
}
