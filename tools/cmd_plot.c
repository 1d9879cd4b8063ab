/* softmoe plot: a line or bar chart of columns of a CSV file, as a PNG (tools/plot.h draws it). */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "csv.h"
#include "plot.h"

typedef struct plot_opts {
    const char *data, *x, *series, *out, *title, *xlabel, *ylabel;
    const char *y[PLOT_MAX_SERIES], *yerr[PLOT_MAX_SERIES];
    int ny, nyerr;
    char *lists[2 * PLOT_MAX_SERIES]; /* copies of the --y / --yerr values, split at commas */
    int nlists;
    plot_kind kind;
    plot_legend legend;
    int logx, logy, xlim_set, ylim_set;
    long width, height;
    double xlim[2], ylim[2];
} plot_opts;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: softmoe plot DATA.csv --x COL --y COL[,COL...] --out FILE.png [options]\n"
            "A line or bar chart of columns of a CSV file (a header row, then one row per point; '-' reads\n"
            "standard input), written as a PNG. The same input gives the same bytes. Options:\n"
            "  --x COL               the x column: numbers for --kind line, any text (categories) for bar\n"
            "  --y COL[,COL...]      the y column(s), numbers; each is a series (--y may be repeated)\n"
            "  --series COL          one series per distinct value of COL (a router's name, say), in the\n"
            "                        order they first appear; with several --y columns, one per value and column;\n"
            "                        the legend is headed by COL\n"
            "  --kind line|bar       line (default): each series' points joined in the order of x, marked;\n"
            "                        bar: the distinct x values as categories, one bar per series in each\n"
            "  --yerr COL[,COL...]   error bars: y - e to y + e (e >= 0; a spread over seeds, say), one\n"
            "                        column per --y column; on a log axis a bar reaching 0 runs off the bottom\n"
            "  --logx, --logy        logarithmic axes (values > 0), ticks at the decades\n"
            "  --xlim LO,HI          the x axis shows exactly LO to HI (line charts; default: the data)\n"
            "  --ylim LO,HI          the same for y (default: the data, and 0 for bar charts)\n"
            "  --title T             a title above the chart (default none)\n"
            "  --xlabel T            the x axis label (default the --x column's name; \"\" for none)\n"
            "  --ylabel T            the y axis label (default the --y column's name if there is one)\n"
            "  --legend auto|right|below|none\n"
            "                        where the legend goes, always outside the plot area (default auto: at the\n"
            "                        right if it fits in a third of the width, else below; none for one series)\n"
            "  --width W --height H  pixels (default 800 x 500; %d to %d); the text scales with the\n"
            "                        smaller side\n"
            "  --out FILE.png        the image; written only when everything is valid, never half-written\n"
            "At most %d series. Errors name the file line and column; exit status 2 for bad options, 1 for\n"
            "bad data, and then nothing is written.\n",
            PLOT_MIN_SIDE, PLOT_MAX_SIDE, PLOT_MAX_SERIES);
}

/* Appends the comma-separated names of value to names[*n]; -1 after printing why not. */
static int add_columns(plot_opts *o, const char *flag, const char *value, const char **names, int *n)
{
    char *copy = strdup(value);
    if (!copy) {
        fprintf(stderr, "softmoe plot: out of memory\n");
        return -1;
    }
    o->lists[o->nlists++] = copy;
    for (char *tok = copy, *next; tok; tok = next) {
        next = strchr(tok, ',');
        if (next) *next++ = 0;
        if (!*tok) {
            fprintf(stderr, "softmoe plot: %s \"%s\" has an empty column name\n", flag, value);
            return -1;
        }
        if (*n == PLOT_MAX_SERIES) {
            fprintf(stderr, "softmoe plot: more than %d %s columns\n", PLOT_MAX_SERIES, flag);
            return -1;
        }
        names[(*n)++] = tok;
    }
    return 0;
}

static int parse_pair(const char *s, double out[2])
{
    char buf[128];
    const char *comma = strchr(s, ',');
    size_t n = comma ? (size_t)(comma - s) : 0;
    if (!comma || n >= sizeof buf) return 0;
    memcpy(buf, s, n);
    buf[n] = 0;
    return cli_float(buf, &out[0]) && cli_float(comma + 1, &out[1]) && out[0] < out[1];
}

static void free_opts(plot_opts *o)
{
    for (int i = 0; i < o->nlists; i++) free(o->lists[i]);
    o->nlists = 0;
}

