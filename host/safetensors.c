/* The safetensors format (docs/format.md section 3): reading with full validation, writing atomically.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON (an object mapping tensor names to
 * {"dtype", "shape", "data_offsets"}, plus an optional "__metadata__" object of strings), then the
 * data region. Offsets are relative to the data region, and the tensors must tile it exactly. */
#define _POSIX_C_SOURCE 200809L

#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Tensor data is handed out (and written) as raw bytes in host order; the format is little-endian. */
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && \
    __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

#define ST_MAX_HEADER 100000000u              /* the reference implementation's limit */
#define ST_MAX_JSON_INT 9007199254740992.0    /* 2^53: above it doubles are no longer exact */
#define ST_META_KEY "__metadata__"

static const struct {
    const char *name;
    size_t size;
} dtype_table[] = {
    [SMOE_F32] = {"F32", 4}, [SMOE_I32] = {"I32", 4}, [SMOE_F16] = {"F16", 2},
    [SMOE_BF16] = {"BF16", 2}, [SMOE_F64] = {"F64", 8}, [SMOE_I64] = {"I64", 8},
    [SMOE_U8] = {"U8", 1}, [SMOE_I8] = {"I8", 1}, [SMOE_I16] = {"I16", 2},
    [SMOE_U16] = {"U16", 2}, [SMOE_U32] = {"U32", 4}, [SMOE_U64] = {"U64", 8},
    [SMOE_BOOL] = {"BOOL", 1},
};
#define DTYPE_COUNT ((int)(sizeof dtype_table / sizeof dtype_table[0]))

static int dtype_valid(smoe_dtype dt) { return (int)dt >= 0 && (int)dt < DTYPE_COUNT; }

const char *smoe_dtype_name(smoe_dtype dt) { return dtype_valid(dt) ? dtype_table[dt].name : "?"; }

size_t smoe_dtype_size(smoe_dtype dt) { return dtype_valid(dt) ? dtype_table[dt].size : 0; }

static int dtype_from_name(const char *s, smoe_dtype *out)
{
    for (int i = 0; i < DTYPE_COUNT; i++) {
        if (strcmp(s, dtype_table[i].name) == 0) {
            *out = (smoe_dtype)i;
            return 1;
        }
    }
    return 0;
}

static char *str_dup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* "[4, 64, 32]" (truncated if it does not fit, which only matters for messages). */
static void format_shape(char *buf, size_t size, int ndim, const int64_t *shape)
{
    size_t len = 0;
    int n = snprintf(buf, size, "[");
    for (int i = 0; i < ndim && n >= 0 && (len += (size_t)n) < size; i++)
        n = snprintf(buf + len, size - len, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (n >= 0 && (len += (size_t)n) < size) snprintf(buf + len, size - len, "]");
}

/* Elements and bytes of a shape; 0 if they overflow 64 bits. A zero dimension makes the tensor
 * empty whatever the others are, so it is not an overflow. */
static int shape_bytes(int ndim, const int64_t *shape, size_t elem_size, uint64_t *bytes)
{
    uint64_t elems = 1;
    for (int i = 0; i < ndim; i++)
        if (shape[i] == 0) {
            *bytes = 0;
            return 1;
        }
    for (int i = 0; i < ndim; i++) {
        uint64_t d = (uint64_t)shape[i];
        if (elems > UINT64_MAX / d) return 0;
        elems *= d;
    }
    if (elems > UINT64_MAX / elem_size) return 0;
    *bytes = elems * elem_size;
    return 1;
}

/* (safetensors.h) */
size_t smoe_st_utf8_check(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        size_t n;
        uint32_t cp, min;
        if (c == 0) return i;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xE0) == 0xC0) n = 1, cp = c & 0x1F, min = 0x80;
        else if ((c & 0xF0) == 0xE0) n = 2, cp = c & 0x0F, min = 0x800;
        else if ((c & 0xF8) == 0xF0) n = 3, cp = c & 0x07, min = 0x10000;
        else return i;
        if (len - i <= n) return i;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += n + 1;
    }
    return len;
}

/* Whether the JSON text has a \u0000 escape: cJSON would decode it into a C string and so
 * silently cut the name or value short there. An escape needs an odd run of backslashes. */
static int has_escaped_nul(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '\\') continue;
        size_t j = i;
        while (j < len && s[j] == '\\') j++;
        if ((j - i) % 2 == 1 && len - j >= 5 && s[j] == 'u' && memcmp(s + j + 1, "0000", 4) == 0)
            return 1;
        i = j - 1;
    }
    return 0;
}

/* ---- Reading ----------------------------------------------------------------------------- */

