/* A small chart rasteriser for softmoe plot: line charts and grouped bar charts drawn into an
 * RGB image, and the PNG writer.
 *
 * A line chart joins each series' points in the order given (2-pixel Bresenham lines) and marks
 * every point (a filled shape per series: circle, square, triangle, diamond, inverted triangle).
 * A bar chart has categories along x (labelled in a row, or staggered over two rows, or reading
 * upwards, whichever is the first not to overlap) and, in each, one bar per series side by side.
 * Either may have vertical error bars. Axes are linear, with ticks at "nice" numbers (1, 2 or 5 times a power
 * of ten, as many as fit without labels overlapping), or logarithmic, with a tick at every decade
 * (every other, or every fifth, when they would crowd; 1-2-5 ticks when the range spans less than
 * two decades). Then a title, axis labels, light grid lines at the labelled ticks, and a legend
 * outside the plot area, at the right or below. Text is stb_easy_font's ASCII glyphs scaled by a
 * whole number (other bytes show as '?'). Everything is a pure function of the chart: the same
 * chart gives the same pixels, and the same PNG bytes. Nothing is printed: an error is a status
 * and a message (host/error.h). */
#ifndef SMOE_TOOLS_PLOT_H
#define SMOE_TOOLS_PLOT_H

#include <stddef.h>

#include "error.h"

/* Series beyond this many could not be told apart by colour. */
#define PLOT_MAX_SERIES 10
#define PLOT_MIN_SIDE 160
#define PLOT_MAX_SIDE 8192

typedef enum plot_kind { PLOT_LINE, PLOT_BAR } plot_kind;
typedef enum plot_legend {
    PLOT_LEGEND_AUTO,  /* at the right when it takes at most a third of the width (and fits the
                          height), else below; none for a single series */
    PLOT_LEGEND_RIGHT,
    PLOT_LEGEND_BELOW,
    PLOT_LEGEND_NONE,
} plot_legend;

typedef struct plot_series {
    const char *name;   /* the legend's text */
    int count;          /* points */
    const double *x;    /* line: x values; bar: the category of each point (0 .. category_count-1) */
    const double *y;
    const double *yerr; /* NULL, or each point's error bar half-height (>= 0): y - e to y + e */
} plot_series;

typedef struct plot_chart {
    plot_kind kind;
    int width, height;                   /* pixels, PLOT_MIN_SIDE .. PLOT_MAX_SIDE */
    const char *title, *xlabel, *ylabel; /* NULL or "": none */
    int logx, logy;                      /* logarithmic axes (logx: line charts only) */
    int xlim_set, ylim_set;              /* the axis shows exactly [lim[0], lim[1]]; data outside is clipped */
    double xlim[2], ylim[2];
    plot_legend legend;
    const char *legend_title; /* NULL or "": none; else a first row of the legend */
    int series_count; /* 1 .. PLOT_MAX_SERIES */
    const plot_series *series;
    int category_count;            /* bar charts: the x axis' categories ... */
    const char *const *categories; /* ... and their labels */
} plot_chart;

/* How an axis maps values to pixels: lo to pixel_lo, hi to pixel_hi, linearly in the value or
 * (log) in its logarithm. The y axis has pixel_lo below pixel_hi (image rows grow downwards). */
typedef struct plot_axis {
    double lo, hi;
    int log;
    double pixel_lo, pixel_hi;
} plot_axis;

typedef struct plot_rect {
    int x0, y0, x1, y1; /* inclusive */
} plot_rect;

/* Where render put things. */
typedef struct plot_layout {
    plot_rect area;   /* the plot area; its frame is its outermost pixels */
    plot_axis x, y;   /* bar charts: x runs from -0.5 to category_count - 0.5, category c at c */
    int legend_shown;
    plot_rect legend; /* the legend's box, outside the area */
    int font_scale;   /* pixels per font unit: 1 up to 359 pixels of height, 2 up to 719, ... */
    int marker_radius;
} plot_layout;

typedef struct plot_image {
    int width, height;
    unsigned char *rgb; /* width * height * 3 bytes, row by row from the top */
} plot_image;

typedef struct plot_tick {
    double value;
    int labelled; /* a major tick with a label and a grid line; 0: a minor tick */
    char label[24];
} plot_tick;
#define PLOT_MAX_TICKS 128

/* The pixel (a column for x, a row for y, not rounded) of value v; v > 0 on a log axis. */
double plot_axis_pixel(const plot_axis *a, double v);
/* Series i's colour. The palette (Okabe and Ito's colour-blind-safe colours first) has
 * PLOT_MAX_SERIES different colours, none of them the frame's, text's or grid's. */
void plot_series_colour(int i, unsigned char rgb[3]);
/* The smallest of 1, 2, 5 times a power of ten that is >= raw (> 0). */
double plot_nice_step(double raw);
/* The ticks of an axis whose labels are text_scale font units high and which runs along
 * horizontal (1: x) or vertical (0: y) pixels: labelled ticks no closer than their labels allow.
 * Returns the count (at most PLOT_MAX_TICKS). */
int plot_axis_ticks(const plot_axis *a, int horizontal, int text_scale, plot_tick *ticks);
/* The pixel width of text at a font scale. */
int plot_text_width(const char *text, int scale);
/* A bar chart's columns x0 .. x1 of series s's bar in category c. */
void plot_bar_columns(const plot_chart *c, const plot_layout *l, int category, int s, int *x0, int *x1);

/* Checks the chart and draws it into *img (allocated here; plot_image_free frees it), with the
 * layout in *layout (may be NULL). Errors, with nothing allocated: SMOE_ERROR_INVALID_ARGUMENT
 * (the message says what is wrong with the chart: its size, a value not finite or not positive on
 * a log axis, a category out of range, no data, labels and legend that leave no room for the
 * plot), SMOE_ERROR_OUT_OF_HOST_MEMORY. */
smoe_status plot_render(const plot_chart *c, plot_image *img, plot_layout *layout, smoe_err *err);
void plot_image_free(plot_image *img);

/* Encodes img as an RGB PNG and writes it to path through a temporary file in the same directory
 * renamed over path, so path is either the whole new file or untouched. Errors: SMOE_ERROR_IO,
 * SMOE_ERROR_OUT_OF_HOST_MEMORY. */
smoe_status plot_write_png(const char *path, const plot_image *img, smoe_err *err);

#endif