/* 0; -1 after printing the help; 2 after printing why the options are wrong. */
static int parse_opts(int argc, char **argv, plot_opts *o)
{
    memset(o, 0, sizeof *o);
    o->width = 800;
    o->height = 500;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return -1;
        }
        if (!strcmp(a, "--logx")) {
            o->logx = 1;
            continue;
        }
        if (!strcmp(a, "--logy")) {
            o->logy = 1;
            continue;
        }
        if (a[0] != '-' || !strcmp(a, "-")) {
            if (o->data) {
                fprintf(stderr, "softmoe plot: one data file, not \"%s\" and \"%s\"\n", o->data, a);
                return 2;
            }
            o->data = a;
            continue;
        }
        static const char *const valued[] = {"--x", "--y", "--series", "--kind", "--yerr", "--xlim", "--ylim", "--title",
                                             "--xlabel", "--ylabel", "--legend", "--width", "--height", "--out"};
        int known = 0;
        for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++) known |= !strcmp(a, valued[k]);
        if (!known) {
            fprintf(stderr, "softmoe plot: unknown option \"%s\" (softmoe plot --help lists them)\n", a);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "softmoe plot: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--x")) o->x = v;
        else if (!strcmp(a, "--series")) o->series = v;
        else if (!strcmp(a, "--title")) o->title = v;
        else if (!strcmp(a, "--xlabel")) o->xlabel = v;
        else if (!strcmp(a, "--ylabel")) o->ylabel = v;
        else if (!strcmp(a, "--out")) o->out = v;
        else if (!strcmp(a, "--y")) {
            if (add_columns(o, a, v, o->y, &o->ny)) return 2;
        } else if (!strcmp(a, "--yerr")) {
            if (add_columns(o, a, v, o->yerr, &o->nyerr)) return 2;
        } else if (!strcmp(a, "--kind")) {
            if (!strcmp(v, "line")) o->kind = PLOT_LINE;
            else if (!strcmp(v, "bar")) o->kind = PLOT_BAR;
            else {
                fprintf(stderr, "softmoe plot: --kind \"%s\": line or bar\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--legend")) {
            static const char *const names[] = {"auto", "right", "below", "none"};
            int found = -1;
            for (int k = 0; k < 4; k++)
                if (!strcmp(v, names[k])) found = k;
            if (found < 0) {
                fprintf(stderr, "softmoe plot: --legend \"%s\": auto, right, below or none\n", v);
                return 2;
            }
            o->legend = (plot_legend)found;
        } else if (!strcmp(a, "--width") || !strcmp(a, "--height")) {
            long *slot = a[2] == 'w' ? &o->width : &o->height;
            if (!cli_int(v, PLOT_MIN_SIDE, PLOT_MAX_SIDE, slot)) {
                fprintf(stderr, "softmoe plot: %s \"%s\": a whole number of pixels, %d to %d\n", a, v, PLOT_MIN_SIDE,
                        PLOT_MAX_SIDE);
                return 2;
            }
        } else {
            int is_x = a[2] == 'x';
            if (!parse_pair(v, is_x ? o->xlim : o->ylim)) {
                fprintf(stderr, "softmoe plot: %s \"%s\": two numbers LO,HI with LO < HI\n", a, v);
                return 2;
            }
            *(is_x ? &o->xlim_set : &o->ylim_set) = 1;
        }
    }
    const char *missing = !o->data ? "a data file (DATA.csv)" : !o->x ? "--x COL" : !o->ny ? "--y COL" : !o->out ? "--out FILE.png" : NULL;
    if (missing) {
        fprintf(stderr, "softmoe plot: %s is required (softmoe plot --help)\n", missing);
        return 2;
    }
    if (o->nyerr && o->nyerr != o->ny) {
        fprintf(stderr, "softmoe plot: %d --yerr column%s for %d --y column%s; give one per --y column\n", o->nyerr,
                o->nyerr == 1 ? "" : "s", o->ny, o->ny == 1 ? "" : "s");
        return 2;
    }
    if (o->kind == PLOT_BAR && (o->logx || o->xlim_set)) {
        fprintf(stderr, "softmoe plot: %s: a bar chart's x axis has categories\n", o->logx ? "--logx" : "--xlim");
        return 2;
    }
    for (int a = 0; a < 2; a++) {
        int lg = a ? o->logy : o->logx, set = a ? o->ylim_set : o->xlim_set;
        double lo = a ? o->ylim[0] : o->xlim[0];
        if (lg && set && lo <= 0) {
            fprintf(stderr, "softmoe plot: --%clim starts at %g, but --log%c needs values > 0\n", a ? 'y' : 'x', lo, a ? 'y' : 'x');
            return 2;
        }
    }
    return 0;
}

