/* Tests of host/safetensors.c: writer/reader round trip, the golden files (argv[1]), one case per
 * malformed-file rule, the atomic writer's failure paths, and the expect/copy helpers. */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"
#include "test_util.h"

static int file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

static int contains(const uint8_t *hay, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(hay + i, needle, k) == 0) return 1;
    return 0;
}

static int is_zeroed(const smoe_st_file *f)
{
    return !f->buffer && !f->size && !f->tensors && !f->count && !f->meta && !f->meta_count;
}

/* An image: 8-byte header length, the JSON as given, then data_len bytes of 0x11. */
static uint8_t *make_image(const char *json, size_t data_len, size_t *size)
{
    size_t hlen = strlen(json);
    *size = 8 + hlen + data_len;
    uint8_t *b = malloc(*size);
    if (!b) abort();
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(((uint64_t)hlen >> (8 * i)) & 0xFF);
    memcpy(b + 8, json, hlen);
    memset(b + 8 + hlen, 0x11, data_len);
    return b;
}

/* Parses raw bytes expecting BAD_FORMAT with a message containing word. */
static void expect_bad_bytes(const uint8_t *bytes, size_t size, const char *word, int line)
{
    smoe_st_file f;
    smoe_err err = {{0}};
    memset(&f, 0xAB, sizeof f); /* so that "left all zero" is really checked */
    smoe_status st = smoe_st_parse(bytes, size, &f, &err);
    CHECK_MSG(st == SMOE_ERROR_BAD_FORMAT, "line %d: status %s (%s)", line,
              smoe_status_string(st), err.msg);
    CHECK_MSG(strstr(err.msg, word) != NULL, "line %d: message \"%s\" lacks \"%s\"", line,
              err.msg, word);
    CHECK_MSG(is_zeroed(&f), "line %d: out not zeroed", line);
    if (st == SMOE_OK) smoe_st_free(&f);
}

static void expect_bad(const char *json, size_t data_len, const char *word, int line)
{
    size_t size;
    uint8_t *b = make_image(json, data_len, &size);
    expect_bad_bytes(b, size, word, line);
    free(b);
}
#define EXPECT_BAD(json, data_len, word) expect_bad(json, data_len, word, __LINE__)

static void expect_good(const char *json, size_t data_len, int count, int line)
{
    size_t size;
    uint8_t *b = make_image(json, data_len, &size);
    smoe_st_file f;
    smoe_err err = {{0}};
    smoe_status st = smoe_st_parse(b, size, &f, &err);
    free(b); /* the parsed file must own its own copy */
    CHECK_MSG(st == SMOE_OK, "line %d: %s", line, err.msg);
    CHECK_MSG(f.count == count, "line %d: count %d", line, f.count);
    for (int i = 0; i < f.count; i++) {
        const uint8_t *d = f.tensors[i].data;
        for (uint64_t k = 0; k < f.tensors[i].nbytes; k++) CHECK(d[k] == 0x11);
    }
    smoe_st_free(&f);
}
#define EXPECT_GOOD(json, data_len, count) expect_good(json, data_len, count, __LINE__)

#define T(name, dtype, shape, offs) \
    "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":" offs "}"

