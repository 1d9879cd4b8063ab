/* softmoe train: a Soft MoE, sparse MoE (Tokens or Experts Choice) or dense ViT on Fashion-MNIST, with a progress bar, evaluation each
 * epoch, atomic checkpoints, exact resume, and a CSV of the curves. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "fashion_mnist.h"

typedef struct train_opts {
    const char *device, *out, *checkpoint, *csv, *data_dir;
    int resume, epochs, batch, eval_batch, checkpoint_every, train_limit, eval_limit, augment;
    long seed;
    smoe_vit_config model;
    smoe_train_config opt;
    double warmup_epochs;
    cJSON *config_tree; /* owns the strings a config file set */
} train_opts;

static void defaults(train_opts *o)
{
    memset(o, 0, sizeof *o);
    o->out = "model.safetensors";
    o->epochs = 10;
    o->batch = 128;
    o->eval_batch = 250;
    o->seed = 1;
    o->warmup_epochs = 1;
    o->augment = 1;
    smoe_vit_config *m = &o->model;
    *m = (smoe_vit_config){.image_size = 28, .patch_size = 4, .channels = 1, .dim = 64, .depth = 4, .heads = 4,
                           .mlp_dim = 128, .experts = 16, .slots_per_expert = 2, .num_classes = 10};
    m->moe_layers[0] = 2, m->moe_layers[1] = 3, m->moe_count = 2;
    smoe_train_config_default(&o->opt);
    o->opt.lr = 2e-3f;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: softmoe train [--config FILE.json] [options]\n"
            "  --device D            cpu, vulkan, vulkan:N (default: best GPU, else cpu)\n"
            "  --out FILE            the trained model (default model.safetensors)\n"
            "  --checkpoint FILE     checkpoint written atomically every epoch (and --checkpoint-every steps)\n"
            "  --resume              continue from --checkpoint exactly where it stopped\n"
            "  --csv FILE            curves: epoch, step, lr, train loss/accuracy, test loss/accuracy, seconds\n"
            "  --epochs N --batch N --lr X --min-lr X --warmup-epochs X --weight-decay X --clip X --seed N\n"
            "  --scale-lr-mult X     learning-rate multiplier of the Soft MoE logit scales (default 1)\n"
            "  --dim N --depth N --heads N --mlp-dim N --patch N --experts N --slots N\n"
            "  --expert-mlp-dim N    hidden size of every MoE expert (default: --mlp-dim)\n"
            "  --moe-layers i,j,..   MoE blocks ('' or --dense: a dense ViT)\n"
            "  --moe-kind K          soft (default), tokens_choice or experts_choice (the sparse routers)\n"
            "  --dispatch W --combine W   Soft MoE's dispatch and combine weights: soft (default), uniform or\n"
            "                        identity (both sides; experts x slots = tokens): the routing ablation\n"
            "  --top-k N             tokens_choice: experts per token, 1 (default) or 2\n"
            "  --capacity-factor X   sparse routers: expert capacity factor c (default 1)\n"
            "  --group-size N        sparse routers: tokens per routing group (default: one image)\n"
            "  --train-limit N --eval-limit N   use only the first N images (quick runs)\n"
            "  --augment 0|1         random horizontal flips and shifts of up to 2 pixels (default 1)\n"
            "  --data DIR            Fashion-MNIST directory (default /usr/share/datasets/fashion-mnist)\n"
            "A JSON config file takes the same names without dashes (\"dim\": 64, \"moe_layers\": [2, 3], ...);\n"
            "flags after it override it.\n");
}

static int parse_layers(const char *s, smoe_vit_config *m)
{
    m->moe_count = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v >= 64 || m->moe_count >= 64) return 0;
        m->moe_layers[m->moe_count++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return 0;
    }
    return 1;
}

