/* softmoe run: a model file on an input file (docs/format.md section 3), outputs to a file. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "run_model.h"

/* Options of the commands that run a model. */
typedef struct run_opts {
    const char *model, *input, *output, *device;
    cli_keep keep;
} run_opts;

static int parse_run(int argc, char **argv, run_opts *o)
{
    memset(o, 0, sizeof *o);
    cli_opt keep[4];
    cli_keep_options(&o->keep, keep);
    const cli_opt table[] = {
        {.name = "model", .kind = CLI_STRING, .dst = &o->model},   {.name = "input", .kind = CLI_STRING, .dst = &o->input},
        {.name = "output", .kind = CLI_STRING, .dst = &o->output}, {.name = "device", .kind = CLI_STRING, .dst = &o->device},
        {.name = "", .kind = CLI_TABLE, .dst = keep},              {0},
    };
    for (int i = 1; i < argc; i++) {
        int r = cli_option(table, argc, argv, &i);
        if (r == CLI_OK) continue;
        if (r != CLI_REPORTED)
            fprintf(stderr, "softmoe run: %s \"%s\"\n", r == CLI_UNKNOWN ? "unknown option" : "missing value after", argv[i]);
        return 2;
    }
    if (!o->model || !o->input || !o->output) {
        fprintf(stderr, "softmoe run: --model, --input and --output are required\n");
        return 2;
    }
    return 0;
}

int cmd_run(int argc, char **argv)
{
    run_opts o;
    int rc = parse_run(argc, argv, &o);
    if (rc) return rc;
    if (cli_check_output("run", "output", o.output) ||
        cli_check_distinct("run", "output", o.output, "model", o.model) ||
        cli_check_distinct("run", "output", o.output, "input", o.input))
        return 2;
    smoe_err err;
    smoe_st_file in;
    if (smoe_st_read_file(o.input, &in, &err)) {
        fprintf(stderr, "softmoe run: %s\n", err.msg);
        return 1;
    }
    smoe_context *ctx = cli_open(o.device);
    if (!ctx) {
        smoe_st_free(&in);
        return 1;
    }
    smoe_model *model = NULL;
    int kept, experts;
    smoe_status st = smoe_model_load_file(ctx, o.model, &model);
    if (st) {
        rc = cli_fail(ctx, st, "loading the model");
    } else if (cli_keep_apply(ctx, model, &o.keep, &kept, &experts)) {
        rc = 1;
    } else if (kept < experts && (smoe_st_find(&in, "dy") || smoe_st_find(&in, "labels"))) {
        fprintf(stderr, "softmoe run: --keep-experts is for inference, but %s has \"%s\" for gradients, which need all experts\n",
                o.input, smoe_st_find(&in, "dy") ? "dy" : "labels");
        rc = 1;
    } else {
        run_outputs out;
        rc = 1;
        if (run_model(ctx, model, &in, o.input, &out, &err) ||
            smoe_st_write(o.output, out.entries, out.count, NULL, 0, &err))
            fprintf(stderr, "softmoe run: %s\n", err.msg);
        else
            rc = 0;
        run_outputs_free(&out);
    }
    smoe_st_free(&in);
    return cli_close(ctx, rc);
}
