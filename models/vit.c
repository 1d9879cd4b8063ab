/* The Soft MoE ViT kind (docs/format.md): configuration, parameters by name, initialisation, and
 * its forward, backward and optimizer step written once as ops (host/ops/ops.h), run by the
 * model's executor (host/exec.h): on the CPU path at each call; on Vulkan recorded once per plan
 * (batch size) and mode into one command buffer that is replayed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "job.h"
#include "model_kinds.h"
#include "ops/expert_subset.h"

#define MAX_DEPTH 64

enum { MODE_INFER = 0, MODE_GRADS = 1, MODE_TRAIN = 2 };
enum { PLAN_INFER = 0, PLAN_TRAIN = 1 }; /* the executor's plans: the two vit_plan below */

/* Parameter indices of one block; moe is the first of the MoE layer's parameters (six for Soft
 * MoE, five for the sparse kinds), or -1. */
typedef struct vit_block_params {
    int norm1_w, norm1_b, qkv_w, qkv_b, proj_w, proj_b, norm2_w, norm2_b;
    int fc1_w, fc1_b, fc2_w, fc2_b; /* dense blocks */
    int moe;
} vit_block_params;

/* Activations of one block, kept for backward. x_out is the next block's input. */
typedef struct vit_block_act {
    smoe_tensor ln1, mean1, rstd1, qkv, att, attn_out, x_mid, ln2, mean2, rstd2, pre, x_out;
    smoe_layer_tensors moe;       /* Soft MoE blocks */
    smoe_sparse_tensors sparse;   /* Tokens / Experts Choice blocks */
} vit_block_act;

typedef struct vit_plan {
    int id; /* PLAN_INFER or PLAN_TRAIN */
    int batch, training;
    smoe_arena act;
    smoe_tensor images, labels, patches, x0, lnf, meanf, rstdf, pooled, logits, probs, losses, loss, dlogits;
    /* backward scratch, shared by all blocks */
    smoe_tensor g, tmp, dnorm, dao, dqkv, datt, dpre, dpooled, dlnf, partial, norm2, state;
    vit_block_act blk[MAX_DEPTH];
    smoe_tensor keep_state; /* expert-subset inference: the random draws' state */
} vit_plan;

typedef struct smoe_vit smoe_vit;
struct smoe_vit {
    smoe_vit_config cfg;
    int T, PC; /* tokens, patch length c*P*P */
    int patch_w, patch_b, pos, norm_w, norm_b, head_w, head_b;
    vit_block_params blk[MAX_DEPTH];
    int is_moe[MAX_DEPTH];
    smoe_layer_dims moe_dims;
    smoe_sparse_dims sparse_dims; /* b and layer are set per plan and block */
    vit_plan infer, train;
    smoe_adamw_cfg adamw; /* the optimizer settings of the training step being recorded */
};

static smoe_vit *vit_of(const smoe_model *m) { return m->impl; }

/* ---- Configuration ---- */

static const char *const moe_kind_names[3] = {"soft", "tokens_choice", "experts_choice"};

/* Zeroed fields appended to smoe_vit_config take their defaults. */
static void config_defaults(smoe_vit_config *c)
{
    if (c->expert_mlp_dim == 0) c->expert_mlp_dim = c->mlp_dim;
    if (c->moe_kind == SMOE_MOE_TOKENS_CHOICE && c->top_k == 0) c->top_k = 1;
    if ((c->moe_kind == SMOE_MOE_TOKENS_CHOICE || c->moe_kind == SMOE_MOE_EXPERTS_CHOICE) && c->capacity_factor == 0.0f)
        c->capacity_factor = 1.0f;
}

static smoe_status check_router(const smoe_vit_config *c, smoe_err *err)
{
    if (c->moe_kind < SMOE_MOE_SOFT || c->moe_kind > SMOE_MOE_EXPERTS_CHOICE)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT,
                         "config: moe_kind %d is none of soft (0), tokens_choice (1), experts_choice (2)", c->moe_kind);
    if (c->moe_kind != SMOE_MOE_SOFT && (c->dispatch != SMOE_MIX_SOFT || c->combine != SMOE_MIX_SOFT))
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT,
                         "config: dispatch and combine are settings of Soft MoE (moe_kind soft), not of the sparse routers");
    if (c->moe_kind == SMOE_MOE_SOFT) {
        if (c->top_k || c->capacity_factor != 0.0f || c->group_size)
            return smoe_fail(err, SMOE_ERROR_BAD_FORMAT,
                             "config: top_k, capacity_factor and group_size are settings of the sparse routers "
                             "(moe_kind tokens_choice or experts_choice), not of Soft MoE");
        return SMOE_OK;
    }
    if (c->moe_kind == SMOE_MOE_EXPERTS_CHOICE && c->top_k)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "config: top_k is a setting of tokens_choice, not of experts_choice");
    if (c->moe_kind == SMOE_MOE_TOKENS_CHOICE && (c->top_k < 1 || c->top_k > 2))
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "config: top_k is %d; it must be 1 or 2", c->top_k);
    if (c->moe_kind == SMOE_MOE_TOKENS_CHOICE && c->moe_count && c->top_k > c->experts)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "config: top_k %d exceeds the %d experts", c->top_k, c->experts);
    if (!(c->capacity_factor > 0.0f && c->capacity_factor <= 1024.0f))
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "config: capacity_factor %g must be above 0 and at most 1024",
                         (double)c->capacity_factor);
    if (c->group_size < 0 || c->group_size > (1 << 24))
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "config: group_size %d must be between 0 (one image) and %d tokens",
                         c->group_size, 1 << 24);
    return SMOE_OK;
}

/* Soft MoE's dispatch and combine weights (smoe_mixing); tokens per image, for identity. */
static smoe_status check_mixing(const smoe_vit_config *c, int tokens, smoe_err *err)
{
    const int sides[2] = {c->dispatch, c->combine};
    const char *names[2] = {"dispatch", "combine"};
    for (int i = 0; i < 2; i++)
        if (!smoe_mixing_name(sides[i]))
            return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "config: %s %d is none of soft (0), uniform (1), identity (2)",
                             names[i], sides[i]);
    if ((c->dispatch == SMOE_MIX_IDENTITY) != (c->combine == SMOE_MIX_IDENTITY))
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT,
                         "config: dispatch %s with combine %s: identity (token s to slot s and back) is set on both "
                         "sides or on neither",
                         smoe_mixing_name(c->dispatch), smoe_mixing_name(c->combine));
    if (c->dispatch == SMOE_MIX_IDENTITY && c->moe_count && (int64_t)c->experts * c->slots_per_expert != tokens)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT,
                         "config: identity dispatch and combine give each token its own slot, so experts * "
                         "slots_per_expert (%d * %d) must equal the %d tokens of an image ((image_size / patch_size)^2)",
                         c->experts, c->slots_per_expert, tokens);
    return SMOE_OK;
}

