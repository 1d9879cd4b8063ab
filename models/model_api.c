/* Loading a model file of any kind (docs/format.md): its "softmoe.kind" picks the kind's table
 * (smoe_model_kind_ops), which builds and reads the model. */
#include <string.h>

#include "model_kinds.h"
#include "user_metadata.h"

static const smoe_model_kind_ops *const kinds[] = {&smoe_layer_kind, &smoe_vit_kind};

static smoe_status load(smoe_context *ctx, const smoe_st_file *f, smoe_model **out, smoe_err *err)
{
    const char *name = smoe_st_get_meta(f, "softmoe.kind");
    if (!name)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "the file has no \"softmoe.kind\" in its metadata (expected \"layer\" or \"vit\")");
    const smoe_model_kind_ops *kind = NULL;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0] && !kind; i++)
        if (!strcmp(name, kinds[i]->name)) kind = kinds[i];
    if (!kind) return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "unknown model kind \"%s\" (expected \"layer\" or \"vit\")", name);
    smoe_model *m;
    smoe_status st = smoe_model_new(ctx, kind, &m, err);
    if (st) return st;
    st = kind->load(m, f, err);
    if (!st) st = smoe_user_meta_load(m, f, err);
    return smoe_model_finish(m, st, out, err);
}

static smoe_status check_ctx(smoe_context *ctx, smoe_model **out)
{
    if (!ctx) return SMOE_ERROR_INVALID_ARGUMENT;
    if (!out) return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "NULL output pointer");
    *out = NULL;
    if (!ctx->opened) return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "no device opened (smoe_context_open_device)");
    return SMOE_OK;
}

smoe_status smoe_model_load_file(smoe_context *ctx, const char *path, smoe_model **out)
{
    smoe_status st = check_ctx(ctx, out);
    if (st) return st;
    if (!path) return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "NULL path");
    smoe_err err = {{0}};
    smoe_st_file f;
    st = smoe_st_read_file(path, &f, &err);
    if (!st) {
        st = load(ctx, &f, out, &err);
        if (st) smoe_fail_prefix(&err, st, "%s", path);
        smoe_st_free(&f);
    }
    return smoe_ctx_error(ctx, st, &err);
}

smoe_status smoe_model_load_memory(smoe_context *ctx, const void *data, size_t size, smoe_model **out)
{
    smoe_status st = check_ctx(ctx, out);
    if (st) return st;
    if (!data && size) return smoe_ctx_fail(ctx, SMOE_ERROR_INVALID_ARGUMENT, "NULL data");
    smoe_err err = {{0}};
    smoe_st_file f;
    st = smoe_st_parse(data, size, &f, &err);
    if (!st) {
        st = load(ctx, &f, out, &err);
        smoe_st_free(&f);
    }
    return smoe_ctx_error(ctx, st, &err);
}
