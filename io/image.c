/* Image loading for classification: see image.h. */
#define _POSIX_C_SOURCE 200809L
#include "image.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* stb_image, compiled here with static linkage (STB_IMAGE_STATIC): Debian's libstb0 also exports
 * stbi_* symbols, and static functions cannot clash with it or with another copy elsewhere.
 * PNM is left to the decoder below: stb_image 2.27 (bookworm) hands back uninitialised pixels for a
 * truncated PNM, does not scale by maxval, and can overflow an int parsing the header. */
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#define STBI_NO_GIF /* STBI_ONLY_* sets it too late to hide the GIF prototype */
/* 2.27 declares stbi_set_unpremultiply_on_load_thread but defines it under this name; with static
 * linkage the mismatch is a "used but never defined" warning, so make the names agree. */
#define stbi_set_unpremultiply_on_load_thread stbi__unpremultiply_on_load_thread
#define STBI_MAX_DIMENSIONS SMOE_IMAGE_MAX_SIDE
/* Without failure strings stb_image writes no shared state while decoding: its PNG decoder
 * otherwise formats unknown chunk names into a static buffer (marked "not threadsafe" there). */
#define STBI_NO_FAILURE_STRINGS
/* stb_image asserts on some corrupt JPEG input (CVE-2022-29977); a library must not abort. */
#define STBI_ASSERT(x) ((void)0)
/* stb copies zero bytes to a NULL buffer for an empty first IDAT chunk: harmless, but undefined
 * behaviour that aborts sanitizer builds. Route its memcpy through a wrapper that skips n == 0
 * (and see png_without_empty_idat below for the NULL + 0 that clang also reports there). */
static void *stbi_memcpy_or_nothing(void *dst, const void *src, size_t n)
{
    return n ? memcpy(dst, src, n) : dst;
}
#define memcpy(d, s, n) stbi_memcpy_or_nothing((d), (s), (n))
#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wunknown-warning-option"
#endif
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wtype-limits"
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wsign-conversion"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#pragma GCC diagnostic ignored "-Wcast-qual"
#pragma GCC diagnostic ignored "-Wpedantic"
#endif
#include <stb/stb_image.h>
#undef memcpy
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
#if defined(__clang__)
#pragma clang diagnostic pop
#endif

static const char *display_name(const char *name) { return name ? name : "<memory>"; }

/* ---- A decoded image: gray in [0, 1], h x w ---- */

typedef struct gray_image {
    int h, w;
    float *px;
} gray_image;

static smoe_status check_dims(const char *name, long long w, long long h, smoe_err *err)
{
    if (w <= 0 || h <= 0)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "\"%s\": the image is empty (%lldx%lld)", name,
                         w, h);
    if (w > SMOE_IMAGE_MAX_SIDE || h > SMOE_IMAGE_MAX_SIDE ||
        (size_t)w * (size_t)h > SMOE_IMAGE_MAX_PIXELS)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT,
                         "\"%s\": the image is too large (%lldx%lld; at most %d a side and %zu "
                         "pixels accepted)",
                         name, w, h, SMOE_IMAGE_MAX_SIDE, SMOE_IMAGE_MAX_PIXELS);
    return SMOE_OK;
}

static smoe_status alloc_gray(gray_image *g, int h, int w, const char *name, smoe_err *err)
{
    g->h = h;
    g->w = w;
    g->px = malloc((size_t)h * (size_t)w * sizeof *g->px);
    if (!g->px)
        return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "\"%s\": cannot allocate a %dx%d image",
                         name, w, h);
    return SMOE_OK;
}

static float luma(float r, float g, float b) { return 0.299f * r + 0.587f * g + 0.114f * b; }

/* ---- Binary PGM / PPM (P5 / P6) ---- */

static int pnm_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }

/* Skips whitespace and # comments, then reads a decimal number (at most 9 digits). */
static int pnm_number(const uint8_t *d, size_t n, size_t *pos, long *value)
{
    size_t p = *pos;
    for (;;) {
        while (p < n && pnm_space(d[p])) p++;
        if (p < n && d[p] == '#') {
            while (p < n && d[p] != '\n' && d[p] != '\r') p++;
            continue;
        }
        break;
    }
    long v = 0;
    int digits = 0;
    while (p < n && d[p] >= '0' && d[p] <= '9') {
        if (++digits > 9) return 0;
        v = v * 10 + (d[p] - '0');
        p++;
    }
    if (digits == 0) return 0;
    *pos = p;
    *value = v;
    return 1;
}

