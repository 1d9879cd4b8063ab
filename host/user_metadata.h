/* A model's user metadata (smoe_model_set_metadata / smoe_model_get_metadata): text pairs kept
 * with the model, saved into the safetensors "__metadata__" beside the library's own "softmoe.*"
 * keys and read back on load. Kept apart from the model kinds: any kind carries it. */
#ifndef SMOE_USER_METADATA_H
#define SMOE_USER_METADATA_H

#include "model.h"

/* Copies every metadata key of f outside "softmoe." into m; a key or value beyond the limits of
 * smoe_model_set_metadata is SMOE_ERROR_BAD_FORMAT naming it. */
smoe_status smoe_user_meta_load(smoe_model *m, const smoe_st_file *f, smoe_err *err);
void smoe_user_meta_free(smoe_model *m);
/* smoe_st_write with m's user metadata after the library's meta[0..meta_count). */
smoe_status smoe_user_meta_write(const smoe_model *m, const char *path, const smoe_st_entry *entries, int count,
                                 const smoe_st_meta *meta, int meta_count, smoe_err *err);

#endif
