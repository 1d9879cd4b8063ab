/* A model's user metadata: see user_metadata.h and smoe_model_set_metadata in softmoe.h. */
#include "user_metadata.h"

#include <stdlib.h>
#include <string.h>

#define LIBRARY_PREFIX "softmoe."

struct smoe_user_meta {
    int count;
    smoe_st_meta kv[SMOE_METADATA_MAX_ENTRIES]; /* malloc'd key and value; unordered */
};

/* NULL when key may be user metadata, else what is wrong with it. */
static const char *key_problem(const char *key)
{
    size_t n = strlen(key);
    if (!n) return "is empty";
    if (n > SMOE_METADATA_MAX_KEY) return "is longer than SMOE_METADATA_MAX_KEY bytes";
    if (!strncmp(key, LIBRARY_PREFIX, strlen(LIBRARY_PREFIX))) return "is the library's own (\"softmoe.*\")";
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)key[i] < 0x20 || key[i] == 0x7f) return "has a control character";
    if (smoe_st_utf8_check((const uint8_t *)key, n) != n) return "is not UTF-8";
    return NULL;
}

static const char *value_problem(const char *value)
{
    size_t n = strlen(value);
    if (n > SMOE_METADATA_MAX_VALUE) return "is longer than SMOE_METADATA_MAX_VALUE bytes";
    if (smoe_st_utf8_check((const uint8_t *)value, n) != n) return "is not UTF-8";
    return NULL;
}

static int find(const struct smoe_user_meta *u, const char *key)
{
    for (int i = 0; u && i < u->count; i++)
        if (!strcmp(u->kv[i].key, key)) return i;
    return -1;
}

static void remove_at(struct smoe_user_meta *u, int i)
{
    free(u->kv[i].key);
    free(u->kv[i].value);
    u->kv[i] = u->kv[--u->count];
}

static char *dup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* Sets key (already checked) to value; nothing changes on failure. */
static smoe_status put(smoe_model *m, const char *key, const char *value, smoe_err *err)
{
    int i = find(m->user_meta, key);
    if (!value) {
        if (i >= 0) remove_at(m->user_meta, i);
        return SMOE_OK;
    }
    if (i < 0 && m->user_meta && m->user_meta->count >= SMOE_METADATA_MAX_ENTRIES)
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "metadata key \"%s\": the model already has %d keys",
                         key, SMOE_METADATA_MAX_ENTRIES);
    if (!m->user_meta && !(m->user_meta = calloc(1, sizeof *m->user_meta)))
        return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    char *v = dup(value), *k = i < 0 ? dup(key) : NULL;
    if (!v || (i < 0 && !k)) {
        free(v), free(k);
        return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    }
    if (i < 0) {
        i = m->user_meta->count++;
        m->user_meta->kv[i].key = k;
    } else {
        free(m->user_meta->kv[i].value);
    }
    m->user_meta->kv[i].value = v;
    return SMOE_OK;
}

smoe_status smoe_model_set_metadata(smoe_model *model, const char *key, const char *value)
{
    if (!model) return SMOE_ERROR_INVALID_ARGUMENT;
    smoe_err err = {{0}};
    const char *why = !key ? "is NULL" : key_problem(key);
    smoe_status st = SMOE_OK;
    if (why) st = smoe_fail(&err, SMOE_ERROR_INVALID_ARGUMENT, "metadata key \"%.64s\" %s", key ? key : "", why);
    else if (value && (why = value_problem(value)))
        st = smoe_fail(&err, SMOE_ERROR_INVALID_ARGUMENT, "metadata value of \"%s\" %s", key, why);
    else st = put(model, key, value, &err);
    return st ? smoe_ctx_error(model->ctx, st, &err) : SMOE_OK;
}

smoe_status smoe_model_get_metadata(const smoe_model *model, const char *key, const char **value)
{
    if (!model) return SMOE_ERROR_INVALID_ARGUMENT;
    if (!key || !value) return smoe_ctx_fail(model->ctx, SMOE_ERROR_INVALID_ARGUMENT, "NULL key or value pointer");
    int i = find(model->user_meta, key);
    *value = i >= 0 ? model->user_meta->kv[i].value : NULL;
    return SMOE_OK;
}

smoe_status smoe_user_meta_load(smoe_model *m, const smoe_st_file *f, smoe_err *err)
{
    for (int i = 0; i < f->meta_count; i++) {
        const char *key = f->meta[i].key, *why = NULL;
        if (!strncmp(key, LIBRARY_PREFIX, strlen(LIBRARY_PREFIX))) continue;
        if ((why = key_problem(key)))
            return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "metadata key \"%.64s\" %s", key, why);
        if ((why = value_problem(f->meta[i].value)))
            return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "metadata value of \"%s\" %s", key, why);
        if (find(m->user_meta, key) < 0 && m->user_meta && m->user_meta->count >= SMOE_METADATA_MAX_ENTRIES)
            return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "the metadata has more than %d keys of its own",
                             SMOE_METADATA_MAX_ENTRIES);
        smoe_status st = put(m, key, f->meta[i].value, err);
        if (st) return st;
    }
    return SMOE_OK;
}

void smoe_user_meta_free(smoe_model *m)
{
    while (m->user_meta && m->user_meta->count) remove_at(m->user_meta, 0);
    free(m->user_meta);
    m->user_meta = NULL;
}

smoe_status smoe_user_meta_write(const smoe_model *m, const char *path, const smoe_st_entry *entries, int count,
                                 const smoe_st_meta *meta, int meta_count, smoe_err *err)
{
    int extra = m->user_meta ? m->user_meta->count : 0;
    smoe_st_meta *all = calloc((size_t)(meta_count + extra) + 1, sizeof *all);
    if (!all) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    if (meta_count) memcpy(all, meta, (size_t)meta_count * sizeof *all);
    if (extra) memcpy(all + meta_count, m->user_meta->kv, (size_t)extra * sizeof *all);
    smoe_status st = smoe_st_write(path, entries, count, all, meta_count + extra, err);
    free(all);
    return st;
}