static smoe_status check_config(const smoe_vit_config *given, smoe_err *err)
{
    smoe_vit_config normal = *given;
    config_defaults(&normal);
    const smoe_vit_config *c = &normal;
    struct { const char *name; int v, lo, hi; } f[] = {
        {"image_size", c->image_size, 1, 4096}, {"patch_size", c->patch_size, 1, 4096},
        {"channels", c->channels, 1, 64},       {"dim", c->dim, 1, 16384},
        {"depth", c->depth, 1, MAX_DEPTH},      {"heads", c->heads, 1, 1024},
        {"mlp_dim", c->mlp_dim, 1, 65536},      {"num_classes", c->num_classes, 1, 1000000},
        {"expert_mlp_dim", c->expert_mlp_dim, 1, 65536},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].v < f[i].lo || f[i].v > f[i].hi)
            return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "config: %s is %d; it must be between %d and %d", f[i].name, f[i].v,
                             f[i].lo, f[i].hi);
    if (c->dim % c->heads)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "config: dim %d is not divisible by heads %d", c->dim, c->heads);
    if (c->image_size % c->patch_size)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "config: image_size %d is not divisible by patch_size %d",
                         c->image_size, c->patch_size);
    int tokens = (c->image_size / c->patch_size) * (c->image_size / c->patch_size);
    if (tokens > 65536) return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "config: %d tokens is too many (at most 65536)", tokens);
    if (c->moe_count < 0 || c->moe_count > c->depth)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "config: %d moe_layers for depth %d", c->moe_count, c->depth);
    for (int i = 0; i < c->moe_count; i++) {
        if (c->moe_layers[i] < 0 || c->moe_layers[i] >= c->depth)
            return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "config: moe_layers has block %d; blocks are 0..%d", c->moe_layers[i],
                             c->depth - 1);
        for (int j = 0; j < i; j++)
            if (c->moe_layers[j] == c->moe_layers[i])
                return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "config: block %d is twice in moe_layers", c->moe_layers[i]);
    }
    if (c->moe_count) {
        int slots = c->moe_kind == SMOE_MOE_SOFT ? c->slots_per_expert : 1; /* the sparse kinds have no slots */
        if (c->experts < 1 || c->experts > 65536 || slots < 1 || slots > 65536)
            return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "config: experts %d and slots_per_expert %d must be between 1 and 65536",
                             c->experts, c->slots_per_expert);
    }
    smoe_status st = check_router(c, err);
    if (!st) st = check_mixing(c, tokens, err);
    if (st) return st;
    uint64_t weights = (uint64_t)c->depth * (4ull * c->dim * c->dim + 2ull * c->dim * c->mlp_dim) +
                       (uint64_t)c->moe_count * c->experts * 2ull * c->dim * c->expert_mlp_dim;
    if (weights > (1ull << 31))
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "config: %llu weights is more than softmoe supports (2^31)",
                         (unsigned long long)weights);
    return SMOE_OK;
}

/* The integer fields of the config; those marked required must be present. */
static smoe_status parse_ints(const cJSON *root, smoe_vit_config *c, smoe_err *err)
{
    struct { const char *name; int *dst; int required; } f[] = {
        {"image_size", &c->image_size, 1}, {"patch_size", &c->patch_size, 1}, {"channels", &c->channels, 1},
        {"dim", &c->dim, 1},               {"depth", &c->depth, 1},           {"heads", &c->heads, 1},
        {"mlp_dim", &c->mlp_dim, 1},       {"num_classes", &c->num_classes, 1}, {"experts", &c->experts, 0},
        {"slots_per_expert", &c->slots_per_expert, 0}, {"top_k", &c->top_k, 0}, {"group_size", &c->group_size, 0},
        {"expert_mlp_dim", &c->expert_mlp_dim, 0},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, f[i].name);
        if (!v) {
            if (f[i].required) return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "config: \"%s\" is missing", f[i].name);
            continue;
        }
        double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
        if (!(d == floor(d)) || d < -2e9 || d > 2e9)
            return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "config: \"%s\" is not an integer", f[i].name);
        *f[i].dst = (int)d;
    }
    return SMOE_OK;
}

static smoe_status parse_moe_layers(const cJSON *root, smoe_vit_config *c, smoe_err *err)
{
    const cJSON *ml = cJSON_GetObjectItemCaseSensitive(root, "moe_layers");
    if (!ml) return SMOE_OK;
    if (!cJSON_IsArray(ml)) return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "config: \"moe_layers\" is not a list");
    const cJSON *e;
    cJSON_ArrayForEach(e, ml)
    {
        double d = cJSON_IsNumber(e) ? e->valuedouble : NAN;
        if (!(d == floor(d)) || d < -1e9 || d > 1e9)
            return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "config: moe_layers holds a non-integer");
        if (c->moe_count >= MAX_DEPTH) return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "config: too many moe_layers");
        c->moe_layers[c->moe_count++] = (int)d;
    }
    return SMOE_OK;
}

/* The named settings: moe_kind, dispatch and combine. */
static smoe_status parse_names(const cJSON *root, smoe_vit_config *c, smoe_err *err)
{
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(root, "moe_kind");
    if (kind) {
        c->moe_kind = -1;
        for (int i = 0; i < 3 && cJSON_IsString(kind); i++)
            if (!strcmp(kind->valuestring, moe_kind_names[i])) c->moe_kind = i;
        if (c->moe_kind < 0)
            return smoe_fail(err, SMOE_ERROR_BAD_FORMAT,
                             "config: \"moe_kind\" must be \"soft\", \"tokens_choice\" or \"experts_choice\"");
    }
    const char *sides[2] = {"dispatch", "combine"};
    int *side_of[2] = {&c->dispatch, &c->combine};
    for (int i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, sides[i]);
        if (!v) continue;
        *side_of[i] = smoe_mixing_from_name(cJSON_IsString(v) ? v->valuestring : NULL);
        if (*side_of[i] < 0)
            return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "config: \"%s\" must be \"soft\", \"uniform\" or \"identity\"",
                             sides[i]);
    }
    return SMOE_OK;
}

static smoe_status parse_capacity(const cJSON *root, smoe_vit_config *c, smoe_err *err)
{
    const cJSON *cf = cJSON_GetObjectItemCaseSensitive(root, "capacity_factor");
    if (!cf) return SMOE_OK;
    if (!cJSON_IsNumber(cf) || !isfinite(cf->valuedouble) || fabs(cf->valuedouble) > 1e9)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "config: \"capacity_factor\" is not a number");
    c->capacity_factor = (float)cf->valuedouble;
    return SMOE_OK;
}

static smoe_status parse_config(const char *json, smoe_vit_config *c, smoe_err *err)
{
    memset(c, 0, sizeof *c);
    cJSON *root = cJSON_Parse(json);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "config: not a JSON object");
    }
    smoe_status st = parse_ints(root, c, err);
    if (!st) st = parse_moe_layers(root, c, err);
    if (!st) st = parse_names(root, c, err);
    if (!st) st = parse_capacity(root, c, err);
    cJSON_Delete(root);
    if (!st) config_defaults(c);
    if (!st) st = check_config(c, err);
    return st;
}