/* One option name and its value (from a flag or a config file key). */
static int set_option(train_opts *o, const char *name, const char *val)
{
    long i;
    double f;
    struct { const char *name; int *dst; long lo, hi; } ints[] = {
        {"epochs", &o->epochs, 1, 100000},          {"batch", &o->batch, 1, 65536},
        {"eval-batch", &o->eval_batch, 1, 65536},   {"checkpoint-every", &o->checkpoint_every, 0, 1000000000},
        {"train-limit", &o->train_limit, 0, 1 << 30}, {"eval-limit", &o->eval_limit, 0, 1 << 30},
        {"dim", &o->model.dim, 1, 16384},           {"depth", &o->model.depth, 1, 64},
        {"heads", &o->model.heads, 1, 1024},        {"mlp-dim", &o->model.mlp_dim, 1, 65536},
        {"patch", &o->model.patch_size, 1, 28},     {"experts", &o->model.experts, 1, 65536},
        {"slots", &o->model.slots_per_expert, 1, 65536}, {"augment", &o->augment, 0, 1},
        {"top-k", &o->model.top_k, 1, 2}, {"group-size", &o->model.group_size, 0, 1 << 24},
        {"expert-mlp-dim", &o->model.expert_mlp_dim, 1, 65536},
    };
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++)
        if (!strcmp(name, ints[k].name)) {
            if (!cli_int(val, ints[k].lo, ints[k].hi, &i)) return 0;
            *ints[k].dst = (int)i;
            return 1;
        }
    struct { const char *name; float *dst; } floats[] = {
        {"lr", &o->opt.lr}, {"min-lr", &o->opt.min_lr}, {"weight-decay", &o->opt.weight_decay}, {"clip", &o->opt.clip_norm},
        {"scale-lr-mult", &o->opt.scale_lr_mult},
    };
    for (size_t k = 0; k < sizeof floats / sizeof floats[0]; k++)
        if (!strcmp(name, floats[k].name)) {
            if (!cli_float(val, &f) || f < 0) return 0;
            *floats[k].dst = (float)f;
            return 1;
        }
    if (!strcmp(name, "warmup-epochs")) return cli_float(val, &o->warmup_epochs) && o->warmup_epochs >= 0;
    if (!strcmp(name, "capacity-factor")) {
        if (!cli_float(val, &f) || !(f > 0 && f <= 1024)) return 0;
        o->model.capacity_factor = (float)f;
        return 1;
    }
    if (!strcmp(name, "moe-kind")) {
        const char *kinds[3] = {"soft", "tokens_choice", "experts_choice"};
        for (int k = 0; k < 3; k++)
            if (!strcmp(val, kinds[k])) {
                o->model.moe_kind = k;
                return 1;
            }
        return 0;
    }
    if (!strcmp(name, "dispatch") || !strcmp(name, "combine")) {
        const char *kinds[3] = {"soft", "uniform", "identity"};
        int *side = !strcmp(name, "dispatch") ? &o->model.dispatch : &o->model.combine;
        for (int k = 0; k < 3; k++)
            if (!strcmp(val, kinds[k])) {
                *side = k;
                return 1;
            }
        return 0;
    }
    if (!strcmp(name, "seed")) return cli_int(val, 0, 1L << 40, &o->seed);
    if (!strcmp(name, "moe-layers")) return parse_layers(val, &o->model);
    const char **strs[] = {&o->device, &o->out, &o->checkpoint, &o->csv, &o->data_dir};
    const char *snames[] = {"device", "out", "checkpoint", "csv", "data"};
    for (size_t k = 0; k < 5; k++)
        if (!strcmp(name, snames[k])) {
            *strs[k] = val;
            return 1;
        }
    return 0;
}

/* Config file: keys as the flags, with '_' or '-'; numbers, strings, or a list for moe_layers.
 * Its strings stay owned by o->config_tree, freed when the command ends. */