void smoe_st_free(smoe_st_file *f)
{
    if (!f) return;
    for (int i = 0; i < f->count; i++) free(f->tensors[i].name);
    for (int i = 0; i < f->meta_count; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->tensors);
    free(f->meta);
    free(f->buffer);
    memset(f, 0, sizeof *f);
}

/* JSON numbers are doubles in cJSON: accept only exact non-negative integers below 2^53. */
static int json_uint(const cJSON *item, uint64_t *v)
{
    if (!cJSON_IsNumber(item)) return 0;
    double d = item->valuedouble;
    if (!(d >= 0.0 && d < ST_MAX_JSON_INT)) return 0; /* also rejects NaN */
    if ((double)(uint64_t)d != d) return 0;
    *v = (uint64_t)d;
    return 1;
}

static smoe_status bad(smoe_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static smoe_status bad(smoe_err *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return SMOE_ERROR_BAD_FORMAT;
}

/* The dtype, shape and data_offsets members of a tensor's entry. The members are walked rather
 * than looked up, so that a repeated field is caught. */
static smoe_status entry_fields(const cJSON *entry, const char *name, const cJSON **dtype,
                                const cJSON **shape, const cJSON **offsets, smoe_err *err)
{
    if (!cJSON_IsObject(entry)) return bad(err, "tensor \"%s\": entry is not a JSON object", name);
    *dtype = *shape = *offsets = NULL;
    for (const cJSON *m = entry->child; m; m = m->next) {
        const cJSON **slot = strcmp(m->string, "dtype") == 0          ? dtype
                             : strcmp(m->string, "shape") == 0        ? shape
                             : strcmp(m->string, "data_offsets") == 0 ? offsets
                                                                      : NULL;
        if (!slot) continue; /* unknown fields are ignored, as the reference reader does */
        if (*slot) return bad(err, "tensor \"%s\": field \"%s\" appears twice", name, m->string);
        *slot = m;
    }
    if (!*dtype) return bad(err, "tensor \"%s\": missing \"dtype\"", name);
    if (!*shape) return bad(err, "tensor \"%s\": missing \"shape\"", name);
    if (!*offsets) return bad(err, "tensor \"%s\": missing \"data_offsets\"", name);
    return SMOE_OK;
}

/* t->dtype, t->ndim and t->shape from the entry's dtype and shape members. */
static smoe_status entry_type(const cJSON *dtype, const cJSON *shape, const char *name,
                              smoe_st_tensor *t, smoe_err *err)
{
    if (!cJSON_IsString(dtype)) return bad(err, "tensor \"%s\": dtype is not a string", name);
    if (!dtype_from_name(dtype->valuestring, &t->dtype))
        return bad(err, "tensor \"%s\": unknown dtype \"%s\"", name, dtype->valuestring);

    if (!cJSON_IsArray(shape)) return bad(err, "tensor \"%s\": shape is not an array", name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > SMOE_ST_MAX_DIMS)
        return bad(err, "tensor \"%s\": shape has %d dimensions, at most %d are supported", name,
                   ndim, SMOE_ST_MAX_DIMS);
    t->ndim = 0;
    for (const cJSON *d = shape->child; d; d = d->next) {
        uint64_t v;
        if (!json_uint(d, &v))
            return bad(err, "tensor \"%s\": shape[%d] is not a non-negative integer below 2^53",
                       name, t->ndim);
        t->shape[t->ndim++] = (int64_t)v;
    }
    return SMOE_OK;
}

/* [begin, end) from the entry's data_offsets, inside the data region. */
static smoe_status entry_offsets(const cJSON *offsets, const char *name, uint64_t region_size,
                                 uint64_t *begin, uint64_t *end, smoe_err *err)
{
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2)
        return bad(err, "tensor \"%s\": data_offsets is not an array of two integers", name);
    if (!json_uint(offsets->child, begin) || !json_uint(offsets->child->next, end))
        return bad(err, "tensor \"%s\": data_offsets are not non-negative integers below 2^53",
                   name);
    if (*begin > *end)
        return bad(err, "tensor \"%s\": data_offsets [%" PRIu64 ", %" PRIu64 "] begin after end",
                   name, *begin, *end);
    if (*end > region_size)
        return bad(err,
                   "tensor \"%s\": data_offsets end %" PRIu64
                   " is beyond the data region (%" PRIu64 " bytes)",
                   name, *end, region_size);
    return SMOE_OK;
}