static smoe_status decode_pnm(const uint8_t *d, size_t n, const char *name, gray_image *g, smoe_err *err)
{
    int channels = d[1] == '6' ? 3 : 1;
    size_t pos = 2;
    long w = 0, h = 0, maxval = 0;
    if (!pnm_number(d, n, &pos, &w) || !pnm_number(d, n, &pos, &h) ||
        !pnm_number(d, n, &pos, &maxval) || pos >= n || !pnm_space(d[pos]))
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "\"%s\": bad or truncated %s header", name,
                         channels == 3 ? "PPM" : "PGM");
    pos++; /* exactly one whitespace byte before the raster */
    if (maxval < 1 || maxval > 65535)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "\"%s\": PNM maxval %ld is outside 1..65535",
                         name, maxval);
    smoe_status st = check_dims(name, w, h, err);
    if (st != SMOE_OK) return st;
    size_t bps = maxval > 255 ? 2 : 1;
    size_t pixels = (size_t)w * (size_t)h, need = pixels * (size_t)channels * bps;
    if (n - pos < need)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT,
                         "\"%s\": truncated PNM raster: %zu bytes, %zu needed for %ldx%ld", name,
                         n - pos, need, w, h);
    st = alloc_gray(g, (int)h, (int)w, name, err);
    if (st != SMOE_OK) return st;
    const uint8_t *r = d + pos;
    const float full = (float)maxval;
    for (size_t i = 0; i < pixels; i++) {
        float c[3];
        for (int k = 0; k < channels; k++) {
            long v = bps == 2 ? ((long)r[0] << 8 | r[1]) : r[0];
            r += bps;
            if (v > maxval) v = maxval; /* out of spec; clamp rather than exceed 1 */
            c[k] = (float)v / full;
        }
        g->px[i] = channels == 3 ? luma(c[0], c[1], c[2]) : c[0];
    }
    return SMOE_OK;
}

/* ---- PNG / JPEG through stb_image ---- */

static const char *stb_kind(const uint8_t *d, size_t n)
{
    if (n >= 8 && memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) return "PNG";
    if (n >= 3 && d[0] == 0xff && d[1] == 0xd8 && d[2] == 0xff) return "JPEG";
    return NULL;
}

/* stb_image 2.27 (the version Debian bookworm ships) trusts the code counts of a JPEG DHT
 * segment: when they add up to more than 256 it writes past its Huffman tables (stb issues #1289
 * and #1291, fixed upstream in 2.28). Walk the markers the way stb does and refuse such a table
 * before stb sees it. Segments are skipped by their length (so metadata is not searched);
 * entropy-coded data is searched byte by byte for markers, which finds every DHT that stb would
 * reach (it stops at each 0xFF followed by a non-zero byte). Bytes past the end read as zero,
 * as in stb. Returns 0 to refuse. */
static int jpeg_huffman_tables_ok(const uint8_t *d, size_t n)
{
    size_t p = 2; /* after SOI */
    while (p < n) {
        if (d[p] != 0xff) {
            p++;
            continue;
        }
        size_t q = p + 1;
        while (q < n && d[q] == 0xff) q++; /* fill bytes */
        if (q >= n) break;
        uint8_t m = d[q];
        p = q + 1;
        if (m == 0x00 || m == 0x01 || (m >= 0xd0 && m <= 0xd8)) continue; /* stuffing, TEM, RSTn, SOI */
        if (m == 0xd9) break;                                              /* EOI */
        if (p + 2 > n) break;
        size_t len = (size_t)d[p] << 8 | d[p + 1];
        if (len < 2) break; /* stb refuses this segment and stops */
        if (m == 0xc4) {
            long left = (long)len - 2;
            size_t r = p + 2;
            while (left > 0) {
                int cls = r < n ? d[r] : 0;
                r++;
                if ((cls >> 4) > 1 || (cls & 15) > 3) break; /* stb refuses the header */
                long count = 0;
                for (int i = 0; i < 16; i++, r++) count += r < n ? d[r] : 0;
                if (count > 256) return 0;
                r += (size_t)count;
                left -= 17 + count;
            }
        }
        p += len;
    }
    return 1;
}

