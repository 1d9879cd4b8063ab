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

/* Levenshtein distance of a and b (names are short: longer ones are cut, which only blurs the hint). */
static int distance(const char *a, const char *b)
{
    enum { N = 48 };
    size_t la = strnlen(a, N - 1), lb = strnlen(b, N - 1);
    int row[N];
    for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            diag = up;
            row[j] = best;
        }
    }
    return row[lb];
}

/* The option name in table (and its nested tables) closest to name; *best is its distance. */
static const char *closest(const cli_opt *table, const char *name, int *best)
{
    const char *found = NULL;
    for (const cli_opt *o = table; o->name; o++) {
        const char *cand = o->name;
        int d = 0;
        if (o->kind == CLI_TABLE) {
            d = *best;
            cand = closest((const cli_opt *)o->dst, name, &d);
        } else {
            d = distance(name, cand);
        }
        if (cand && d < *best) {
            *best = d;
            found = cand;
        }
    }
    return found;
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

/* "--name" is not in the table: says so on stderr, with the closest name that is. */
static int unknown(const cli_opt *table, const char *arg, const char *name)
{
    int best = 1 << 30;
    const char *hint = closest(table, name, &best);
    fprintf(stderr, "%s: unknown option \"%s\"", cli_command, arg);
    if (hint) fprintf(stderr, " (did you mean \"--%s\"?)", hint);
    fprintf(stderr, "\n");
    return CLI_REPORTED;
}

int cli_option(const cli_opt *table, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    if (strncmp(a, "--", 2) || !a[2]) return CLI_UNKNOWN;
    /* "--name=value" is "--name value" */
    char name[64];
    const char *eq = strchr(a, '=');
    size_t len = eq ? (size_t)(eq - a) - 2 : strlen(a + 2);
    if (len >= sizeof name) len = sizeof name - 1;
    memcpy(name, a + 2, len);
    name[len] = 0;
    const cli_opt *o = find(table, name);
    if (!o) return unknown(table, a, name);
    if (o->kind == CLI_FLAG) {
        if (eq) return CLI_BAD_VALUE;
        *(int *)o->dst = 1;
        return CLI_OK;
    }
    if (eq) return store(o, eq + 1);
    if (*i + 1 >= argc) return CLI_NO_VALUE;
    int r = store(o, argv[*i + 1]);
    if (r == CLI_OK) ++*i;
    return r;
}

int cli_set(const cli_opt *table, const char *name, const char *value)
{
    const cli_opt *o = find(table, name);
    if (!o) return CLI_UNKNOWN;
    if (o->kind == CLI_FLAG) { /* a config file's true or false */
        int on = !strcmp(value, "true"), off = !strcmp(value, "false");
        if (!on && !off) return CLI_BAD_VALUE;
        *(int *)o->dst = on;
        return CLI_OK;
    }
    return store(o, value);
}
