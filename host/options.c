/* Reading the policy from the environment (options.h). */
#define _POSIX_C_SOURCE 200809L
#include "options.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void copy_env(const char *name, char *out, size_t size)
{
    const char *v = getenv(name);
    snprintf(out, size, "%s", v ? v : "");
}

/* $SOFTMOE_CACHE_DIR if set (empty or "off": none), else $XDG_CACHE_HOME/softmoe (an absolute
 * path), else $HOME/.cache/softmoe; "" when none is known or the path does not fit. */
static void cache_dir(char *out, size_t size)
{
    const char *env = getenv("SOFTMOE_CACHE_DIR");
    int n = 0;
    if (env) {
        if (env[0] && strcmp(env, "off")) n = snprintf(out, size, "%s", env);
    } else if ((env = getenv("XDG_CACHE_HOME")) && env[0] == '/') {
        n = snprintf(out, size, "%s/softmoe", env);
    } else if ((env = getenv("HOME")) && env[0]) {
        n = snprintf(out, size, "%s/.cache/softmoe", env);
    }
    if (n <= 0 || (size_t)n >= size) out[0] = 0;
}

void smoe_options_from_env(smoe_options *o)
{
    memset(o, 0, sizeof *o);
    const char *env = getenv("SOFTMOE_AUTOTUNE");
    o->autotune = !(env && !strcmp(env, "0"));
    copy_env("SOFTMOE_MATMUL_VARIANT", o->matmul_variant, sizeof o->matmul_variant);
    env = getenv("SOFTMOE_FORCE_STAGING");
    o->force_staging = env && env[0] == '1';
    copy_env("SOFTMOE_FAULT", o->fault, sizeof o->fault);
    env = getenv("SOFTMOE_VALIDATION");
    if (env && env[0] && strcmp(env, "0")) o->validation = !strcmp(env, "sync") ? 2 : 1;
    copy_env("SOFTMOE_ROW_KERNELS", o->row_kernels, sizeof o->row_kernels);
    copy_env("SOFTMOE_DEVICE", o->device, sizeof o->device);
    cache_dir(o->cache_dir, sizeof o->cache_dir);
}
