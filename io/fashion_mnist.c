/* Fashion-MNIST reader: gzipped IDX files, decompressed with zlib. See fashion_mnist.h. */
#define _POSIX_C_SOURCE 200809L
#include "fashion_mnist.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define IDX_MAGIC_IMAGES 2051u /* 0x00000803: unsigned byte, 3 dimensions */
#define IDX_MAGIC_LABELS 2049u /* 0x00000801: unsigned byte, 1 dimension */
#define PACKAGE_HINT                                                                                \
    "Fashion-MNIST is read as Debian's package dataset-fashion-mnist installs it "                 \
    "(apt install dataset-fashion-mnist); another directory can be given, or set in "             \
    "$" SMOE_FMNIST_DIR_ENV

/* Largest piece handed to one gzread (its length is an unsigned int, its result an int). */
#define GZ_CHUNK ((size_t)1 << 30)
/* The payload buffer starts at this size and doubles, so a header that claims far more data than
 * the file holds costs at most about twice what the file really holds. */
#define GROW_START ((size_t)16 << 20)

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

/* A gzip file opened for reading, with the path kept for messages. */
typedef struct gz_in {
    gzFile gz;
    const char *path;
} gz_in;

static smoe_status gz_open(gz_in *in, const char *path, smoe_err *err)
{
    in->gz = NULL;
    in->path = path;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return smoe_fail(err, SMOE_ERROR_IO, "cannot open \"%s\": %s. " PACKAGE_HINT ".", path,
                         strerror(e));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return smoe_fail(err, SMOE_ERROR_IO, "cannot stat \"%s\": %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return smoe_fail(err, SMOE_ERROR_IO, "\"%s\" is not a regular file. " PACKAGE_HINT ".",
                         path);
    }
    in->gz = gzdopen(fd, "rb");
    if (!in->gz) {
        close(fd);
        return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "cannot open \"%s\" with zlib", path);
    }
    gzbuffer(in->gz, 1u << 17);
    return SMOE_OK;
}

/* Closes; a failure here (a bad check value found at the very end) is reported as corruption. */
static smoe_status gz_close(gz_in *in, smoe_err *err)
{
    if (!in->gz) return SMOE_OK;
    int r = gzclose_r(in->gz);
    in->gz = NULL;
    if (r == Z_OK) return SMOE_OK;
    if (r == Z_ERRNO) return smoe_fail(err, SMOE_ERROR_IO, "cannot close \"%s\"", in->path);
    return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "\"%s\": corrupt gzip stream (zlib error %d)",
                     in->path, r);
}

/* gzerror's text without the "<fd:N>: " that zlib puts first for a gzdopen'ed file. */
static const char *gz_message(gzFile gz, int *zerr)
{
    const char *m = gzerror(gz, zerr);
    if (!m || !*m) return "unknown zlib error";
    if (strncmp(m, "<fd:", 4) == 0) {
        const char *c = strstr(m, ": ");
        if (c && c[2]) return c + 2;
    }
    return m;
}

/* The status for a failed gzread: an I/O error or a corrupt stream. */
static smoe_status gz_read_error(gz_in *in, smoe_err *err)
{
    int e = errno, zerr = Z_OK;
    const char *m = gz_message(in->gz, &zerr);
    if (zerr == Z_ERRNO)
        return smoe_fail(err, SMOE_ERROR_IO, "cannot read \"%s\": %s", in->path, strerror(e));
    if (zerr == Z_MEM_ERROR)
        return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "\"%s\": zlib is out of memory", in->path);
    return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "\"%s\": corrupt gzip stream (%s)", in->path, m);
}

/* Reads up to n bytes; *got is how many came before the end of the stream. */
static smoe_status gz_read_upto(gz_in *in, uint8_t *dst, size_t n, size_t *got, smoe_err *err)
{
    size_t done = 0;
    while (done < n) {
        size_t want = n - done < GZ_CHUNK ? n - done : GZ_CHUNK;
        errno = 0;
        int r = gzread(in->gz, dst + done, (unsigned)want);
        if (r < 0) {
            *got = done;
            return gz_read_error(in, err);
        }
        if (r == 0) break;
        done += (size_t)r;
    }
    *got = done;
    return SMOE_OK;
}

/* After a short read: an explanation of why the stream ended (for the "truncated" message). */
static const char *gz_end_note(gz_in *in)
{
    int zerr = Z_OK;
    gzerror(in->gz, &zerr);
    return zerr == Z_BUF_ERROR ? " (the gzip stream itself is cut short)" : "";
}

static smoe_status read_header(gz_in *in, uint8_t *hdr, size_t n, const char *what, smoe_err *err)
{
    size_t got = 0;
    smoe_status st = gz_read_upto(in, hdr, n, &got, err);
    if (st != SMOE_OK) return st;
    if (got < n)
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT,
                         "\"%s\": truncated %s header: %zu of %zu bytes%s", in->path, what, got, n,
                         gz_end_note(in));
    return SMOE_OK;
}

