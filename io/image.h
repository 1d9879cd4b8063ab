/* Loading one image file as a grayscale float image for classification.
 *
 * Formats: PNG and JPEG (baseline and progressive) decoded by stb_image (Debian's libstb-dev,
 * compiled into image.c as static functions, so nothing needs linking), and binary PGM/PPM
 * (P5/P6, any maxval 1..65535) decoded here. Pixels become gray in [0, 1]: gray / full scale, or
 * for colour the luma 0.299 R + 0.587 G + 0.114 B; an alpha channel is composited over black.
 * The image is then resized to out_h x out_w, each axis on its own: area averaging where the
 * source is larger than the target (the output pixel is the mean of the source area it covers),
 * bilinear interpolation (pixel centres aligned, edges clamped) where it is smaller; an axis of
 * equal size is copied. Nothing is printed, nothing global is written: thread-safe (stb_image is
 * built without failure strings, so messages say what kind of file failed, not stb's reason). */
#ifndef SMOE_IMAGE_H
#define SMOE_IMAGE_H

#include <stddef.h>

#include "error.h"

/* Limits: larger images are refused with SMOE_ERROR_BAD_FORMAT, larger files with SMOE_ERROR_IO. */
#define SMOE_IMAGE_MAX_SIDE 16384
#define SMOE_IMAGE_MAX_PIXELS ((size_t)64 << 20)
#define SMOE_IMAGE_MAX_FILE_BYTES ((size_t)256 << 20)

/* Reads path and writes out[out_h * out_w] (row-major, values in [0, 1]).
 * Errors: SMOE_ERROR_INVALID_ARGUMENT (NULL path or out, out_h or out_w outside
 * 1..SMOE_IMAGE_MAX_SIDE), SMOE_ERROR_IO (the file cannot be opened or read, is not a regular file
 * or is too large), SMOE_ERROR_BAD_FORMAT (not a PNG/PGM/PPM/JPEG image, corrupt or truncated,
 * too many pixels), SMOE_ERROR_OUT_OF_HOST_MEMORY. out is left untouched on failure. */
smoe_status smoe_image_load_gray(const char *path, int out_h, int out_w, float *out, smoe_err *err);

/* The same from an encoded image in memory; name (may be NULL) is used in messages only. */
smoe_status smoe_image_decode_gray(const void *data, size_t size, const char *name, int out_h,
                                   int out_w, float *out, smoe_err *err);

#endif