static void config_json(const smoe_vit_config *c, char *buf, size_t size)
{
    int n = snprintf(buf, size,
                     "{\"image_size\": %d, \"patch_size\": %d, \"channels\": %d, \"dim\": %d, \"depth\": %d, \"heads\": %d, "
                     "\"mlp_dim\": %d, \"moe_layers\": [",
                     c->image_size, c->patch_size, c->channels, c->dim, c->depth, c->heads, c->mlp_dim);
    for (int i = 0; i < c->moe_count && n > 0 && (size_t)n < size; i++)
        n += snprintf(buf + n, size - (size_t)n, "%s%d", i ? ", " : "", c->moe_layers[i]);
    if (n > 0 && (size_t)n < size)
        n += snprintf(buf + n, size - (size_t)n, "], \"experts\": %d, \"slots_per_expert\": %d, \"num_classes\": %d", c->experts,
                      c->slots_per_expert, c->num_classes);
    /* the experts' own hidden size only where it differs: other configs are written as before */
    if (n > 0 && (size_t)n < size && c->expert_mlp_dim && c->expert_mlp_dim != c->mlp_dim)
        n += snprintf(buf + n, size - (size_t)n, ", \"expert_mlp_dim\": %d", c->expert_mlp_dim);
    /* Soft MoE's dispatch and combine weights where they are not the softmax */
    if (n > 0 && (size_t)n < size && c->dispatch != SMOE_MIX_SOFT)
        n += snprintf(buf + n, size - (size_t)n, ", \"dispatch\": \"%s\"", smoe_mixing_name(c->dispatch));
    if (n > 0 && (size_t)n < size && c->combine != SMOE_MIX_SOFT)
        n += snprintf(buf + n, size - (size_t)n, ", \"combine\": \"%s\"", smoe_mixing_name(c->combine));
    /* the sparse routers' settings; a Soft MoE config is written as before */
    if (n > 0 && (size_t)n < size && c->moe_kind != SMOE_MOE_SOFT)
        n += snprintf(buf + n, size - (size_t)n, ", \"moe_kind\": \"%s\", \"capacity_factor\": %.9g, \"group_size\": %d",
                      moe_kind_names[c->moe_kind], (double)c->capacity_factor, c->group_size);
    if (n > 0 && (size_t)n < size && c->moe_kind == SMOE_MOE_TOKENS_CHOICE)
        n += snprintf(buf + n, size - (size_t)n, ", \"top_k\": %d", c->top_k);
    if (n > 0 && (size_t)n < size) snprintf(buf + n, size - (size_t)n, "}");
}

smoe_status smoe_vit_config_parse(smoe_context *ctx, const char *json, smoe_vit_config *config)
{
    if (!ctx || !json || !config) return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "NULL argument");
    smoe_err err = {{0}};
    return smoe_ctx_error(ctx, parse_config(json, config, &err), &err);
}

/* ---- Parameters ---- */

static smoe_status add(smoe_model *m, int *index, const char *name, int ndim, int64_t a, int64_t b, int64_t c, int64_t d,
                       int decay, smoe_err *err)
{
    int64_t shape[4] = {a, b, c, d};
    *index = m->param_count;
    return smoe_model_add_param(m, name, ndim, shape, decay, err);
}

static smoe_status build_params(smoe_model *m, smoe_vit *v, smoe_err *err)
{
    const smoe_vit_config *c = &v->cfg;
    int D = c->dim, P = c->patch_size;
    v->T = (c->image_size / P) * (c->image_size / P);
    v->PC = c->channels * P * P;
    for (int i = 0; i < c->moe_count; i++) v->is_moe[c->moe_layers[i]] = 1;
    v->moe_dims = (smoe_layer_dims){.m = v->T, .d = D, .n = c->experts, .p = c->slots_per_expert, .h = c->expert_mlp_dim,
                                    .dispatch = c->dispatch, .combine = c->combine};
    v->sparse_dims = (smoe_sparse_dims){.m = v->T, .d = D, .n = c->experts, .h = c->expert_mlp_dim, .kind = c->moe_kind,
                                        .top_k = c->moe_kind == SMOE_MOE_TOKENS_CHOICE ? c->top_k : 0,
                                        .capacity_factor = c->capacity_factor, .group_size = c->group_size,
                                        .importance_weight = SMOE_AUX_LOSS_WEIGHT, .load_weight = SMOE_AUX_LOSS_WEIGHT};
    smoe_status st = SMOE_OK;
    if (!st) st = add(m, &v->patch_w, "patch_embed.proj.weight", 4, D, c->channels, P, P, 1, err);
    if (!st) st = add(m, &v->patch_b, "patch_embed.proj.bias", 1, D, 0, 0, 0, 0, err);
    if (!st) st = add(m, &v->pos, "pos_embed", 3, 1, v->T, D, 0, 0, err);
    for (int i = 0; i < c->depth && !st; i++) {
        vit_block_params *b = &v->blk[i];
        char n[96];
#define ADD(field, suffix, ndim, A, B, C, decay)                                              \
    do {                                                                                       \
        snprintf(n, sizeof n, "blocks.%d.%s", i, suffix);                                     \
        if (!st) st = add(m, &b->field, n, ndim, A, B, C, 0, decay, err);                      \
    } while (0)
        ADD(norm1_w, "norm1.weight", 1, D, 0, 0, 0);
        ADD(norm1_b, "norm1.bias", 1, D, 0, 0, 0);
        ADD(qkv_w, "attn.qkv.weight", 2, 3 * D, D, 0, 1);
        ADD(qkv_b, "attn.qkv.bias", 1, 3 * D, 0, 0, 0);
        ADD(proj_w, "attn.proj.weight", 2, D, D, 0, 1);
        ADD(proj_b, "attn.proj.bias", 1, D, 0, 0, 0);
        ADD(norm2_w, "norm2.weight", 1, D, 0, 0, 0);
        ADD(norm2_b, "norm2.bias", 1, D, 0, 0, 0);
        if (v->is_moe[i]) {
            b->fc1_w = b->fc1_b = b->fc2_w = b->fc2_b = -1;
            b->moe = m->param_count;
            snprintf(n, sizeof n, "blocks.%d.moe.", i);
            if (!st && c->moe_kind == SMOE_MOE_SOFT) st = smoe_layer_add_params(m, &v->moe_dims, n, err);
            if (!st && c->moe_kind != SMOE_MOE_SOFT) st = smoe_sparse_add_params(m, &v->sparse_dims, n, err);
        } else {
            b->moe = -1;
            ADD(fc1_w, "mlp.fc1.weight", 2, c->mlp_dim, D, 0, 1);
            ADD(fc1_b, "mlp.fc1.bias", 1, c->mlp_dim, 0, 0, 0);
            ADD(fc2_w, "mlp.fc2.weight", 2, D, c->mlp_dim, 0, 1);
            ADD(fc2_b, "mlp.fc2.bias", 1, D, 0, 0, 0);
        }
#undef ADD
    }
    if (!st) st = add(m, &v->norm_w, "norm.weight", 1, D, 0, 0, 0, 0, err);
    if (!st) st = add(m, &v->norm_b, "norm.bias", 1, D, 0, 0, 0, 0, err);
    if (!st) st = add(m, &v->head_w, "head.weight", 2, c->num_classes, D, 0, 0, 1, err);
    if (!st) st = add(m, &v->head_b, "head.bias", 1, c->num_classes, 0, 0, 0, 0, err);
    return st;
}

