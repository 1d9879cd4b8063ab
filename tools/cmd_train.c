/* softmoe train: a Soft MoE, sparse MoE (Tokens or Experts Choice) or dense ViT on Fashion-MNIST,
 * with a progress bar, evaluation each epoch, atomic checkpoints, exact resume, and a CSV of the
 * curves. The options are tools/train_options.c. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train_options.h"

/* The running sums of the epoch in progress, kept in a checkpoint written mid-epoch (the model's
 * user metadata) so that a resumed run reports that epoch as an uninterrupted one does. */
#define SUMS_KEY "softmoe-train.epoch_sums"
#define SUMS_FORMAT "step=%ld loss_sum=%.17g correct=%ld count=%ld"
#define SUMS_SCAN "step=%ld loss_sum=%lf correct=%ld count=%ld"

static const char csv_header[] =
    "epoch,step,lr,train_loss,train_accuracy,test_loss,test_accuracy,seconds,images_per_second\n";

typedef struct trainer {
    train_opts *o;
    smoe_context *ctx;
    smoe_model *model;
    smoe_dataset train, test;
    int n_train, n_eval, steps_per_epoch, epoch, resumed;
    long step, total, done_this_run; /* steps: of the run, of all epochs, since this process started */
    double run_loss, t0;             /* the epoch's running sums */
    long run_correct, run_count;
    float *images, *logits;
    int32_t *labels;
    int *order;
    FILE *csv;
} trainer;

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

