/* The expert-subset options of softmoe run, eval and classify: --keep-experts K (a count, or a
 * fraction of the experts: 1/8 or 0.125), --renormalize, --random-experts SEED. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* K as a count (digits only) or a fraction in (0, 1] ("a/b" or a decimal with a point). */
static int parse_keep(const char *s, cli_keep *k)
{
    char *end = NULL;
    if (strchr(s, '/')) {
        long num = strtol(s, &end, 10), den = 0;
        if (end == s || *end != '/') return 0;
        const char *d = end + 1;
        den = strtol(d, &end, 10);
        if (end == d || *end || num < 1 || den < 1 || num > den) return 0;
        k->fraction = (double)num / (double)den;
        return 1;
    }
    if (strpbrk(s, ".eE")) {
        double f = strtod(s, &end);
        if (end == s || *end || !(f > 0 && f <= 1)) return 0;
        k->fraction = f;
        return 1;
    }
    long v = 0;
    if (!cli_int(s, 0, 1 << 30, &v)) return 0;
    k->count = (int)v;
    return 1;
}

static int keep_option(const char *v, void *dst)
{
    cli_keep *k = dst;
    k->given = 1;
    k->count = 0;
    k->fraction = 0;
    if (parse_keep(v, k)) return 1;
    fprintf(stderr, "softmoe: --keep-experts \"%s\": give a count (4) or a fraction of the experts (1/8, 0.125)\n", v);
    return -1;
}

static int random_option(const char *v, void *dst)
{
    cli_keep *k = dst;
    char *end = NULL;
    unsigned long long seed = strtoull(v, &end, 10);
    if (!*v || *end || *v == '-') {
        fprintf(stderr, "softmoe: --random-experts \"%s\": the seed is a whole number\n", v);
        return -1;
    }
    k->random = 1;
    k->seed = (uint64_t)seed;
    return 1;
}

void cli_keep_options(cli_keep *k, cli_opt table[4])
{
    table[0] = (cli_opt){.name = "renormalize", .kind = CLI_FLAG, .dst = &k->renormalize};
    table[1] = (cli_opt){.name = "keep-experts", .kind = CLI_CUSTOM, .dst = k, .parse = keep_option};
    table[2] = (cli_opt){.name = "random-experts", .kind = CLI_CUSTOM, .dst = k, .parse = random_option};
    table[3] = (cli_opt){0};
}

int cli_keep_apply(smoe_context *ctx, smoe_model *model, const cli_keep *k, int *kept, int *experts)
{
    *kept = *experts = 0;
    if (!k->given) {
        if (k->renormalize || k->random) {
            fprintf(stderr, "softmoe: --renormalize and --random-experts need --keep-experts K\n");
            return 1;
        }
        return 0;
    }
    int n = 0;
    smoe_layer_shape ls;
    smoe_vit_config c;
    if (smoe_model_get_kind(model) == SMOE_MODEL_LAYER && smoe_layer_get_shape(model, &ls) == SMOE_OK) n = ls.n;
    else if (smoe_vit_get_config(model, &c) == SMOE_OK && c.moe_count) n = c.experts;
    /* a fraction of the experts, rounded, at least 1 */
    int count = k->fraction > 0 ? (int)lround(k->fraction * n) : k->count;
    if (k->fraction > 0 && count < 1) count = 1;
    smoe_status st = k->random ? smoe_model_set_random_experts(model, count, k->renormalize, k->seed)
                               : smoe_model_set_keep_experts(model, count, k->renormalize);
    if (st) return cli_fail(ctx, st, "--keep-experts");
    *kept = count > 0 && count < n ? count : n;
    *experts = n;
    return 0;
}

void cli_keep_describe(const cli_keep *k, int kept, int experts, char *buf, size_t size)
{
    if (!k->given || kept >= experts) snprintf(buf, size, "all %d experts", experts);
    else if (k->random)
        snprintf(buf, size, "%d random of %d experts (seed %llu)%s", kept, experts, (unsigned long long)k->seed,
                 k->renormalize ? ", renormalized" : "");
    else snprintf(buf, size, "the top %d of %d experts%s", kept, experts, k->renormalize ? ", renormalized" : "");
}
