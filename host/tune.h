/* Autotune choices of one device and driver: a shape class (a key) -> the variant measured
 * fastest on it (a value), kept on the gpu and in the cache directory (disk_cache.h) as
 * tune-<vendor>-<device>-<driver version>-<driver id>-<hash of names>.txt, one "key value" line each, so that a
 * later run on the same device and driver measures nothing. */
#ifndef SMOE_TUNE_H
#define SMOE_TUNE_H

#include "device.h"

#define SMOE_TUNE_KEY_MAX 96
#define SMOE_TUNE_VALUE_MAX 32

/* The choice for key, or NULL (the file is read on the first call). */
const char *smoe_tune_get(smoe_gpu *gpu, const char *key);
/* Records a choice and rewrites the file (failures to write are ignored: it is a cache). */
void smoe_tune_put(smoe_gpu *gpu, const char *key, const char *value);
void smoe_tune_free(smoe_gpu *gpu);

#endif
