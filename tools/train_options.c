/* The options of softmoe train: one table read by the command's option parser (cli.h), for the
 * flags and for the keys of a JSON config file alike. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train_options.h"

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

void train_help(FILE *f)
{
    fprintf(f,
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

static int parse_layers(const char *s, void *dst)
{
    smoe_vit_config *m = dst;
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

/* In (0, 1024]. */
static int parse_capacity(const char *s, void *dst)
{
    double f;
    if (!cli_float(s, &f) || !(f > 0 && f <= 1024)) return 0;
    *(float *)dst = (float)f;
    return 1;
}

static const char *const moe_kinds[] = {"soft", "tokens_choice", "experts_choice", NULL};
static const char *const mixings[] = {"soft", "uniform", "identity", NULL};

#define INT_OPT(n, field, l, h) {.name = n, .kind = CLI_INT, .dst = &(field), .lo = l, .hi = h}
#define FLOAT_OPT(n, field) {.name = n, .kind = CLI_FLOAT, .dst = &(field), .lo = 0, .hi = HUGE_VAL}
#define STRING_OPT(n, field) {.name = n, .kind = CLI_STRING, .dst = &(field)}

/* The table of every option but --config and --help, writing into o (n entries at most). */
static void option_table(train_opts *o, cli_opt *t, size_t n)
{
    smoe_vit_config *m = &o->model;
    const cli_opt all[] = {
        INT_OPT("epochs", o->epochs, 1, 100000), INT_OPT("batch", o->batch, 1, 65536),
        INT_OPT("eval-batch", o->eval_batch, 1, 65536), INT_OPT("checkpoint-every", o->checkpoint_every, 0, 1000000000),
        INT_OPT("train-limit", o->train_limit, 0, 1 << 30), INT_OPT("eval-limit", o->eval_limit, 0, 1 << 30),
        INT_OPT("dim", m->dim, 1, 16384), INT_OPT("depth", m->depth, 1, 64), INT_OPT("heads", m->heads, 1, 1024),
        INT_OPT("mlp-dim", m->mlp_dim, 1, 65536), INT_OPT("patch", m->patch_size, 1, 28),
        INT_OPT("experts", m->experts, 1, 65536), INT_OPT("slots", m->slots_per_expert, 1, 65536),
        INT_OPT("augment", o->augment, 0, 1), INT_OPT("top-k", m->top_k, 1, 2), INT_OPT("group-size", m->group_size, 0, 1 << 24),
        INT_OPT("expert-mlp-dim", m->expert_mlp_dim, 1, 65536),
        FLOAT_OPT("lr", o->opt.lr), FLOAT_OPT("min-lr", o->opt.min_lr), FLOAT_OPT("weight-decay", o->opt.weight_decay),
        FLOAT_OPT("clip", o->opt.clip_norm), FLOAT_OPT("scale-lr-mult", o->opt.scale_lr_mult),
        {.name = "warmup-epochs", .kind = CLI_DOUBLE, .dst = &o->warmup_epochs, .lo = 0, .hi = HUGE_VAL},
        {.name = "capacity-factor", .kind = CLI_CUSTOM, .dst = &m->capacity_factor, .parse = parse_capacity},
        {.name = "moe-kind", .kind = CLI_CHOICE, .dst = &m->moe_kind, .choices = moe_kinds},
        {.name = "dispatch", .kind = CLI_CHOICE, .dst = &m->dispatch, .choices = mixings},
        {.name = "combine", .kind = CLI_CHOICE, .dst = &m->combine, .choices = mixings},
        {.name = "seed", .kind = CLI_LONG, .dst = &o->seed, .lo = 0, .hi = (double)(1L << 40)},
        {.name = "moe-layers", .kind = CLI_CUSTOM, .dst = m, .parse = parse_layers},
        STRING_OPT("device", o->device), STRING_OPT("out", o->out), STRING_OPT("checkpoint", o->checkpoint),
        STRING_OPT("csv", o->csv), STRING_OPT("data", o->data_dir),
        {.name = "resume", .kind = CLI_FLAG, .dst = &o->resume}, {.name = "dense", .kind = CLI_FLAG, .dst = &o->dense},
        {0},
    };
    size_t count = sizeof all / sizeof all[0];
    memcpy(t, all, (count <= n ? count : n) * sizeof *t);
    t[n - 1] = (cli_opt){0};
}

#define TABLE_SIZE 48

