/* Models inside the library: what every kind shares (a table of named parameters with their
 * gradients and optimizer moments, arenas per lifetime class, the executor that runs the kind's
 * ops), and the table of functions through which host/ reaches a kind without knowing it. The
 * kinds themselves are models/ (the layer, the ViT); nothing here names one. */
#ifndef SMOE_MODEL_H
#define SMOE_MODEL_H

#include "context.h"
#include "exec.h"
#include "layer_types.h"
#include "memory.h"
#include "safetensors.h"

typedef struct smoe_param {
    char name[96];
    int ndim;             /* 0: a scalar, stored as [1] */
    int64_t shape[4];
    size_t count;
    int decay;            /* AdamW weight decay applies */
    smoe_tensor value, grad, m, v;
} smoe_param;

/* What a model kind answers (models/: the layer in layer.c, the ViT in vit.c). */
typedef struct smoe_model_kind_ops {
    const char *name;      /* its "softmoe.kind" in model files */
    smoe_model_kind kind;
    /* Builds the kind's parameter table from a model file f and reads the parameters. */
    smoe_status (*load)(smoe_model *m, const smoe_st_file *f, smoe_err *err);
    /* Its metadata entries beyond "softmoe.kind", into meta[0..max-1] (values may point into buf
     * of size bytes); returns how many. */
    int (*metadata)(const smoe_model *m, smoe_st_meta *meta, int max, char *buf, size_t size);
    /* Frees what the kind holds (impl); the shared parts are freed by the caller. */
    void (*destroy)(smoe_model *m);
    /* Experts per Soft MoE layer (0: none), and whether those layers take the softmax on both
     * sides, dispatch and combine (what expert-subset inference scores by). */
    int (*soft_experts)(const smoe_model *m);
    int (*soft_routing)(const smoe_model *m);
} smoe_model_kind_ops;

struct smoe_model {
    smoe_context *ctx;
    smoe_model_kind kind;
    const smoe_model_kind_ops *ops;
    smoe_param *params;
    int param_count;
    smoe_arena param_arena;  /* parameters */
    smoe_arena grad_arena;   /* their gradients (with the work buffers of a shape) */
    smoe_arena opt_arena;    /* AdamW moments, created by the first training step */
    long step;               /* training steps taken */
    void *impl;              /* the kind's own state */
    smoe_executor exec;      /* runs the kind's ops; its programs (host/exec.h) */
    struct smoe_job *job;    /* the unfinished asynchronous job, if any (host/job.c) */
    smoe_keep keep;          /* expert-subset inference (host/keep_experts.c); k = 0: all */
    uint32_t keep_calls;     /* inference calls since it was set: the random draws' counter */
    struct smoe_user_meta *user_meta; /* smoe_model_set_metadata's pairs (host/user_metadata.c) */
};

/* Adds a parameter to the table (not yet reserved). */
smoe_status smoe_model_add_param(smoe_model *m, const char *name, int ndim, const int64_t *shape, int decay,
                                 smoe_err *err);
int smoe_model_find_param(const smoe_model *m, const char *name);
/* Floats in the largest parameter (at least 1): the size of one staging buffer for them all. */
size_t smoe_model_largest_param(const smoe_model *m);
/* Reserves and commits the parameter arena for the table. */
smoe_status smoe_model_commit_params(smoe_model *m, smoe_err *err);
/* Checks f against the table before anything is allocated for it: every parameter present as F32
 * of its exact shape (and, with optimizer, its AdamW moments opt.m.<name> and opt.v.<name>), and
 * no other tensor. What is then allocated is no larger than the file. */
smoe_status smoe_model_check_file(const smoe_model *m, const smoe_st_file *f, int optimizer, smoe_err *err);
/* Reads every parameter of the table from f (checked by smoe_model_check_file; finite). */
smoe_status smoe_model_read_params(smoe_model *m, const smoe_st_file *f, smoe_err *err);

/* A model of the kind ops with nothing in it yet; smoe_model_finish registers it with the context, or
 * frees it when st is a failure, and returns st. */
smoe_status smoe_model_new(smoe_context *ctx, const smoe_model_kind_ops *ops, smoe_model **out, smoe_err *err);
smoe_status smoe_model_finish(smoe_model *m, smoe_status st, smoe_model **out, smoe_err *err);

/* Waits for the model's work that a failed fence wait left submitted: until it has ended, reading
 * or writing the model's memory would race with it. At once SMOE_OK when there is none. Every
 * call that touches a model's memory settles it first. */
smoe_status smoe_model_settle(smoe_model *m, smoe_err *err);

/* Fails with SMOE_ERROR_NOT_FINITE naming name[i] at the first NaN or Inf. */
smoe_status smoe_check_finite(const float *v, size_t n, const char *name, smoe_err *err);

/* Gradients get their own arena on the first backward pass. */
smoe_status smoe_model_ensure_grads(smoe_model *m, smoe_err *err);

/* Expert-subset inference (host/keep_experts.c): gradient calls fail while the model's setting
 * drops experts; inference calls first write the state of their random draws (if any) into state. */
smoe_status smoe_model_check_all_experts(const smoe_model *m, smoe_err *err);
smoe_status smoe_model_keep_state(smoe_model *m, const smoe_tensor *state, smoe_err *err);

#endif
