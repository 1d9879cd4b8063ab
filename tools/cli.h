/* Helpers shared by the softmoe command's subcommands. */
#ifndef SMOE_CLI_H
#define SMOE_CLI_H

#include <stdio.h>

#include "softmoe.h"

extern int cli_verbose;

void cli_log(void *user, smoe_log_level level, const char *msg);
/* Prints "softmoe: what: <last error> (STATUS)" and returns 1. */
int cli_fail(smoe_context *ctx, smoe_status st, const char *what);
/* A context on device (NULL: the default), logging to stderr; NULL after printing why. */
smoe_context *cli_open(const char *device);
/* Destroys ctx; returns rc, or 1 if the validation layer (SOFTMOE_VALIDATION) reported anything. */
int cli_close(smoe_context *ctx, int rc);
/* Seconds on a monotonic clock. */
double cli_now(void);
/* "1h02m" / "3m05s" / "12s" */
void cli_duration(double seconds, char *buf, size_t size);
/* Parses a whole decimal integer / float, or returns 0. */
int cli_int(const char *s, long lo, long hi, long *out);
int cli_float(const char *s, double *out);

int cmd_run(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_classify(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