/* A config value as the text a flag would give: numbers, strings, or a list for moe_layers. */
static void config_value(const cJSON *e, const char *name, char *val, size_t size)
{
    val[0] = 0;
    if (!strcmp(name, "moe-layers") && cJSON_IsArray(e)) {
        size_t used = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, e) used += (size_t)snprintf(val + used, size - used, "%s%d", used ? "," : "",
                                                          cJSON_IsNumber(x) ? x->valueint : -1);
    } else if (cJSON_IsNumber(e)) {
        snprintf(val, size, "%.17g", e->valuedouble);
    } else if (cJSON_IsString(e)) {
        snprintf(val, size, "%s", e->valuestring);
    } else if (cJSON_IsBool(e)) {
        snprintf(val, size, "%s", cJSON_IsTrue(e) ? "true" : "false");
    }
}

/* Line and column (from 1) of byte at in text. */
static void line_column(const char *text, const char *at, int *line, int *column)
{
    *line = 1, *column = 1;
    for (const char *c = text; c < at && *c; c++) {
        if (*c == '\n') ++*line, *column = 1;
        else ++*column;
    }
}

/* Config file: keys as the flags, with '_' or '-'. Its strings stay owned by o->config_tree,
 * freed when the command ends. 1, or 0 after saying why. */
static int read_config(train_opts *o, const cli_opt *table, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "softmoe train: cannot open %s\n", path);
        return 0;
    }
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    int longer = fgetc(f) != EOF;
    fclose(f);
    buf[n] = 0;
    if (longer) {
        fprintf(stderr, "softmoe train: %s is larger than %zu bytes; a config file is a small JSON object\n", path,
                sizeof buf - 1);
        return 0;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(buf, &end, 1), *e;
    if (!root) {
        int line, column;
        line_column(buf, end ? end : buf + n, &line, &column);
        fprintf(stderr, "softmoe train: %s:%d:%d: not valid JSON\n", path, line, column);
        return 0;
    }
    if (!cJSON_IsObject(root)) {
        fprintf(stderr, "softmoe train: %s is not a JSON object\n", path);
        cJSON_Delete(root);
        return 0;
    }
    int ok = 1;
    cJSON_ArrayForEach(e, root)
    {
        char name[64], val[1024];
        snprintf(name, sizeof name, "%s", e->string);
        for (char *c = name; *c; c++)
            if (*c == '_') *c = '-';
        config_value(e, name, val, sizeof val);
        /* a string is kept alive by the tree, which is not freed */
        int r = cli_set(table, name, cJSON_IsString(e) ? e->valuestring : val);
        if (r == CLI_UNKNOWN) {
            fprintf(stderr, "softmoe train: %s: unknown key \"%s\" (the keys are train's options without the dashes)\n",
                    path, e->string);
            ok = 0;
        } else if (r != CLI_OK) {
            if (r != CLI_REPORTED) fprintf(stderr, "softmoe train: %s: bad value for \"%s\"\n", path, e->string);
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

/* Settings that contradict each other: 1, or 0 after saying why. */
static int consistent(const train_opts *o)
{
    const smoe_vit_config *m = &o->model;
    if (m->moe_kind == SMOE_MOE_SOFT && (m->top_k || m->capacity_factor != 0 || m->group_size)) {
        fprintf(stderr, "softmoe train: --top-k, --capacity-factor and --group-size set the sparse routers: "
                        "give --moe-kind tokens_choice or experts_choice\n");
        return 0;
    }
    if (m->moe_kind == SMOE_MOE_EXPERTS_CHOICE && m->top_k) {
        fprintf(stderr, "softmoe train: --top-k is a setting of tokens_choice\n");
        return 0;
    }
    if (o->resume && !o->checkpoint) {
        fprintf(stderr, "softmoe train: --resume needs --checkpoint FILE\n");
        return 0;
    }
    return 1;
}

/* The arguments in order: -1 to go on, or the exit code. */
static int read_args(train_opts *o, const cli_opt *table, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strncmp(a, "--config=", 9)) {
            if (!read_config(o, table, a + 9)) return 2;
        } else if (!strcmp(a, "--config") && i + 1 < argc) {
            if (!read_config(o, table, argv[++i])) return 2;
        } else {
            int r = cli_option(table, argc, argv, &i);
            if (r == CLI_OK) continue;
            if (r == CLI_REPORTED) return 2;
            fprintf(stderr, "softmoe train: bad option \"%s\"%s\n", a, i + 1 < argc ? " or value" : "");
            train_help(stderr);
            return 2;
        }
    }
    return -1;
}

int train_parse(int argc, char **argv, train_opts *o)
{
    defaults(o);
    cli_opt table[TABLE_SIZE];
    option_table(o, table, TABLE_SIZE);
    int rc = read_args(o, table, argc, argv);
    if (rc >= 0) return rc;
    if (o->dense) o->model.moe_count = 0;
    return consistent(o) ? -1 : 2;
}

void train_opts_free(train_opts *o)
{
    cJSON_Delete(o->config_tree);
    o->config_tree = NULL;
}
