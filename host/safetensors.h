/* The safetensors file format (docs/format.md section 3): an 8-byte little-endian header length, a JSON
 * header (cJSON), then raw little-endian tensor data. Reading validates everything before
 * returning; writing is atomic (temp file, fsync, rename). */
#ifndef SMOE_SAFETENSORS_H
#define SMOE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define SMOE_ST_MAX_DIMS 8

typedef enum smoe_dtype {
    SMOE_F32 = 0,
    SMOE_I32 = 1,
    SMOE_F16 = 2,
    SMOE_BF16 = 3,
    SMOE_F64 = 4,
    SMOE_I64 = 5,
    SMOE_U8 = 6,
    SMOE_I8 = 7,
    SMOE_I16 = 8,
    SMOE_U16 = 9,
    SMOE_U32 = 10,
    SMOE_U64 = 11,
    SMOE_BOOL = 12
} smoe_dtype;

typedef struct smoe_st_tensor {
    char *name;
    smoe_dtype dtype;
    int ndim;
    int64_t shape[SMOE_ST_MAX_DIMS];
    uint64_t nbytes;
    const void *data; /* points into the file's buffer; may be unaligned for its type */
} smoe_st_tensor;

typedef struct smoe_st_meta {
    char *key;
    char *value;
} smoe_st_meta;

typedef struct smoe_st_file {
    uint8_t *buffer; /* owned copy of the whole file */
    size_t size;
    smoe_st_tensor *tensors;
    int count;
    smoe_st_meta *meta;
    int meta_count;
} smoe_st_file;

const char *smoe_dtype_name(smoe_dtype dt); /* "F32", ... as safetensors spells them */
size_t smoe_dtype_size(smoe_dtype dt);

/* Parses a safetensors image; the bytes are copied, so data may be freed afterwards. On failure
 * *out is left empty (all zero) and err says what is wrong. */
smoe_status smoe_st_parse(const void *data, size_t size, smoe_st_file *out, smoe_err *err);
smoe_status smoe_st_read_file(const char *path, smoe_st_file *out, smoe_err *err);
void smoe_st_free(smoe_st_file *f);

const smoe_st_tensor *smoe_st_find(const smoe_st_file *f, const char *name);
const char *smoe_st_get_meta(const smoe_st_file *f, const char *key); /* NULL if absent */
/* Strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF) without NUL bytes,
 * which would silently cut names short: the offset of the first bad byte, or len if all good.
 * Every text that goes into a header is checked with it. */
size_t smoe_st_utf8_check(const uint8_t *s, size_t len);

/* Finds a float32 tensor of exactly the given shape, or fails with a message naming the tensor,
 * the expected shape and what was found. ndim 0 means a scalar; a [1] tensor is accepted for it. */
smoe_status smoe_st_expect_f32(const smoe_st_file *f, const char *name, int ndim,
                               const int64_t *shape, const smoe_st_tensor **out, smoe_err *err);

/* Copies a tensor's data out as float32 (it must be F32), checking that every value is finite. */
smoe_status smoe_st_copy_f32(const smoe_st_tensor *t, float *dst, smoe_err *err);

/* A file to write: tensors and metadata are referenced, not copied, until smoe_st_write. */
typedef struct smoe_st_entry {
    const char *name;
    smoe_dtype dtype;
    int ndim;
    int64_t shape[SMOE_ST_MAX_DIMS];
    const void *data;
} smoe_st_entry;

/* Writes the entries (sorted by name in the header, data in that order, 8-byte aligned start) and
 * metadata (may be NULL/0) to path atomically: path.tmp is written, fsynced and renamed. On any
 * failure path is untouched and the temp file removed. */
smoe_status smoe_st_write(const char *path, const smoe_st_entry *entries, int count,
                          const smoe_st_meta *meta, int meta_count, smoe_err *err);

/* The same image in memory (malloc'd; caller frees). */
smoe_status smoe_st_serialize(const smoe_st_entry *entries, int count, const smoe_st_meta *meta,
                              int meta_count, uint8_t **out, size_t *out_size, smoe_err *err);

#endif