/* Deterministic normal samples (splitmix64 + Box-Muller), no global state. */
static double uniform01(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return ((z >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static double normal(uint64_t *s)
{
    double u = uniform01(s), w = uniform01(s);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * w);
}

/* Initialisation as the official code: Dense kernels xavier-uniform, biases 0, LayerNorm 1/0,
 * pos_embed N(0, 0.02), patch embedding lecun-normal, phi lecun-normal (std 1/sqrt(n*d)),
 * scale 1, every expert the same weights, head weight 0. */
static smoe_status init_params(smoe_model *m, const smoe_vit *v, uint64_t seed, smoe_err *err)
{
    size_t most = smoe_model_largest_param(m);
    float *buf = malloc(most * 4);
    if (!buf) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    smoe_status st = SMOE_OK;
    for (int i = 0; i < m->param_count && !st; i++) {
        const smoe_param *p = &m->params[i];
        const char *name = p->name;
        size_t len = strlen(name);
        uint64_t s = seed * 1000003ull + (uint64_t)i * 7919ull + 1;
#define ENDS(suffix) (len >= strlen(suffix) && !strcmp(name + len - strlen(suffix), suffix))
        if (ENDS("norm1.weight") || ENDS("norm2.weight") || !strcmp(name, "norm.weight") || ENDS("moe.scale")) {
            for (size_t k = 0; k < p->count; k++) buf[k] = 1.0f;
        } else if (!strcmp(name, "head.weight") || ENDS(".bias")) {
            memset(buf, 0, p->count * 4);
        } else if (!strcmp(name, "pos_embed")) {
            for (size_t k = 0; k < p->count; k++) buf[k] = (float)(0.02 * normal(&s));
        } else if (!strcmp(name, "patch_embed.proj.weight")) {
            double sd = 1.0 / sqrt((double)v->PC);
            for (size_t k = 0; k < p->count; k++) buf[k] = (float)(sd * normal(&s));
        } else if (ENDS("moe.phi")) {
            double sd = 1.0 / sqrt((double)v->cfg.experts * v->cfg.dim);
            for (size_t k = 0; k < p->count; k++) buf[k] = (float)(sd * normal(&s));
        } else if (p->ndim >= 2) {
            /* [out, in] or, for experts, [n, out, in]: one sample copied to every expert */
            int experts = p->ndim == 3 ? (int)p->shape[0] : 1;
            int64_t out = p->shape[p->ndim - 2], in = p->shape[p->ndim - 1];
            double limit = sqrt(6.0 / (double)(in + out));
            size_t one = p->count / (size_t)experts;
            for (size_t k = 0; k < one; k++) buf[k] = (float)(limit * (2.0 * uniform01(&s) - 1.0));
            for (int e = 1; e < experts; e++) memcpy(buf + (size_t)e * one, buf, one * 4);
        } else {
            memset(buf, 0, p->count * 4);
        }
#undef ENDS
        st = smoe_tensor_upload(&p->value, 0, buf, p->count * 4, err);
    }
    free(buf);
    return st;
}

/* The model's ViT and its parameter table (not yet allocated). */
static smoe_status new_vit(smoe_model *m, const smoe_vit_config *cfg, smoe_err *err)
{
    smoe_vit *v = calloc(1, sizeof *v);
    if (!v) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    m->impl = v;
    v->cfg = *cfg;
    config_defaults(&v->cfg);
    v->infer.id = PLAN_INFER;
    v->train.id = PLAN_TRAIN;
    smoe_arena_init(&v->infer.act, smoe_ctx_gpu(m->ctx), "activations");
    smoe_arena_init(&v->train.act, smoe_ctx_gpu(m->ctx), "training activations");
    return build_params(m, v, err);
}

static smoe_status vit_load(smoe_model *m, const smoe_st_file *f, smoe_err *err)
{
    const char *json = smoe_st_get_meta(f, "softmoe.config");
    if (!json) return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "a ViT file needs \"softmoe.config\" in its metadata");
    smoe_vit_config cfg;
    smoe_status st = parse_config(json, &cfg, err);
    if (!st) st = new_vit(m, &cfg, err);
    /* The tensors are checked against the configuration before its memory is allocated: a small
     * file cannot make the loader allocate what a large configuration claims. */
    if (!st) st = smoe_model_check_file(m, f, smoe_st_get_meta(f, "softmoe.step") != NULL, err);
    if (!st) st = smoe_model_commit_params(m, err);
    if (!st) st = smoe_model_read_params(m, f, err);
    if (!st) st = smoe_model_read_optimizer(m, f, err);
    return st;
}

smoe_status smoe_vit_create(smoe_context *ctx, const smoe_vit_config *config, uint64_t seed, smoe_model **out)
{
    if (!ctx || !config || !out) return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "NULL argument");
    if (!ctx->opened) return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "no device opened (smoe_context_open_device)");
    *out = NULL;
    smoe_err err = {{0}};
    smoe_status st = check_config(config, &err);
    if (st) return smoe_ctx_error(ctx, st, &err);
    smoe_model *m;
    st = smoe_model_new(ctx, &smoe_vit_kind, &m, &err);
    if (st) return smoe_ctx_error(ctx, st, &err);
    st = new_vit(m, config, &err);
    if (!st) st = smoe_model_commit_params(m, &err);
    if (!st) st = init_params(m, vit_of(m), seed, &err);
    return smoe_ctx_error(ctx, smoe_model_finish(m, st, out, &err), &err);
}

smoe_status smoe_vit_get_config(const smoe_model *m, smoe_vit_config *config)
{
    if (!m || !config || m->kind != SMOE_MODEL_VIT) return SMOE_ERROR_INVALID_ARGUMENT;
    *config = vit_of(m)->cfg;
    return SMOE_OK;
}

/* "softmoe.config": the configuration as JSON, in buf. */
static int vit_metadata(const smoe_model *m, smoe_st_meta *meta, int max, char *buf, size_t size)
{
    if (max < 1) return 0;
    config_json(&vit_of(m)->cfg, buf, size);
    meta[0] = (smoe_st_meta){"softmoe.config", buf};
    return 1;
}

/* ---- Plans: the activations of one batch size, and their recorded programs ---- */

static void plan_release(smoe_model *m, vit_plan *p)
{
    smoe_executor_forget_plan(&m->exec, p->id);
    smoe_arena_release(&p->act);
    p->batch = 0;
}

static void vit_destroy(smoe_model *m)
{
    smoe_vit *v = vit_of(m);
    if (!v) return;
    plan_release(m, &v->infer);
    plan_release(m, &v->train);
    free(v);
    m->impl = NULL;
}

static int vit_soft_experts(const smoe_model *m)
{
    const smoe_vit_config *c = &vit_of(m)->cfg;
    return c->moe_count && c->moe_kind == SMOE_MOE_SOFT ? c->experts : 0;
}

static int vit_soft_routing(const smoe_model *m)
{
    const smoe_vit_config *c = &vit_of(m)->cfg;
    return c->dispatch == SMOE_MIX_SOFT && c->combine == SMOE_MIX_SOFT;
}

