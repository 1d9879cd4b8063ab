/* Fashion-MNIST as Debian's dataset-fashion-mnist package installs it: gzipped IDX files
 *   <dir>/{train,t10k}-images-idx3-ubyte.gz   magic 2051, count, rows, cols, then count*rows*cols bytes
 *   <dir>/{train,t10k}-labels-idx1-ubyte.gz   magic 2049, count, then count bytes (0..9)
 * (all header fields big-endian uint32). Read with zlib. Like the rest of the library, nothing here
 * prints, exits or keeps global mutable state; errors come back as a status and a message in err. */
#ifndef SMOE_FASHION_MNIST_H
#define SMOE_FASHION_MNIST_H

#include <stdint.h>

#include "error.h"

#define SMOE_FMNIST_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"
#define SMOE_FMNIST_DIR_ENV "SOFTMOE_FMNIST_DIR"
#define SMOE_FMNIST_CLASSES 10

/* Limits beyond which a header is taken as corrupt (SMOE_ERROR_BAD_FORMAT). */
#define SMOE_FMNIST_MAX_COUNT 10000000
#define SMOE_FMNIST_MAX_SIDE 4096

/* smoe_dataset, smoe_dataset_free and smoe_dataset_batch are public (softmoe.h). */

/* Loads the training split (train = 1, 60000 images) or the test split (train = 0, "t10k", 10000
 * images) from dir; dir NULL (or "") means $SOFTMOE_FMNIST_DIR when set and not empty, else
 * SMOE_FMNIST_DEFAULT_DIR. (zlib reads a file that is not gzipped as it is, so uncompressed IDX
 * data under the .gz names is accepted too.) *out is zeroed first and stays zeroed on failure (nothing leaks).
 * Errors: SMOE_ERROR_INVALID_ARGUMENT (out NULL, path too long), SMOE_ERROR_IO (a file cannot be
 * opened or read; the message names the path and the package), SMOE_ERROR_BAD_FORMAT (bad magic,
 * zero or absurd dimensions, truncated or trailing data, corrupt gzip stream, images/labels count
 * mismatch, a label >= 10), SMOE_ERROR_OUT_OF_HOST_MEMORY. Thread-safe while nothing changes the
 * environment (it reads getenv). */
smoe_status smoe_fmnist_load(const char *dir, int train, smoe_dataset *out, smoe_err *err);

/* Frees the arrays and zeroes *d. NULL and a zeroed dataset are fine. */
void smoe_dataset_free(smoe_dataset *d);

/* Gathers examples idx[0..n): images (may be NULL) as float32 [n, 1, height, width] = pixel / 255,
 * labels (may be NULL) as int32 [n]. An index outside [0, count) yields an all-zero image and
 * label -1 (callers should not pass one; this only keeps a bad index from reading out of bounds). */
void smoe_dataset_batch(const smoe_dataset *d, const int *idx, int n, float *images, int32_t *labels);

/* "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
 * "Ankle boot" for labels 0..9; "unknown" otherwise. Never NULL; static storage. */
const char *smoe_fmnist_class_name(int label);

#endif