/* Reads exactly n payload bytes into a new buffer, then makes sure the stream ends there (the
 * decompressed size must match the header) and that the gzip trailer checks out. */
static smoe_status read_payload(gz_in *in, size_t n, uint8_t **out, smoe_err *err)
{
    *out = NULL;
    size_t cap = n < GROW_START ? n : GROW_START, have = 0;
    uint8_t *buf = malloc(cap ? cap : 1);
    if (!buf)
        return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "\"%s\": cannot allocate %zu bytes",
                         in->path, cap);
    for (;;) {
        size_t got = 0;
        smoe_status st = gz_read_upto(in, buf + have, cap - have, &got, err);
        have += got;
        if (st != SMOE_OK) {
            free(buf);
            return st;
        }
        if (have < cap) {
            free(buf);
            return smoe_fail(err, SMOE_ERROR_BAD_FORMAT,
                             "\"%s\": truncated: the header promises %zu data bytes, the file holds "
                             "%zu%s",
                             in->path, n, have, gz_end_note(in));
        }
        if (cap == n) break;
        size_t next = cap > n / 2 ? n : cap * 2;
        uint8_t *grown = realloc(buf, next);
        if (!grown) {
            free(buf);
            return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "\"%s\": cannot allocate %zu bytes",
                             in->path, next);
        }
        buf = grown;
        cap = next;
    }
    /* Nothing may follow the data. */
    uint8_t extra[256];
    size_t more = 0;
    smoe_status st = gz_read_upto(in, extra, sizeof extra, &more, err);
    if (st != SMOE_OK) {
        free(buf);
        return st;
    }
    if (more > 0) {
        free(buf);
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT,
                         "\"%s\": the decompressed data is longer than the header says (%zu data "
                         "bytes expected)",
                         in->path, n);
    }
    int zerr = Z_OK;
    const char *m = gz_message(in->gz, &zerr);
    if (zerr != Z_OK) {
        free(buf);
        return smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "\"%s\": corrupt or cut gzip stream (%s)",
                         in->path, m);
    }
    *out = buf;
    return SMOE_OK;
}

static smoe_status load_labels(const char *path, int *count, uint8_t **labels, smoe_err *err)
{
    gz_in in;
    smoe_status st = gz_open(&in, path, err);
    if (st != SMOE_OK) return st;
    uint8_t hdr[8];
    st = read_header(&in, hdr, sizeof hdr, "IDX label", err);
    if (st == SMOE_OK) {
        uint32_t magic = be32(hdr), n = be32(hdr + 4);
        if (magic != IDX_MAGIC_LABELS)
            st = smoe_fail(err, SMOE_ERROR_BAD_FORMAT,
                           "\"%s\": bad magic number %u (0x%08x); an IDX label file has %u (0x%08x)",
                           path, magic, magic, IDX_MAGIC_LABELS, IDX_MAGIC_LABELS);
        else if (n == 0 || n > SMOE_FMNIST_MAX_COUNT)
            st = smoe_fail(err, SMOE_ERROR_BAD_FORMAT,
                           "\"%s\": label count %u is %s (1 to %d accepted)", path, n,
                           n == 0 ? "zero" : "absurd", SMOE_FMNIST_MAX_COUNT);
        else
            *count = (int)n;
    }
    if (st == SMOE_OK) st = read_payload(&in, (size_t)*count, labels, err);
    if (st == SMOE_OK) {
        for (int i = 0; i < *count; i++) {
            if ((*labels)[i] >= SMOE_FMNIST_CLASSES) {
                st = smoe_fail(err, SMOE_ERROR_BAD_FORMAT,
                               "\"%s\": label %d of example %d is out of range (0 to %d)", path,
                               (*labels)[i], i, SMOE_FMNIST_CLASSES - 1);
                break;
            }
        }
    }
    smoe_status cst = gz_close(&in, st == SMOE_OK ? err : NULL);
    if (st == SMOE_OK) st = cst;
    if (st != SMOE_OK) {
        free(*labels);
        *labels = NULL;
        *count = 0;
    }
    return st;
}

