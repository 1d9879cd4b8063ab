/* Per-kernel GPU time: programs begun while a gpu has a profile attached write a timestamp after
 * every dispatch and add each dispatch's time, under its label, to the profile when they finish
 * (record.c). The caller owns the profile (softmoe bench --profile); nothing is global. */
#ifndef SMOE_PROFILE_H
#define SMOE_PROFILE_H

#include <stddef.h>
#include <stdint.h>

#define SMOE_LABEL_MAX 96

typedef struct smoe_profile_row {
    char label[SMOE_LABEL_MAX]; /* kernel, with its variant and shape where it has them */
    uint64_t count;             /* dispatches measured */
    double ms;                  /* their total GPU time */
} smoe_profile_row;

typedef struct smoe_profile {
    smoe_profile_row *rows;
    size_t count, cap;
    int failed; /* a row could not be stored (out of host memory): the table is incomplete */
} smoe_profile;

/* Adds one dispatch of ms to the row of label (created on first use). */
void smoe_profile_add(smoe_profile *pr, const char *label, double ms);
/* Rows by total time, largest first. */
void smoe_profile_sort(smoe_profile *pr);
double smoe_profile_total_ms(const smoe_profile *pr);
void smoe_profile_clear(smoe_profile *pr);

#endif