static int argmax10(const float *l)
{
    int best = 0;
    for (int k = 1; k < 10; k++)
        if (l[k] > l[best]) best = k;
    return best;
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
            int best = argmax10(l);
            double mx = l[best], sum = 0;
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

/* Both splits, and the steps they make: -1 to go on, or the exit code after saying why. */
static int load_data(trainer *t)
{
    train_opts *o = t->o;
    if (smoe_fmnist_read(t->ctx, o->data_dir, 1, &t->train) || smoe_fmnist_read(t->ctx, o->data_dir, 0, &t->test)) {
        fprintf(stderr, "softmoe train: %s\n", smoe_last_error(t->ctx));
        return 1;
    }
    t->n_train = o->train_limit && o->train_limit < t->train.count ? o->train_limit : t->train.count;
    t->n_eval = o->eval_limit && o->eval_limit < t->test.count ? o->eval_limit : t->test.count;
    t->steps_per_epoch = t->n_train / o->batch;
    if (t->steps_per_epoch < 1) {
        fprintf(stderr, "softmoe train: %d training images are fewer than one batch of %d\n", t->n_train, o->batch);
        return 2;
    }
    o->opt.total_steps = t->steps_per_epoch * o->epochs;
    o->opt.warmup_steps = (int)(o->warmup_epochs * t->steps_per_epoch);
    t->total = (long)t->steps_per_epoch * o->epochs;
    return -1;
}

/* The MoE blocks in words: "16 experts x 2 slots", "8 experts, top-2, capacity factor 1, ...". */
static void describe_moe(const smoe_vit_config *m, char *moe, size_t size)
{
    const char *mix_names[3] = {"soft", "uniform", "identity"};
    char hidden[32] = "", mixing[64] = "";
    if (m->expert_mlp_dim != m->mlp_dim) snprintf(hidden, sizeof hidden, " (mlp %d)", m->expert_mlp_dim);
    if (m->dispatch || m->combine)
        snprintf(mixing, sizeof mixing, ", %s dispatch, %s combine", mix_names[m->dispatch % 3], mix_names[m->combine % 3]);
    if (m->moe_kind == SMOE_MOE_SOFT) {
        snprintf(moe, size, "%d experts%s x %d slots%s", m->experts, hidden, m->slots_per_expert, mixing);
        return;
    }
    int tokens = (m->image_size / m->patch_size) * (m->image_size / m->patch_size);
    char top[16] = "";
    if (m->moe_kind == SMOE_MOE_TOKENS_CHOICE) snprintf(top, sizeof top, ", top-%d", m->top_k);
    snprintf(moe, size, "%d experts%s%s, capacity factor %g, groups of %d tokens", m->experts, hidden, top,
             (double)m->capacity_factor, m->group_size ? m->group_size : tokens);
}

/* The line that says what is trained where. */
static void describe(const trainer *t)
{
    const train_opts *o = t->o;
    const smoe_vit_config *m = &o->model;
    smoe_device_info dev;
    smoe_context_device(t->ctx, &dev, NULL);
    long nparams = 0;
    for (int i = 0; i < smoe_model_param_count(t->model); i++) {
        smoe_param_info pi;
        smoe_model_param_info(t->model, i, &pi);
        nparams += (long)pi.count;
    }
    const char *kind_names[3] = {"Soft MoE", "Tokens Choice", "Experts Choice"};
    char moe[160];
    describe_moe(m, moe, sizeof moe);
    const char *kind = m->moe_kind >= 0 && m->moe_kind < 3 ? kind_names[m->moe_kind] : "?";
    fprintf(stderr, "softmoe train: %s ViT dim %d depth %d heads %d mlp %d, %d %s blocks (%s), "
                    "%.2fM parameters, on %s; %d epochs of %d steps, batch %d%s\n",
            m->moe_count ? kind : "dense", m->dim, m->depth, m->heads, m->mlp_dim, m->moe_count, kind, moe, nparams / 1e6,
            dev.name, o->epochs, t->steps_per_epoch, o->batch, t->resumed ? ", resumed" : "");
}

/* A new model, or the checkpoint's with the sums of its unfinished epoch: 0, or 1 after saying why. */
static int open_model(trainer *t)
{
    train_opts *o = t->o;
    t->resumed = o->resume && file_exists(o->checkpoint);
    smoe_status st = t->resumed ? smoe_model_load_file(t->ctx, o->checkpoint, &t->model)
                                : smoe_vit_create(t->ctx, &o->model, (uint64_t)o->seed, &t->model);
    if (st) return cli_fail(t->ctx, st, t->resumed ? "loading the checkpoint" : "creating the model");
    smoe_vit_get_config(t->model, &o->model);
    t->step = smoe_model_train_step_count(t->model);
    t->epoch = (int)(t->step / t->steps_per_epoch);
    const char *sums = NULL;
    long at = -1, correct = 0, count = 0;
    double loss = 0;
    /* sums from another batch size or limit (a count that does not fit the step) are not used */
    if (!smoe_model_get_metadata(t->model, SUMS_KEY, &sums) && sums &&
        sscanf(sums, SUMS_SCAN, &at, &loss, &correct, &count) == 4 && at == t->step &&
        count == t->step % t->steps_per_epoch)
        t->run_loss = loss, t->run_correct = correct, t->run_count = count;
    return 0;
}

/* The text of a file, or NULL. */
static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t size = 0, cap = 4096, n;
    char *buf = malloc(cap);
    while (buf && (n = fread(buf + size, 1, cap - 1 - size, f)) > 0) {
        size += n;
        char *bigger = size + 1 == cap ? realloc(buf, cap *= 2) : buf;
        if (!bigger) free(buf);
        buf = bigger;
    }
    fclose(f);
    if (buf) buf[size] = 0;
    return buf;
}

/* Writes the header, then on a resumed run the rows of the epochs the checkpoint completed: a
 * row written after the last checkpoint (the run stopped between the two) and a header an
 * interrupted run never flushed would otherwise leave the file unlike an uninterrupted run's. The
 * old rows are rewritten through a temporary file and a rename: no row is lost to a crash. */
