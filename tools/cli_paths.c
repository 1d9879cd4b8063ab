/* Output paths checked before any work: a whole training run is not lost to an unwritable
 * --out, and an output never replaces one of the command's inputs. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

/* Why path cannot be written, or NULL. */
static const char *unwritable(const char *path)
{
    struct stat s;
    if (stat(path, &s) == 0 && !S_ISREG(s.st_mode)) return "exists and is not a regular file";
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) return "out of host memory";
    const char *why = NULL;
    if (stat(dir, &s) != 0)
        why = errno == ENOTDIR ? "its directory is not a directory" : "its directory does not exist";
    else if (!S_ISDIR(s.st_mode))
        why = "its directory is not a directory";
    else if (access(dir, W_OK | X_OK) != 0)
        why = "its directory is not writable";
    free(dir);
    return why;
}

int cli_check_output(const char *cmd, const char *opt, const char *path)
{
    const char *why = unwritable(path);
    if (!why) return 0;
    fprintf(stderr, "softmoe %s: --%s %s: %s; nothing was done\n", cmd, opt, path, why);
    return 2;
}

int cli_check_distinct(const char *cmd, const char *out_opt, const char *out, const char *in_opt, const char *in)
{
    if (!out || !in) return 0;
    struct stat a, b;
    int same = strcmp(out, in) == 0 ||
               (stat(out, &a) == 0 && stat(in, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino);
    if (!same) return 0;
    fprintf(stderr, "softmoe %s: --%s %s is the same file as --%s %s; nothing was written\n", cmd, out_opt, out, in_opt, in);
    return 2;
}
