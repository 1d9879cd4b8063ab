/* A CSV file read whole into a table of strings, for softmoe plot.
 *
 * The format is RFC 4180's: records end at LF or CRLF (a lone CR too), fields are separated by
 * commas, a field in double quotes may hold commas, line breaks and quotes (written ""). Unquoted
 * fields are trimmed of spaces and tabs; a UTF-8 byte order mark at the start is skipped; blank
 * lines are skipped. The first record is the header; every later record must have as many
 * fields. Nothing is printed: an error is a status and a message naming the line. */
#ifndef SMOE_TOOLS_CSV_H
#define SMOE_TOOLS_CSV_H

#include <stddef.h>

#include "error.h"

/* Larger files are refused (a plot of more rows would not be readable either). */
#define CSV_MAX_BYTES ((size_t)256 << 20)

typedef struct csv_table {
    int cols, rows;
    char **header; /* [cols] */
    char **cells;  /* [rows * cols], row by row */
    int *lines;    /* [rows]: the line of the file (from 1) each row starts on */
    char *text;    /* the storage of every field */
} csv_table;

/* Reads path ("-": standard input) into *t. Errors (with *t empty): SMOE_ERROR_IO (cannot open or
 * read it, larger than CSV_MAX_BYTES), SMOE_ERROR_BAD_FORMAT (not CSV as above, no header),
 * SMOE_ERROR_OUT_OF_HOST_MEMORY. */
smoe_status csv_read(const char *path, csv_table *t, smoe_err *err);
/* The index of the column named name; -1 when there is none, -2 when several have the name. */
int csv_column(const csv_table *t, const char *name);
const char *csv_cell(const csv_table *t, int row, int col);
void csv_free(csv_table *t);

#endif