/* Fills t from one header entry; t->data is set to region + begin. */
static smoe_status parse_entry(const cJSON *entry, const char *name, const uint8_t *region,
                               uint64_t region_size, smoe_st_tensor *t, smoe_err *err)
{
    const cJSON *dtype, *shape, *offsets;
    uint64_t begin = 0, end = 0, need;
    smoe_status st = entry_fields(entry, name, &dtype, &shape, &offsets, err);
    if (st == SMOE_OK) st = entry_type(dtype, shape, name, t, err);
    if (st == SMOE_OK) st = entry_offsets(offsets, name, region_size, &begin, &end, err);
    if (st != SMOE_OK) return st;

    char shp[256];
    format_shape(shp, sizeof shp, t->ndim, t->shape);
    if (!shape_bytes(t->ndim, t->shape, smoe_dtype_size(t->dtype), &need))
        return bad(err, "tensor \"%s\": shape %s overflows 64-bit sizes", name, shp);
    if (need != end - begin)
        return bad(err,
                   "tensor \"%s\": %s %s needs %" PRIu64 " bytes but data_offsets [%" PRIu64
                   ", %" PRIu64 "] span %" PRIu64,
                   name, smoe_dtype_name(t->dtype), shp, need, begin, end, end - begin);
    t->nbytes = need;
    t->data = region + begin;
    return SMOE_OK;
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const smoe_st_tensor *)a)->name, ((const smoe_st_tensor *)b)->name);
}

/* Orders by position in the data region (pointers into the same buffer compare fine). */
static int cmp_tensor_pos(const void *a, const void *b)
{
    const smoe_st_tensor *x = *(const smoe_st_tensor *const *)a;
    const smoe_st_tensor *y = *(const smoe_st_tensor *const *)b;
    const uint8_t *px = x->data, *py = y->data;
    if (px != py) return px < py ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_meta_key(const void *a, const void *b)
{
    return strcmp(((const smoe_st_meta *)a)->key, ((const smoe_st_meta *)b)->key);
}

/* The tensors must tile [0, region_size) exactly: no overlap, no gap, no trailing bytes. */
static smoe_status check_coverage(const smoe_st_file *f, const uint8_t *region,
                                  uint64_t region_size, smoe_err *err)
{
    smoe_status st = SMOE_OK;
    const smoe_st_tensor **order = NULL;
    if (f->count > 0) {
        order = malloc((size_t)f->count * sizeof *order);
        if (!order) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
        for (int i = 0; i < f->count; i++) order[i] = &f->tensors[i];
        qsort(order, (size_t)f->count, sizeof *order, cmp_tensor_pos);
    }
    uint64_t cursor = 0;
    const char *prev = NULL;
    for (int i = 0; i < f->count && st == SMOE_OK; i++) {
        const smoe_st_tensor *t = order[i];
        uint64_t begin = (uint64_t)((const uint8_t *)t->data - region);
        if (begin < cursor)
            st = bad(err,
                     "tensors \"%s\" and \"%s\" overlap in the data region (bytes [%" PRIu64
                     ", %" PRIu64 "))",
                     prev, t->name, begin, cursor);
        else if (begin > cursor)
            st = bad(err,
                     "gap in the data region: no tensor covers bytes [%" PRIu64 ", %" PRIu64
                     ") (before tensor \"%s\")",
                     cursor, begin, t->name);
        cursor = begin + t->nbytes;
        prev = t->name;
    }
    if (st == SMOE_OK && cursor != region_size)
        st = bad(err,
                 "data region has %" PRIu64 " trailing bytes not covered by any tensor (bytes [%"
                 PRIu64 ", %" PRIu64 "))",
                 region_size - cursor, cursor, region_size);
    free(order);
    return st;
}

/* The header's JSON text [header, header + hlen): one JSON object, then only padding
 * whitespace. *root is set (for the caller to delete) whenever cJSON parsed something. */
static smoe_status parse_json(const char *header, uint64_t hlen, cJSON **root, smoe_err *err)
{
    const char *end = NULL;
    *root = cJSON_ParseWithLengthOpts(header, (size_t)hlen, &end, 0);
    if (!*root) {
        size_t at = end && end >= header ? (size_t)(end - header) : 0;
        return bad(err, "safetensors header is not valid JSON (error near byte %zu of the header)",
                   at);
    }
    for (const char *p = end; p < header + hlen; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            return bad(err, "safetensors header is not valid JSON (trailing data at byte %zu)",
                       (size_t)(p - header));
    }
    if (!cJSON_IsObject(*root)) return bad(err, "safetensors header is not a JSON object");
    return SMOE_OK;
}

/* The length prefix, the header's bytes and its JSON; *region and *region_size: the data
 * region after the header. */
static smoe_status parse_header(const uint8_t *buf, size_t size, cJSON **root,
                                const uint8_t **region, uint64_t *region_size, smoe_err *err)
{
    if (size < 8)
        return bad(err, "not a safetensors file: %zu bytes, shorter than the 8-byte header length",
                   size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen > ST_MAX_HEADER)
        return bad(err, "safetensors header length %" PRIu64 " is absurd (limit %u bytes)", hlen,
                   ST_MAX_HEADER);
    if (hlen > size - 8)
        return bad(err,
                   "safetensors header length %" PRIu64 " exceeds the file (%zu bytes after the "
                   "length field)",
                   hlen, size - 8);
    const char *header = (const char *)buf + 8;
    *region = buf + 8 + hlen;
    *region_size = size - 8 - hlen;

    size_t bad_at = smoe_st_utf8_check((const uint8_t *)header, (size_t)hlen);
    if (bad_at != hlen)
        return bad(err, "safetensors header is not valid UTF-8 (byte %zu of the header)", bad_at);
    if (has_escaped_nul(header, (size_t)hlen))
        return bad(err, "safetensors header contains a \\u0000 escape (NUL is not allowed in "
                        "names or metadata)");
    if (hlen == 0 || header[0] != '{')
        return bad(err, "safetensors header is not a JSON object (it must start with '{')");
    return parse_json(header, hlen, root, err);
}

/* The "__metadata__" member (at most one, an object; NULL if none), the number of tensors
 * (every other member) and of metadata entries. */
static smoe_status find_meta(const cJSON *root, const cJSON **meta, int *ntensors, int *nmeta,
                             smoe_err *err)
{
    *meta = NULL;
    *ntensors = *nmeta = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, ST_META_KEY) != 0) {
            ++*ntensors;
            continue;
        }
        if (*meta) return bad(err, "safetensors header has \"" ST_META_KEY "\" twice");
        *meta = e;
    }
    if (!*meta) return SMOE_OK;
    if (!cJSON_IsObject(*meta)) return bad(err, "\"" ST_META_KEY "\" is not a JSON object");
    *nmeta = cJSON_GetArraySize(*meta);
    return SMOE_OK;
}

