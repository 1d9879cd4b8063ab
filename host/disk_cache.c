/* The cache directory and its files. */
#define _POSIX_C_SOURCE 200809L
#include "disk_cache.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int smoe_cache_path(const char *dir, const char *file, char *out, size_t size)
{
    if (!dir || !dir[0]) return 0;
    int n = snprintf(out, size, "%s/%s", dir, file);
    return n > 0 && (size_t)n < size;
}

void *smoe_cache_read(const char *dir, const char *file, size_t max, size_t *size)
{
    char path[4096];
    if (!smoe_cache_path(dir, file, path, sizeof path)) return NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    void *data = NULL;
    long n = -1;
    if (!fseek(f, 0, SEEK_END)) n = ftell(f);
    if (n > 0 && (size_t)n <= max && !fseek(f, 0, SEEK_SET) && (data = malloc((size_t)n + 1))) {
        if (fread(data, 1, (size_t)n, f) != (size_t)n) {
            free(data);
            data = NULL;
        } else {
            ((char *)data)[n] = 0; /* text files can be parsed as strings */
            *size = (size_t)n;
        }
    }
    fclose(f);
    return data;
}

/* mkdir -p of the directory part of path. */
static int make_parents(char *path)
{
    for (char *s = strchr(path + 1, '/'); s; s = strchr(s + 1, '/')) {
        *s = 0;
        int ok = mkdir(path, 0755) == 0 || errno == EEXIST;
        *s = '/';
        if (!ok) return 0;
    }
    return 1;
}

int smoe_cache_write(const char *dir, const char *file, const void *data, size_t size)
{
    char path[4096], tmp[4200];
    if (!smoe_cache_path(dir, file, path, sizeof path) || !make_parents(path)) return 0;
    snprintf(tmp, sizeof tmp, "%s.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) return 0;
    const char *p = data;
    size_t done = 0;
    while (done < size) {
        ssize_t w = write(fd, p + done, size - done);
        if (w <= 0) break;
        done += (size_t)w;
    }
    int ok = done == size && fchmod(fd, 0644) == 0;
    ok = close(fd) == 0 && ok;
    if (ok) ok = rename(tmp, path) == 0;
    if (!ok) unlink(tmp);
    return ok;
}