static int read_config(train_opts *o, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "softmoe train: cannot open %s\n", path);
        return 0;
    }
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *root = cJSON_Parse(buf);
    if (!cJSON_IsObject(root)) {
        fprintf(stderr, "softmoe train: %s is not a JSON object\n", path);
        cJSON_Delete(root);
        return 0;
    }
    cJSON *e;
    int ok = 1;
    cJSON_ArrayForEach(e, root)
    {
        char name[64], val[1024];
        snprintf(name, sizeof name, "%s", e->string);
        for (char *c = name; *c; c++)
            if (*c == '_') *c = '-';
        if (!strcmp(name, "moe-layers") && cJSON_IsArray(e)) {
            size_t used = 0;
            val[0] = 0;
            cJSON *x;
            cJSON_ArrayForEach(x, e) used += (size_t)snprintf(val + used, sizeof val - used, "%s%d", used ? "," : "",
                                                              cJSON_IsNumber(x) ? x->valueint : -1);
        } else if (cJSON_IsNumber(e)) {
            snprintf(val, sizeof val, "%.17g", e->valuedouble);
        } else if (cJSON_IsString(e)) {
            snprintf(val, sizeof val, "%s", e->valuestring);
        } else {
            val[0] = 0;
        }
        const char *v = val;
        if (cJSON_IsString(e)) v = e->valuestring; /* kept alive: the tree is not freed */
        if (!set_option(o, name, v)) {
            fprintf(stderr, "softmoe train: %s: bad value for \"%s\"\n", path, e->string);
            ok = 0;
        }
    }
    if (!ok) cJSON_Delete(root);
    else {
        cJSON_Delete(o->config_tree);
        o->config_tree = root;
    }
    return ok;
}

/* The example order of an epoch: a permutation from (seed, epoch), so a resumed run sees the
 * same batches as an uninterrupted one. */
static void epoch_order(int *idx, int n, long seed, int epoch)
{
    uint64_t s = (uint64_t)seed * 0x9e3779b97f4a7c15ull + (uint64_t)epoch * 0xbf58476d1ce4e5b9ull + 1;
    for (int i = 0; i < n; i++) idx[i] = i;
    for (int i = n - 1; i > 0; i--) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        int j = (int)(s % (uint64_t)(i + 1));
        int t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

/* Random horizontal flip and a shift of up to 2 pixels (zero fill) per image, drawn from
 * (seed, step) so that a resumed run sees the same images. */
static void augment(float *images, int b, int h, int w, long seed, long step)
{
    uint64_t s = (uint64_t)seed * 0x2545f4914f6cdd1dull + (uint64_t)step * 0x9e3779b97f4a7c15ull + 7;
    float *tmp = malloc((size_t)h * w * sizeof *tmp);
    if (!tmp) return;
    for (int i = 0; i < b; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        int flip = (int)(s & 1), dx = (int)((s >> 8) % 5) - 2, dy = (int)((s >> 16) % 5) - 2;
        float *img = images + (size_t)i * h * w;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                int sy = y - dy, sx = x - dx;
                if (flip) sx = w - 1 - sx;
                tmp[y * w + x] = sy >= 0 && sy < h && sx >= 0 && sx < w ? img[sy * w + sx] : 0.0f;
            }
        memcpy(img, tmp, (size_t)h * w * sizeof *tmp);
    }
    free(tmp);
}

