#define _POSIX_C_SOURCE 200809L
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

smoe_status smoe_fail(smoe_err *err, smoe_status status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return status;
}

smoe_status smoe_fail_prefix(smoe_err *err, smoe_status status, const char *fmt, ...)
{
    if (err) {
        char prefix[SMOE_ERR_MSG_SIZE], old[SMOE_ERR_MSG_SIZE];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof prefix, fmt, ap);
        va_end(ap);
        memcpy(old, err->msg, sizeof old);
        /* prefix + ": " + old, cut to fit (truncation is fine for a message) */
        size_t n = strnlen(prefix, sizeof prefix - 1);
        if (n > sizeof err->msg - 3) n = sizeof err->msg - 3;
        memcpy(err->msg, prefix, n);
        memcpy(err->msg + n, ": ", 2);
        size_t rest = sizeof err->msg - n - 3;
        size_t m = strnlen(old, sizeof old - 1);
        if (m > rest) m = rest;
        memcpy(err->msg + n + 2, old, m);
        err->msg[n + 2 + m] = 0;
    }
    return status;
}

const char *smoe_status_string(smoe_status s)
{
    switch (s) {
    case SMOE_OK: return "SMOE_OK";
    case SMOE_ERROR_INVALID_ARGUMENT: return "SMOE_ERROR_INVALID_ARGUMENT";
    case SMOE_ERROR_OUT_OF_HOST_MEMORY: return "SMOE_ERROR_OUT_OF_HOST_MEMORY";
    case SMOE_ERROR_OUT_OF_DEVICE_MEMORY: return "SMOE_ERROR_OUT_OF_DEVICE_MEMORY";
    case SMOE_ERROR_NO_DEVICE: return "SMOE_ERROR_NO_DEVICE";
    case SMOE_ERROR_UNSUPPORTED: return "SMOE_ERROR_UNSUPPORTED";
    case SMOE_ERROR_TOO_LARGE: return "SMOE_ERROR_TOO_LARGE";
    case SMOE_ERROR_DEVICE_LOST: return "SMOE_ERROR_DEVICE_LOST";
    case SMOE_ERROR_VULKAN: return "SMOE_ERROR_VULKAN";
    case SMOE_ERROR_IO: return "SMOE_ERROR_IO";
    case SMOE_ERROR_BAD_FORMAT: return "SMOE_ERROR_BAD_FORMAT";
    case SMOE_ERROR_NOT_FINITE: return "SMOE_ERROR_NOT_FINITE";
    case SMOE_ERROR_INTERNAL: return "SMOE_ERROR_INTERNAL";
    case SMOE_NOT_READY: return "SMOE_NOT_READY";
    }
    return "SMOE_ERROR_UNKNOWN";
}

int smoe_version(void) { return SMOE_VERSION; }