static void test_malformed(void)
{
    /* Too short for the length field. */
    expect_bad_bytes((const uint8_t *)"", 0, "shorter", __LINE__);
    expect_bad_bytes((const uint8_t *)"\x02\0\0\0\0", 5, "shorter", __LINE__);

    /* Header length beyond the file, absurd, or overflowing 8 + N. */
    {
        uint8_t b[16] = {0xE8, 0x03, 0, 0, 0, 0, 0, 0, '{', '}'}; /* 1000 */
        expect_bad_bytes(b, 10, "exceeds", __LINE__);
        uint8_t c[10] = {0, 0, 0, 0x10, 0, 0, 0, 0, '{', '}'}; /* 256 MiB */
        expect_bad_bytes(c, 10, "absurd", __LINE__);
        uint8_t d[10] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, '{', '}'};
        expect_bad_bytes(d, 10, "absurd", __LINE__);
        uint8_t e[9] = {1, 0, 0, 0, 0, 0, 0, 0, '{'}; /* N = size - 8 but not a whole object */
        expect_bad_bytes(e, 9, "JSON", __LINE__);
    }

    /* Not JSON, not an object, trailing junk, not UTF-8. */
    EXPECT_BAD("", 0, "JSON");
    EXPECT_BAD("{not json}", 0, "JSON");
    EXPECT_BAD("{\"a\":", 0, "JSON");
    EXPECT_BAD("[1, 2]", 0, "object");
    EXPECT_BAD("\"str\"", 0, "object");
    EXPECT_BAD("   {}", 0, "object");
    EXPECT_BAD("{} x", 0, "trailing");
    EXPECT_BAD("{}{}", 0, "trailing");
    EXPECT_BAD("{\"\xff\":1}", 0, "UTF-8");
    EXPECT_BAD("{\"\xc0\xaf\":1}", 0, "UTF-8"); /* overlong '/' */
    {
        const char json[] = "{\"a\0\":1}"; /* a raw NUL would truncate the name */
        size_t size;
        uint8_t *b = make_image("xxxxxxxx", 0, &size);
        b[0] = (uint8_t)(sizeof json - 1);
        memcpy(b + 8, json, sizeof json - 1);
        expect_bad_bytes(b, size, "UTF-8", __LINE__);
        free(b);
    }

    EXPECT_BAD("{" T("a\\u0000b", "F32", "[1]", "[0,4]") "}", 4, "u0000");
    EXPECT_BAD("{\"__metadata__\":{\"k\":\"x\\u0000\"}}", 0, "u0000");
    EXPECT_GOOD("{" T("a\\\\u0000b", "U8", "[1]", "[0,1]") "}", 1, 1); /* an escaped backslash */

    /* Entries that are not objects or lack a field. */
    EXPECT_BAD("{\"w\":5}", 0, "\"w\"");
    EXPECT_BAD("{\"w\":[1]}", 0, "not a JSON object");
    EXPECT_BAD("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype");
    EXPECT_BAD("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "shape");
    EXPECT_BAD("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "data_offsets");
    EXPECT_BAD("{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
               4, "twice");

    /* dtype. */
    EXPECT_BAD("{" T("w", "F8_E4M3", "[1]", "[0,1]") "}", 1, "F8_E4M3");
    EXPECT_BAD("{" T("w", "f32", "[1]", "[0,4]") "}", 4, "unknown dtype");
    EXPECT_BAD("{\"w\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype");

    /* shape. */
    EXPECT_BAD("{" T("w", "F32", "3", "[0,12]") "}", 12, "shape");
    EXPECT_BAD("{" T("w", "F32", "[-1]", "[0,4]") "}", 4, "shape[0]");
    EXPECT_BAD("{" T("w", "F32", "[1.5]", "[0,4]") "}", 4, "shape[0]");
    EXPECT_BAD("{" T("w", "F32", "[1,\"2\"]", "[0,8]") "}", 8, "shape[1]");
    EXPECT_BAD("{" T("w", "F32", "[1,null]", "[0,4]") "}", 4, "shape[1]");
    EXPECT_BAD("{" T("w", "F32", "[1e400]", "[0,4]") "}", 4, "shape[0]");
    EXPECT_BAD("{" T("w", "F32", "[9007199254740992]", "[0,4]") "}", 4, "shape[0]");
    EXPECT_BAD("{" T("w", "U8", "[1,1,1,1,1,1,1,1,1]", "[0,1]") "}", 1, "9 dimensions");
    EXPECT_BAD("{" T("w", "U8", "[4503599627370496,4503599627370496]", "[0,1]") "}", 1,
               "overflow");
    EXPECT_BAD("{" T("w", "F64", "[4503599627370496,8192]", "[0,1]") "}", 1, "overflow");

    /* data_offsets. */
    EXPECT_BAD("{" T("w", "F32", "[1]", "4") "}", 4, "data_offsets");
    EXPECT_BAD("{" T("w", "F32", "[1]", "[0]") "}", 4, "data_offsets");
    EXPECT_BAD("{" T("w", "F32", "[1]", "[0,4,8]") "}", 8, "data_offsets");
    EXPECT_BAD("{" T("w", "F32", "[1]", "[-4,0]") "}", 4, "data_offsets");
    EXPECT_BAD("{" T("w", "F32", "[1]", "[0,4.5]") "}", 4, "data_offsets");
    EXPECT_BAD("{" T("w", "F32", "[1]", "[0,\"4\"]") "}", 4, "data_offsets");
    EXPECT_BAD("{" T("w", "F32", "[0]", "[4,0]") "}", 4, "begin after end");
    EXPECT_BAD("{" T("w", "F32", "[2]", "[0,8]") "}", 4, "beyond the data region");

    /* Byte size against the shape. */
    EXPECT_BAD("{" T("w", "F32", "[2]", "[0,4]") "}", 4, "needs 8 bytes");
    EXPECT_BAD("{" T("w", "F16", "[3]", "[0,4]") "}", 4, "\"w\"");

    /* Overlap, gaps, trailing bytes. */
    EXPECT_BAD("{" T("a", "F32", "[2]", "[0,8]") "," T("b", "F32", "[2]", "[4,12]") "}", 12,
               "overlap");
    EXPECT_BAD("{" T("a", "F32", "[2]", "[0,8]") "," T("b", "F32", "[2]", "[0,8]") "}", 8,
               "overlap");
    EXPECT_BAD("{" T("a", "F32", "[2]", "[0,8]") "," T("e", "F32", "[0]", "[4,4]") "}", 8,
               "overlap");
    EXPECT_BAD("{" T("a", "F32", "[1]", "[0,4]") "," T("b", "F32", "[1]", "[8,12]") "}", 12,
               "gap");
    EXPECT_BAD("{" T("a", "F32", "[1]", "[4,8]") "}", 8, "gap");
    EXPECT_BAD("{" T("a", "F32", "[1]", "[0,4]") "}", 8, "trailing");
    EXPECT_BAD("{}", 4, "trailing");

    /* Duplicate names. */
    EXPECT_BAD("{" T("a", "F32", "[1]", "[0,4]") "," T("a", "F32", "[1]", "[4,8]") "}", 8,
               "duplicate");

    /* Metadata. */
    EXPECT_BAD("{\"__metadata__\":{\"k\":1}}", 0, "\"k\"");
    EXPECT_BAD("{\"__metadata__\":{\"k\":null}}", 0, "not a string");
    EXPECT_BAD("{\"__metadata__\":[\"k\"]}", 0, "__metadata__");
    EXPECT_BAD("{\"__metadata__\":\"x\"}", 0, "__metadata__");
    EXPECT_BAD("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "twice");
    EXPECT_BAD("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, "\"k\"");

    /* Things that are allowed. */
    EXPECT_GOOD("{}", 0, 0);
    EXPECT_GOOD("{}      ", 0, 0);
    EXPECT_GOOD("{\"__metadata__\":{}}", 0, 0);
    EXPECT_GOOD("{" T("s", "F32", "[]", "[0,4]") "}", 4, 1);
    EXPECT_GOOD("{" T("e", "F32", "[0,3]", "[0,0]") "}", 0, 1);
    EXPECT_GOOD("{" T("b", "F32", "[1]", "[4,8]") "," T("a", "U8", "[4]", "[0,4]") "}  \n", 8, 2);
    EXPECT_GOOD("{" T("z", "F32", "[0]", "[4,4]") "," T("a", "U8", "[4]", "[0,4]") "}", 4, 2);
    EXPECT_GOOD("{" T("w", "U8", "[4503599627370496,4503599627370496,0]", "[0,0]") "}", 0, 1);
    EXPECT_GOOD("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":1}}", 1, 1);
}

static void test_parse_args(void)
{
    smoe_st_file f;
    smoe_err err = {{0}};
    CHECK(smoe_st_parse(NULL, 4, &f, &err) == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK(is_zeroed(&f));
    CHECK(smoe_st_parse("12345678", 8, NULL, &err) == SMOE_ERROR_INVALID_ARGUMENT);
    smoe_st_free(NULL);
    memset(&f, 0, sizeof f);
    smoe_st_free(&f);
    CHECK(smoe_st_find(&f, "x") == NULL);
    CHECK(smoe_st_get_meta(&f, "x") == NULL);
    CHECK(smoe_st_read_file("/nonexistent/dir/x.safetensors", &f, &err) == SMOE_ERROR_IO);
    CHECK(strstr(err.msg, "/nonexistent/dir/x.safetensors") != NULL);
    CHECK(strstr(err.msg, "No such file") != NULL);
    CHECK(is_zeroed(&f));
    CHECK(smoe_st_read_file("/", &f, &err) == SMOE_ERROR_IO);
    CHECK(is_zeroed(&f));
    CHECK(strcmp(smoe_dtype_name(SMOE_BF16), "BF16") == 0);
    CHECK(smoe_dtype_size(SMOE_BF16) == 2 && smoe_dtype_size(SMOE_U64) == 8 &&
          smoe_dtype_size(SMOE_BOOL) == 1);
}

static char tmpdir[256];

static void test_round_trip(void)
{
    float w[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f};
    int32_t ids[4] = {7, -1, 0, 2147483647};
    float s = 0.5f;
    uint8_t bytes[5] = {1, 2, 3, 4, 5};
    uint16_t halfs[3] = {0x3C00, 0xC000, 0x7BFF};
    smoe_st_entry entries[] = {
        {.name = "b.weight", .dtype = SMOE_F32, .ndim = 2, .shape = {2, 3}, .data = w},
        {.name = "a", .dtype = SMOE_I32, .ndim = 1, .shape = {4}, .data = ids},
        {.name = "scalar", .dtype = SMOE_F32, .ndim = 0, .data = &s},
        {.name = "empty", .dtype = SMOE_F32, .ndim = 2, .shape = {0, 5}, .data = NULL},
        {.name = "aa.u8", .dtype = SMOE_U8, .ndim = 1, .shape = {5}, .data = bytes},
        {.name = "f16 \"odd\" \\ name\n", .dtype = SMOE_F16, .ndim = 1, .shape = {3}, .data = halfs},
        {.name = "\xc3\xbcnicode", .dtype = SMOE_BF16, .ndim = 1, .shape = {3}, .data = halfs},
    };
    const int n = (int)(sizeof entries / sizeof entries[0]);
    smoe_st_meta meta[] = {
        {.key = "softmoe.kind", .value = "layer"},
        {.key = "a \"quoted\" key", .value = "with \\ and \n and \x01 and \xe2\x82\xac"},
        {.key = "empty", .value = ""},
    };
    smoe_err err = {{0}};

    char path[512], tmp[520];
    snprintf(path, sizeof path, "%s/rt.safetensors", tmpdir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK_MSG(smoe_st_write(path, entries, n, meta, 3, &err) == SMOE_OK, "%s", err.msg);
    CHECK(!file_exists(tmp));

    smoe_st_file f;
    CHECK_MSG(smoe_st_read_file(path, &f, &err) == SMOE_OK, "%s", err.msg);
    CHECK(f.count == n);
    CHECK(f.meta_count == 3);
    for (int i = 0; i < n; i++) {
        const smoe_st_tensor *t = smoe_st_find(&f, entries[i].name);
        CHECK_MSG(t != NULL, "%s missing", entries[i].name);
        if (!t) continue;
        CHECK(strcmp(t->name, entries[i].name) == 0);
        CHECK(t->dtype == entries[i].dtype);
        CHECK(t->ndim == entries[i].ndim);
        uint64_t elems = 1;
        for (int d = 0; d < t->ndim; d++) {
            CHECK(t->shape[d] == entries[i].shape[d]);
            elems *= (uint64_t)entries[i].shape[d];
        }
        CHECK(t->nbytes == elems * smoe_dtype_size(t->dtype));
        if (t->nbytes) CHECK(memcmp(t->data, entries[i].data, (size_t)t->nbytes) == 0);
    }
    for (int i = 1; i < f.count; i++) CHECK(strcmp(f.tensors[i - 1].name, f.tensors[i].name) < 0);
    for (int i = 0; i < 3; i++) {
        const char *v = smoe_st_get_meta(&f, meta[i].key);
        CHECK_MSG(v && strcmp(v, meta[i].value) == 0, "meta %s", meta[i].key);
    }
    CHECK(smoe_st_get_meta(&f, "absent") == NULL);

    /* The data of a tensor after the 5-byte U8 sits unaligned; copying must still work. */
    const smoe_st_tensor *bw = NULL;
    CHECK(smoe_st_expect_f32(&f, "b.weight", 2, (const int64_t[]){2, 3}, &bw, &err) == SMOE_OK);
    float back[6];
    CHECK(bw && smoe_st_copy_f32(bw, back, &err) == SMOE_OK);
    CHECK(memcmp(back, w, sizeof w) == 0);
    const smoe_st_tensor *sc = NULL;
    CHECK(smoe_st_expect_f32(&f, "scalar", 0, NULL, &sc, &err) == SMOE_OK);
    float sv = 0;
    CHECK(sc && smoe_st_copy_f32(sc, &sv, &err) == SMOE_OK && sv == 0.5f);
    const smoe_st_tensor *em = NULL;
    CHECK(smoe_st_expect_f32(&f, "empty", 2, (const int64_t[]){0, 5}, &em, &err) == SMOE_OK);
    CHECK(em && smoe_st_copy_f32(em, NULL, &err) == SMOE_OK);
    CHECK(smoe_st_copy_f32(smoe_st_find(&f, "a"), back, &err) == SMOE_ERROR_BAD_FORMAT);
    CHECK(strstr(err.msg, "\"a\"") && strstr(err.msg, "I32"));

    /* The file on disk is exactly the serialized image, laid out as the format asks. */
    uint8_t *img = NULL;
    size_t img_size = 0;
    CHECK(smoe_st_serialize(entries, n, meta, 3, &img, &img_size, &err) == SMOE_OK);
    CHECK(img != NULL && img_size == f.size && memcmp(img, f.buffer, f.size) == 0);
    if (img) {
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | img[i];
        CHECK((8 + hlen) % 8 == 0);
        CHECK(memcmp(img + 8, "{\"__metadata__\":{", 17) == 0);
        CHECK(img[8 + hlen - 1] == ' ' || img[8 + hlen - 1] == '}');
        /* Data in name order: "a" (I32) first, right at the start of the data region. */
        CHECK(memcmp(img + 8 + hlen, ids, sizeof ids) == 0);
    }
    free(img);
    smoe_st_free(&f);
    CHECK(is_zeroed(&f));

    /* Overwriting replaces the file; no metadata means no "__metadata__" key. */
    CHECK(smoe_st_write(path, entries, 1, NULL, 0, &err) == SMOE_OK);
    CHECK(smoe_st_read_file(path, &f, &err) == SMOE_OK);
    CHECK(f.count == 1 && f.meta_count == 0 && smoe_st_find(&f, "b.weight") != NULL);
    CHECK(!contains(f.buffer, f.size, "__metadata__"));
    smoe_st_free(&f);

    /* An empty file is valid too. */
    CHECK(smoe_st_serialize(NULL, 0, NULL, 0, &img, &img_size, &err) == SMOE_OK);
    CHECK(img_size == 16);
    CHECK(smoe_st_parse(img, img_size, &f, &err) == SMOE_OK && f.count == 0);
    smoe_st_free(&f);
    free(img);
    unlink(path);
}

static void test_writer_errors(void)
{
    float w[2] = {1, 2};
    smoe_err err = {{0}};
    uint8_t *img = (uint8_t *)&err;
    size_t img_size = 99;
    struct {
        smoe_st_entry e[2];
        int count;
        const char *word;
    } cases[] = {
        {{{.name = NULL, .dtype = SMOE_F32, .ndim = 1, .shape = {2}, .data = w}}, 1, "name"},
        {{{.name = "x", .dtype = SMOE_F32, .ndim = 1, .shape = {2}, .data = w},
          {.name = "x", .dtype = SMOE_F32, .ndim = 1, .shape = {1}, .data = w}},
         2, "twice"},
        {{{.name = "x", .dtype = SMOE_F32, .ndim = 9, .data = w}}, 1, "dimensions"},
        {{{.name = "x", .dtype = SMOE_F32, .ndim = -1, .data = w}}, 1, "dimensions"},
        {{{.name = "x", .dtype = SMOE_F32, .ndim = 1, .shape = {-2}, .data = w}}, 1, "dimension"},
        {{{.name = "x", .dtype = (smoe_dtype)99, .ndim = 1, .shape = {2}, .data = w}}, 1, "dtype"},
        {{{.name = "x", .dtype = SMOE_F32, .ndim = 1, .shape = {2}, .data = NULL}}, 1, "data"},
        {{{.name = "__metadata__", .dtype = SMOE_F32, .ndim = 1, .shape = {2}, .data = w}}, 1,
         "name"},
        {{{.name = "x", .dtype = SMOE_F32, .ndim = 3, .shape = {1 << 30, 1 << 30, 1 << 30},
           .data = w}},
         1, "large"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        smoe_status st = smoe_st_serialize(cases[i].e, cases[i].count, NULL, 0, &img, &img_size, &err);
        CHECK_MSG(st == SMOE_ERROR_INVALID_ARGUMENT, "case %zu: %s", i, smoe_status_string(st));
        CHECK_MSG(strstr(err.msg, cases[i].word) != NULL, "case %zu: \"%s\" lacks \"%s\"", i,
                  err.msg, cases[i].word);
        CHECK(img == NULL && img_size == 0);
    }
    smoe_st_entry one = {.name = "x", .dtype = SMOE_F32, .ndim = 1, .shape = {2}, .data = w};
    smoe_st_meta dup[2] = {{"k", "1"}, {"k", "2"}}, nul[1] = {{"k", NULL}};
    CHECK(smoe_st_serialize(&one, 1, dup, 2, &img, &img_size, &err) == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(err.msg, "\"k\"") != NULL);
    CHECK(smoe_st_serialize(&one, 1, nul, 1, &img, &img_size, &err) == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK(smoe_st_serialize(&one, 1, NULL, 1, &img, &img_size, &err) == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK(smoe_st_serialize(NULL, 1, NULL, 0, &img, &img_size, &err) == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK(smoe_st_serialize(&one, 1, NULL, 0, NULL, &img_size, &err) == SMOE_ERROR_INVALID_ARGUMENT);
    CHECK(smoe_st_write(NULL, &one, 1, NULL, 0, &err) == SMOE_ERROR_INVALID_ARGUMENT);

    char path[512], tmp[520];

    /* A directory that does not exist. */
    snprintf(path, sizeof path, "%s/no/such/dir/x.safetensors", tmpdir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(smoe_st_write(path, &one, 1, NULL, 0, &err) == SMOE_ERROR_IO);
    CHECK_MSG(strstr(err.msg, "x.safetensors.tmp") && strstr(err.msg, "No such file"), "%s",
              err.msg);
    CHECK(!file_exists(tmp) && !file_exists(path));

    /* A directory without write permission (root ignores permissions, so only as a user). */
    snprintf(path, sizeof path, "%s/ro", tmpdir);
    CHECK(mkdir(path, 0555) == 0);
    if (geteuid() != 0) {
        char file[600], ftmp[610];
        snprintf(file, sizeof file, "%s/x.safetensors", path);
        snprintf(ftmp, sizeof ftmp, "%s.tmp", file);
        CHECK(smoe_st_write(file, &one, 1, NULL, 0, &err) == SMOE_ERROR_IO);
        CHECK(strstr(err.msg, "Permission denied") != NULL);
        CHECK(!file_exists(ftmp) && !file_exists(file));
    }
    rmdir(path);

    /* The rename fails (the target is a non-empty directory): the temp file is removed and the
     * target left alone. */
    snprintf(path, sizeof path, "%s/target", tmpdir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    char inner[600];
    snprintf(inner, sizeof inner, "%s/keep", path);
    CHECK(mkdir(path, 0755) == 0);
    FILE *keep = fopen(inner, "w");
    CHECK(keep != NULL);
    if (keep) fclose(keep);
    CHECK(smoe_st_write(path, &one, 1, NULL, 0, &err) == SMOE_ERROR_IO);
    CHECK_MSG(strstr(err.msg, "rename") != NULL, "%s", err.msg);
    CHECK(!file_exists(tmp));
    CHECK(file_exists(inner));
    unlink(inner);
    rmdir(path);
}

static void test_expect_and_copy(void)
{
    /* phi [32, 4], a NaN at index 3 of bad, an Inf in inf, and an I32 "labels". */
    static float phi[128], bad[5] = {0, 1, 2, 0, 4}, inf[2] = {1, 0}, scale1 = 2;
    static int32_t labels[3] = {0, 1, 2};
    bad[3] = nanf("");
    inf[1] = -HUGE_VALF;
    smoe_st_entry entries[] = {
        {.name = "phi", .dtype = SMOE_F32, .ndim = 2, .shape = {32, 4}, .data = phi},
        {.name = "bad", .dtype = SMOE_F32, .ndim = 1, .shape = {5}, .data = bad},
        {.name = "inf", .dtype = SMOE_F32, .ndim = 1, .shape = {2}, .data = inf},
        {.name = "labels", .dtype = SMOE_I32, .ndim = 1, .shape = {3}, .data = labels},
        {.name = "scale1", .dtype = SMOE_F32, .ndim = 1, .shape = {1}, .data = &scale1},
        {.name = "scale2", .dtype = SMOE_F32, .ndim = 1, .shape = {2}, .data = phi},
    };
    smoe_err err = {{0}};
    uint8_t *img = NULL;
    size_t size = 0;
    smoe_st_file f;
    CHECK(smoe_st_serialize(entries, 6, NULL, 0, &img, &size, &err) == SMOE_OK);
    CHECK(smoe_st_parse(img, size, &f, &err) == SMOE_OK);
    free(img);

    const smoe_st_tensor *t = (const smoe_st_tensor *)&err;
    CHECK(smoe_st_expect_f32(&f, "experts.fc1.weight", 3, (const int64_t[]){4, 64, 32}, &t, &err) ==
          SMOE_ERROR_BAD_FORMAT);
    CHECK(t == NULL);
    CHECK_MSG(strcmp(err.msg, "tensor \"experts.fc1.weight\" is missing (expected F32 [4, 64, 32])") ==
                  0, "%s", err.msg);

    CHECK(smoe_st_expect_f32(&f, "phi", 3, (const int64_t[]){32, 4, 2}, &t, &err) ==
          SMOE_ERROR_BAD_FORMAT);
    CHECK_MSG(strcmp(err.msg, "tensor \"phi\" has shape [32, 4] F32, expected F32 [32, 4, 2]") == 0,
              "%s", err.msg);
    CHECK(smoe_st_expect_f32(&f, "phi", 2, (const int64_t[]){4, 32}, &t, &err) ==
          SMOE_ERROR_BAD_FORMAT);
    CHECK(smoe_st_expect_f32(&f, "phi", 2, (const int64_t[]){32, 4}, &t, &err) == SMOE_OK);
    CHECK(t == smoe_st_find(&f, "phi"));

    CHECK(smoe_st_expect_f32(&f, "labels", 1, (const int64_t[]){3}, &t, &err) ==
          SMOE_ERROR_BAD_FORMAT);
    CHECK_MSG(strcmp(err.msg, "tensor \"labels\" has shape [3] I32, expected F32 [3]") == 0, "%s",
              err.msg);

    CHECK(smoe_st_expect_f32(&f, "scale1", 0, NULL, &t, &err) == SMOE_OK);
    CHECK(smoe_st_expect_f32(&f, "scale2", 0, NULL, &t, &err) == SMOE_ERROR_BAD_FORMAT);
    CHECK(strstr(err.msg, "\"scale2\"") && strstr(err.msg, "scalar"));
    CHECK(smoe_st_expect_f32(&f, "phi", 9, (const int64_t[9]){0}, &t, &err) ==
          SMOE_ERROR_INVALID_ARGUMENT);

    float out[5];
    CHECK(smoe_st_copy_f32(smoe_st_find(&f, "bad"), out, &err) == SMOE_ERROR_NOT_FINITE);
    CHECK_MSG(strstr(err.msg, "\"bad\"") && strstr(err.msg, "index 3"), "%s", err.msg);
    CHECK(smoe_st_copy_f32(smoe_st_find(&f, "inf"), out, &err) == SMOE_ERROR_NOT_FINITE);
    CHECK_MSG(strstr(err.msg, "\"inf\"") && strstr(err.msg, "index 1"), "%s", err.msg);
    CHECK(smoe_st_copy_f32(NULL, out, &err) == SMOE_ERROR_INVALID_ARGUMENT);
    smoe_st_free(&f);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static void check_shape(const smoe_st_file *f, const char *name, int ndim, const int64_t *shape)
{
    smoe_err err = {{0}};
    CHECK_MSG(smoe_st_expect_f32(f, name, ndim, shape, NULL, &err) == SMOE_OK, "%s", err.msg);
}

static void test_golden(const char *dir)
{
    DIR *d = opendir(dir);
    CHECK_MSG(d != NULL, "cannot open %s", dir);
    if (!d) return;
    int files = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!ends_with(de->d_name, ".safetensors")) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        smoe_st_file f;
        smoe_err err = {{0}};
        smoe_status st = smoe_st_read_file(path, &f, &err);
        CHECK_MSG(st == SMOE_OK, "%s", err.msg);
        if (st != SMOE_OK) continue;
        files++;
        CHECK_MSG(f.count > 0, "%s has no tensors", path);
        for (int i = 0; i < f.count; i++) {
            const smoe_st_tensor *t = &f.tensors[i];
            if (t->dtype != SMOE_F32) continue;
            float *vals = malloc(t->nbytes ? (size_t)t->nbytes : 1);
            if (!vals) abort();
            CHECK_MSG(smoe_st_copy_f32(t, vals, &err) == SMOE_OK, "%s: %s", path, err.msg);
            free(vals);
        }

        if (strcmp(de->d_name, "layer_b2_m16_d32_n4_p2_h64.model.safetensors") == 0) {
            const char *kind = smoe_st_get_meta(&f, "softmoe.kind");
            CHECK(kind && strcmp(kind, "layer") == 0);
            CHECK(f.count == 6);
            check_shape(&f, "phi", 3, (const int64_t[]){32, 4, 2});
            check_shape(&f, "scale", 1, (const int64_t[]){1});
            check_shape(&f, "scale", 0, NULL);
            check_shape(&f, "experts.fc1.weight", 3, (const int64_t[]){4, 64, 32});
            check_shape(&f, "experts.fc1.bias", 2, (const int64_t[]){4, 64});
            check_shape(&f, "experts.fc2.weight", 3, (const int64_t[]){4, 32, 64});
            check_shape(&f, "experts.fc2.bias", 2, (const int64_t[]){4, 32});
        } else if (strcmp(de->d_name, "vit_d32_L2_b3.model.safetensors") == 0) {
            const char *kind = smoe_st_get_meta(&f, "softmoe.kind");
            CHECK(kind && strcmp(kind, "vit") == 0);
            CHECK(smoe_st_get_meta(&f, "softmoe.config") != NULL);
            check_shape(&f, "patch_embed.proj.weight", 4, (const int64_t[]){32, 1, 4, 4});
            check_shape(&f, "blocks.1.moe.phi", 3, (const int64_t[]){32, 4, 1});
        } else if (strcmp(de->d_name, "vit_d32_L2_b3.input.safetensors") == 0) {
            check_shape(&f, "images", 4, (const int64_t[]){3, 1, 8, 8});
            const smoe_st_tensor *l = smoe_st_find(&f, "labels");
            CHECK(l && l->dtype == SMOE_I32 && l->ndim == 1 && l->shape[0] == 3);
        }

        /* Re-serializing what was read gives a file that reads back the same. */
        smoe_st_entry *e = calloc((size_t)f.count, sizeof *e);
        if (!e) abort();
        for (int i = 0; i < f.count; i++) {
            e[i].name = f.tensors[i].name;
            e[i].dtype = f.tensors[i].dtype;
            e[i].ndim = f.tensors[i].ndim;
            memcpy(e[i].shape, f.tensors[i].shape, sizeof e[i].shape);
            e[i].data = f.tensors[i].data;
        }
        uint8_t *img = NULL;
        size_t size = 0;
        smoe_st_file g;
        CHECK(smoe_st_serialize(e, f.count, f.meta, f.meta_count, &img, &size, &err) == SMOE_OK);
        CHECK(smoe_st_parse(img, size, &g, &err) == SMOE_OK);
        CHECK(g.count == f.count && g.meta_count == f.meta_count);
        for (int i = 0; i < f.count && i < g.count; i++) {
            CHECK(strcmp(g.tensors[i].name, f.tensors[i].name) == 0);
            CHECK(g.tensors[i].nbytes == f.tensors[i].nbytes);
            CHECK(memcmp(g.tensors[i].data, f.tensors[i].data, (size_t)f.tensors[i].nbytes) == 0);
        }
        smoe_st_free(&g);
        free(img);
        free(e);
        smoe_st_free(&f);
    }
    closedir(d);
    CHECK_MSG(files >= 12, "only %d golden files read from %s", files, dir);
}

int main(int argc, char **argv)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/test_safetensors.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }

    test_malformed();
    test_parse_args();
    test_round_trip();
    test_writer_errors();
    test_expect_and_copy();
    if (argc > 1) test_golden(argv[1]);
    else CHECK_MSG(0, "usage: test_safetensors GOLDEN_DIR");

    CHECK_MSG(rmdir(tmpdir) == 0, "temporary directory %s not empty", tmpdir);
    return test_finish("test_safetensors");
}