static FILE *open_csv(const char *path, int resumed, int done_epochs)
{
    char *old = resumed ? read_text(path) : NULL, tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(old ? tmp : path, "w");
    int ok = f && fputs(csv_header, f) >= 0;
    for (char *line = old, *next; ok && line && *line; line = next) {
        next = line + strcspn(line, "\n");
        if (*next) *next++ = 0;
        char *end;
        long e = strtol(line, &end, 10);
        if (end != line && *end == ',' && e >= 1 && e <= done_epochs) ok = fprintf(f, "%s\n", line) > 0;
    }
    ok = ok && !fflush(f) && (!old || !rename(tmp, path));
    free(old);
    if (!ok) {
        fprintf(stderr, "softmoe train: cannot write %s\n", path);
        if (f) fclose(f);
        return NULL;
    }
    return f;
}

/* A checkpoint with the optimizer's state; mid-epoch with the epoch's sums. 0, or 1 after saying why. */
static int save_checkpoint(trainer *t, int mid_epoch)
{
    char sums[200];
    snprintf(sums, sizeof sums, SUMS_FORMAT, t->step, t->run_loss, t->run_correct, t->run_count);
    smoe_status st = smoe_model_set_metadata(t->model, SUMS_KEY, mid_epoch ? sums : NULL);
    if (!st) st = smoe_model_save(t->model, t->o->checkpoint, 1);
    return st ? cli_fail(t->ctx, st, "writing the checkpoint") : 0;
}

static void progress(const trainer *t, int s)
{
    double el = cli_now() - t->t0, ips = t->done_this_run * t->o->batch / (el > 0 ? el : 1);
    char eta[32];
    cli_duration((t->total - t->step) * t->o->batch / (ips > 0 ? ips : 1), eta, sizeof eta);
    int width = 24, fill = (int)(width * (s + 1) / t->steps_per_epoch);
    fprintf(stderr, "\repoch %d/%d [%.*s%*s] %ld/%ld loss %.4f acc %.3f %.0f img/s, %s left   ", t->epoch + 1,
            t->o->epochs, fill, "########################", width - fill, "", t->step, t->total,
            t->run_loss / t->run_count, (double)t->run_correct / (t->run_count * t->o->batch), ips, eta);
}

/* Step s of the epoch: 0, or 1 after saying why training stops. */
static int train_step(trainer *t, int s)
{
    train_opts *o = t->o;
    smoe_dataset_batch(&t->train, t->order + (size_t)s * o->batch, o->batch, t->images, t->labels);
    if (o->augment) augment(t->images, o->batch, t->train.height, t->train.width, o->seed, t->step);
    float loss;
    smoe_status st = smoe_vit_train_step(t->model, &o->opt, o->batch, t->images, t->labels, &loss, t->logits);
    if (st) return cli_fail(t->ctx, st, "training step");
    if (!isfinite(loss)) {
        fprintf(stderr, "\nsoftmoe train: the loss became %f at step %ld; stopping (the last checkpoint is kept)\n", loss,
                t->step + 1);
        return 1;
    }
    t->step++;
    t->done_this_run++;
    t->run_loss += loss;
    t->run_count++;
    for (int i = 0; i < o->batch; i++) t->run_correct += argmax10(t->logits + i * 10) == t->labels[i];
    progress(t, s);
    if (o->checkpoint && o->checkpoint_every && t->step % o->checkpoint_every == 0 && s + 1 < t->steps_per_epoch)
        return save_checkpoint(t, 1);
    return 0;
}

/* The epoch's evaluation, its line and CSV row, and its checkpoint: 0, or 1 after saying why. */
static int end_epoch(trainer *t)
{
    train_opts *o = t->o;
    double seconds = cli_now() - t->t0, acc, tloss;
    if (evaluate(t->ctx, t->model, &t->test, t->n_eval, o->eval_batch, &acc, &tloss)) return 1;
    long count = t->run_count ? t->run_count : 1;
    double train_loss = t->run_loss / count, train_acc = (double)t->run_correct / (count * o->batch);
    double ips = t->done_this_run * o->batch / (seconds > 0 ? seconds : 1);
    fprintf(stderr, "\repoch %d/%d: train loss %.4f acc %.4f | test loss %.4f acc %.4f | %.0f img/s%30s\n", t->epoch + 1,
            o->epochs, train_loss, train_acc, tloss, acc, ips, "");
    if (t->csv) {
        fprintf(t->csv, "%d,%ld,%.6g,%.6f,%.6f,%.6f,%.6f,%.1f,%.1f\n", t->epoch + 1, t->step, smoe_train_lr(&o->opt, t->step),
                train_loss, train_acc, tloss, acc, seconds, ips);
        fflush(t->csv);
    }
    t->run_loss = 0, t->run_correct = 0, t->run_count = 0;
    return o->checkpoint ? save_checkpoint(t, 0) : 0;
}

