/* classify: the most likely classes of images under a Soft MoE ViT classifier, written against
 * softmoe's public API only (softmoe.h), as an application embedding the library would be.
 *
 *   classify [--model FILE] [--device D] [--top K] IMAGE...
 *
 * FILE defaults to models/fmnist-softmoe.safetensors (the shipped Fashion-MNIST model); D is
 * cpu, vulkan or vulkan:N (default: the library's choice); IMAGE is a PNG, JPEG or binary PGM.
 * For each image it prints "IMAGE: Class p%, Class p%, ..." (K classes, most likely first), the
 * same line as `softmoe classify`. Build: see examples/Makefile (pkg-config) or
 * examples/CMakeLists.txt (find_package) against an installed softmoe. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <softmoe.h>

static int fail(smoe_context *ctx, smoe_status st, const char *what)
{
    fprintf(stderr, "classify: %s: %s (%s)\n", what, smoe_last_error(ctx), smoe_status_string(st));
    return 1;
}

int main(int argc, char **argv)
{
    const char *model_path = "models/fmnist-softmoe.safetensors", *device = NULL;
    int top = 3, first = 1;
    for (; first < argc && argv[first][0] == '-'; first++) {
        if (!strcmp(argv[first], "--model") && first + 1 < argc) model_path = argv[++first];
        else if (!strcmp(argv[first], "--device") && first + 1 < argc) device = argv[++first];
        else if (!strcmp(argv[first], "--top") && first + 1 < argc) top = atoi(argv[++first]);
        else break;
    }
    if (first >= argc || argv[first][0] == '-' || top < 1) {
        fprintf(stderr, "usage: classify [--model FILE] [--device cpu|vulkan|vulkan:N] [--top K] IMAGE...\n");
        return 2;
    }
    if (smoe_version() != SMOE_VERSION)
        fprintf(stderr, "classify: built with softmoe %d, running with %d\n", SMOE_VERSION, smoe_version());

    smoe_context *ctx = NULL;
    smoe_status st = smoe_context_create(&ctx);
    if (st) return fail(NULL, st, "creating a context");
    int rc = 0;
    smoe_model *model = NULL;
    smoe_vit_config cfg;
    float *images = NULL, *logits = NULL;
    int n = argc - first;
    if ((st = smoe_context_open_device(ctx, device))) {
        rc = fail(ctx, st, "opening the device");
    } else if ((st = smoe_model_load_file(ctx, model_path, &model))) {
        rc = fail(ctx, st, "loading the model");
    } else if (smoe_vit_get_config(model, &cfg) || cfg.channels != 1) {
        fprintf(stderr, "classify: %s is not a one-channel ViT classifier\n", model_path);
        rc = 1;
    }
    size_t per = rc ? 0 : (size_t)cfg.image_size * (size_t)cfg.image_size;
    if (!rc) {
        images = malloc(per * (size_t)n * sizeof *images);
        logits = malloc((size_t)n * (size_t)cfg.num_classes * sizeof *logits);
        if (!images || !logits) {
            fprintf(stderr, "classify: out of memory\n");
            rc = 1;
        }
    }
    for (int i = 0; i < n && !rc; i++)
        if ((st = smoe_image_read_gray(ctx, argv[first + i], cfg.image_size, cfg.image_size, images + per * (size_t)i)))
            rc = fail(ctx, st, "reading an image");
    if (!rc && (st = smoe_vit_infer(model, n, images, logits))) rc = fail(ctx, st, "classifying");
    for (int i = 0; i < n && !rc; i++) {
        float *l = logits + (size_t)i * (size_t)cfg.num_classes;
        double mx = l[0], sum = 0;
        for (int k = 1; k < cfg.num_classes; k++)
            if (l[k] > mx) mx = l[k];
        for (int k = 0; k < cfg.num_classes; k++) sum += exp(l[k] - mx);
        printf("%s:", argv[first + i]);
        for (int t = 0; t < top && t < cfg.num_classes; t++) {
            int best = -1;
            for (int k = 0; k < cfg.num_classes; k++)
                if (!isnan(l[k]) && (best < 0 || l[k] > l[best])) best = k;
            if (best < 0) break;
            char name[32];
            if (cfg.num_classes == 10) snprintf(name, sizeof name, "%s", smoe_fmnist_class_name(best));
            else snprintf(name, sizeof name, "class %d", best);
            printf("%s %s %.1f%%", t ? "," : "", name, 100 * exp(l[best] - mx) / sum);
            l[best] = NAN;
        }
        printf("\n");
    }
    free(images);
    free(logits);
    smoe_context_destroy(ctx); /* frees the model too */
    return rc;
}
