/* libFuzzer target: the input files of `softmoe run` (docs/format.md section 3), read through run_model
 * (tools/run_model.c, what the command uses) against two fixed models loaded once, the golden
 * Soft MoE layer and the golden ViT, on the CPU path. A refused input must give a documented
 * status, a message and no outputs; an accepted one must give outputs that serialize and parse
 * back as a safetensors file. */
#include "fuzz.h"
#include "run_model.h"

static smoe_model *fixed_model(smoe_context *ctx, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.model.safetensors", SOFTMOE_FUZZ_GOLDEN, name);
    smoe_model *m = NULL;
    if (smoe_model_load_file(ctx, path, &m)) {
        fprintf(stderr, "fuzz_input: %s\n", smoe_last_error(ctx));
        abort();
    }
    return m;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    smoe_context *ctx = fuzz_context();
    static smoe_model *models[2];
    if (!models[0]) {
        models[0] = fixed_model(ctx, "layer_b1_m7_d16_n3_p3_h40");
        models[1] = fixed_model(ctx, "vit_d32_L2_b3");
    }
    size_t n;
    uint8_t *img = fuzz_image(data, size, &n);
    smoe_st_file in;
    smoe_err err = {{0}};
    smoe_status st = smoe_st_parse(img, n, &in, &err);
    free(img);
    if (st) {
        FUZZ_ASSERT(st == SMOE_ERROR_BAD_FORMAT && err.msg[0], "parse: %s: %s", smoe_status_string(st), err.msg);
        return 0;
    }
    for (int i = 0; i < 2; i++) {
        run_outputs out;
        st = run_model(ctx, models[i], &in, "input", &out, &err);
        if (st) {
            FUZZ_ASSERT(out.count == 0 && out.entries == NULL, "a refused input left outputs");
            FUZZ_ASSERT(st == SMOE_ERROR_BAD_FORMAT || st == SMOE_ERROR_NOT_FINITE || st == SMOE_ERROR_INVALID_ARGUMENT ||
                            st == SMOE_ERROR_TOO_LARGE,
                        "run: unexpected status %s (%s)", smoe_status_string(st), err.msg);
            FUZZ_ASSERT(err.msg[0], "run failed without a message");
            continue;
        }
        uint8_t *file = NULL;
        size_t file_size = 0;
        st = smoe_st_serialize(out.entries, out.count, NULL, 0, &file, &file_size, &err);
        FUZZ_ASSERT(st == SMOE_OK, "serializing the outputs: %s", err.msg);
        smoe_st_file back;
        st = smoe_st_parse(file, file_size, &back, &err);
        FUZZ_ASSERT(st == SMOE_OK && back.count == out.count, "the outputs do not parse back: %s", err.msg);
        smoe_st_free(&back);
        free(file);
        run_outputs_free(&out);
    }
    smoe_st_free(&in);
    FUZZ_ASSERT(ctx->model_count == 2, "the fixed models changed");
    return 0;
}