static smoe_status load_images(const char *path, int expect_count, int *height, int *width,
                               uint8_t **pixels, smoe_err *err)
{
    gz_in in;
    smoe_status st = gz_open(&in, path, err);
    if (st != SMOE_OK) return st;
    uint8_t hdr[16];
    uint32_t n = 0, h = 0, w = 0;
    st = read_header(&in, hdr, sizeof hdr, "IDX image", err);
    if (st == SMOE_OK) {
        uint32_t magic = be32(hdr);
        n = be32(hdr + 4);
        h = be32(hdr + 8);
        w = be32(hdr + 12);
        if (magic != IDX_MAGIC_IMAGES)
            st = smoe_fail(err, SMOE_ERROR_BAD_FORMAT,
                           "\"%s\": bad magic number %u (0x%08x); an IDX image file has %u (0x%08x)",
                           path, magic, magic, IDX_MAGIC_IMAGES, IDX_MAGIC_IMAGES);
        else if (n == 0 || n > SMOE_FMNIST_MAX_COUNT)
            st = smoe_fail(err, SMOE_ERROR_BAD_FORMAT,
                           "\"%s\": image count %u is %s (1 to %d accepted)", path, n,
                           n == 0 ? "zero" : "absurd", SMOE_FMNIST_MAX_COUNT);
        else if (h == 0 || w == 0 || h > SMOE_FMNIST_MAX_SIDE || w > SMOE_FMNIST_MAX_SIDE)
            st = smoe_fail(err, SMOE_ERROR_BAD_FORMAT,
                           "\"%s\": image size %ux%u is %s (1 to %d pixels a side accepted)", path,
                           h, w, (h == 0 || w == 0) ? "empty" : "absurd", SMOE_FMNIST_MAX_SIDE);
        else if (n != (uint32_t)expect_count)
            st = smoe_fail(err, SMOE_ERROR_BAD_FORMAT,
                           "\"%s\" holds %u images but its label file holds %d labels", path, n,
                           expect_count);
    }
    if (st == SMOE_OK) {
        uint64_t bytes = (uint64_t)n * h * w; /* < 2^24 * 2^12 * 2^12: no overflow */
        if (bytes > (uint64_t)SIZE_MAX / 2)
            st = smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY,
                           "\"%s\": %u images of %ux%u do not fit in memory", path, n, h, w);
        else
            st = read_payload(&in, (size_t)bytes, pixels, err);
    }
    smoe_status cst = gz_close(&in, st == SMOE_OK ? err : NULL);
    if (st == SMOE_OK) st = cst;
    if (st != SMOE_OK) {
        free(*pixels);
        *pixels = NULL;
        return st;
    }
    *height = (int)h;
    *width = (int)w;
    return SMOE_OK;
}

static smoe_status make_path(char *buf, size_t size, const char *dir, const char *name, smoe_err *err)
{
    size_t len = strlen(dir);
    const char *sep = (len > 0 && dir[len - 1] == '/') ? "" : "/";
    int r = snprintf(buf, size, "%s%s%s", dir, sep, name);
    if (r < 0 || (size_t)r >= size)
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT,
                         "Fashion-MNIST directory path is too long (%zu bytes)", len);
    return SMOE_OK;
}

smoe_status smoe_fmnist_load(const char *dir, int train, smoe_dataset *out, smoe_err *err)
{
    if (!out) return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "smoe_fmnist_load: out is NULL");
    memset(out, 0, sizeof *out);
    if (!dir || !*dir) {
        const char *env = getenv(SMOE_FMNIST_DIR_ENV);
        dir = (env && *env) ? env : SMOE_FMNIST_DEFAULT_DIR;
    }
    const char *split = train ? "train" : "t10k";
    char name[64], labels_path[4096], images_path[4096];
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte.gz", split);
    smoe_status st = make_path(labels_path, sizeof labels_path, dir, name, err);
    if (st != SMOE_OK) return st;
    snprintf(name, sizeof name, "%s-images-idx3-ubyte.gz", split);
    st = make_path(images_path, sizeof images_path, dir, name, err);
    if (st != SMOE_OK) return st;

    smoe_dataset d = {0};
    st = load_labels(labels_path, &d.count, &d.labels, err);
    if (st != SMOE_OK) return st;
    st = load_images(images_path, d.count, &d.height, &d.width, &d.pixels, err);
    if (st != SMOE_OK) {
        free(d.labels);
        return st;
    }
    *out = d;
    return SMOE_OK;
}

void smoe_dataset_free(smoe_dataset *d)
{
    if (!d) return;
    free(d->pixels);
    free(d->labels);
    memset(d, 0, sizeof *d);
}

void smoe_dataset_batch(const smoe_dataset *d, const int *idx, int n, float *images, int32_t *labels)
{
    if (!d || !idx || n <= 0) return;
    size_t hw = (size_t)(d->height > 0 ? d->height : 0) * (size_t)(d->width > 0 ? d->width : 0);
    for (int b = 0; b < n; b++) {
        int i = idx[b];
        int valid = d->pixels && d->labels && i >= 0 && i < d->count;
        if (images) {
            float *dst = images + (size_t)b * hw;
            if (valid) {
                const uint8_t *src = d->pixels + (size_t)i * hw;
                for (size_t k = 0; k < hw; k++) dst[k] = (float)src[k] / 255.0f;
            } else {
                memset(dst, 0, hw * sizeof *dst);
            }
        }
        if (labels) labels[b] = valid ? (int32_t)d->labels[i] : -1;
    }
}

const char *smoe_fmnist_class_name(int label)
{
    static const char *const names[SMOE_FMNIST_CLASSES] = {
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot",
    };
    return (label >= 0 && label < SMOE_FMNIST_CLASSES) ? names[label] : "unknown";
}