const smoe_model_kind_ops smoe_vit_kind = {
    "vit", SMOE_MODEL_VIT, vit_load, vit_metadata, vit_destroy, vit_soft_experts, vit_soft_routing,
};

/* The sparse MoE layer of block i for a batch of B images. */
static smoe_sparse_dims sparse_dims_of(const smoe_vit *v, int B, int i)
{
    smoe_sparse_dims sd = v->sparse_dims;
    sd.b = B;
    sd.layer = i;
    return sd;
}

static int is_sparse(const smoe_vit *v) { return v->cfg.moe_kind != SMOE_MOE_SOFT; }

#define R(t, floats)                                                                                                 \
    do {                                                                                                             \
        if (!st) st = smoe_arena_reserve(a, (uint64_t)(floats) * 4, &(t), err);                                      \
    } while (0)

/* Block i's activations and its layer's workspace for a batch of B. */
static smoe_status reserve_block(smoe_model *m, vit_plan *p, int i, int B, int training, smoe_err *err)
{
    smoe_vit *v = vit_of(m);
    const smoe_vit_config *c = &v->cfg;
    smoe_arena *a = &p->act;
    uint64_t BT = (uint64_t)B * v->T, D = (uint64_t)c->dim, H = (uint64_t)c->heads, T = (uint64_t)v->T;
    vit_block_act *b = &p->blk[i];
    smoe_status st = SMOE_OK;
    R(b->ln1, BT * D);
    R(b->mean1, BT);
    R(b->rstd1, BT);
    R(b->qkv, BT * 3 * D);
    R(b->att, (uint64_t)B * H * T * T);
    R(b->attn_out, BT * D);
    R(b->x_mid, BT * D);
    R(b->ln2, BT * D);
    R(b->mean2, BT);
    R(b->rstd2, BT);
    R(b->x_out, BT * D);
    if (v->is_moe[i] && is_sparse(v)) {
        memset(&b->sparse, 0, sizeof b->sparse);
        smoe_sparse_bind_params(&b->sparse, m, v->blk[i].moe);
        b->sparse.x = b->ln2;
        b->sparse.y = b->x_out;
        smoe_sparse_dims sd = sparse_dims_of(v, B, i);
        if (!st) st = smoe_sparse_reserve(&b->sparse, &sd, a, training, err);
    } else if (v->is_moe[i]) {
        memset(&b->moe, 0, sizeof b->moe);
        smoe_layer_bind_params(&b->moe, m, v->blk[i].moe);
        b->moe.x = b->ln2;
        b->moe.y = b->x_out;
        b->moe.keep_state = p->keep_state;
        smoe_layer_dims md = v->moe_dims;
        md.b = B;
        if (!st) st = smoe_layer_reserve(&b->moe, &md, a, training, err);
    } else {
        R(b->pre, BT * c->mlp_dim);
    }
    return st;
}

/* Training's scratch, shared by every block, and the partial sums of the gradients' norm. */
static smoe_status reserve_backward(smoe_model *m, vit_plan *p, int B, smoe_err *err)
{
    smoe_vit *v = vit_of(m);
    const smoe_vit_config *c = &v->cfg;
    smoe_arena *a = &p->act;
    uint64_t BT = (uint64_t)B * v->T, D = (uint64_t)c->dim, H = (uint64_t)c->heads, T = (uint64_t)v->T;
    smoe_status st = SMOE_OK;
    R(p->dlogits, (uint64_t)B * c->num_classes);
    R(p->g, BT * D);
    R(p->tmp, BT * D);
    R(p->dnorm, BT * D);
    R(p->dao, BT * D);
    R(p->dqkv, BT * 3 * D);
    R(p->datt, (uint64_t)B * H * T * T);
    R(p->dpre, BT * c->mlp_dim);
    R(p->dpooled, (uint64_t)B * D);
    R(p->dlnf, BT * D);
    R(p->norm2, 1);
    R(p->state, 2);
    if (st) return st;
    smoe_tensor *grads = malloc((size_t)m->param_count * sizeof *grads);
    if (!grads) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    for (int i = 0; i < m->param_count; i++) grads[i] = m->params[i].grad;
    size_t scratch = smoe_op_sum_squares_scratch(m->param_count, grads);
    free(grads);
    return smoe_arena_reserve(a, scratch * 4, &p->partial, err);
}

static smoe_status plan_reserve(smoe_model *m, vit_plan *p, int B, int training, smoe_err *err)
{
    smoe_vit *v = vit_of(m);
    const smoe_vit_config *c = &v->cfg;
    smoe_arena *a = &p->act;
    uint64_t BT = (uint64_t)B * v->T, D = (uint64_t)c->dim;
    smoe_status st = SMOE_OK;
    R(p->images, (uint64_t)B * c->channels * c->image_size * c->image_size);
    R(p->labels, B);
    R(p->patches, BT * v->PC);
    R(p->x0, BT * D);
    R(p->keep_state, SMOE_KEEP_STATE_WORDS); /* before the blocks: they point at it */
    for (int i = 0; i < c->depth && !st; i++) st = reserve_block(m, p, i, B, training, err);
    R(p->lnf, BT * D);
    R(p->meanf, BT);
    R(p->rstdf, BT);
    R(p->pooled, (uint64_t)B * D);
    R(p->logits, (uint64_t)B * c->num_classes);
    R(p->probs, (uint64_t)B * c->num_classes);
    R(p->losses, B);
    R(p->loss, 1);
    if (training && !st) st = reserve_backward(m, p, B, err);
    /* The MoE blocks' backward reads dy from g and writes dx to dnorm; the sparse routers' noise
     * counts the steps of the optimizer state. */
    for (int i = 0; i < c->depth && training; i++)
        if (v->is_moe[i]) {
            p->blk[i].moe.dy = p->blk[i].sparse.dy = p->g;
            p->blk[i].moe.dx = p->blk[i].sparse.dx = p->dnorm;
            p->blk[i].sparse.step = p->state;
        }
    if (!st) st = smoe_arena_commit(a, err);
    return st;
}

#undef R

/* ---- The model as ops ---- */

/* The sparse layers' pass of a mode: deterministic routing unless training. */
static int route_mode(int mode)
{
    return mode == MODE_TRAIN ? SMOE_ROUTE_TRAIN : mode == MODE_GRADS ? SMOE_ROUTE_GRADS : SMOE_ROUTE_INFER;
}

#define T_(i) (&m->params[(i)].value)
#define G_(i) (&m->params[(i)].grad)

