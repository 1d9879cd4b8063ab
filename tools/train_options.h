/* The options of softmoe train (tools/train_options.c): flags, a JSON config file, defaults. */
#ifndef SMOE_TRAIN_OPTIONS_H
#define SMOE_TRAIN_OPTIONS_H

#include <cjson/cJSON.h>

#include "cli.h"

typedef struct train_opts {
    const char *device, *out, *checkpoint, *csv, *data_dir;
    int resume, dense, epochs, batch, eval_batch, checkpoint_every, train_limit, eval_limit, augment;
    long seed;
    smoe_vit_config model;
    smoe_train_config opt;
    double warmup_epochs;
    cJSON *config_tree; /* owns the strings a config file set */
} train_opts;

/* Fills o from the defaults, then the arguments (a config file where --config names one):
 * -1 to go on, or the exit code after printing why (--help is the command's: see train_help). */
int train_parse(int argc, char **argv, train_opts *o);
/* softmoe train --help: every option and its default. */
void train_help(FILE *f);
void train_opts_free(train_opts *o);

#endif
