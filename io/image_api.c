/* The public image entry points (softmoe.h): thin wrappers over image.c that put the
 * message into the context. */
#include "context.h"
#include "image.h"

smoe_status smoe_image_read_gray(smoe_context *ctx, const char *path, int height, int width, float *out)
{
    smoe_err err = {{0}};
    smoe_status st = smoe_image_load_gray(path, height, width, out, &err);
    return st ? smoe_ctx_error(ctx, st, &err) : SMOE_OK;
}

smoe_status smoe_image_read_gray_memory(smoe_context *ctx, const void *data, size_t size, int height, int width,
                                        float *out)
{
    smoe_err err = {{0}};
    smoe_status st = smoe_image_decode_gray(data, size, NULL, height, width, out, &err);
    return st ? smoe_ctx_error(ctx, st, &err) : SMOE_OK;
}