/* The MoE or MLP half of block i: x_out = F(ln2). */
static smoe_status block_ffn_forward(smoe_exec *ex, smoe_model *m, vit_plan *p, int mode, int i, smoe_err *err)
{
    smoe_vit *v = vit_of(m);
    const smoe_vit_config *c = &v->cfg;
    const vit_block_params *bp = &v->blk[i];
    vit_block_act *b = &p->blk[i];
    int BT = p->batch * v->T;
    if (v->is_moe[i] && is_sparse(v)) {
        smoe_sparse_dims sd = sparse_dims_of(v, p->batch, i);
        return smoe_op_sparse_forward(ex, &b->sparse, &sd, route_mode(mode), err);
    }
    if (v->is_moe[i]) {
        smoe_layer_dims md = v->moe_dims;
        md.b = p->batch;
        if (mode == MODE_INFER) return smoe_op_softmoe_forward_keep(ex, &b->moe, &md, &m->keep, (uint32_t)i, err);
        return smoe_op_softmoe_forward(ex, &b->moe, &md, err);
    }
    return smoe_op_mlp_forward(ex, BT, c->dim, c->mlp_dim, &b->ln2, T_(bp->fc1_w), T_(bp->fc1_b), T_(bp->fc2_w),
                               T_(bp->fc2_b), &b->pre, &b->x_out, err);
}

/* Block i on its input x: x_mid = x + attention(norm1(x)), x_out = x_mid + F(norm2(x_mid)). */
static smoe_status block_forward(smoe_exec *ex, smoe_model *m, vit_plan *p, int mode, int i, const smoe_tensor *x,
                                 smoe_err *err)
{
    smoe_vit *v = vit_of(m);
    const smoe_vit_config *c = &v->cfg;
    const vit_block_params *bp = &v->blk[i];
    vit_block_act *b = &p->blk[i];
    int B = p->batch, T = v->T, D = c->dim, BT = B * T;
    smoe_status st = smoe_op_layernorm_forward(ex, BT, D, x, T_(bp->norm1_w), T_(bp->norm1_b), &b->ln1, &b->mean1, &b->rstd1, err);
    if (!st) st = smoe_op_linear_forward(ex, BT, D, 3 * D, &b->ln1, T_(bp->qkv_w), T_(bp->qkv_b), &b->qkv, err);
    if (!st) st = smoe_op_attention_forward(ex, B, T, D, c->heads, &b->qkv, &b->att, &b->attn_out, err);
    if (!st) st = smoe_op_linear_forward(ex, BT, D, D, &b->attn_out, T_(bp->proj_w), T_(bp->proj_b), &b->x_mid, err);
    if (!st) st = smoe_op_add(ex, (size_t)BT * D, x, &b->x_mid, err);
    if (!st)
        st = smoe_op_layernorm_forward(ex, BT, D, &b->x_mid, T_(bp->norm2_w), T_(bp->norm2_b), &b->ln2, &b->mean2, &b->rstd2,
                                       err);
    if (!st) st = block_ffn_forward(ex, m, p, mode, i, err);
    if (!st) st = smoe_op_add(ex, (size_t)BT * D, &b->x_mid, &b->x_out, err);
    return st;
}

static smoe_status forward_ops(smoe_exec *ex, smoe_model *m, vit_plan *p, int mode, smoe_err *err)
{
    smoe_vit *v = vit_of(m);
    const smoe_vit_config *c = &v->cfg;
    int B = p->batch, T = v->T, D = c->dim, BT = B * T;
    smoe_status st = SMOE_OK;
    if (!st) st = smoe_op_im2col(ex, B, c->channels, c->image_size, c->image_size, c->patch_size, &p->images, &p->patches, err);
    if (!st) st = smoe_op_linear_forward(ex, BT, v->PC, D, &p->patches, T_(v->patch_w), T_(v->patch_b), &p->x0, err);
    if (!st) st = smoe_op_add_broadcast(ex, B, (size_t)T * D, T_(v->pos), &p->x0, err);
    const smoe_tensor *x = &p->x0;
    for (int i = 0; i < c->depth && !st; i++) {
        st = block_forward(ex, m, p, mode, i, x, err);
        x = &p->blk[i].x_out;
    }
    if (!st) st = smoe_op_layernorm_forward(ex, BT, D, x, T_(v->norm_w), T_(v->norm_b), &p->lnf, &p->meanf, &p->rstdf, err);
    if (!st) st = smoe_op_meanpool_forward(ex, B, T, D, &p->lnf, &p->pooled, err);
    if (!st) st = smoe_op_linear_forward(ex, B, D, c->num_classes, &p->pooled, T_(v->head_w), T_(v->head_b), &p->logits, err);
    if (!st && mode != MODE_INFER)
        st = smoe_op_cross_entropy(ex, B, c->num_classes, &p->logits, &p->labels, &p->probs, &p->losses, &p->loss,
                                   &p->dlogits, err);
    /* the Tokens Choice routers' auxiliary losses join the loss (their gradients are the layers') */
    for (int i = 0; i < c->depth && !st && mode != MODE_INFER && c->moe_kind == SMOE_MOE_TOKENS_CHOICE; i++)
        if (v->is_moe[i]) st = smoe_op_add(ex, 1, &p->blk[i].sparse.aux, &p->loss, err);
    return st;
}

static smoe_status backward_ops(smoe_exec *ex, smoe_model *m, vit_plan *p, int mode, smoe_err *err)
{
    smoe_vit *v = vit_of(m);
    const smoe_vit_config *c = &v->cfg;
    int B = p->batch, T = v->T, D = c->dim, BT = B * T;
    size_t n = (size_t)BT * D;
    smoe_status st = SMOE_OK;
    const smoe_tensor *x_last = c->depth ? &p->blk[c->depth - 1].x_out : &p->x0;
    if (!st)
        st = smoe_op_linear_backward(ex, B, D, c->num_classes, &p->pooled, T_(v->head_w), &p->dlogits, &p->dpooled, 0,
                                     G_(v->head_w), G_(v->head_b), err);
    if (!st) st = smoe_op_meanpool_backward(ex, B, T, D, &p->dpooled, &p->dlnf, err);
    if (!st)
        st = smoe_op_layernorm_backward(ex, BT, D, x_last, T_(v->norm_w), &p->meanf, &p->rstdf, &p->dlnf, &p->g, G_(v->norm_w),
                                        G_(v->norm_b), err);
    smoe_layer_dims md = v->moe_dims;
    md.b = B;
    for (int i = c->depth - 1; i >= 0 && !st; i--) {
        const vit_block_params *bp = &v->blk[i];
        vit_block_act *b = &p->blk[i];
        const smoe_tensor *x_in = i ? &p->blk[i - 1].x_out : &p->x0;
        /* x_out = x_mid + F(norm2(x_mid)), g = d x_out */
        if (v->is_moe[i] && is_sparse(v)) {
            smoe_sparse_dims sd = sparse_dims_of(v, B, i);
            st = smoe_op_sparse_backward(ex, &b->sparse, &sd, route_mode(mode), err);
        } else if (v->is_moe[i]) {
            st = smoe_op_softmoe_backward(ex, &b->moe, &md, err);
        } else {
            st = smoe_op_mlp_backward(ex, BT, D, c->mlp_dim, &b->ln2, T_(bp->fc1_w), T_(bp->fc2_w), &b->pre, &p->g, &p->dpre,
                                      &p->dnorm, G_(bp->fc1_w), G_(bp->fc1_b), G_(bp->fc2_w), G_(bp->fc2_b), err);
        }
        if (!st)
            st = smoe_op_layernorm_backward(ex, BT, D, &b->x_mid, T_(bp->norm2_w), &b->mean2, &b->rstd2, &p->dnorm, &p->tmp,
                                            G_(bp->norm2_w), G_(bp->norm2_b), err);
        if (!st) st = smoe_op_add(ex, n, &p->tmp, &p->g, err); /* g = d x_mid */
        /* x_mid = x_in + proj(attention(qkv(norm1(x_in)))) */
        if (!st)
            st = smoe_op_linear_backward(ex, BT, D, D, &b->attn_out, T_(bp->proj_w), &p->g, &p->dao, 0, G_(bp->proj_w),
                                         G_(bp->proj_b), err);
        if (!st) st = smoe_op_attention_backward(ex, B, T, D, c->heads, &b->qkv, &b->att, &p->dao, &p->datt, &p->dqkv, err);
        if (!st)
            st = smoe_op_linear_backward(ex, BT, D, 3 * D, &b->ln1, T_(bp->qkv_w), &p->dqkv, &p->dnorm, 0, G_(bp->qkv_w),
                                         G_(bp->qkv_b), err);
        if (!st)
            st = smoe_op_layernorm_backward(ex, BT, D, x_in, T_(bp->norm1_w), &b->mean1, &b->rstd1, &p->dnorm, &p->tmp,
                                            G_(bp->norm1_w), G_(bp->norm1_b), err);
        if (!st) st = smoe_op_add(ex, n, &p->tmp, &p->g, err); /* g = d x_in */
    }
    if (!st) st = smoe_op_sum_rows(ex, B, (size_t)T * D, &p->g, G_(v->pos), err);
    if (!st)
        st = smoe_op_linear_backward(ex, BT, v->PC, D, &p->patches, T_(v->patch_w), &p->g, NULL, 0, G_(v->patch_w),
                                     G_(v->patch_b), err);
    return st;
}