/* The column named name, or -1 after printing that the file has none (or several). */
static int find_column(const csv_table *t, const char *file, const char *name)
{
    int c = csv_column(t, name);
    if (c >= 0) return c;
    if (c == -2) {
        fprintf(stderr, "softmoe plot: %s has several columns named \"%s\"\n", file, name);
        return -1;
    }
    fprintf(stderr, "softmoe plot: %s has no column \"%s\"; its columns are:", file, name);
    for (int i = 0; i < t->cols; i++) fprintf(stderr, "%s \"%s\"", i ? "," : "", t->header[i]);
    fprintf(stderr, "\n");
    return -1;
}

/* Cell (row, col) as a number, or -1 after printing where and why it is not one. */
static int number(const csv_table *t, const char *file, int row, int col, double *v)
{
    const char *s = csv_cell(t, row, col);
    if (cli_float(s, v)) return 0;
    if (!*s) fprintf(stderr, "softmoe plot: %s line %d, column \"%s\": empty, where a number is needed\n", file, t->lines[row],
                     t->header[col]);
    else fprintf(stderr, "softmoe plot: %s line %d, column \"%s\": \"%s\" is not a (finite) number\n", file, t->lines[row],
                 t->header[col], s);
    return -1;
}

static int not_positive(const csv_table *t, const char *file, int row, int col, double v, char axis)
{
    fprintf(stderr, "softmoe plot: %s line %d, column \"%s\": %g is not positive, and the %c axis is logarithmic (--log%c)\n",
            file, t->lines[row], t->header[col], v, axis, axis);
    return -1;
}

/* The index of s in the distinct strings so far, adding it if new; -1 when there are already cap. */
static int intern(const char **seen, int *n, int cap, const char *s)
{
    for (int i = 0; i < *n; i++)
        if (!strcmp(seen[i], s)) return i;
    if (*n == cap) return -1;
    seen[*n] = s;
    return (*n)++;
}

/* A point of a series, with its row for sorting and messages. */
typedef struct point {
    double x, y, e;
    int row;
} point;

static int by_x(const void *a, const void *b)
{
    const point *p = a, *q = b;
    if (p->x != q->x) return p->x < q->x ? -1 : 1;
    return p->row - q->row; /* equal x: in file order (qsort is not stable) */
}

/* The chart's data, built from the table; everything below is owned here. */
typedef struct chart_data {
    plot_series series[PLOT_MAX_SERIES];
    char *names[PLOT_MAX_SERIES];
    double *values; /* x, y and e of every series, three arrays each */
    const char **categories;
    int count;
} chart_data;

static void free_data(chart_data *d)
{
    for (int i = 0; i < d->count; i++) free(d->names[i]);
    free(d->values);
    free((void *)d->categories);
    memset(d, 0, sizeof *d);
}

