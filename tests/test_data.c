/* Fashion-MNIST reading (io/fashion_mnist.c) and image loading (io/image.c).
 * The dataset part needs Debian's dataset-fashion-mnist package (CI installs it): when the files
 * are missing this test fails, it does not skip. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "fashion_mnist.h"
#include "image.h"
#include "test_util.h"

/* An 8x8 baseline JPEG of pure red (255, 0, 0), quality 100, 4:4:4, made with libjpeg. */
static const uint8_t red_jpg[] = {
0xff,0xd8,0xff,0xe0,0x00,0x10,0x4a,0x46,0x49,0x46,0x00,0x01,0x01,0x00,0x00,0x01,
0x00,0x01,0x00,0x00,0xff,0xdb,0x00,0x43,0x00,0x01,0x01,0x01,0x01,0x01,0x01,0x01,
0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,
0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,
0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,
0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0xff,0xdb,0x00,0x43,0x01,0x01,0x01,
0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,
0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,
0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,
0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0xff,0xc0,
0x00,0x11,0x08,0x00,0x08,0x00,0x08,0x03,0x01,0x11,0x00,0x02,0x11,0x01,0x03,0x11,
0x01,0xff,0xc4,0x00,0x14,0x00,0x01,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
0x00,0x00,0x00,0x00,0x00,0x00,0x09,0xff,0xc4,0x00,0x14,0x10,0x01,0x00,0x00,0x00,
0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0xff,0xc4,0x00,
0x15,0x01,0x01,0x01,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
0x00,0x00,0x09,0x0a,0xff,0xc4,0x00,0x14,0x11,0x01,0x00,0x00,0x00,0x00,0x00,0x00,
0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0xff,0xda,0x00,0x0c,0x03,0x01,
0x00,0x02,0x11,0x03,0x11,0x00,0x3f,0x00,0x17,0xc5,0x3a,0xfe,0x1f,0xff,0xd9,
};

/* ---- Helpers ---- */

static char tmpdir[256];

static void path_in(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", tmpdir, name);
}