/* A PNG whose first IDAT chunks are empty makes stb compute NULL + 0 (undefined behaviour that
 * clang's sanitizer reports). Empty IDAT chunks carry nothing: when there is such a chunk before
 * the first non-empty one, returns a malloc'd copy without the empty IDAT chunks (its size in
 * *out_n); otherwise NULL (decode the original). */
static uint8_t *png_without_empty_idat(const uint8_t *d, size_t n, size_t *out_n)
{
    size_t p = 8;
    int found = 0;
    while (p + 12 <= n) {
        size_t len = (size_t)d[p] << 24 | (size_t)d[p + 1] << 16 | (size_t)d[p + 2] << 8 | d[p + 3];
        if (len > n - p - 12) break; /* stb cannot get past this chunk either */
        if (memcmp(d + p + 4, "IDAT", 4) == 0) {
            if (len > 0) break;
            found = 1;
        }
        p += 12 + len;
    }
    if (!found) return NULL;
    uint8_t *c = malloc(n);
    if (!c) return NULL;
    memcpy(c, d, 8);
    size_t w = 8;
    p = 8;
    while (p + 12 <= n) {
        size_t len = (size_t)d[p] << 24 | (size_t)d[p + 1] << 16 | (size_t)d[p + 2] << 8 | d[p + 3];
        if (len > n - p - 12) break;
        if (!(len == 0 && memcmp(d + p + 4, "IDAT", 4) == 0)) {
            memcpy(c + w, d + p, 12 + len);
            w += 12 + len;
        }
        p += 12 + len;
    }
    memcpy(c + w, d + p, n - p); /* whatever does not parse as a chunk, as it was */
    *out_n = w + (n - p);
    return c;
}

/* Decodes a PNG or JPEG once decode_stb (below) has checked it. */
static smoe_status decode_stb_checked(const uint8_t *d, size_t n, const char *name, const char *kind,
                                      gray_image *g, smoe_err *err)
{
    int w = 0, h = 0, comp = 0;
    if (!stbi_info_from_memory(d, (int)n, &w, &h, &comp))
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "\"%s\": corrupt or unsupported %s header",
                         name, kind);
    smoe_status st = check_dims(name, w, h, err);
    if (st != SMOE_OK) return st;
    int want = comp <= 2 ? 2 : 4; /* gray+alpha or RGBA: alpha is always there, 255 if absent */
    int lw = 0, lh = 0, lc = 0;
    stbi_uc *px = stbi_load_from_memory(d, (int)n, &lw, &lh, &lc, want);
    if (!px)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT,
                         "\"%s\": corrupt, truncated or unsupported %s data (or out of memory)",
                         name, kind);
    if (lw != w || lh != h) {
        stbi_image_free(px);
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "\"%s\": inconsistent image size", name);
    }
    st = alloc_gray(g, h, w, name, err);
    if (st != SMOE_OK) {
        stbi_image_free(px);
        return st;
    }
    size_t pixels = (size_t)w * (size_t)h;
    for (size_t i = 0; i < pixels; i++) {
        const stbi_uc *p = px + i * (size_t)want;
        float v, a;
        if (want == 2) {
            v = (float)p[0] / 255.0f;
            a = p[1];
        } else {
            v = luma(p[0], p[1], p[2]) / 255.0f;
            a = p[3];
        }
        if (a != 255.0f) v *= a / 255.0f; /* composite over black */
        g->px[i] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
    }
    stbi_image_free(px);
    return SMOE_OK;
}

static smoe_status decode_stb(const uint8_t *d, size_t n, const char *name, gray_image *g, smoe_err *err)
{
    const char *kind = stb_kind(d, n);
    if (!kind)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "\"%s\" is not a PNG, PGM/PPM or JPEG image",
                         name);
    if (kind[0] == 'J' && !jpeg_huffman_tables_ok(d, n))
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT,
                         "\"%s\": corrupt JPEG (a Huffman table with more than 256 codes)", name);
    if (kind[0] == 'P') {
        size_t cn = 0;
        uint8_t *clean = png_without_empty_idat(d, n, &cn);
        if (clean) {
            smoe_status st = decode_stb_checked(clean, cn, name, kind, g, err);
            free(clean);
            return st;
        }
    }
    return decode_stb_checked(d, n, name, kind, g, err);
}