/* f->meta (allocated for every entry) from the metadata object: strings, sorted by key, no key
 * twice. */
static smoe_status parse_meta(const cJSON *meta, smoe_st_file *f, smoe_err *err)
{
    for (const cJSON *m = meta->child; m; m = m->next) {
        if (!cJSON_IsString(m))
            return bad(err, "\"" ST_META_KEY "\" value of \"%s\" is not a string", m->string);
        smoe_st_meta *kv = &f->meta[f->meta_count++];
        kv->key = str_dup(m->string);
        kv->value = str_dup(m->valuestring);
        if (!kv->key || !kv->value)
            return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    }
    if (f->meta_count) qsort(f->meta, (size_t)f->meta_count, sizeof *f->meta, cmp_meta_key);
    for (int i = 1; i < f->meta_count; i++) {
        if (strcmp(f->meta[i - 1].key, f->meta[i].key) == 0)
            return bad(err, "\"" ST_META_KEY "\" key \"%s\" appears twice", f->meta[i].key);
    }
    return SMOE_OK;
}

/* f->tensors (allocated for every tensor) from the members other than meta, sorted by name: a
 * stable order for callers, and duplicates become neighbours. */
static smoe_status parse_tensors(const cJSON *root, const cJSON *meta, const uint8_t *region,
                                 uint64_t region_size, smoe_st_file *f, smoe_err *err)
{
    for (const cJSON *e = root->child; e; e = e->next) {
        if (e == meta) continue;
        smoe_st_tensor *t = &f->tensors[f->count];
        smoe_status st = parse_entry(e, e->string, region, region_size, t, err);
        if (st != SMOE_OK) return st;
        if (!(t->name = str_dup(e->string)))
            return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
        f->count++;
    }
    if (f->count) qsort(f->tensors, (size_t)f->count, sizeof *f->tensors, cmp_tensor_name);
    for (int i = 1; i < f->count; i++) {
        if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0)
            return bad(err, "tensor \"%s\" appears twice in the header (duplicate name)",
                       f->tensors[i].name);
    }
    return SMOE_OK;
}

