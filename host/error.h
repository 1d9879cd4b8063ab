/* Error reporting inside the library: functions that can fail take an smoe_err and return a
 * status; the context copies the message into its last-error slot. Nothing is printed. */
#ifndef SMOE_ERROR_H
#define SMOE_ERROR_H

#include "softmoe.h"

#define SMOE_ERR_MSG_SIZE 1024

typedef struct smoe_err {
    char msg[SMOE_ERR_MSG_SIZE];
} smoe_err;

/* Formats the message into err (if err is not NULL) and returns status. */
smoe_status smoe_fail(smoe_err *err, smoe_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes the message already in err with "what: ". Returns status. */
smoe_status smoe_fail_prefix(smoe_err *err, smoe_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
