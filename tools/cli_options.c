/* The one option parser of the softmoe command: see cli_opt in cli.h. */
#define _POSIX_C_SOURCE 200809L
#include <string.h>

#include "cli.h"

const char *cli_command = "softmoe";

int cli_asks_help(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;
    return 0;
}

/* The entry named name, looking into nested tables; NULL if none. */
static const cli_opt *find(const cli_opt *table, const char *name)
{
    for (const cli_opt *o = table; o->name; o++) {
        if (o->kind == CLI_TABLE) {
            const cli_opt *sub = find((const cli_opt *)o->dst, name);
            if (sub) return sub;
        } else if (!strcmp(o->name, name)) {
            return o;
        }
    }
    return NULL;
}

static int in_range(const cli_opt *o, double v) { return v >= o->lo && v <= o->hi; }

/* Stores value into an option that takes one: CLI_OK, CLI_BAD_VALUE or CLI_REPORTED. */
static int store(const cli_opt *o, const char *value)
{
    long l = 0;
    double d = 0;
    switch (o->kind) {
    case CLI_STRING: *(const char **)o->dst = value; return CLI_OK;
    case CLI_INT:
    case CLI_LONG:
        if (!cli_int(value, (long)o->lo, (long)o->hi, &l)) return CLI_BAD_VALUE;
        if (o->kind == CLI_INT) *(int *)o->dst = (int)l;
        else *(long *)o->dst = l;
        return CLI_OK;
    case CLI_FLOAT:
    case CLI_DOUBLE:
        if (!cli_float(value, &d) || !in_range(o, d)) return CLI_BAD_VALUE;
        if (o->kind == CLI_FLOAT) *(float *)o->dst = (float)d;
        else *(double *)o->dst = d;
        return CLI_OK;
    case CLI_CHOICE:
        for (int k = 0; o->choices[k]; k++)
            if (!strcmp(value, o->choices[k])) {
                *(int *)o->dst = k;
                return CLI_OK;
            }
        return CLI_BAD_VALUE;
    case CLI_CUSTOM: {
        int r = o->parse(value, o->dst);
        return r > 0 ? CLI_OK : r < 0 ? CLI_REPORTED : CLI_BAD_VALUE;
    }
    default: return CLI_BAD_VALUE;
    }
}

int cli_option(const cli_opt *table, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    const cli_opt *o = strncmp(a, "--", 2) ? NULL : find(table, a + 2);
    if (!o) return CLI_UNKNOWN;
    if (o->kind == CLI_FLAG) {
        *(int *)o->dst = 1;
        return CLI_OK;
    }
    if (*i + 1 >= argc) return CLI_NO_VALUE;
    int r = store(o, argv[*i + 1]);
    if (r == CLI_OK) ++*i;
    return r;
}

int cli_set(const cli_opt *table, const char *name, const char *value)
{
    const cli_opt *o = find(table, name);
    if (!o || o->kind == CLI_FLAG) return CLI_UNKNOWN;
    return store(o, value);
}