/* Parses buf (taking ownership of it, freed on failure too) into out. */
static smoe_status parse_owned(uint8_t *buf, size_t size, smoe_st_file *out, smoe_err *err)
{
    smoe_st_file f = {0};
    cJSON *root = NULL;
    const cJSON *meta = NULL;
    const uint8_t *region = NULL;
    uint64_t region_size = 0;
    int ntensors = 0, nmeta = 0;
    f.buffer = buf;
    f.size = size;

    smoe_status st = parse_header(buf, size, &root, &region, &region_size, err);
    if (st == SMOE_OK) st = find_meta(root, &meta, &ntensors, &nmeta, err);
    /* the arrays are allocated once, for every entry counted */
    if (st == SMOE_OK && ((ntensors && !(f.tensors = calloc((size_t)ntensors, sizeof *f.tensors))) ||
                          (nmeta && !(f.meta = calloc((size_t)nmeta, sizeof *f.meta)))))
        st = smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    if (st == SMOE_OK && meta) st = parse_meta(meta, &f, err);
    if (st == SMOE_OK) st = parse_tensors(root, meta, region, region_size, &f, err);
    if (st == SMOE_OK) st = check_coverage(&f, region, region_size, err);

    cJSON_Delete(root);
    if (st != SMOE_OK) {
        smoe_st_free(&f); /* frees buf too */
        return st;
    }
    *out = f;
    return SMOE_OK;
}

smoe_status smoe_st_parse(const void *data, size_t size, smoe_st_file *out, smoe_err *err)
{
    if (!out) return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "smoe_st_parse: out is NULL");
    memset(out, 0, sizeof *out);
    if (!data && size)
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "smoe_st_parse: data is NULL");
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    if (size) memcpy(buf, data, size);
    return parse_owned(buf, size, out, err);
}

smoe_status smoe_st_read_file(const char *path, smoe_st_file *out, smoe_err *err)
{
    if (!out) return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "smoe_st_read_file: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path) return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "smoe_st_read_file: path is NULL");

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return smoe_fail(err, SMOE_ERROR_IO, "cannot open \"%s\": %s", path, strerror(errno));

    /* The size from fstat is only a first guess: read until EOF so that pipes and files that
     * change under us are handled too. */
    struct stat sb;
    size_t cap = 1 << 16, len = 0;
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size >= 0 &&
        (uint64_t)sb.st_size < SIZE_MAX)
        cap = (size_t)sb.st_size + 1; /* +1 so EOF is seen without growing */
    uint8_t *buf = malloc(cap);
    if (!buf) {
        close(fd);
        return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory reading \"%s\"",
                         path);
    }
    for (;;) {
        if (len == cap) {
            size_t ncap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
            uint8_t *nbuf = ncap > cap ? realloc(buf, ncap) : NULL;
            if (!nbuf) {
                free(buf);
                close(fd);
                return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY,
                                 "out of host memory reading \"%s\"", path);
            }
            buf = nbuf;
            cap = ncap;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return smoe_fail(err, SMOE_ERROR_IO, "cannot read \"%s\": %s", path, strerror(e));
        }
        if (n == 0) break;
        len += (size_t)n;
    }
    close(fd);

    smoe_status st = parse_owned(buf, len, out, err);
    if (st != SMOE_OK) smoe_fail_prefix(err, st, "%s", path);
    return st;
}

const smoe_st_tensor *smoe_st_find(const smoe_st_file *f, const char *name)
{
    if (!f || !name) return NULL;
    for (int i = 0; i < f->count; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *smoe_st_get_meta(const smoe_st_file *f, const char *key)
{
    if (!f || !key) return NULL;
    for (int i = 0; i < f->meta_count; i++)
        if (strcmp(f->meta[i].key, key) == 0) return f->meta[i].value;
    return NULL;
}

smoe_status smoe_st_expect_f32(const smoe_st_file *f, const char *name, int ndim,
                               const int64_t *shape, const smoe_st_tensor **out, smoe_err *err)
{
    if (out) *out = NULL;
    if (!f || !name || ndim < 0 || ndim > SMOE_ST_MAX_DIMS || (ndim > 0 && !shape))
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "smoe_st_expect_f32: bad arguments");

    char want[256];
    if (ndim == 0) snprintf(want, sizeof want, "[] (a scalar; [1] is accepted too)");
    else format_shape(want, sizeof want, ndim, shape);

    const smoe_st_tensor *t = smoe_st_find(f, name);
    if (!t)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "tensor \"%s\" is missing (expected F32 %s)",
                         name, want);

    int ok = t->dtype == SMOE_F32;
    if (ok && ndim == 0) {
        ok = t->ndim == 0 || (t->ndim == 1 && t->shape[0] == 1);
    } else if (ok) {
        ok = t->ndim == ndim;
        for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    }
    if (!ok) {
        char have[256];
        format_shape(have, sizeof have, t->ndim, t->shape);
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "tensor \"%s\" has shape %s %s, expected F32 %s",
                         name, have, smoe_dtype_name(t->dtype), want);
    }
    if (out) *out = t;
    return SMOE_OK;
}

