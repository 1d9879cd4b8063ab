/* libFuzzer target: the ViT configuration parser (smoe_vit_config_parse, the JSON of
 * "softmoe.config"). A refused text must give SMOE_ERROR_BAD_FORMAT and a message; an accepted
 * one must hold only values the model can be built from, and (when small) smoe_vit_create must
 * build it. */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    smoe_context *ctx = fuzz_context();
    char *json = malloc(size + 1);
    if (!json) abort();
    memcpy(json, data, size);
    json[size] = 0;
    smoe_vit_config c;
    smoe_status st = smoe_vit_config_parse(ctx, json, &c);
    free(json);
    if (st) {
        FUZZ_ASSERT(st == SMOE_ERROR_BAD_FORMAT && !strncmp(smoe_last_error(ctx), "config: ", 8), "%s: %s",
                    smoe_status_string(st), smoe_last_error(ctx));
        return 0;
    }
    FUZZ_ASSERT(c.image_size >= 1 && c.patch_size >= 1 && c.channels >= 1 && c.dim >= 1 && c.depth >= 1 &&
                    c.heads >= 1 && c.mlp_dim >= 1 && c.expert_mlp_dim >= 1 && c.num_classes >= 1,
                "a size below 1 was accepted");
    FUZZ_ASSERT(c.dim % c.heads == 0 && c.image_size % c.patch_size == 0, "inconsistent sizes accepted");
    FUZZ_ASSERT(c.moe_count >= 0 && c.moe_count <= c.depth, "%d moe_layers for depth %d", c.moe_count, c.depth);
    for (int i = 0; i < c.moe_count; i++) {
        FUZZ_ASSERT(c.moe_layers[i] >= 0 && c.moe_layers[i] < c.depth, "moe layer %d of %d", c.moe_layers[i], c.depth);
        for (int j = 0; j < i; j++) FUZZ_ASSERT(c.moe_layers[i] != c.moe_layers[j], "moe layer %d twice", c.moe_layers[i]);
    }
    if (c.moe_count) FUZZ_ASSERT(c.experts >= 1 && c.slots_per_expert >= 1, "no experts or slots");
    long tokens = (long)(c.image_size / c.patch_size) * (c.image_size / c.patch_size);
    double weights = (double)c.depth * (4.0 * c.dim * c.dim + 2.0 * c.dim * c.mlp_dim) +
                     (double)c.moe_count * c.experts * 2.0 * c.dim * c.expert_mlp_dim + (double)c.num_classes * c.dim +
                     (double)tokens * c.dim + (double)c.channels * c.patch_size * c.patch_size * c.dim;
    if (weights > (1 << 16)) return 0;
    smoe_model *m = NULL;
    st = smoe_vit_create(ctx, &c, 7, &m);
    FUZZ_ASSERT(st == SMOE_OK, "creating an accepted configuration: %s", smoe_last_error(ctx));
    smoe_vit_config back;
    FUZZ_ASSERT(smoe_vit_get_config(m, &back) == SMOE_OK && !memcmp(&back, &c, sizeof c), "the configuration changed");
    smoe_model_free(m);
    return 0;
}