/* ---- Resampling ---- */

/* For each output position along one axis: the first source index, how many, and their weights
 * (taps entries per output; unused ones are zero). */
typedef struct axis_weights {
    int taps;
    int *first, *count;
    float *w;
} axis_weights;

static void axis_free(axis_weights *a)
{
    free(a->first);
    free(a->count);
    free(a->w);
}

static int axis_build(axis_weights *a, int src, int dst)
{
    const double scale = (double)src / (double)dst;
    a->taps = src >= dst ? (int)ceil(scale) + 1 : 2;
    a->first = malloc((size_t)dst * sizeof *a->first);
    a->count = malloc((size_t)dst * sizeof *a->count);
    a->w = calloc((size_t)dst * (size_t)a->taps, sizeof *a->w);
    if (!a->first || !a->count || !a->w) {
        axis_free(a);
        return 0;
    }
    for (int i = 0; i < dst; i++) {
        float *w = a->w + (size_t)i * (size_t)a->taps;
        if (src >= dst) {
            /* area: output i covers [i*scale, (i+1)*scale) of the source */
            double x0 = i * scale, x1 = (i + 1) * scale;
            int j0 = (int)floor(x0), j1 = (int)ceil(x1) - 1;
            if (j1 > src - 1) j1 = src - 1;
            if (j1 < j0) j1 = j0;
            if (j1 - j0 + 1 > a->taps) j1 = j0 + a->taps - 1;
            double sum = 0;
            for (int j = j0; j <= j1; j++) {
                double lo = x0 > j ? x0 : j, hi = x1 < j + 1 ? x1 : j + 1;
                double c = hi > lo ? hi - lo : 0;
                w[j - j0] = (float)c;
                sum += c;
            }
            for (int j = j0; j <= j1; j++) w[j - j0] = sum > 0 ? (float)(w[j - j0] / sum) : 0.0f;
            if (sum <= 0) w[0] = 1.0f;
            a->first[i] = j0;
            a->count[i] = j1 - j0 + 1;
        } else {
            /* bilinear with pixel centres aligned: x = (i + 0.5) * scale - 0.5, clamped */
            double x = (i + 0.5) * scale - 0.5;
            if (x < 0) x = 0;
            if (x > src - 1) x = src - 1;
            int j0 = (int)floor(x);
            double f = x - j0;
            if (j0 + 1 <= src - 1 && f > 0) {
                w[0] = (float)(1.0 - f);
                w[1] = (float)f;
                a->count[i] = 2;
            } else {
                w[0] = 1.0f;
                a->count[i] = 1;
            }
            a->first[i] = j0;
        }
    }
    return 1;
}

static smoe_status resize(const gray_image *g, int out_h, int out_w, float *out, const char *name,
                          smoe_err *err)
{
    axis_weights ax = {0}, ay = {0};
    float *tmp = NULL;
    if (!axis_build(&ax, g->w, out_w) || !axis_build(&ay, g->h, out_h) ||
        !(tmp = malloc((size_t)g->h * (size_t)out_w * sizeof *tmp))) {
        axis_free(&ax);
        axis_free(&ay);
        return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "\"%s\": cannot allocate for resizing",
                         name);
    }
    /* rows: g->h x g->w -> g->h x out_w */
    for (int y = 0; y < g->h; y++) {
        const float *src = g->px + (size_t)y * (size_t)g->w;
        float *dst = tmp + (size_t)y * (size_t)out_w;
        for (int x = 0; x < out_w; x++) {
            const float *w = ax.w + (size_t)x * (size_t)ax.taps;
            const float *s = src + ax.first[x];
            float acc = 0;
            for (int t = 0; t < ax.count[x]; t++) acc += w[t] * s[t];
            dst[x] = acc;
        }
    }
    /* columns: g->h x out_w -> out_h x out_w */
    for (int y = 0; y < out_h; y++) {
        const float *w = ay.w + (size_t)y * (size_t)ay.taps;
        float *dst = out + (size_t)y * (size_t)out_w;
        for (int x = 0; x < out_w; x++) dst[x] = 0;
        for (int t = 0; t < ay.count[y]; t++) {
            const float *src = tmp + (size_t)(ay.first[y] + t) * (size_t)out_w;
            for (int x = 0; x < out_w; x++) dst[x] += w[t] * src[x];
        }
        for (int x = 0; x < out_w; x++) dst[x] = dst[x] < 0.0f ? 0.0f : dst[x] > 1.0f ? 1.0f : dst[x];
    }
    free(tmp);
    axis_free(&ax);
    axis_free(&ay);
    return SMOE_OK;
}

