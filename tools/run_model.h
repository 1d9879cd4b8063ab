/* What `softmoe run` computes (docs/format.md section 3): a model's outputs for an input file, checked
 * against the model first. Kept apart from the command so that the fuzzer (tests/fuzz) reads
 * input files through exactly this code. */
#ifndef SMOE_RUN_MODEL_H
#define SMOE_RUN_MODEL_H

#include "safetensors.h"
#include "softmoe.h"

/* The output tensors; entries point into buffers owned here (and into loss), so the struct must
 * stay where it was filled until run_outputs_free. */
typedef struct run_outputs {
    smoe_st_entry *entries;
    int count;
    float **buffers;
    int buffer_count;
    char (*names)[128];
    float loss;
} run_outputs;

/* A layer model takes x [b, m, d] (and dy for gradients) and gives y (and grad.x, grad.<param>);
 * a ViT takes images [b, c, H, W] (and int32 labels [b] for the loss and gradients) and gives
 * logits (and loss, grad.<param>). An input that does not match is refused with
 * SMOE_ERROR_BAD_FORMAT and a message naming the tensor and the expected shape (input_name is
 * the file, for the message); a failure of the library gives its status and message. On failure
 * out is empty. */
smoe_status run_model(smoe_context *ctx, smoe_model *model, const smoe_st_file *in, const char *input_name,
                      run_outputs *out, smoe_err *err);
void run_outputs_free(run_outputs *out);

#endif
