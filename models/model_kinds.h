/* What the model kinds of models/ share beyond host/model.h: their tables (smoe_model_kind_ops),
 * the naming of the MoE layers' parameters in a model's table (docs/format.md), the names of the
 * mixing settings in files, and the optimizer state. */
#ifndef SMOE_MODEL_KINDS_H
#define SMOE_MODEL_KINDS_H

#include "model.h"
#include "ops/softmoe_layer.h"
#include "ops/sparse_moe_layer.h"

extern const smoe_model_kind_ops smoe_layer_kind; /* layer.c */
extern const smoe_model_kind_ops smoe_vit_kind;   /* vit.c */

/* The six Soft MoE layer parameters with a name prefix ("blocks.3.moe."), and pointing a layer
 * op's parameter and gradient tensors at the six table entries from first. */
smoe_status smoe_layer_add_params(smoe_model *m, const smoe_layer_dims *d, const char *prefix, smoe_err *err);
void smoe_layer_bind_params(smoe_layer_tensors *t, const smoe_model *m, int first);
/* The sparse layers' five: gate.weight and experts.fc1/fc2 .weight/.bias. */
smoe_status smoe_sparse_add_params(smoe_model *m, const smoe_sparse_dims *d, const char *prefix, smoe_err *err);
void smoe_sparse_bind_params(smoe_sparse_tensors *t, const smoe_model *m, int first);

/* The names of smoe_mixing values in model files: "soft", "uniform", "identity"; the name's
 * value, or -1 for none of them. */
const char *smoe_mixing_name(int mixing);
int smoe_mixing_from_name(const char *name);

/* AdamW moments (zero) on first need, and their restoring from a checkpoint (train.c). */
smoe_status smoe_model_ensure_optimizer(smoe_model *m, smoe_err *err);
smoe_status smoe_model_read_optimizer(smoe_model *m, const smoe_st_file *f, smoe_err *err);

#endif