/* ---- Entry points ---- */

smoe_status smoe_image_decode_gray(const void *data, size_t size, const char *name, int out_h,
                                   int out_w, float *out, smoe_err *err)
{
    name = display_name(name);
    if (!out || (!data && size > 0))
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "smoe_image_decode_gray: NULL argument");
    if (out_h < 1 || out_w < 1 || out_h > SMOE_IMAGE_MAX_SIDE || out_w > SMOE_IMAGE_MAX_SIDE)
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT,
                         "output size %dx%d is outside 1..%d a side", out_h, out_w,
                         SMOE_IMAGE_MAX_SIDE);
    if (size == 0)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT,
                         "\"%s\" is not a PNG, PGM/PPM or JPEG image (empty file)", name);
    if (size > SMOE_IMAGE_MAX_FILE_BYTES)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "\"%s\": %zu bytes is too large for an image",
                         name, size);
    const uint8_t *d = data;
    gray_image g = {0};
    smoe_status st;
    if (size >= 2 && d[0] == 'P' && (d[1] == '5' || d[1] == '6'))
        st = decode_pnm(d, size, name, &g, err);
    else if (size >= 2 && d[0] == 'P' && d[1] >= '1' && d[1] <= '7')
        st = smoe_fail(err, SMOE_ERROR_BAD_FORMAT,
                       "\"%s\": PNM variant P%c is not supported (binary P5 PGM and P6 PPM are)",
                       name, d[1]);
    else
        st = decode_stb(d, size, name, &g, err);
    if (st == SMOE_OK) st = resize(&g, out_h, out_w, out, name, err);
    free(g.px);
    return st;
}

smoe_status smoe_image_load_gray(const char *path, int out_h, int out_w, float *out, smoe_err *err)
{
    if (!path || !out)
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "smoe_image_load_gray: NULL argument");
    if (out_h < 1 || out_w < 1 || out_h > SMOE_IMAGE_MAX_SIDE || out_w > SMOE_IMAGE_MAX_SIDE)
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT,
                         "output size %dx%d is outside 1..%d a side", out_h, out_w,
                         SMOE_IMAGE_MAX_SIDE);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return smoe_fail(err, SMOE_ERROR_IO, "cannot open image \"%s\": %s", path, strerror(e));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return smoe_fail(err, SMOE_ERROR_IO, "cannot stat \"%s\": %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return smoe_fail(err, SMOE_ERROR_IO, "\"%s\" is not a regular file", path);
    }
    if (sb.st_size < 0 || (uint64_t)sb.st_size > SMOE_IMAGE_MAX_FILE_BYTES) {
        close(fd);
        return smoe_fail(err, SMOE_ERROR_IO, "\"%s\": %lld bytes is too large for an image (at most %zu)",
                         path, (long long)sb.st_size, SMOE_IMAGE_MAX_FILE_BYTES);
    }
    size_t cap = (size_t)sb.st_size, n = 0;
    uint8_t *buf = malloc(cap ? cap : 1);
    if (!buf) {
        close(fd);
        return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "cannot allocate %zu bytes for \"%s\"",
                         cap, path);
    }
    while (n < cap) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            free(buf);
            close(fd);
            return smoe_fail(err, SMOE_ERROR_IO, "cannot read \"%s\": %s", path, strerror(e));
        }
        if (r == 0) break; /* shrank while reading: decode what is there */
        n += (size_t)r;
    }
    close(fd);
    smoe_status st = smoe_image_decode_gray(buf, n, path, out_h, out_w, out, err);
    free(buf);
    return st;
}
