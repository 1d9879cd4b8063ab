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

/* The expert-subset options of run, eval and classify (tools/cli_keep.c): --keep-experts K (a
 * count, or a fraction of the experts: 1/8, 0.125), --renormalize, --random-experts SEED. */
typedef struct cli_keep {
    int given;       /* --keep-experts was given */
    int count;       /* a count (0: all) ... */
    double fraction; /* ... or, when > 0, a fraction of the experts */
    int renormalize, random;
    uint64_t seed;
} cli_keep;
/* 1 when argv[*i] is one of the options (a value taken: *i advanced), 0 when it is not, -1 after
 * printing why its value is malformed. */
int cli_keep_option(int argc, char **argv, int *i, cli_keep *k);
/* Sets the model's expert subset (a fraction rounded to a count of at least 1): 0, or 1 after
 * printing why not. *kept and *experts for messages (*kept = *experts when all are kept). */
int cli_keep_apply(smoe_context *ctx, smoe_model *model, const cli_keep *k, int *kept, int *experts);
/* "the top 4 of 16 experts", "2 random of 16 experts (seed 3)", "all 16 experts" */
void cli_keep_describe(const cli_keep *k, int kept, int experts, char *buf, size_t size);

int cmd_run(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_classify(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