smoe_status smoe_st_copy_f32(const smoe_st_tensor *t, float *dst, smoe_err *err)
{
    if (!t || (!dst && t->nbytes))
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "smoe_st_copy_f32: NULL argument");
    if (t->dtype != SMOE_F32)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "tensor \"%s\" is %s, expected F32",
                         t->name ? t->name : "?", smoe_dtype_name(t->dtype));
    if (t->nbytes % sizeof(float))
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "tensor \"%s\": %" PRIu64
                         " bytes is not a whole number of F32 values", t->name ? t->name : "?",
                         t->nbytes);
    if (t->nbytes == 0) return SMOE_OK;
    /* memcpy, not a float* cast: the data sits wherever the file put it. */
    memcpy(dst, t->data, (size_t)t->nbytes);
    size_t n = (size_t)(t->nbytes / sizeof(float));
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(dst[i]))
            return smoe_fail(err, SMOE_ERROR_NOT_FINITE,
                             "tensor \"%s\" has a non-finite value (%g) at index %zu of %zu",
                             t->name ? t->name : "?", (double)dst[i], i, n);
    }
    return SMOE_OK;
}

/* ---- Writing ----------------------------------------------------------------------------- */

/* A growable byte string; a failed allocation is remembered and reported once at the end. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (n > b->cap - b->len) {
        size_t ncap = b->cap ? b->cap : 256;
        while (ncap - b->len < n) {
            if (ncap > SIZE_MAX / 2) {
                b->oom = 1;
                return;
            }
            ncap *= 2;
        }
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_u64(sbuf *b, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%" PRIu64, v);
    sb_put(b, tmp, (size_t)n);
}

/* A JSON string literal: quotes, backslashes and control characters escaped, UTF-8 kept. */
static void sb_json_string(sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            sb_put(b, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, (const char *)p, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static int cmp_entry_ptr(const void *a, const void *b)
{
    return strcmp((*(const smoe_st_entry *const *)a)->name, (*(const smoe_st_entry *const *)b)->name);
}

static int cmp_meta_ptr(const void *a, const void *b)
{
    return strcmp((*(const smoe_st_meta *const *)a)->key, (*(const smoe_st_meta *const *)b)->key);
}

static int valid_utf8_str(const char *s)
{
    size_t n = strlen(s);
    return smoe_st_utf8_check((const uint8_t *)s, n) == n;
}

/* What both writers need: the entries in name order, their sizes, and the header bytes (length
 * prefix included, padded so the data starts 8-byte aligned). */
typedef struct st_plan {
    const smoe_st_entry **order;
    uint64_t *nbytes;
    sbuf head;
    uint64_t data_size;
} st_plan;

static void plan_free(st_plan *p)
{
    free(p->order);
    free(p->nbytes);
    free(p->head.p);
    memset(p, 0, sizeof *p);
}

/* One entry given to a writer (entries[i]): a name that is not the metadata key, valid UTF-8; a
 * known dtype; a shape whose sizes fit the format; data when it has bytes. */
static smoe_status check_entry(const smoe_st_entry *e, int i, smoe_err *err)
{
    uint64_t bytes;
    if (!e->name)
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "safetensors writer: entry %d has "
                         "no name", i);
    if (strcmp(e->name, ST_META_KEY) == 0 || !valid_utf8_str(e->name))
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT,
                         "safetensors writer: \"%s\" is not a valid tensor name", e->name);
    if (!dtype_valid(e->dtype))
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT,
                         "safetensors writer: tensor \"%s\" has an unknown dtype %d", e->name,
                         (int)e->dtype);
    if (e->ndim < 0 || e->ndim > SMOE_ST_MAX_DIMS)
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT,
                         "safetensors writer: tensor \"%s\" has %d dimensions (0 to %d allowed)",
                         e->name, e->ndim, SMOE_ST_MAX_DIMS);
    for (int d = 0; d < e->ndim; d++)
        if (e->shape[d] < 0 || (double)e->shape[d] >= ST_MAX_JSON_INT)
            return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT,
                             "safetensors writer: tensor \"%s\" has a bad dimension %" PRId64,
                             e->name, e->shape[d]);
    if (!shape_bytes(e->ndim, e->shape, smoe_dtype_size(e->dtype), &bytes) ||
        bytes >= (uint64_t)ST_MAX_JSON_INT)
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT,
                         "safetensors writer: tensor \"%s\" is too large", e->name);
    if (bytes && !e->data)
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT,
                         "safetensors writer: tensor \"%s\" has no data", e->name);
    return SMOE_OK;
}

