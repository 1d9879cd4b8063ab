/* The public dataset entry point (softmoe.h): a thin wrapper over fashion_mnist.c that puts the
 * message into the context. */
#include "context.h"
#include "fashion_mnist.h"

smoe_status smoe_fmnist_read(smoe_context *ctx, const char *dir, int train, smoe_dataset *out)
{
    smoe_err err = {{0}};
    smoe_status st = smoe_fmnist_load(dir, train, out, &err);
    return st ? smoe_ctx_error(ctx, st, &err) : SMOE_OK;
}