/* cfg: the step's settings, with wd the weight decay and lr_mult the scales' learning-rate factor
 * (0: none); per tensor, wd applies where it decays and lr_mult to the MoE scales. */
static smoe_status optimizer_ops(smoe_exec *ex, smoe_model *m, vit_plan *p, const smoe_adamw_cfg *cfg, smoe_err *err)
{
    smoe_tensor *grads = malloc((size_t)m->param_count * sizeof *grads);
    if (!grads) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    for (int i = 0; i < m->param_count; i++) grads[i] = m->params[i].grad;
    smoe_status st = smoe_op_sum_squares(ex, m->param_count, grads, &p->partial, &p->norm2, err);
    free(grads);
    for (int i = 0; i < m->param_count && !st; i++) {
        smoe_param *q = &m->params[i];
        size_t len = strlen(q->name);
        int is_scale = len >= 9 && !strcmp(q->name + len - 9, "moe.scale");
        smoe_adamw_cfg a = {cfg->beta1, cfg->beta2, cfg->eps, q->decay ? cfg->wd : 0.0f, cfg->max_norm,
                            is_scale && cfg->lr_mult > 0 ? cfg->lr_mult : 1.0f};
        st = smoe_op_adamw(ex, q->count, &q->value, &q->grad, &q->m, &q->v, &p->state, &p->norm2, &a, err);
    }
    return st;
}

#undef T_
#undef G_

/* The ops of a request: the plan's forward, then per mode its backward and optimizer step. */
static smoe_status vit_ops(smoe_exec *ex, const smoe_exec_request *rq, smoe_err *err)
{
    smoe_model *m = rq->user;
    vit_plan *p = rq->plan == PLAN_INFER ? &vit_of(m)->infer : &vit_of(m)->train;
    smoe_status st = forward_ops(ex, m, p, rq->mode, err);
    if (!st && rq->mode != MODE_INFER) st = backward_ops(ex, m, p, rq->mode, err);
    if (!st && rq->mode == MODE_TRAIN) st = optimizer_ops(ex, m, p, &vit_of(m)->adamw, err);
    return st;
}

/* The request of a mode on plan p. What is recorded besides the plan and mode: the expert-subset
 * setting (inference) and the optimizer's constants (training step), in key. */
static smoe_exec_request request(smoe_model *m, const vit_plan *p, int mode, smoe_keep_key *key)
{
    smoe_exec_request rq = {p->id, mode, NULL, 0, vit_ops, m};
    if (mode == MODE_INFER) {
        *key = smoe_keep_program_key(&m->keep);
        rq.key = key;
        rq.key_size = sizeof *key;
    } else if (mode == MODE_TRAIN) {
        rq.key = &vit_of(m)->adamw;
        rq.key_size = sizeof vit_of(m)->adamw;
    }
    return rq;
}

/* Runs the ops of a mode on plan p to completion. *started becomes 1 once the work is sure to
 * run (the CPU path: it ran; Vulkan: it was submitted), even when waiting for it then fails. */
static smoe_status execute(smoe_model *m, vit_plan *p, int mode, int *started, smoe_err *err)
{
    smoe_keep_key key;
    smoe_exec_request rq = request(m, p, mode, &key);
    return smoe_executor_run(&m->exec, &rq, started, err);
}

static smoe_status ensure_plan(smoe_model *m, vit_plan *p, int B, int training, smoe_err *err)
{
    if (p->batch == B && p->act.committed) return SMOE_OK;
    /* smaller batches are padded, unless routing groups span images (the padding would compete) */
    const smoe_vit_config *c = &vit_of(m)->cfg;
    int spans = c->moe_count && is_sparse(vit_of(m)) && c->group_size && vit_of(m)->T % c->group_size;
    if (!training && p->batch >= B && p->act.committed && !spans) return SMOE_OK;
    plan_release(m, p);
    smoe_status st = training ? smoe_model_ensure_grads(m, err) : SMOE_OK;
    p->batch = B;
    p->training = training;
    if (!st) st = plan_reserve(m, p, B, training, err);
    if (st) {
        plan_release(m, p);
        return smoe_fail_prefix(err, st, "a batch of %d images", B);
    }
    return SMOE_OK;
}

/* Uploads images (b of them; the rest of the plan's batch is zero) and labels. */
static smoe_status upload_batch(smoe_model *m, vit_plan *p, int b, const float *images, const int32_t *labels, smoe_err *err)
{
    const smoe_vit_config *c = &vit_of(m)->cfg;
    size_t per = (size_t)c->channels * c->image_size * c->image_size;
    smoe_status st = smoe_check_finite(images, per * (size_t)b, "images", err);
    if (!st && labels)
        for (int i = 0; i < b && !st; i++)
            if (labels[i] < 0 || labels[i] >= c->num_classes)
                st = smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "labels[%d] is %d; classes are 0..%d", i, labels[i],
                               c->num_classes - 1);
    if (!st) st = smoe_tensor_upload(&p->images, 0, images, per * (size_t)b * 4, err);
    if (!st && b < p->batch) {
        float *zero = calloc(per * (size_t)(p->batch - b), 4);
        if (!zero) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
        st = smoe_tensor_upload(&p->images, per * (size_t)b * 4, zero, per * (size_t)(p->batch - b) * 4, err);
        free(zero);
    }
    if (!st && labels) st = smoe_tensor_upload(&p->labels, 0, labels, (size_t)b * 4, err);
    return st;
}