static int write_file(const char *name, const void *data, size_t n)
{
    char p[512];
    path_in(p, sizeof p, name);
    FILE *f = fopen(p, "wb");
    if (!f) return 0;
    int ok = fwrite(data, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

static int write_gz(const char *name, const void *data, size_t n)
{
    char p[512];
    path_in(p, sizeof p, name);
    gzFile gz = gzopen(p, "wb");
    if (!gz) return 0;
    int ok = n == 0 || gzwrite(gz, data, (unsigned)n) == (int)n;
    return gzclose(gz) == Z_OK && ok;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* t10k-labels-idx1-ubyte.gz: magic, count, then the given label bytes (as many as given). */
static int write_labels(uint32_t magic, uint32_t count, const uint8_t *labels, size_t n)
{
    uint8_t *b = malloc(8 + n);
    put_be32(b, magic);
    put_be32(b + 4, count);
    if (n) memcpy(b + 8, labels, n);
    int ok = write_gz("t10k-labels-idx1-ubyte.gz", b, 8 + n);
    free(b);
    return ok;
}

/* t10k-images-idx3-ubyte.gz: magic, count, rows, cols, then n pixel bytes (value = index). */
static int write_images(uint32_t magic, uint32_t count, uint32_t h, uint32_t w, size_t n)
{
    uint8_t *b = malloc(16 + n);
    put_be32(b, magic);
    put_be32(b + 4, count);
    put_be32(b + 8, h);
    put_be32(b + 12, w);
    for (size_t i = 0; i < n; i++) b[16 + i] = (uint8_t)(i * 7);
    int ok = write_gz("t10k-images-idx3-ubyte.gz", b, 16 + n);
    free(b);
    return ok;
}

static const uint8_t good_labels[3] = {0, 9, 4};

/* A valid tiny split: 3 images of 2x2, labels 0 9 4. */
static void write_good(void)
{
    CHECK(write_labels(2049, 3, good_labels, 3));
    CHECK(write_images(2051, 3, 2, 2, 12));
}

/* Loads the t10k split of tmpdir expecting failure with status want and a message containing
 * needle; *out must come back zeroed. */
static void expect_load_fail(const char *what, smoe_status want, const char *needle)
{
    smoe_dataset d;
    memset(&d, 0x5a, sizeof d);
    smoe_err err = {{0}};
    smoe_status st = smoe_fmnist_load(tmpdir, 0, &d, &err);
    CHECK_MSG(st == want, "%s: got %s, want %s (%s)", what, smoe_status_string(st),
              smoe_status_string(want), err.msg);
    CHECK_MSG(!needle || strstr(err.msg, needle), "%s: message \"%s\" lacks \"%s\"", what, err.msg,
              needle ? needle : "");
    CHECK_MSG(d.count == 0 && d.height == 0 && d.width == 0 && !d.pixels && !d.labels,
              "%s: *out not zeroed", what);
    if (st == SMOE_OK) smoe_dataset_free(&d);
}

/* ---- The real dataset ---- */

static void check_split(int train, int want_count)
{
    const char *name = train ? "train" : "t10k";
    smoe_dataset d;
    smoe_err err = {{0}};
    smoe_status st = smoe_fmnist_load(NULL, train, &d, &err);
    CHECK_MSG(st == SMOE_OK, "loading Fashion-MNIST %s (install dataset-fashion-mnist): %s: %s", name,
              smoe_status_string(st), err.msg);
    if (st != SMOE_OK) return;
    CHECK_MSG(d.count == want_count, "%s: %d images", name, d.count);
    CHECK(d.height == 28 && d.width == 28);
    int hist[SMOE_FMNIST_CLASSES] = {0};
    for (int i = 0; i < d.count; i++) {
        CHECK(d.labels[i] < SMOE_FMNIST_CLASSES);
        if (d.labels[i] < SMOE_FMNIST_CLASSES) hist[d.labels[i]]++;
    }
    for (int c = 0; c < SMOE_FMNIST_CLASSES; c++)
        CHECK_MSG(hist[c] == want_count / 10, "%s: class %d (%s) has %d examples", name, c,
                  smoe_fmnist_class_name(c), hist[c]);
    /* Both splits famously start with an ankle boot. */
    CHECK_MSG(d.labels[0] == 9, "%s: first label %d", name, d.labels[0]);

    /* A batch: float [n, 1, 28, 28] = pixel / 255, labels as int32. */
    enum { N = 5 };
    int idx[N] = {0, 1, d.count - 1, d.count / 2, 0};
    float *img = malloc((size_t)N * 28 * 28 * sizeof *img);
    int32_t lab[N];
    smoe_dataset_batch(&d, idx, N, img, lab);
    float lo = 1, hi = 0;
    int exact = 1;
    for (int b = 0; b < N; b++) {
        CHECK(lab[b] == d.labels[idx[b]]);
        for (int k = 0; k < 28 * 28; k++) {
            float v = img[(size_t)b * 784 + (size_t)k];
            if (v < lo) lo = v;
            if (v > hi) hi = v;
            if (v != (float)d.pixels[(size_t)idx[b] * 784 + (size_t)k] / 255.0f) exact = 0;
        }
    }
    CHECK_MSG(lo >= 0.0f && hi <= 1.0f, "%s: batch range [%g, %g]", name, lo, hi);
    CHECK_MSG(lo == 0.0f && hi > 0.9f, "%s: batch range [%g, %g] looks empty", name, lo, hi);
    CHECK(exact);
    CHECK(memcmp(img, img + 4 * 784, 784 * sizeof *img) == 0); /* the same example twice */

    /* Labels only, and a bad index (zero image, label -1). */
    int bad[2] = {-1, d.count};
    int32_t lab2[2] = {7, 7};
    smoe_dataset_batch(&d, idx, 1, NULL, lab2);
    CHECK(lab2[0] == d.labels[0]);
    img[0] = 0.5f;
    smoe_dataset_batch(&d, bad, 2, img, lab2);
    CHECK(lab2[0] == -1 && lab2[1] == -1 && img[0] == 0.0f && img[783] == 0.0f && img[784] == 0.0f);
    free(img);

    smoe_dataset_free(&d);
    CHECK(d.pixels == NULL && d.labels == NULL && d.count == 0);
    smoe_dataset_free(&d); /* twice is fine */
}

static void test_class_names(void)
{
    static const char *want[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                   "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
    for (int c = 0; c < 10; c++) CHECK(strcmp(smoe_fmnist_class_name(c), want[c]) == 0);
    CHECK(smoe_fmnist_class_name(-1) != NULL && smoe_fmnist_class_name(10) != NULL);
}

/* ---- Synthetic IDX files: acceptance and refusal ---- */

static void test_synthetic_dataset(void)
{
    /* A valid tiny split loads, through dir and through the environment variable. */
    write_good();
    smoe_dataset d;
    smoe_err err = {{0}};
    smoe_status st = smoe_fmnist_load(tmpdir, 0, &d, &err);
    CHECK_MSG(st == SMOE_OK, "tiny split: %s", err.msg);
    if (st == SMOE_OK) {
        CHECK(d.count == 3 && d.height == 2 && d.width == 2);
        CHECK(memcmp(d.labels, good_labels, 3) == 0);
        for (int i = 0; i < 12; i++) CHECK(d.pixels[i] == (uint8_t)(i * 7));
        float img[8];
        int32_t lab[2];
        int idx[2] = {2, 0};
        smoe_dataset_batch(&d, idx, 2, img, lab);
        CHECK(lab[0] == 4 && lab[1] == 0);
        CHECK(img[0] == (float)(8 * 7) / 255.0f && img[4] == 0.0f && img[7] == 21.0f / 255.0f);
        smoe_dataset_free(&d);
    }
    {
        const char *old = getenv(SMOE_FMNIST_DIR_ENV);
        char *saved = old ? strdup(old) : NULL;
        setenv(SMOE_FMNIST_DIR_ENV, tmpdir, 1);
        st = smoe_fmnist_load(NULL, 0, &d, &err);
        CHECK_MSG(st == SMOE_OK && d.count == 3, "via $%s: %s", SMOE_FMNIST_DIR_ENV, err.msg);
        if (st == SMOE_OK) smoe_dataset_free(&d);
        if (saved) {
            setenv(SMOE_FMNIST_DIR_ENV, saved, 1);
            free(saved);
        } else {
            unsetenv(SMOE_FMNIST_DIR_ENV);
        }
    }
    /* A trailing slash on dir is fine. */
    {
        char slash[300];
        snprintf(slash, sizeof slash, "%s/", tmpdir);
        st = smoe_fmnist_load(slash, 0, &d, &err);
        CHECK_MSG(st == SMOE_OK, "trailing slash: %s", err.msg);
        if (st == SMOE_OK) smoe_dataset_free(&d);
    }
    CHECK(smoe_fmnist_load(tmpdir, 0, NULL, &err) == SMOE_ERROR_INVALID_ARGUMENT);

    /* Bad magic numbers (the two files swapped, and a little-endian magic). */
    write_good();
    CHECK(write_labels(2051, 3, good_labels, 3));
    expect_load_fail("labels magic", SMOE_ERROR_BAD_FORMAT, "magic");
    write_good();
    CHECK(write_images(2049, 3, 2, 2, 12));
    expect_load_fail("images magic", SMOE_ERROR_BAD_FORMAT, "magic");
    write_good();
    CHECK(write_images(0x03080000u, 3, 2, 2, 12));
    expect_load_fail("little-endian magic", SMOE_ERROR_BAD_FORMAT, "magic");

    /* Zero and absurd dimensions. */
    write_good();
    CHECK(write_labels(2049, 0, NULL, 0));
    expect_load_fail("zero labels", SMOE_ERROR_BAD_FORMAT, "zero");
    CHECK(write_labels(2049, 20000000, good_labels, 3));
    expect_load_fail("absurd label count", SMOE_ERROR_BAD_FORMAT, "absurd");
    write_good();
    CHECK(write_images(2051, 3, 0, 2, 0));
    expect_load_fail("zero height", SMOE_ERROR_BAD_FORMAT, "empty");
    CHECK(write_images(2051, 3, 2, 5000, 12));
    expect_load_fail("absurd width", SMOE_ERROR_BAD_FORMAT, "absurd");
    CHECK(write_images(2051, 0xffffffffu, 2, 2, 12));
    expect_load_fail("absurd image count", SMOE_ERROR_BAD_FORMAT, "absurd");

    /* Truncated header, truncated data, data longer than the header says. */
    write_good();
    CHECK(write_gz("t10k-images-idx3-ubyte.gz", "\0\0\x08\x03\0", 5));
    expect_load_fail("truncated image header", SMOE_ERROR_BAD_FORMAT, "truncated");
    CHECK(write_gz("t10k-images-idx3-ubyte.gz", "", 0));
    expect_load_fail("empty image file", SMOE_ERROR_BAD_FORMAT, "truncated");
    CHECK(write_images(2051, 3, 2, 2, 11));
    expect_load_fail("truncated pixels", SMOE_ERROR_BAD_FORMAT, "truncated");
    CHECK(write_images(2051, 3, 2, 2, 13));
    expect_load_fail("trailing pixel byte", SMOE_ERROR_BAD_FORMAT, "longer");
    write_good();
    CHECK(write_labels(2049, 3, good_labels, 2));
    expect_load_fail("truncated labels", SMOE_ERROR_BAD_FORMAT, "truncated");
    /* A label header that claims ten million labels but holds three: refused, no huge buffer. */
    CHECK(write_labels(2049, 10000000, good_labels, 3));
    expect_load_fail("label count beyond the data", SMOE_ERROR_BAD_FORMAT, "truncated");

    /* Count mismatch, label out of range. */
    write_good();
    CHECK(write_images(2051, 4, 2, 2, 16));
    expect_load_fail("count mismatch", SMOE_ERROR_BAD_FORMAT, "labels");
    {
        const uint8_t l10[3] = {1, 10, 2};
        write_good();
        CHECK(write_labels(2049, 3, l10, 3));
        expect_load_fail("label 10", SMOE_ERROR_BAD_FORMAT, "label 10");
    }

    /* A gzip stream cut short: first inside the deflate data, then just its 8-byte trailer (all
     * data bytes present, the check values missing). */
    {
        write_good();
        char p[512];
        path_in(p, sizeof p, "t10k-images-idx3-ubyte.gz");
        uint8_t big[16 + 4096];
        put_be32(big, 2051);
        put_be32(big + 4, 3);
        put_be32(big + 8, 32);
        put_be32(big + 12, 32);
        uint32_t s = 12345;
        for (size_t i = 16; i < sizeof big; i++) big[i] = (uint8_t)((s = s * 1103515245u + 12345u) >> 24);
        CHECK(write_gz("t10k-images-idx3-ubyte.gz", big, 16 + 3 * 1024));
        struct stat sb;
        CHECK(stat(p, &sb) == 0);
        CHECK(truncate(p, sb.st_size / 2) == 0);
        expect_load_fail("gzip cut inside the data", SMOE_ERROR_BAD_FORMAT, NULL);
        CHECK(write_gz("t10k-images-idx3-ubyte.gz", big, 16 + 3 * 1024));
        CHECK(truncate(p, sb.st_size - 8) == 0);
        expect_load_fail("gzip without its trailer", SMOE_ERROR_BAD_FORMAT, "gzip");
        /* A corrupted byte in the middle of the deflate stream. */
        CHECK(write_gz("t10k-images-idx3-ubyte.gz", big, 16 + 3 * 1024));
        FILE *f = fopen(p, "r+b");
        CHECK(f != NULL);
        if (f) {
            fseek(f, sb.st_size / 2, SEEK_SET);
            int c = fgetc(f);
            fseek(f, sb.st_size / 2, SEEK_SET);
            fputc(c ^ 0x55, f);
            fclose(f);
        }
        expect_load_fail("corrupted gzip", SMOE_ERROR_BAD_FORMAT, NULL);
    }

    /* Missing files: IO errors naming the path and the Debian package. */
    {
        char p[512];
        write_good();
        path_in(p, sizeof p, "t10k-images-idx3-ubyte.gz");
        CHECK(unlink(p) == 0);
        expect_load_fail("missing image file", SMOE_ERROR_IO, "t10k-images-idx3-ubyte.gz");
        CHECK(mkdir(p, 0700) == 0);
        expect_load_fail("a directory for the image file", SMOE_ERROR_IO, "regular");
        CHECK(rmdir(p) == 0);

        smoe_dataset d2;
        smoe_err e2 = {{0}};
        char missing[512];
        path_in(missing, sizeof missing, "no-such-dir");
        st = smoe_fmnist_load(missing, 1, &d2, &e2);
        CHECK_MSG(st == SMOE_ERROR_IO, "missing dir: %s", smoe_status_string(st));
        CHECK_MSG(strstr(e2.msg, "dataset-fashion-mnist") && strstr(e2.msg, missing) &&
                      strstr(e2.msg, "train-labels-idx1-ubyte.gz") && strstr(e2.msg, strerror(ENOENT)),
                  "missing dir message: %s", e2.msg);
        CHECK(d2.count == 0 && !d2.pixels && !d2.labels);
        /* A NULL err is allowed. */
        CHECK(smoe_fmnist_load(missing, 0, &d2, NULL) == SMOE_ERROR_IO);
    }
    {
        char p[512];
        path_in(p, sizeof p, "t10k-labels-idx1-ubyte.gz");
        unlink(p);
        path_in(p, sizeof p, "t10k-images-idx3-ubyte.gz");
        unlink(p);
    }
}

/* ---- Images ---- */

static void put_crc_chunk(uint8_t **w, const char *type, const uint8_t *data, uint32_t n)
{
    put_be32(*w, n);
    memcpy(*w + 4, type, 4);
    if (n) memcpy(*w + 8, data, n);
    uint32_t crc = (uint32_t)crc32(0L, *w + 4, 4 + n);
    put_be32(*w + 8 + n, crc);
    *w += 12 + n;
}

/* A PNG of 8-bit samples (color type 0 gray, 2 RGB, 4 gray+alpha, 6 RGBA), filter 0 on each row,
 * compressed with zlib; empty_idat puts a legal zero-length IDAT chunk first. Returns the size;
 * *out is malloc'd. */
static size_t make_png_ex(int w, int h, int color_type, const uint8_t *px, int empty_idat, uint8_t **out)
{
    int ch = color_type == 0 ? 1 : color_type == 2 ? 3 : color_type == 4 ? 2 : 4;
    size_t raw_n = (size_t)h * (1 + (size_t)w * (size_t)ch);
    uint8_t *raw = malloc(raw_n);
    for (int y = 0; y < h; y++) {
        uint8_t *row = raw + (size_t)y * (1 + (size_t)w * (size_t)ch);
        row[0] = 0;
        memcpy(row + 1, px + (size_t)y * (size_t)w * (size_t)ch, (size_t)w * (size_t)ch);
    }
    uLongf zn = compressBound((uLong)raw_n);
    uint8_t *z = malloc(zn);
    CHECK(compress2(z, &zn, raw, (uLong)raw_n, 9) == Z_OK);
    uint8_t *png = malloc(8 + 25 + 12 + 12 + zn + 12), *p = png;
    memcpy(p, "\x89PNG\r\n\x1a\n", 8);
    p += 8;
    uint8_t ihdr[13];
    put_be32(ihdr, (uint32_t)w);
    put_be32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8;
    ihdr[9] = (uint8_t)color_type;
    ihdr[10] = ihdr[11] = ihdr[12] = 0;
    put_crc_chunk(&p, "IHDR", ihdr, 13);
    if (empty_idat) put_crc_chunk(&p, "IDAT", NULL, 0);
    put_crc_chunk(&p, "IDAT", z, (uint32_t)zn);
    put_crc_chunk(&p, "IEND", NULL, 0);
    free(raw);
    free(z);
    *out = png;
    return (size_t)(p - png);
}

static size_t make_png(int w, int h, int color_type, const uint8_t *px, uint8_t **out)
{
    return make_png_ex(w, h, color_type, px, 0, out);
}

/* Loads tmpdir/name into an out_h x out_w buffer; returns the status, the message in err. */
static smoe_status load_img(const char *name, int out_h, int out_w, float *out, smoe_err *err)
{
    char p[512];
    path_in(p, sizeof p, name);
    return smoe_image_load_gray(p, out_h, out_w, out, err);
}

static int all_near(const float *v, size_t n, float want, float tol)
{
    for (size_t i = 0; i < n; i++)
        if (!(fabsf(v[i] - want) <= tol)) return 0;
    return 1;
}

static void expect_img_fail(const char *what, const char *name, smoe_status want, const char *needle)
{
    float out[4] = {-7, -7, -7, -7};
    smoe_err err = {{0}};
    smoe_status st = load_img(name, 2, 2, out, &err);
    CHECK_MSG(st == want, "%s: got %s, want %s (%s)", what, smoe_status_string(st),
              smoe_status_string(want), err.msg);
    CHECK_MSG(!needle || strstr(err.msg, needle), "%s: message \"%s\" lacks \"%s\"", what, err.msg,
              needle ? needle : "");
    CHECK_MSG(out[0] == -7 && out[3] == -7, "%s: output written on failure", what);
}

static void test_images(void)
{
    smoe_err err = {{0}};
    float out[28 * 28];
    smoe_status st;

    /* PGM P5 with a comment, same size: exact values v / 255. */
    {
        const char hdr[] = "P5\n# a comment\n4 2\n255\n";
        uint8_t f[sizeof hdr - 1 + 8];
        memcpy(f, hdr, sizeof hdr - 1);
        const uint8_t px[8] = {0, 1, 2, 128, 200, 254, 255, 77};
        memcpy(f + sizeof hdr - 1, px, 8);
        CHECK(write_file("a.pgm", f, sizeof f));
        st = load_img("a.pgm", 2, 4, out, &err);
        CHECK_MSG(st == SMOE_OK, "a.pgm: %s", err.msg);
        for (int i = 0; i < 8; i++) CHECK_MSG(out[i] == (float)px[i] / 255.0f, "pgm pixel %d = %g", i, out[i]);
    }
    /* PGM with maxval 15, and 16-bit PGM: scaled by maxval. */
    {
        const char f[] = "P5 2 1 15\n\x0f\x05";
        CHECK(write_file("m15.pgm", f, sizeof f - 1));
        st = load_img("m15.pgm", 1, 2, out, &err);
        CHECK_MSG(st == SMOE_OK && out[0] == 1.0f && fabsf(out[1] - 5.0f / 15.0f) < 1e-6f,
                  "maxval 15: %s %g %g", err.msg, out[0], out[1]);
        const char g[] = "P5 2 1 1000\n\x03\xe8\x01\xf4";
        CHECK(write_file("m1000.pgm", g, sizeof g - 1));
        st = load_img("m1000.pgm", 1, 2, out, &err);
        CHECK_MSG(st == SMOE_OK && out[0] == 1.0f && fabsf(out[1] - 0.5f) < 1e-6f,
                  "16-bit PGM: %s %g %g", err.msg, out[0], out[1]);
    }
    /* PPM P6: pure red, green, blue give the luma weights. */
    {
        const char f[] = "P6 3 1 255\n\xff\0\0\0\xff\0\0\0\xff";
        CHECK(write_file("rgb.ppm", f, sizeof f - 1));
        st = load_img("rgb.ppm", 1, 3, out, &err);
        CHECK_MSG(st == SMOE_OK, "rgb.ppm: %s", err.msg);
        CHECK(fabsf(out[0] - 0.299f) < 1e-5f && fabsf(out[1] - 0.587f) < 1e-5f &&
              fabsf(out[2] - 0.114f) < 1e-5f);
    }
    /* 56x56 of constant 128 down to 28x28 (area): 128/255 everywhere; PGM and PNG. */
    {
        uint8_t *f = malloc(64 + 56 * 56);
        int n = snprintf((char *)f, 64, "P5\n56 56\n255\n");
        memset(f + n, 128, 56 * 56);
        CHECK(write_file("c128.pgm", f, (size_t)n + 56 * 56));
        for (int i = 0; i < 28 * 28; i++) out[i] = -1;
        st = load_img("c128.pgm", 28, 28, out, &err);
        CHECK_MSG(st == SMOE_OK, "c128.pgm: %s", err.msg);
        CHECK(all_near(out, 28 * 28, 128.0f / 255.0f, 1e-6f));

        uint8_t *png = NULL;
        size_t pn = make_png(56, 56, 0, f + n, &png);
        CHECK(write_file("c128.png", png, pn));
        free(png);
        for (int i = 0; i < 28 * 28; i++) out[i] = -1;
        st = load_img("c128.png", 28, 28, out, &err);
        CHECK_MSG(st == SMOE_OK, "c128.png: %s", err.msg);
        CHECK(all_near(out, 28 * 28, 128.0f / 255.0f, 1e-6f));
        /* Non-integer ratios keep a constant image constant too. */
        st = load_img("c128.png", 17, 23, out, &err);
        CHECK(st == SMOE_OK && all_near(out, 17 * 23, 128.0f / 255.0f, 1e-6f));
        free(f);
    }
    /* Area averaging: 4x4 quadrants down to 2x2 give the quadrant values; the mean of a
     * non-integer downscale is preserved. */
    {
        uint8_t px[16];
        for (int y = 0; y < 4; y++)
            for (int x = 0; x < 4; x++) px[y * 4 + x] = (uint8_t)((y < 2 ? 0 : 100) + (x < 2 ? 10 : 50));
        px[0] = 0; /* quadrant 0: 0, 10, 10, 10 -> 7.5 */
        uint8_t *png = NULL;
        size_t pn = make_png(4, 4, 0, px, &png);
        CHECK(write_file("q.png", png, pn));
        free(png);
        st = load_img("q.png", 2, 2, out, &err);
        CHECK_MSG(st == SMOE_OK, "q.png: %s", err.msg);
        CHECK(fabsf(out[0] - 7.5f / 255) < 1e-6f && fabsf(out[1] - 50.0f / 255) < 1e-6f &&
              fabsf(out[2] - 110.0f / 255) < 1e-6f && fabsf(out[3] - 150.0f / 255) < 1e-6f);

        uint8_t r[7 * 5];
        double mean = 0;
        for (int i = 0; i < 35; i++) {
            r[i] = (uint8_t)((i * 37 + 11) % 256);
            mean += r[i] / 255.0 / 35.0;
        }
        pn = make_png(7, 5, 0, r, &png); /* 7 wide, 5 high */
        CHECK(write_file("r.png", png, pn));
        free(png);
        st = load_img("r.png", 2, 3, out, &err);
        CHECK_MSG(st == SMOE_OK, "r.png: %s", err.msg);
        double m2 = 0;
        for (int i = 0; i < 6; i++) m2 += out[i] / 6.0;
        CHECK_MSG(fabs(m2 - mean) < 1e-5, "area mean %g vs %g", m2, mean);
    }
    /* A 2x2 checker upscaled (bilinear) stays in [0, 1], keeps its corners, its symmetry and its
     * mean. */
    {
        const char f[] = "P5 2 2 255\n\0\xff\xff\0";
        CHECK(write_file("checker.pgm", f, sizeof f - 1));
        st = load_img("checker.pgm", 28, 28, out, &err);
        CHECK_MSG(st == SMOE_OK, "checker: %s", err.msg);
        float lo = 1, hi = 0;
        double mean = 0;
        for (int i = 0; i < 28 * 28; i++) {
            if (out[i] < lo) lo = out[i];
            if (out[i] > hi) hi = out[i];
            mean += out[i] / (28.0 * 28.0);
        }
        CHECK_MSG(lo >= 0.0f && hi <= 1.0f, "checker range [%g, %g]", lo, hi);
        CHECK(out[0] == 0.0f && out[27] == 1.0f && out[27 * 28] == 1.0f && out[28 * 28 - 1] == 0.0f);
        CHECK(fabsf(out[5 * 28 + 9] - out[9 * 28 + 5]) < 1e-6f);
        CHECK(fabsf(out[13 * 28 + 13] - 0.5f) < 0.05f);
        CHECK(fabs(mean - 0.5) < 1e-5);
        /* Mixed: wider (bilinear) one way, narrower (area) the other. */
        st = load_img("c128.pgm", 3, 90, out, &err);
        CHECK(st == SMOE_OK);
    }
    /* PNG colour types: RGB luma, RGBA and gray+alpha composited over black. */
    {
        const uint8_t rgb[6] = {0, 255, 0, 10, 20, 30};
        uint8_t *png = NULL;
        size_t pn = make_png(2, 1, 2, rgb, &png);
        CHECK(write_file("rgb.png", png, pn));
        free(png);
        st = load_img("rgb.png", 1, 2, out, &err);
        CHECK_MSG(st == SMOE_OK, "rgb.png: %s", err.msg);
        CHECK(fabsf(out[0] - 0.587f) < 1e-5f);
        CHECK(fabsf(out[1] - (0.299f * 10 + 0.587f * 20 + 0.114f * 30) / 255.0f) < 1e-5f);

        const uint8_t rgba[8] = {255, 255, 255, 128, 255, 0, 0, 255};
        pn = make_png(2, 1, 6, rgba, &png);
        CHECK(write_file("rgba.png", png, pn));
        free(png);
        st = load_img("rgba.png", 1, 2, out, &err);
        CHECK_MSG(st == SMOE_OK, "rgba.png: %s", err.msg);
        CHECK(fabsf(out[0] - 128.0f / 255.0f) < 1e-5f && fabsf(out[1] - 0.299f) < 1e-5f);

        const uint8_t ga[4] = {200, 0, 200, 255};
        pn = make_png(2, 1, 4, ga, &png);
        CHECK(write_file("ga.png", png, pn));
        /* A PNG cut in half is refused. */
        CHECK(write_file("cut.png", png, pn / 2));
        free(png);
        st = load_img("ga.png", 1, 2, out, &err);
        CHECK_MSG(st == SMOE_OK, "ga.png: %s", err.msg);
        CHECK(out[0] == 0.0f && out[1] == 200.0f / 255.0f);
        expect_img_fail("cut PNG", "cut.png", SMOE_ERROR_BAD_FORMAT, "cut.png");

        /* An empty IDAT chunk first (legal; stb copies 0 bytes to NULL there, see image.c). */
        pn = make_png_ex(2, 1, 4, ga, 1, &png);
        st = smoe_image_decode_gray(png, pn, "empty-idat.png", 1, 2, out, &err);
        free(png);
        CHECK_MSG(st == SMOE_OK && out[0] == 0.0f && out[1] == 200.0f / 255.0f, "empty IDAT: %s",
                  err.msg);
    }
    /* JPEG: pure red, through the codec's YCbCr round trip. */
    {
        CHECK(write_file("red.jpg", red_jpg, sizeof red_jpg));
        st = load_img("red.jpg", 4, 4, out, &err);
        CHECK_MSG(st == SMOE_OK, "red.jpg: %s", err.msg);
        CHECK_MSG(all_near(out, 16, 0.299f, 0.02f), "red.jpg gray %g", out[0]);
        /* From memory as well. */
        st = smoe_image_decode_gray(red_jpg, sizeof red_jpg, NULL, 1, 1, out, &err);
        CHECK(st == SMOE_OK && fabsf(out[0] - 0.299f) < 0.02f);
        /* A Huffman table whose code counts add up to more than 256 (stb 2.27 would write past
         * its tables) is refused before stb sees it. */
        uint8_t bad[sizeof red_jpg];
        memcpy(bad, red_jpg, sizeof bad);
        int patched = 0;
        for (size_t i = 2; i + 21 < sizeof bad && !patched; i++) {
            if (bad[i] == 0xff && bad[i + 1] == 0xc4) {
                memset(bad + i + 5, 0x20, 16); /* 16 lengths x 32 codes = 512 */
                patched = 1;
            }
        }
        CHECK(patched);
        for (int i = 0; i < 4; i++) out[i] = -7;
        st = smoe_image_decode_gray(bad, sizeof bad, "bad-dht.jpg", 2, 2, out, &err);
        CHECK_MSG(st == SMOE_ERROR_BAD_FORMAT && strstr(err.msg, "Huffman") && out[0] == -7,
                  "bad DHT: %s %s", smoe_status_string(st), err.msg);
        /* A JPEG whose scan data is cut off: refused or decoded, never out of [0, 1]. */
        st = smoe_image_decode_gray(red_jpg, sizeof red_jpg / 2, "half.jpg", 2, 2, out, &err);
        CHECK(st == SMOE_ERROR_BAD_FORMAT || (st == SMOE_OK && out[0] >= 0.0f && out[0] <= 1.0f));
    }
    /* Refusals. */
    {
        const char text[] = "this is not an image\n";
        CHECK(write_file("text.png", text, sizeof text - 1));
        expect_img_fail("text file", "text.png", SMOE_ERROR_BAD_FORMAT, "not a PNG");
        CHECK(write_file("empty.pgm", "", 0));
        expect_img_fail("empty file", "empty.pgm", SMOE_ERROR_BAD_FORMAT, "empty");
        const char trunc[] = "P5 4 4 255\n\1\2\3";
        CHECK(write_file("trunc.pgm", trunc, sizeof trunc - 1));
        expect_img_fail("truncated PGM", "trunc.pgm", SMOE_ERROR_BAD_FORMAT, "truncated");
        const char ascii[] = "P2 2 1 255\n0 255\n";
        CHECK(write_file("ascii.pgm", ascii, sizeof ascii - 1));
        expect_img_fail("ASCII PGM", "ascii.pgm", SMOE_ERROR_BAD_FORMAT, "P2");
        const char zero[] = "P5 0 4 255\n";
        CHECK(write_file("zero.pgm", zero, sizeof zero - 1));
        expect_img_fail("empty PGM", "zero.pgm", SMOE_ERROR_BAD_FORMAT, "empty");
        const char huge[] = "P5 99999999999 4 255\n";
        CHECK(write_file("huge.pgm", huge, sizeof huge - 1));
        expect_img_fail("huge PGM", "huge.pgm", SMOE_ERROR_BAD_FORMAT, NULL);
        const char big[] = "P5 20000 4 255\n";
        CHECK(write_file("big.pgm", big, sizeof big - 1));
        expect_img_fail("too wide PGM", "big.pgm", SMOE_ERROR_BAD_FORMAT, "too large");
        const char maxv[] = "P5 1 1 70000\n\0\0";
        CHECK(write_file("maxv.pgm", maxv, sizeof maxv - 1));
        expect_img_fail("maxval 70000", "maxv.pgm", SMOE_ERROR_BAD_FORMAT, "maxval");
        expect_img_fail("missing file", "no-such-image.png", SMOE_ERROR_IO, "no-such-image.png");
        char p[512];
        path_in(p, sizeof p, "adir.png");
        CHECK(mkdir(p, 0700) == 0);
        expect_img_fail("directory", "adir.png", SMOE_ERROR_IO, "regular");
        rmdir(p);
        CHECK(load_img("a.pgm", 0, 28, out, &err) == SMOE_ERROR_INVALID_ARGUMENT);
        CHECK(load_img("a.pgm", 28, 100000, out, &err) == SMOE_ERROR_INVALID_ARGUMENT);
        CHECK(smoe_image_load_gray(NULL, 28, 28, out, &err) == SMOE_ERROR_INVALID_ARGUMENT);
        CHECK(load_img("a.pgm", 28, 28, NULL, &err) == SMOE_ERROR_INVALID_ARGUMENT);
    }
    static const char *files[] = {"a.pgm",   "m15.pgm",   "m1000.pgm",   "rgb.ppm",  "c128.pgm",
                                  "c128.png", "q.png",    "r.png",       "checker.pgm", "rgb.png",
                                  "rgba.png", "ga.png",   "cut.png",     "red.jpg",  "text.png",
                                  "empty.pgm", "trunc.pgm", "ascii.pgm", "zero.pgm", "huge.pgm",
                                  "big.pgm",  "maxv.pgm"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char p[512];
        path_in(p, sizeof p, files[i]);
        unlink(p);
    }
}

int main(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/smoe_test_data_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "mkdtemp %s: %s\n", tmpdir, strerror(errno));
        return 1;
    }
    check_split(1, 60000);
    check_split(0, 10000);
    test_class_names();
    test_synthetic_dataset();
    test_images();
    if (rmdir(tmpdir) != 0) fprintf(stderr, "note: could not remove %s: %s\n", tmpdir, strerror(errno));
    return test_finish("test_data");
}
