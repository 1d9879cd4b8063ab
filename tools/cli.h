/* Helpers shared by the softmoe command's subcommands. */
#ifndef SMOE_CLI_H
#define SMOE_CLI_H

#include <stdio.h>

#include "softmoe.h"

extern int cli_verbose;
/* The subcommand being run ("softmoe eval"), for the parser's messages. */
extern const char *cli_command;
/* argv (argv[0] the subcommand) asks for help: --help or -h before any "--". */
int cli_asks_help(int argc, char **argv);

void cli_log(void *user, smoe_log_level level, const char *msg);
/* Prints "softmoe: what: <last error> (STATUS)" and returns 1. */
int cli_fail(smoe_context *ctx, smoe_status st, const char *what);
/* A context with no device yet, logging to stderr; NULL after printing why. */
smoe_context *cli_context(void);
/* Opens device (NULL: the default) on ctx: 0, or 1 after printing why and destroying ctx. */
int cli_open_device(smoe_context *ctx, const char *device);
/* Both: a context on device; NULL after printing why. */
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

/* Options, described by a table that one parser reads (tools/cli_options.c) for every
 * subcommand, from the command line ("--name value") or a config file (name, value). */
typedef enum cli_kind {
    CLI_FLAG,   /* no value: sets the int at dst to 1 */
    CLI_STRING, /* const char * at dst: the value itself (argv's or the config's storage) */
    CLI_INT,    /* int at dst, a whole number in [lo, hi] */
    CLI_LONG,   /* long at dst, a whole number in [lo, hi] */
    CLI_FLOAT,  /* float at dst, a finite number in [lo, hi] */
    CLI_DOUBLE, /* double at dst, a finite number in [lo, hi] */
    CLI_CHOICE, /* int at dst: the index of the value in choices */
    CLI_CUSTOM, /* parse(value, dst) */
    CLI_TABLE   /* no option itself: dst is another table whose options are also accepted */
} cli_kind;

typedef struct cli_opt {
    const char *name; /* without the dashes; NULL ends a table */
    cli_kind kind;
    void *dst;
    double lo, hi;
    const char *const *choices; /* CLI_CHOICE: NULL-terminated */
    int (*parse)(const char *value, void *dst); /* CLI_CUSTOM: 1 ok, 0 malformed, -1 malformed and
                                                 * already said why on stderr */
} cli_opt;

/* What cli_option and cli_set found. */
enum { CLI_OK = 1, CLI_UNKNOWN = 0, CLI_NO_VALUE = -1, CLI_BAD_VALUE = -2, CLI_REPORTED = -3 };

/* Reads argv[*i] ("--name", then its value unless a flag; or "--name=value") against the table;
 * on CLI_OK *i is on the last argument used. An argument not starting with "--" is CLI_UNKNOWN,
 * unprinted (a positional argument); an unknown "--name" is said on stderr with the closest valid
 * name (CLI_REPORTED); otherwise it prints only what a CLI_CUSTOM parser prints (CLI_REPORTED). */
int cli_option(const cli_opt *table, int argc, char **argv, int *i);
/* Sets option name (no dashes) to value (a flag: "true" or "false"): CLI_OK, CLI_UNKNOWN,
 * CLI_BAD_VALUE or CLI_REPORTED. */
int cli_set(const cli_opt *table, const char *name, const char *value);

/* The expert-subset options of run, eval and classify (tools/cli_keep.c): --keep-experts K (a
 * count, or a fraction of the experts: 1/8, 0.125), --renormalize, --random-experts SEED. */
typedef struct cli_keep {
    int given;       /* --keep-experts was given */
    int count;       /* a count (0: all) ... */
    double fraction; /* ... or, when > 0, a fraction of the experts */
    int renormalize, random;
    uint64_t seed;
} cli_keep;
/* Fills table[0..3] with the three options, writing into k: a CLI_TABLE entry points at it. */
void cli_keep_options(cli_keep *k, cli_opt table[4]);
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
/* Each subcommand's --help (train's is train_help in train_options.h). */
void cmd_eval_help(FILE *f);
void cmd_classify_help(FILE *f);
void cmd_bench_help(FILE *f);

/* Output paths (tools/cli_paths.c), checked before any work. 0 when path can be written (its
 * directory exists and is writable; an existing path is a regular file), else 2 after printing
 * "softmoe CMD: --OPT PATH: why". */
int cli_check_output(const char *cmd, const char *opt, const char *path);
/* 0 when out and in (either may be NULL) are different files, by name or, through links, by
 * device and inode; else 2 after printing both. */
int cli_check_distinct(const char *cmd, const char *out_opt, const char *out, const char *in_opt, const char *in);

#endif
