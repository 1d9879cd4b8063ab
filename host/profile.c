/* The per-kernel time table of profiled programs. */
#include "profile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void smoe_profile_add(smoe_profile *pr, const char *label, double ms)
{
    for (size_t i = 0; i < pr->count; i++)
        if (!strcmp(pr->rows[i].label, label)) {
            pr->rows[i].count++;
            pr->rows[i].ms += ms;
            return;
        }
    if (pr->count == pr->cap) {
        size_t cap = pr->cap ? 2 * pr->cap : 32;
        smoe_profile_row *r = realloc(pr->rows, cap * sizeof *r);
        if (!r) {
            pr->failed = 1;
            return;
        }
        pr->rows = r;
        pr->cap = cap;
    }
    smoe_profile_row *row = &pr->rows[pr->count++];
    snprintf(row->label, sizeof row->label, "%s", label);
    row->count = 1;
    row->ms = ms;
}

static int by_time(const void *a, const void *b)
{
    double x = ((const smoe_profile_row *)a)->ms, y = ((const smoe_profile_row *)b)->ms;
    return x < y ? 1 : x > y ? -1 : 0;
}

void smoe_profile_sort(smoe_profile *pr)
{
    if (pr->count) qsort(pr->rows, pr->count, sizeof *pr->rows, by_time);
}

double smoe_profile_total_ms(const smoe_profile *pr)
{
    double t = 0;
    for (size_t i = 0; i < pr->count; i++) t += pr->rows[i].ms;
    return t;
}

void smoe_profile_clear(smoe_profile *pr)
{
    free(pr->rows);
    memset(pr, 0, sizeof *pr);
}