/* Builds the series (and the categories) of the chart from the table; 0, or 1 after printing why not. */
static int build(const plot_opts *o, const csv_table *t, chart_data *d, plot_chart *c)
{
    const char *file = strcmp(o->data, "-") ? o->data : "standard input";
    memset(d, 0, sizeof *d);
    int xc = find_column(t, file, o->x), yc[PLOT_MAX_SERIES], ec[PLOT_MAX_SERIES], sc = -1;
    if (xc < 0) return 1;
    for (int j = 0; j < o->ny; j++)
        if ((yc[j] = find_column(t, file, o->y[j])) < 0) return 1;
    for (int j = 0; j < o->nyerr; j++)
        if ((ec[j] = find_column(t, file, o->yerr[j])) < 0) return 1;
    if (o->series && (sc = find_column(t, file, o->series)) < 0) return 1;
    if (t->rows == 0) {
        fprintf(stderr, "softmoe plot: %s has no data: a header row and nothing after it\n", file);
        return 1;
    }
    /* the groups (values of --series), each with a series per --y column */
    const char *groups[PLOT_MAX_SERIES];
    int ngroups = 0, *group_of = malloc((size_t)t->rows * sizeof *group_of);
    int *cat_of = malloc((size_t)t->rows * sizeof *cat_of);
    point *pts = malloc((size_t)t->rows * sizeof *pts);
    d->categories = malloc((size_t)t->rows * sizeof *d->categories);
    d->values = malloc((size_t)t->rows * (size_t)o->ny * 3 * sizeof *d->values);
    int rc = 1, ncat = 0;
    if (!group_of || !cat_of || !pts || !d->categories || !d->values) {
        fprintf(stderr, "softmoe plot: out of memory\n");
        goto done;
    }
    for (int r = 0; r < t->rows; r++) {
        group_of[r] = sc < 0 ? 0 : intern(groups, &ngroups, PLOT_MAX_SERIES, csv_cell(t, r, sc));
        if (group_of[r] < 0 || (sc >= 0 && ngroups * o->ny > PLOT_MAX_SERIES)) {
            fprintf(stderr, "softmoe plot: %s: more than %d series (the values of \"%s\" times %d --y column%s); a chart tells "
                            "at most %d apart\n", file, PLOT_MAX_SERIES, o->series, o->ny, o->ny == 1 ? "" : "s", PLOT_MAX_SERIES);
            goto done;
        }
        if (o->kind == PLOT_BAR) cat_of[r] = intern(d->categories, &ncat, t->rows, csv_cell(t, r, xc));
    }
    if (sc < 0) ngroups = 1;
    double *next = d->values;
    for (int g = 0; g < ngroups; g++) {
        for (int j = 0; j < o->ny; j++) {
            int n = 0;
            for (int r = 0; r < t->rows; r++) {
                if (group_of[r] != g) continue;
                point *p = &pts[n++];
                p->row = r;
                p->e = 0;
                if (number(t, file, r, yc[j], &p->y) || (o->nyerr && number(t, file, r, ec[j], &p->e))) goto done;
                if (o->kind == PLOT_BAR) p->x = cat_of[r];
                else if (number(t, file, r, xc, &p->x)) goto done;
                if (o->logx && p->x <= 0) {
                    not_positive(t, file, r, xc, p->x, 'x');
                    goto done;
                }
                if (o->logy && p->y <= 0) {
                    not_positive(t, file, r, yc[j], p->y, 'y');
                    goto done;
                }
                if (p->e < 0) {
                    fprintf(stderr, "softmoe plot: %s line %d, column \"%s\": %g is negative; an error bar is y - e to y + e\n",
                            file, t->lines[r], t->header[ec[j]], p->e);
                    goto done;
                }
            }
            qsort(pts, (size_t)n, sizeof *pts, by_x);
            for (int i = 1; o->kind == PLOT_BAR && i < n; i++) {
                if (pts[i].x != pts[i - 1].x) continue;
                fprintf(stderr, "softmoe plot: %s lines %d and %d: two bars for category \"%s\"%s%s%s; one row per bar\n", file,
                        t->lines[pts[i - 1].row], t->lines[pts[i].row], d->categories[(int)pts[i].x],
                        sc >= 0 ? " of series \"" : "", sc >= 0 ? groups[g] : "", sc >= 0 ? "\"" : "");
                goto done;
            }
            plot_series *s = &d->series[d->count];
            size_t len = (sc >= 0 ? strlen(groups[g]) : 0) + strlen(o->y[j]) + 3;
            if (!(d->names[d->count] = malloc(len))) {
                fprintf(stderr, "softmoe plot: out of memory\n");
                goto done;
            }
            if (sc < 0) snprintf(d->names[d->count], len, "%s", o->y[j]);
            else if (o->ny == 1) snprintf(d->names[d->count], len, "%s", groups[g]);
            else snprintf(d->names[d->count], len, "%s: %s", groups[g], o->y[j]);
            double *x = next, *y = next + n, *e = next + 2 * n;
            next += 3 * n;
            for (int i = 0; i < n; i++) {
                x[i] = pts[i].x;
                y[i] = pts[i].y;
                e[i] = pts[i].e;
            }
            *s = (plot_series){d->names[d->count], n, x, y, o->nyerr ? e : NULL};
            d->count++;
        }
    }
    *c = (plot_chart){.kind = o->kind, .width = (int)o->width, .height = (int)o->height, .title = o->title,
                      .xlabel = o->xlabel ? o->xlabel : o->x, .ylabel = o->ylabel ? o->ylabel : o->ny == 1 ? o->y[0] : NULL,
                      .logx = o->logx, .logy = o->logy, .xlim_set = o->xlim_set, .ylim_set = o->ylim_set,
                      .xlim = {o->xlim[0], o->xlim[1]}, .ylim = {o->ylim[0], o->ylim[1]}, .legend = o->legend,
                      .legend_title = o->series,
                      .series_count = d->count, .series = d->series, .category_count = ncat, .categories = d->categories};
    rc = 0;
done:
    free(group_of);
    free(cat_of);
    free(pts);
    if (rc) free_data(d);
    return rc;
}

int cmd_plot(int argc, char **argv)
{
    plot_opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc) {
        free_opts(&o);
        return rc < 0 ? 0 : rc;
    }
    smoe_err err;
    csv_table t;
    if (csv_read(o.data, &t, &err)) {
        fprintf(stderr, "softmoe plot: %s\n", err.msg);
        free_opts(&o);
        return 1;
    }
    chart_data d;
    plot_chart c;
    plot_image img;
    rc = build(&o, &t, &d, &c);
    if (!rc) {
        if (plot_render(&c, &img, NULL, &err) || plot_write_png(o.out, &img, &err)) {
            fprintf(stderr, "softmoe plot: %s\n", err.msg);
            rc = 1;
        }
        plot_image_free(&img);
        free_data(&d);
    }
    csv_free(&t);
    free_opts(&o);
    return rc;
}
