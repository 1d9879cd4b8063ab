/* Files kept between runs (the pipeline cache, autotune choices), all in one directory, dir: the
 * context's options.h cache_dir ($SOFTMOE_CACHE_DIR if set, empty or "off" keeping nothing, else
 * $XDG_CACHE_HOME/softmoe, else $HOME/.cache/softmoe); NULL or "" keeps nothing. A cache is only ever an optimisation: a missing, unreadable, damaged or
 * unwritable one means starting from nothing, never a failure. */
#ifndef SMOE_DISK_CACHE_H
#define SMOE_DISK_CACHE_H

#include <stddef.h>

/* The path of file in the cache directory; 0 when caching is off or no directory is known. */
int smoe_cache_path(const char *dir, const char *file, char *out, size_t size);
/* The whole file (malloc'd, *size bytes, at most max) or NULL. */
void *smoe_cache_read(const char *dir, const char *file, size_t max, size_t *size);
/* Writes file atomically (a temporary file renamed over it), creating the directory first;
 * 0 on any failure, which callers ignore. */
int smoe_cache_write(const char *dir, const char *file, const void *data, size_t size);

#endif