/* Before an inference on plan p: the random draws' state of this call. */
static smoe_status prepare_infer(smoe_model *m, vit_plan *p, smoe_err *err)
{
    return smoe_model_keep_state(m, &p->keep_state, err);
}

static smoe_status check_vit(smoe_model *m, int b, const float *images)
{
    if (!m) return SMOE_ERROR_INVALID_ARGUMENT;
    if (m->kind != SMOE_MODEL_VIT) return smoe_ctx_fail(m->ctx, SMOE_ERROR_INVALID_ARGUMENT, "the model is not a ViT");
    if (b < 1 || b > 65536) return smoe_ctx_fail(m->ctx, SMOE_ERROR_INVALID_ARGUMENT, "batch %d must be between 1 and 65536", b);
    if (!images) return smoe_ctx_fail(m->ctx, SMOE_ERROR_INVALID_ARGUMENT, "images must not be NULL");
    if (m->job)
        return smoe_ctx_fail(m->ctx, SMOE_ERROR_INVALID_ARGUMENT,
                             "the model has an unfinished job (smoe_vit_infer_async): wait for it or free it first");
    return SMOE_OK;
}

smoe_status smoe_vit_infer(smoe_model *m, int b, const float *images, float *logits)
{
    smoe_status st = check_vit(m, b, images);
    if (st) return st;
    if (!logits) return smoe_ctx_fail(m->ctx, SMOE_ERROR_INVALID_ARGUMENT, "logits must not be NULL");
    smoe_err err = {{0}};
    vit_plan *p = &vit_of(m)->infer;
    st = smoe_model_settle(m, &err);
    if (!st) st = ensure_plan(m, p, b, 0, &err);
    if (!st) st = upload_batch(m, p, b, images, NULL, &err);
    if (!st) st = prepare_infer(m, p, &err);
    int started = 0;
    if (!st) st = execute(m, p, MODE_INFER, &started, &err);
    if (!st) st = smoe_tensor_download(&p->logits, 0, logits, (size_t)b * vit_of(m)->cfg.num_classes * 4, &err);
    return smoe_ctx_error(m->ctx, st, &err);
}

smoe_status smoe_vit_loss_grads(smoe_model *m, int b, const float *images, const int32_t *labels, float *loss,
                                float *logits)
{
    smoe_status st = check_vit(m, b, images);
    if (st) return st;
    if (!labels || !loss) return smoe_ctx_fail(m->ctx, SMOE_ERROR_INVALID_ARGUMENT, "labels and loss must not be NULL");
    smoe_err err = {{0}};
    vit_plan *p = &vit_of(m)->train;
    st = smoe_model_check_all_experts(m, &err);
    if (!st) st = smoe_model_settle(m, &err);
    if (!st) st = ensure_plan(m, p, b, 1, &err);
    if (!st) st = upload_batch(m, p, b, images, labels, &err);
    int started = 0;
    if (!st) st = execute(m, p, MODE_GRADS, &started, &err);
    if (!st) st = smoe_tensor_download(&p->loss, 0, loss, 4, &err);
    if (!st && logits) st = smoe_tensor_download(&p->logits, 0, logits, (size_t)b * vit_of(m)->cfg.num_classes * 4, &err);
    return smoe_ctx_error(m->ctx, st, &err);
}

smoe_status smoe_vit_train_step(smoe_model *m, const smoe_train_config *cfg, int b, const float *images,
                                const int32_t *labels, float *loss, float *logits)
{
    smoe_status st = check_vit(m, b, images);
    if (st) return st;
    if (!cfg || !labels || !loss) return smoe_ctx_fail(m->ctx, SMOE_ERROR_INVALID_ARGUMENT, "cfg, labels and loss must not be NULL");
    smoe_err err = {{0}};
    vit_plan *p = &vit_of(m)->train;
    st = smoe_model_check_all_experts(m, &err);
    if (!st) st = smoe_model_settle(m, &err);
    if (!st) st = smoe_model_ensure_grads(m, &err);
    if (!st) st = smoe_model_ensure_optimizer(m, &err);
    if (!st) st = ensure_plan(m, p, b, 1, &err);
    if (!st) st = upload_batch(m, p, b, images, labels, &err);
    float state[2] = {(float)(m->step + 1), smoe_train_lr(cfg, m->step + 1)};
    if (!st) st = smoe_tensor_upload(&p->state, 0, state, sizeof state, &err);
    /* The optimizer's constants are recorded into the program (the request's key): new ones
     * need a new recording. */
    vit_of(m)->adamw = (smoe_adamw_cfg){cfg->beta1, cfg->beta2, cfg->eps, cfg->weight_decay, cfg->clip_norm, cfg->scale_lr_mult};
    int started = 0;
    if (!st) st = execute(m, p, MODE_TRAIN, &started, &err);
    /* Work that was submitted updates the parameters and moments whatever happens next, so the
     * step counts from then on: the model stays consistent, only the loss may be missing. */
    if (started) m->step++;
    if (!st) st = smoe_tensor_download(&p->loss, 0, loss, 4, &err);
    if (!st && logits) st = smoe_tensor_download(&p->logits, 0, logits, (size_t)b * vit_of(m)->cfg.num_classes * 4, &err);
    return smoe_ctx_error(m->ctx, st, &err);
}

/* ---- Asynchronous inference (smoe_vit_infer_async; the job's life cycle is host/job.c) ----
 * The steps of smoe_vit_infer, split where it would wait: here the batch goes up and the job
 * starts the inference request (Vulkan: submitted; CPU path: run on the job's thread); the
 * logits download comes later, when the job is polled or waited for. */

static smoe_status infer_job_collect(smoe_model *m, int b, float *logits, smoe_err *err)
{
    return smoe_tensor_download(&vit_of(m)->infer.logits, 0, logits, (size_t)b * vit_of(m)->cfg.num_classes * 4, err);
}

/* Uploads the batch and starts the inference request as m's job. */
static smoe_status infer_launch(smoe_model *m, int b, const float *images, float *logits, smoe_job **job, smoe_err *err)
{
    vit_plan *p = &vit_of(m)->infer;
    smoe_status st = smoe_model_settle(m, err);
    if (!st) st = ensure_plan(m, p, b, 0, err);
    if (!st) st = upload_batch(m, p, b, images, NULL, err);
    if (!st) st = prepare_infer(m, p, err);
    if (st) return st;
    smoe_keep_key key;
    smoe_exec_request rq = request(m, p, MODE_INFER, &key);
    return smoe_job_launch(m, &rq, infer_job_collect, b, logits, job, err);
}

smoe_status smoe_vit_infer_async(smoe_model *m, int b, const float *images, float *logits, smoe_job **job)
{
    if (job) *job = NULL;
    smoe_status st = check_vit(m, b, images);
    if (st) return st;
    if (!logits || !job) return smoe_ctx_fail(m->ctx, SMOE_ERROR_INVALID_ARGUMENT, "logits and job must not be NULL");
    smoe_err err = {{0}};
    st = infer_launch(m, b, images, logits, job, &err);
    return smoe_ctx_error(m->ctx, st, &err);
}
