/* The autotune table of a gpu and its file. */
#include "tune.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "disk_cache.h"

typedef struct smoe_tune_entry {
    char key[SMOE_TUNE_KEY_MAX];
    char value[SMOE_TUNE_VALUE_MAX];
} smoe_tune_entry;

struct smoe_tune {
    smoe_tune_entry *items;
    size_t count, cap;
    char file[96];
};

static smoe_tune_entry *find(struct smoe_tune *t, const char *key)
{
    for (size_t i = 0; i < t->count; i++)
        if (!strcmp(t->items[i].key, key)) return &t->items[i];
    return NULL;
}

static int set(struct smoe_tune *t, const char *key, const char *value)
{
    if (strlen(key) >= SMOE_TUNE_KEY_MAX || strlen(value) >= SMOE_TUNE_VALUE_MAX) return 0;
    smoe_tune_entry *e = find(t, key);
    if (!e) {
        if (t->count == t->cap) {
            size_t cap = t->cap ? 2 * t->cap : 32;
            smoe_tune_entry *items = realloc(t->items, cap * sizeof *items);
            if (!items) return 0;
            t->items = items;
            t->cap = cap;
        }
        e = &t->items[t->count++];
        snprintf(e->key, sizeof e->key, "%s", key);
    }
    snprintf(e->value, sizeof e->value, "%s", value);
    return 1;
}

/* Reads "key value" lines; anything malformed is skipped. */
static void load(struct smoe_tune *t, const char *dir)
{
    size_t size = 0;
    char *text = smoe_cache_read(dir, t->file, 1u << 20, &size);
    if (!text) return;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        char *sp = strrchr(line, ' ');
        if (!sp || sp == line || !sp[1]) continue;
        *sp = 0;
        set(t, line, sp + 1);
    }
    free(text);
}

static struct smoe_tune *table(smoe_gpu *gpu)
{
    if (gpu->tune) return gpu->tune;
    struct smoe_tune *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    /* Drivers do not all count their versions in driverVersion (lavapipe says 1 in every
     * release): the driver's own description goes into the name too, hashed (FNV-1a). */
    const smoe_device_info *d = &gpu->info;
    uint32_t h = 2166136261u;
    const char *parts[3] = {d->name, d->driver_name, d->driver_info};
    for (int i = 0; i < 3; i++)
        for (const char *c = parts[i]; *c; c++) h = (h ^ (uint8_t)*c) * 16777619u;
    snprintf(t->file, sizeof t->file, "tune-%04x-%04x-%08x-%u-%08x.txt", d->vendor_id, d->device_id, d->driver_version,
             d->driver_id, h);
    load(t, gpu->opts->cache_dir);
    gpu->tune = t;
    return t;
}

const char *smoe_tune_get(smoe_gpu *gpu, const char *key)
{
    struct smoe_tune *t = table(gpu);
    smoe_tune_entry *e = t ? find(t, key) : NULL;
    return e ? e->value : NULL;
}

void smoe_tune_put(smoe_gpu *gpu, const char *key, const char *value)
{
    struct smoe_tune *t = table(gpu);
    if (!t || !set(t, key, value)) return;
    size_t cap = t->count * (SMOE_TUNE_KEY_MAX + SMOE_TUNE_VALUE_MAX + 2) + 1, used = 0;
    char *text = malloc(cap);
    if (!text) return;
    for (size_t i = 0; i < t->count; i++) {
        int n = snprintf(text + used, cap - used, "%s %s\n", t->items[i].key, t->items[i].value);
        if (n > 0) used += (size_t)n;
    }
    smoe_cache_write(gpu->opts->cache_dir, t->file, text, used);
    free(text);
}

void smoe_tune_free(smoe_gpu *gpu)
{
    if (gpu->tune) free(gpu->tune->items);
    free(gpu->tune);
    gpu->tune = NULL;
}