/* The writers' arguments, every entry and every metadata pair. */
static smoe_status check_args(const smoe_st_entry *entries, int count, const smoe_st_meta *meta,
                              int meta_count, smoe_err *err)
{
    if (count < 0 || meta_count < 0 || (count > 0 && !entries) || (meta_count > 0 && !meta))
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT,
                         "safetensors writer: bad entry or metadata list");
    for (int i = 0; i < count; i++) {
        smoe_status st = check_entry(&entries[i], i, err);
        if (st != SMOE_OK) return st;
    }
    for (int i = 0; i < meta_count; i++) {
        if (!meta[i].key || !meta[i].value || strcmp(meta[i].key, ST_META_KEY) == 0 ||
            !valid_utf8_str(meta[i].key) || !valid_utf8_str(meta[i].value))
            return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT,
                             "safetensors writer: metadata entry %d is NULL or not valid UTF-8", i);
    }
    return SMOE_OK;
}

/* p->order and morder (allocated) filled with the entries in name order and the metadata in key
 * order; a name or key given twice is an error. */
static smoe_status plan_order(const smoe_st_entry *entries, int count, const smoe_st_meta *meta,
                              int meta_count, st_plan *p, const smoe_st_meta **morder,
                              smoe_err *err)
{
    for (int i = 0; i < count; i++) p->order[i] = &entries[i];
    for (int i = 0; i < meta_count; i++) morder[i] = &meta[i];
    if (count) qsort(p->order, (size_t)count, sizeof *p->order, cmp_entry_ptr);
    if (meta_count) qsort(morder, (size_t)meta_count, sizeof *morder, cmp_meta_ptr);
    for (int i = 1; i < count; i++) {
        if (strcmp(p->order[i - 1]->name, p->order[i]->name) == 0)
            return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT,
                             "safetensors writer: tensor \"%s\" given twice", p->order[i]->name);
    }
    for (int i = 1; i < meta_count; i++) {
        if (strcmp(morder[i - 1]->key, morder[i]->key) == 0)
            return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT,
                             "safetensors writer: metadata key \"%s\" given twice", morder[i]->key);
    }
    return SMOE_OK;
}

/* The header's "__metadata__" member, with its trailing comma when tensors follow. */
static void head_meta(sbuf *h, const smoe_st_meta **morder, int meta_count)
{
    sb_str(h, "\"" ST_META_KEY "\":{");
    for (int i = 0; i < meta_count; i++) {
        if (i) sb_put(h, ",", 1);
        sb_json_string(h, morder[i]->key);
        sb_put(h, ":", 1);
        sb_json_string(h, morder[i]->value);
    }
    sb_put(h, "}", 1);
}

/* One tensor's member of the header, its data at *offset (advanced past it); 0 if the data
 * would end beyond what the format can address. */
static int head_entry(sbuf *h, const smoe_st_entry *e, uint64_t nbytes, uint64_t *offset)
{
    sb_json_string(h, e->name);
    sb_str(h, ":{\"dtype\":\"");
    sb_str(h, smoe_dtype_name(e->dtype));
    sb_str(h, "\",\"shape\":[");
    for (int d = 0; d < e->ndim; d++) {
        if (d) sb_put(h, ",", 1);
        sb_u64(h, (uint64_t)e->shape[d]);
    }
    sb_str(h, "],\"data_offsets\":[");
    sb_u64(h, *offset);
    sb_put(h, ",", 1);
    if (nbytes > UINT64_MAX - *offset || *offset + nbytes >= (uint64_t)ST_MAX_JSON_INT) return 0;
    *offset += nbytes;
    sb_u64(h, *offset);
    sb_str(h, "]}");
    return 1;
}

/* p->head, p->nbytes and p->data_size from the ordered entries and metadata. */
static smoe_status plan_header(st_plan *p, int count, const smoe_st_meta **morder, int meta_count,
                               smoe_err *err)
{
    sbuf *h = &p->head;
    sb_put(h, "\0\0\0\0\0\0\0\0", 8); /* the length, filled in below */
    sb_put(h, "{", 1);
    if (meta_count) head_meta(h, morder, meta_count);
    uint64_t offset = 0;
    for (int i = 0; i < count; i++) {
        const smoe_st_entry *e = p->order[i];
        shape_bytes(e->ndim, e->shape, smoe_dtype_size(e->dtype), &p->nbytes[i]);
        if (i || meta_count) sb_put(h, ",", 1);
        if (!head_entry(h, e, p->nbytes[i], &offset))
            return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "safetensors writer: data too large");
    }
    sb_put(h, "}", 1);
    while (!h->oom && h->len % 8) sb_put(h, " ", 1); /* readers may then map the data aligned */
    if (h->oom) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    uint64_t hlen = h->len - 8;
    for (int i = 0; i < 8; i++) h->p[i] = (char)((hlen >> (8 * i)) & 0xFF);
    p->data_size = offset;
    return SMOE_OK;
}