/* Accuracy and mean loss on the first n test images. */
static int evaluate(smoe_context *ctx, smoe_model *model, const smoe_dataset *test, int n, int batch, double *acc,
                    double *loss)
{
    int classes = 10;
    float *images = malloc((size_t)batch * test->height * test->width * 4), *logits = malloc((size_t)batch * classes * 4);
    int32_t *labels = malloc((size_t)batch * 4);
    int *idx = malloc((size_t)batch * sizeof *idx);
    long correct = 0;
    double total = 0;
    int rc = 0;
    for (int start = 0; start < n && images && logits && labels && idx; start += batch) {
        int b = n - start < batch ? n - start : batch;
        for (int i = 0; i < b; i++) idx[i] = start + i;
        smoe_dataset_batch(test, idx, b, images, labels);
        smoe_status st = smoe_vit_infer(model, b, images, logits);
        if (st) {
            rc = cli_fail(ctx, st, "evaluating");
            break;
        }
        for (int i = 0; i < b; i++) {
            const float *l = logits + (size_t)i * classes;
            int best = 0;
            double mx = l[0], sum = 0;
            for (int k = 1; k < classes; k++)
                if (l[k] > l[best]) best = k, mx = l[k];
            for (int k = 0; k < classes; k++) sum += exp(l[k] - mx);
            total += mx + log(sum) - l[labels[i]];
            correct += best == labels[i];
        }
    }
    *acc = n ? (double)correct / n : 0;
    *loss = n ? total / n : 0;
    free(images), free(logits), free(labels), free(idx);
    return rc;
}

static int file_exists(const char *p) { return p && access(p, F_OK) == 0; }