/* Every remaining step of every epoch: 0, or 1 after saying why training stopped. */
static int train_all(trainer *t)
{
    int rc = 0;
    while (t->step < t->total && !rc) {
        int in_epoch = (int)(t->step % t->steps_per_epoch);
        if (in_epoch == 0 || t->done_this_run == 0) epoch_order(t->order, t->n_train, t->o->seed, t->epoch);
        for (int s = in_epoch; s < t->steps_per_epoch && !rc; s++) rc = train_step(t, s);
        if (!rc) rc = end_epoch(t);
        t->epoch++;
    }
    return rc;
}

/* Buffers and the CSV, then training and the model: 0, or 1 after saying why. */
static int run(trainer *t)
{
    train_opts *o = t->o;
    size_t per = (size_t)t->train.height * t->train.width;
    t->images = malloc(per * o->batch * 4), t->logits = malloc((size_t)o->batch * 10 * 4);
    t->labels = malloc((size_t)o->batch * 4);
    t->order = malloc((size_t)t->train.count * sizeof *t->order);
    if (!t->images || !t->logits || !t->labels || !t->order) {
        fprintf(stderr, "softmoe train: out of host memory\n");
        return 1;
    }
    if (o->csv) t->csv = open_csv(o->csv, t->resumed && file_exists(o->csv), t->epoch);
    t->t0 = cli_now();
    int rc = train_all(t);
    smoe_status st = SMOE_OK;
    if (!rc && ((st = smoe_model_set_metadata(t->model, SUMS_KEY, NULL)) || (st = smoe_model_save(t->model, o->out, 0))))
        rc = cli_fail(t->ctx, st, "writing the model");
    if (!rc) fprintf(stderr, "softmoe train: wrote %s (%ld steps, %.0f s)\n", o->out, t->step, cli_now() - t->t0);
    return rc;
}

/* The output paths, before any data is read or step taken: -1, or 2 after saying why. */
static int check_outputs(const train_opts *o)
{
    const char *name[3] = {"out", "checkpoint", "csv"}, *path[3] = {o->out, o->checkpoint, o->csv};
    for (int i = 0; i < 3; i++) {
        if (path[i] && cli_check_output("train", name[i], path[i])) return 2;
        for (int j = 0; j < i; j++)
            if (path[i] && cli_check_distinct("train", name[i], path[i], name[j], path[j])) return 2;
    }
    return -1;
}

int cmd_train(int argc, char **argv)
{
    train_opts o;
    int rc = train_parse(argc, argv, &o);
    trainer t = {.o = &o};
    if (rc < 0) rc = check_outputs(&o);
    if (rc < 0 && !(t.ctx = cli_context())) rc = 1;
    if (rc < 0) rc = load_data(&t);
    if (rc < 0 && cli_open_device(t.ctx, o.device)) {
        t.ctx = NULL;
        rc = 1;
    }
    if (rc < 0 && (rc = open_model(&t)) == 0) {
        describe(&t);
        rc = run(&t);
    }
    if (t.csv) fclose(t.csv);
    free(t.images), free(t.logits), free(t.labels), free(t.order);
    smoe_dataset_free(&t.train);
    smoe_dataset_free(&t.test);
    train_opts_free(&o);
    if (t.model || rc == 0) return cli_close(t.ctx, rc);
    smoe_context_destroy(t.ctx);
    return rc;
}
