/* The policy of a context: every setting that the environment can change (README "Kernels and
 * tuning", "Errors and faults"), read once when the context is created and then only read. The
 * gpu sees it through a const pointer; nothing changes it afterwards, so that a behaviour for one
 * call (a forced variant, a profile) is passed to that call, never set on the device. */
#ifndef SMOE_OPTIONS_H
#define SMOE_OPTIONS_H

#define SMOE_OPTION_TEXT 64

typedef struct smoe_options {
    int autotune;                               /* SOFTMOE_AUTOTUNE (default on; "0" turns it off) */
    char matmul_variant[SMOE_OPTION_TEXT];      /* SOFTMOE_MATMUL_VARIANT: a forced matmul variant, or "" */
    int force_staging;                          /* SOFTMOE_FORCE_STAGING=1: never map device memory */
    char fault[256];                            /* SOFTMOE_FAULT: the fault to inject (fault.h), or "" */
    int validation;                             /* SOFTMOE_VALIDATION: 0 off, 1 on, 2 "sync" */
    char row_kernels[SMOE_OPTION_TEXT];         /* SOFTMOE_ROW_KERNELS: "serial", "workgroup", or "": the device's */
    char device[SMOE_OPTION_TEXT];              /* SOFTMOE_DEVICE: the device when none is asked for, or "" */
    char cache_dir[3072];                       /* the cache directory (disk_cache.h), or "": keep nothing */
} smoe_options;

/* Fills o from the environment. */
void smoe_options_from_env(smoe_options *o);

#endif
