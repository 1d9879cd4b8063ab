/* CSV tables for softmoe plot: see csv.h. */
#define _POSIX_C_SOURCE 200809L
#include "csv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The whole file, NUL-terminated, in *out (*len bytes before the NUL). */
static smoe_status read_all(const char *path, char **out, size_t *len, smoe_err *err)
{
    int is_stdin = !strcmp(path, "-");
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) return smoe_fail(err, SMOE_ERROR_IO, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    smoe_status rc = SMOE_OK;
    while (buf) {
        if (n == cap) {
            if (cap >= CSV_MAX_BYTES) {
                rc = smoe_fail(err, SMOE_ERROR_IO, "%s is larger than %zu MiB", path, CSV_MAX_BYTES >> 20);
                break;
            }
            char *grown = realloc(buf, 2 * cap + 1);
            if (!grown) break;
            buf = grown;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) rc = smoe_fail(err, SMOE_ERROR_IO, "cannot read %s: %s", path, strerror(errno));
            break;
        }
    }
    if (!is_stdin) fclose(f);
    if (!buf) return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of memory reading %s", path);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

/* A growing array of field pointers: the fields of every record so far. */
typedef struct fields {
    char **v;
    size_t n, cap;
} fields;

static int push(fields *f, char *s)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 256;
        char **grown = realloc(f->v, cap * sizeof *grown);
        if (!grown) return -1;
        f->v = grown;
        f->cap = cap;
    }
    f->v[f->n++] = s;
    return 0;
}

static int push_line(int **lines, int *count, int *cap, int line)
{
    if (*count == *cap) {
        int c = *cap ? 2 * *cap : 256;
        int *grown = realloc(*lines, (size_t)c * sizeof *grown);
        if (!grown) return -1;
        *lines = grown;
        *cap = c;
    }
    (*lines)[(*count)++] = line;
    return 0;
}

static int is_blank(char c) { return c == ' ' || c == '\t'; }

smoe_status csv_read(const char *path, csv_table *t, smoe_err *err)
{
    memset(t, 0, sizeof *t);
    char *in = NULL;
    size_t len = 0;
    smoe_status rc = read_all(path, &in, &len, err);
    if (rc) return rc;
    /* Each field is copied unescaped (never longer than it was) with a NUL after it; a file of
     * len bytes has at most len + 1 fields. */
    char *text = malloc(2 * len + 2), *o = text;
    fields all = {0};
    int *lines = NULL, nlines = 0, lines_cap = 0;
    int line = 1, cols = -1;
    if (!text) rc = smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of memory reading %s", path);
    size_t p = len >= 3 && !memcmp(in, "\xEF\xBB\xBF", 3) ? 3 : 0;
    while (!rc && p < len) {
        /* one record, starting on this line */
        int start_line = line;
        size_t first = all.n;
        int blank_line = 1;
        for (;;) {
            while (p < len && is_blank(in[p])) p++;
            char *field = o;
            if (p < len && in[p] == '"') {
                blank_line = 0;
                int quote_line = line;
                p++;
                for (;;) {
                    if (p >= len) {
                        rc = smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "%s line %d: a quoted field is not closed", path, quote_line);
                        break;
                    }
                    if (in[p] == '"') {
                        if (p + 1 < len && in[p + 1] == '"') {
                            *o++ = '"';
                            p += 2;
                            continue;
                        }
                        p++;
                        break;
                    }
                    if (in[p] == '\n' || (in[p] == '\r' && (p + 1 >= len || in[p + 1] != '\n'))) line++;
                    if (!in[p]) {
                        rc = smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "%s line %d: a NUL byte (not a text file)", path, line);
                        break;
                    }
                    *o++ = in[p++];
                }
                if (rc) break;
                while (p < len && is_blank(in[p])) p++;
                if (p < len && in[p] != ',' && in[p] != '\n' && in[p] != '\r') {
                    rc = smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "%s line %d: text after a closing quote", path, line);
                    break;
                }
            } else {
                while (p < len && in[p] != ',' && in[p] != '\n' && in[p] != '\r') {
                    if (!in[p]) {
                        rc = smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "%s line %d: a NUL byte (not a text file)", path, line);
                        break;
                    }
                    *o++ = in[p++];
                }
                if (rc) break;
                while (o > field && is_blank(o[-1])) o--;
                if (o > field) blank_line = 0;
            }
            *o++ = 0;
            if (push(&all, field)) {
                rc = smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of memory reading %s", path);
                break;
            }
            if (p < len && in[p] == ',') {
                blank_line = 0;
                p++;
                continue;
            }
            /* end of the record: a line end or the end of the file */
            if (p < len && in[p] == '\r') p++;
            if (p < len && in[p] == '\n') p++;
            line++;
            break;
        }
        if (rc) break;
        int n = (int)(all.n - first);
        if (blank_line && n == 1) {
            all.n = first; /* a blank line */
            continue;
        }
        if (cols < 0) {
            cols = n;
        } else if (n != cols) {
            rc = smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "%s line %d has %d field%s; the header has %d", path, start_line, n,
                      n == 1 ? "" : "s", cols);
        } else if (push_line(&lines, &nlines, &lines_cap, start_line)) {
            rc = smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of memory reading %s", path);
        }
    }
    if (!rc && cols < 0) rc = smoe_fail(err, SMOE_ERROR_BAD_FORMAT, "%s is empty: it has no header row", path);
    free(in);
    if (rc) {
        free(all.v);
        free(lines);
        free(text);
        return rc;
    }
    t->cols = cols;
    t->rows = nlines;
    t->header = all.v;
    t->cells = all.v + cols;
    t->lines = lines;
    t->text = text;
    return SMOE_OK;
}

int csv_column(const csv_table *t, const char *name)
{
    int found = -1;
    for (int c = 0; c < t->cols; c++) {
        if (strcmp(t->header[c], name)) continue;
        if (found >= 0) return -2;
        found = c;
    }
    return found;
}

const char *csv_cell(const csv_table *t, int row, int col) { return t->cells[(size_t)row * (size_t)t->cols + (size_t)col]; }

void csv_free(csv_table *t)
{
    free(t->header);
    free(t->lines);
    free(t->text);
    memset(t, 0, sizeof *t);
}