int cmd_train(int argc, char **argv)
{
    train_opts o;
    defaults(&o);
    int dense = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage();
            return 0;
        }
        if (!strcmp(a, "--resume")) o.resume = 1;
        else if (!strcmp(a, "--dense")) dense = 1;
        else if (!strcmp(a, "--config") && i + 1 < argc) {
            if (!read_config(&o, argv[++i])) return 2;
        } else if (!strncmp(a, "--", 2) && i + 1 < argc && set_option(&o, a + 2, argv[i + 1])) i++;
        else {
            fprintf(stderr, "softmoe train: bad option \"%s\"%s\n", a, i + 1 < argc ? " or value" : "");
            usage();
            cJSON_Delete(o.config_tree);
            return 2;
        }
    }
    if (dense) o.model.moe_count = 0;
    if (o.model.moe_kind == SMOE_MOE_SOFT && (o.model.top_k || o.model.capacity_factor != 0 || o.model.group_size)) {
        fprintf(stderr, "softmoe train: --top-k, --capacity-factor and --group-size set the sparse routers: "
                        "give --moe-kind tokens_choice or experts_choice\n");
        cJSON_Delete(o.config_tree);
        return 2;
    }
    if (o.model.moe_kind == SMOE_MOE_EXPERTS_CHOICE && o.model.top_k) {
        fprintf(stderr, "softmoe train: --top-k is a setting of tokens_choice\n");
        cJSON_Delete(o.config_tree);
        return 2;
    }
    if (o.resume && !o.checkpoint) {
        fprintf(stderr, "softmoe train: --resume needs --checkpoint FILE\n");
        return 2;
    }
    smoe_err err;
    smoe_dataset train = {0}, test = {0};
    if (smoe_fmnist_load(o.data_dir, 1, &train, &err) || smoe_fmnist_load(o.data_dir, 0, &test, &err)) {
        fprintf(stderr, "softmoe train: %s\n", err.msg);
        smoe_dataset_free(&train);
        return 1;
    }
    int n_train = o.train_limit && o.train_limit < train.count ? o.train_limit : train.count;
    int n_eval = o.eval_limit && o.eval_limit < test.count ? o.eval_limit : test.count;
    int steps_per_epoch = n_train / o.batch;
    if (steps_per_epoch < 1) {
        fprintf(stderr, "softmoe train: %d training images are fewer than one batch of %d\n", n_train, o.batch);
        return 2;
    }
    o.opt.total_steps = steps_per_epoch * o.epochs;
    o.opt.warmup_steps = (int)(o.warmup_epochs * steps_per_epoch);
    smoe_context *ctx = cli_open(o.device);
    if (!ctx) return 1;
    smoe_model *model = NULL;
    smoe_status st;
    int resumed = o.resume && file_exists(o.checkpoint);
    if (resumed) st = smoe_model_load_file(ctx, o.checkpoint, &model);
    else st = smoe_vit_create(ctx, &o.model, (uint64_t)o.seed, &model);
    if (st) {
        int rc = cli_fail(ctx, st, resumed ? "loading the checkpoint" : "creating the model");
        smoe_context_destroy(ctx);
        return rc;
    }
    smoe_device_info dev;
    smoe_context_device(ctx, &dev, NULL);
    smoe_vit_get_config(model, &o.model);
    long nparams = 0;
    for (int i = 0; i < smoe_model_param_count(model); i++) {
        smoe_param_info pi;
        smoe_model_param_info(model, i, &pi);
        nparams += (long)pi.count;
    }
    const char *kind_names[3] = {"Soft MoE", "Tokens Choice", "Experts Choice"};
    char moe[160];
    char hidden[32] = "";
    if (o.model.expert_mlp_dim != o.model.mlp_dim) snprintf(hidden, sizeof hidden, " (mlp %d)", o.model.expert_mlp_dim);
    const char *mix_names[3] = {"soft", "uniform", "identity"};
    char mixing[64] = "";
    if (o.model.dispatch || o.model.combine)
        snprintf(mixing, sizeof mixing, ", %s dispatch, %s combine", mix_names[o.model.dispatch % 3],
                 mix_names[o.model.combine % 3]);
    if (o.model.moe_kind == SMOE_MOE_SOFT)
        snprintf(moe, sizeof moe, "%d experts%s x %d slots%s", o.model.experts, hidden, o.model.slots_per_expert, mixing);
    else {
        int tokens = (o.model.image_size / o.model.patch_size) * (o.model.image_size / o.model.patch_size);
        char top[16] = "";
        if (o.model.moe_kind == SMOE_MOE_TOKENS_CHOICE) snprintf(top, sizeof top, ", top-%d", o.model.top_k);
        snprintf(moe, sizeof moe, "%d experts%s%s, capacity factor %g, groups of %d tokens", o.model.experts, hidden, top,
                 (double)o.model.capacity_factor, o.model.group_size ? o.model.group_size : tokens);
    }
    const char *kind = o.model.moe_kind >= 0 && o.model.moe_kind < 3 ? kind_names[o.model.moe_kind] : "?";
    fprintf(stderr, "softmoe train: %s ViT dim %d depth %d heads %d mlp %d, %d %s blocks (%s), "
                    "%.2fM parameters, on %s; %d epochs of %d steps, batch %d%s\n",
            o.model.moe_count ? kind : "dense", o.model.dim, o.model.depth, o.model.heads, o.model.mlp_dim, o.model.moe_count,
            kind, moe, nparams / 1e6, dev.name, o.epochs, steps_per_epoch, o.batch, resumed ? ", resumed" : "");
    FILE *csv = NULL;
    if (o.csv) {
        int fresh = !(resumed && file_exists(o.csv));
        csv = fopen(o.csv, fresh ? "w" : "a");
        if (!csv) fprintf(stderr, "softmoe train: cannot write %s\n", o.csv);
        else if (fresh) fprintf(csv, "epoch,step,lr,train_loss,train_accuracy,test_loss,test_accuracy,seconds,images_per_second\n");
    }
    size_t per = (size_t)train.height * train.width;
    float *images = malloc(per * o.batch * 4), *logits = malloc((size_t)o.batch * 10 * 4);
    int32_t *labels = malloc((size_t)o.batch * 4);
    int *order = malloc((size_t)train.count * sizeof *order);
    int rc = 0;
    double t0 = cli_now(), seconds = 0;
    long step = smoe_model_train_step_count(model);
    long total = (long)steps_per_epoch * o.epochs;
    int epoch = (int)(step / steps_per_epoch);
    double run_loss = 0;
    long run_correct = 0, run_count = 0, done_this_run = 0;
    while (step < total && !rc) {
        int in_epoch = (int)(step % steps_per_epoch);
        if (in_epoch == 0 || done_this_run == 0) epoch_order(order, n_train, o.seed, epoch);
        for (int s = in_epoch; s < steps_per_epoch && !rc; s++) {
            smoe_dataset_batch(&train, order + (size_t)s * o.batch, o.batch, images, labels);
            if (o.augment) augment(images, o.batch, train.height, train.width, o.seed, step);
            float loss;
            st = smoe_vit_train_step(model, &o.opt, o.batch, images, labels, &loss, logits);
            if (st) {
                rc = cli_fail(ctx, st, "training step");
                break;
            }
            if (!isfinite(loss)) {
                fprintf(stderr, "\nsoftmoe train: the loss became %f at step %ld; stopping (the last checkpoint is kept)\n",
                        loss, step + 1);
                rc = 1;
                break;
            }
            step++;
            done_this_run++;
            run_loss += loss;
            run_count++;
            for (int i = 0; i < o.batch; i++) {
                const float *l = logits + i * 10;
                int best = 0;
                for (int k = 1; k < 10; k++)
                    if (l[k] > l[best]) best = k;
                run_correct += best == labels[i];
            }
            double el = cli_now() - t0, ips = done_this_run * o.batch / (el > 0 ? el : 1);
            char eta[32];
            cli_duration((total - step) * o.batch / (ips > 0 ? ips : 1), eta, sizeof eta);
            int width = 24, fill = (int)(width * (s + 1) / steps_per_epoch);
            fprintf(stderr, "\repoch %d/%d [%.*s%*s] %ld/%ld loss %.4f acc %.3f %.0f img/s, %s left   ", epoch + 1, o.epochs,
                    fill, "########################", width - fill, "", step, total, run_loss / run_count,
                    (double)run_correct / (run_count * o.batch), ips, eta);
            if (o.checkpoint && o.checkpoint_every && step % o.checkpoint_every == 0 && s + 1 < steps_per_epoch &&
                (st = smoe_model_save(model, o.checkpoint, 1)))
                rc = cli_fail(ctx, st, "writing the checkpoint");
        }
        if (rc) break;
        seconds = cli_now() - t0;
        double acc, tloss;
        if ((rc = evaluate(ctx, model, &test, n_eval, o.eval_batch, &acc, &tloss))) break;
        double train_loss = run_loss / (run_count ? run_count : 1), train_acc = (double)run_correct / ((run_count ? run_count : 1) * o.batch);
        fprintf(stderr, "\repoch %d/%d: train loss %.4f acc %.4f | test loss %.4f acc %.4f | %.0f img/s%30s\n", epoch + 1,
                o.epochs, train_loss, train_acc, tloss, acc, done_this_run * o.batch / (seconds > 0 ? seconds : 1), "");
        if (csv) {
            fprintf(csv, "%d,%ld,%.6g,%.6f,%.6f,%.6f,%.6f,%.1f,%.1f\n", epoch + 1, step, smoe_train_lr(&o.opt, step), train_loss,
                    train_acc, tloss, acc, seconds, done_this_run * o.batch / (seconds > 0 ? seconds : 1));
            fflush(csv);
        }
        if (o.checkpoint && (st = smoe_model_save(model, o.checkpoint, 1))) rc = cli_fail(ctx, st, "writing the checkpoint");
        run_loss = 0, run_correct = 0, run_count = 0;
        epoch++;
    }
    if (!rc && (st = smoe_model_save(model, o.out, 0))) rc = cli_fail(ctx, st, "writing the model");
    if (!rc) fprintf(stderr, "softmoe train: wrote %s (%ld steps, %.0f s)\n", o.out, step, cli_now() - t0);
    if (csv) fclose(csv);
    free(images), free(logits), free(labels), free(order);
    smoe_dataset_free(&train);
    smoe_dataset_free(&test);
    cJSON_Delete(o.config_tree);
    return cli_close(ctx, rc);
}