static smoe_status plan_build(const smoe_st_entry *entries, int count, const smoe_st_meta *meta,
                              int meta_count, st_plan *p, smoe_err *err)
{
    memset(p, 0, sizeof *p);
    smoe_status st = check_args(entries, count, meta, meta_count, err);
    if (st != SMOE_OK) return st;

    const smoe_st_meta **morder = NULL;
    if ((count && (!(p->order = malloc((size_t)count * sizeof *p->order)) ||
                   !(p->nbytes = malloc((size_t)count * sizeof *p->nbytes)))) ||
        (meta_count && !(morder = malloc((size_t)meta_count * sizeof *morder))))
        st = smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    if (st == SMOE_OK) st = plan_order(entries, count, meta, meta_count, p, morder, err);
    if (st == SMOE_OK) st = plan_header(p, count, morder, meta_count, err);
    free(morder);
    if (st != SMOE_OK) plan_free(p);
    return st;
}

smoe_status smoe_st_serialize(const smoe_st_entry *entries, int count, const smoe_st_meta *meta,
                              int meta_count, uint8_t **out, size_t *out_size, smoe_err *err)
{
    if (out) *out = NULL;
    if (out_size) *out_size = 0;
    if (!out || !out_size)
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "smoe_st_serialize: NULL output");
    st_plan p;
    smoe_status st = plan_build(entries, count, meta, meta_count, &p, err);
    if (st != SMOE_OK) return st;
    if (p.data_size > SIZE_MAX - p.head.len) {
        plan_free(&p);
        return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "safetensors image too large");
    }
    size_t total = p.head.len + (size_t)p.data_size;
    uint8_t *img = malloc(total);
    if (!img) {
        plan_free(&p);
        return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    }
    memcpy(img, p.head.p, p.head.len);
    size_t at = p.head.len;
    for (int i = 0; i < count; i++) {
        if (p.nbytes[i]) memcpy(img + at, p.order[i]->data, (size_t)p.nbytes[i]);
        at += (size_t)p.nbytes[i];
    }
    plan_free(&p);
    *out = img;
    *out_size = total;
    return SMOE_OK;
}

static int write_all(int fd, const void *data, uint64_t n)
{
    const uint8_t *p = data;
    while (n) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : (size_t)n;
        ssize_t w = write(fd, p, chunk);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (w == 0) errno = EIO;
            return -1;
        }
        p += w;
        n -= (uint64_t)w;
    }
    return 0;
}

/* Makes the rename durable; failure here is not reported, as the file itself is complete. */
static void sync_parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash) dir = str_dup(".");
    else if (slash == path) dir = str_dup("/");
    else if ((dir = malloc((size_t)(slash - path) + 1))) {
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
    }
    if (!dir) return;
    int fd = open(dir, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dir);
}

smoe_status smoe_st_write(const char *path, const smoe_st_entry *entries, int count,
                          const smoe_st_meta *meta, int meta_count, smoe_err *err)
{
    if (!path || !*path)
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "smoe_st_write: no path");
    st_plan p;
    smoe_status st = plan_build(entries, count, meta, meta_count, &p, err);
    if (st != SMOE_OK) return st;

    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    if (!tmp) {
        plan_free(&p);
        return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);

    /* Data goes to path.tmp and only a complete, synced file is renamed over path, so a crash
     * or a full disk never leaves a truncated model behind. */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        st = smoe_fail(err, SMOE_ERROR_IO, "cannot create \"%s\": %s", tmp, strerror(errno));
        goto done;
    }
    if (write_all(fd, p.head.p, p.head.len) != 0) goto write_failed;
    for (int i = 0; i < count; i++)
        if (p.nbytes[i] && write_all(fd, p.order[i]->data, p.nbytes[i]) != 0) goto write_failed;
    if (fsync(fd) != 0) {
        st = smoe_fail(err, SMOE_ERROR_IO, "cannot sync \"%s\": %s", tmp, strerror(errno));
        goto cleanup;
    }
    int rc = close(fd);
    fd = -1;
    if (rc != 0) {
        st = smoe_fail(err, SMOE_ERROR_IO, "cannot close \"%s\": %s", tmp, strerror(errno));
        goto cleanup;
    }
    if (rename(tmp, path) != 0) {
        st = smoe_fail(err, SMOE_ERROR_IO, "cannot rename \"%s\" to \"%s\": %s", tmp, path,
                       strerror(errno));
        goto cleanup;
    }
    sync_parent_dir(path);
    goto done;

write_failed:
    st = smoe_fail(err, SMOE_ERROR_IO, "cannot write \"%s\": %s", tmp, strerror(errno));
cleanup:
    if (fd >= 0) close(fd);
    unlink(tmp);
done:
    free(tmp);
    plan_free(&p);
    return st;
}
