/* The chart rasteriser and PNG writer of softmoe plot: see plot.h. */
#define _POSIX_C_SOURCE 200809L
#include "plot.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* stb_image_write (libstb-dev) with static linkage, used to encode PNGs in memory: this is the
 * one file that compiles it. (Not STBI_WRITE_NO_STDIO: 1.16 then declares stbi_write_hdr_to_func
 * without defining it.) stb_easy_font is static functions already. */
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#endif
#include <stb/stb_image_write.h>
#include <stb/stb_easy_font.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

/* ---- Colours ---- */

typedef struct colour {
    unsigned char r, g, b;
} colour;

/* Okabe and Ito's palette without its yellow (too pale on white), then four of Paul Tol's darker
 * colours: distinct on screen, in print and for the common colour-vision deficiencies. */
static const colour palette[PLOT_MAX_SERIES] = {
    {0x00, 0x72, 0xB2}, {0xD5, 0x5E, 0x00}, {0x00, 0x9E, 0x73}, {0xCC, 0x79, 0xA7}, {0xE6, 0x9F, 0x00},
    {0x56, 0xB4, 0xE9}, {0x33, 0x22, 0x88}, {0x88, 0x22, 0x55}, {0x99, 0x99, 0x33}, {0x66, 0x66, 0x66},
};
static const colour white = {0xFF, 0xFF, 0xFF}, ink = {0x00, 0x00, 0x00}, grid = {0xE4, 0xE4, 0xE4},
                    legend_edge = {0xB4, 0xB4, 0xB4}, bar_whisker = {0x26, 0x26, 0x26};

void plot_series_colour(int i, unsigned char rgb[3])
{
    colour c = palette[((i % PLOT_MAX_SERIES) + PLOT_MAX_SERIES) % PLOT_MAX_SERIES];
    rgb[0] = c.r;
    rgb[1] = c.g;
    rgb[2] = c.b;
}

/* ---- The canvas: pixels, clipped to a rectangle ---- */

typedef struct canvas {
    int w, h;
    unsigned char *rgb;
    plot_rect clip;
} canvas;

static void fill_rect(canvas *cv, int x0, int y0, int x1, int y1, colour c)
{
    if (x0 > x1) {
        int t = x0;
        x0 = x1;
        x1 = t;
    }
    if (y0 > y1) {
        int t = y0;
        y0 = y1;
        y1 = t;
    }
    if (x0 < cv->clip.x0) x0 = cv->clip.x0;
    if (y0 < cv->clip.y0) y0 = cv->clip.y0;
    if (x1 > cv->clip.x1) x1 = cv->clip.x1;
    if (y1 > cv->clip.y1) y1 = cv->clip.y1;
    for (int y = y0; y <= y1; y++) {
        unsigned char *p = cv->rgb + ((size_t)y * (size_t)cv->w + (size_t)x0) * 3;
        for (int x = x0; x <= x1; x++, p += 3) {
            p[0] = c.r;
            p[1] = c.g;
            p[2] = c.b;
        }
    }
}

static void set_clip(canvas *cv, int x0, int y0, int x1, int y1)
{
    cv->clip = (plot_rect){x0 < 0 ? 0 : x0, y0 < 0 ? 0 : y0, x1 >= cv->w ? cv->w - 1 : x1, y1 >= cv->h ? cv->h - 1 : y1};
}

static void unclip(canvas *cv) { set_clip(cv, 0, 0, cv->w - 1, cv->h - 1); }

/* Coordinates far outside the image (a point far beyond a user's axis limits) are brought in
 * to where int arithmetic stays exact; what is drawn inside the image does not change much. */
static int pixel_int(double p)
{
    if (!(p > -1e6)) return -1000000;
    if (p > 1e6) return 1000000;
    return (int)lround(p);
}

/* Bresenham's line, each step a width x width square: clean 2-pixel lines without
 * anti-aliasing. */
static void draw_line(canvas *cv, int x0, int y0, int x1, int y1, int width, colour c)
{
    int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    int e = dx + dy, lo = -(width / 2), hi = width - 1 - width / 2;
    /* whole steps outside the clip are skipped cheaply; a clipped line costs its length */
    for (;;) {
        if (x0 + hi >= cv->clip.x0 && x0 + lo <= cv->clip.x1 && y0 + hi >= cv->clip.y0 && y0 + lo <= cv->clip.y1)
            fill_rect(cv, x0 + lo, y0 + lo, x0 + hi, y0 + hi, c);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * e;
        if (e2 >= dy) {
            e += dy;
            x0 += sx;
        }
        if (e2 <= dx) {
            e += dx;
            y0 += sy;
        }
    }
}

/* A line clipped to the visible window first (Liang-Barsky), so that a segment to a point far
 * outside costs what is drawn, not its length. */
static void draw_segment(canvas *cv, double x0, double y0, double x1, double y1, int width, colour c)
{
    double t0 = 0, t1 = 1, dx = x1 - x0, dy = y1 - y0;
    double lim[4][2] = {{-dx, x0 - (cv->clip.x0 - width)}, {dx, (cv->clip.x1 + width) - x0},
                        {-dy, y0 - (cv->clip.y0 - width)}, {dy, (cv->clip.y1 + width) - y0}};
    for (int i = 0; i < 4; i++) {
        double p = lim[i][0], q = lim[i][1];
        if (p == 0) {
            if (q < 0) return;
        } else {
            double r = q / p;
            if (p < 0 && r > t0) t0 = r;
            if (p > 0 && r < t1) t1 = r;
        }
    }
    if (t0 > t1) return;
    draw_line(cv, pixel_int(x0 + t0 * dx), pixel_int(y0 + t0 * dy), pixel_int(x0 + t1 * dx), pixel_int(y0 + t1 * dy),
              width, c);
}

/* Filled marker shapes of radius r around (x, y), one per series (modulo 5): circle, square,
 * triangle, diamond, inverted triangle. */
static void draw_shape(canvas *cv, int shape, int x, int y, int r, colour c)
{
    for (int dy = -r; dy <= r; dy++) {
        int hw; /* half-width of this row */
        switch (shape) {
        case 0: hw = (int)sqrt((double)(r * r + r - dy * dy)); break;
        case 1: hw = dy < -r + 1 || dy > r - 1 ? -1 : r - 1; break;
        case 2: hw = (dy + r + 1) / 2; break;
        case 3: hw = r - abs(dy); break;
        default: hw = (r - dy + 1) / 2; break;
        }
        if (hw >= 0) fill_rect(cv, x - hw, y + dy, x + hw, y + dy, c);
    }
}

static void draw_marker(canvas *cv, int shape, int x, int y, int r, colour c)
{
    draw_shape(cv, shape % 5, x, y, r + 1, white); /* a white edge keeps markers apart from lines */
    draw_shape(cv, shape % 5, x, y, r, c);
}

/* ---- Text: stb_easy_font's glyphs (quads in font units, 7 high above the baseline, 9 with
 * descenders) scaled by a whole number ---- */

#define FONT_CAP 7   /* height of digits and capitals, font units */
#define FONT_FULL 9  /* with descenders */
#define TEXT_MAX 256 /* longer text is cut */

/* Printable ASCII: a control byte or a UTF-8 sequence becomes one '?'. */
static void printable(const char *in, char *out)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)(in ? in : ""); *p && n + 1 < TEXT_MAX; p++) {
        if (*p >= 0x80 && *p < 0xC0) continue; /* a continuation byte: its '?' is out already */
        out[n++] = *p >= 32 && *p < 127 ? (char)*p : '?';
    }
    out[n] = 0;
}

static int glyph_advance(char ch)
{
    char s[2] = {ch, 0};
    return stb_easy_font_width(s);
}

int plot_text_width(const char *text, int scale)
{
    char t[TEXT_MAX];
    printable(text, t);
    int w = 0;
    for (const char *p = t; *p; p++) w += glyph_advance(*p);
    return w * scale;
}

/* Draws text with its top-left corner at (x, y); vertical: rotated a quarter turn to read
 * upwards, starting at (x, y) as its bottom-left corner. */
static void draw_text(canvas *cv, int x, int y, const char *text, int scale, int vertical, colour c)
{
    char t[TEXT_MAX];
    printable(text, t);
    int pen = 0;
    for (const char *p = t; *p; p++) {
        char s[2] = {*p, 0};
        float quads[64 * 4 * 4]; /* 64 quads of 4 vertices (x, y, z, colour): more than any glyph */
        int n = stb_easy_font_print(0, 0, s, NULL, quads, (int)sizeof quads);
        for (int q = 0; q < n; q++) {
            const float *v0 = quads + q * 16, *v2 = quads + q * 16 + 8; /* opposite corners */
            int u0 = pen + (int)v0[0], u1 = pen + (int)v2[0], w0 = (int)v0[1], w1 = (int)v2[1];
            if (vertical)
                fill_rect(cv, x + w0 * scale, y - u1 * scale + 1, x + w1 * scale - 1, y - u0 * scale, c);
            else
                fill_rect(cv, x + u0 * scale, y + w0 * scale, x + u1 * scale - 1, y + w1 * scale - 1, c);
        }
        pen += glyph_advance(*p);
    }
}

/* ---- Axes ---- */

double plot_axis_pixel(const plot_axis *a, double v)
{
    double t = a->log ? (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo)) : (v - a->lo) / (a->hi - a->lo);
    return a->pixel_lo + t * (a->pixel_hi - a->pixel_lo);
}

double plot_nice_step(double raw)
{
    double p = pow(10, floor(log10(raw)));
    double m = raw / p;
    /* 1e-9: a raw step that is a nice number up to rounding stays that number */
    return (m <= 1 + 1e-9 ? 1 : m <= 2 + 1e-9 ? 2 : m <= 5 + 1e-9 ? 5 : 10) * p;
}

/* Labels of a linear axis with ticks at multiples of step: as many decimals as the step needs,
 * or a mantissa and exponent for very large or very small numbers. */
static void linear_label(double v, double step, double max_abs, char *out, size_t n)
{
    int e = (int)floor(log10(step) + 1e-9);
    if (v == 0) {
        snprintf(out, n, "0");
    } else if (max_abs >= 1e6 || max_abs < 1e-3) {
        int digits = (int)floor(log10(max_abs) + 1e-9) - e;
        char buf[24]; /* "-1.234567890123456e+308" at the most */
        snprintf(buf, sizeof buf, "%.*e", digits < 0 ? 0 : digits > 15 ? 15 : digits, v);
        /* 1.5e+06 -> 1.5e6, 2e-05 -> 2e-5 */
        char *x = strchr(buf, 'e'), *d = x + 1;
        int neg = *d == '-';
        if (*d == '+' || *d == '-') d++;
        while (*d == '0' && d[1]) d++;
        snprintf(x + 1, sizeof buf - (size_t)(x + 1 - buf), "%s%s", neg ? "-" : "", d);
        snprintf(out, n, "%s", buf);
    } else {
        snprintf(out, n, "%.*f", e < 0 ? -e : 0, v);
    }
}

/* m x 10^k as a label: plain digits from 0.001 to 900000, else "2e-5", "1e6". */
static void log_label(int m, int k, char *out, size_t n)
{
    if (k >= -3 && k <= 5) snprintf(out, n, "%.*f", k < 0 ? -k : 0, m * pow(10, k));
    else snprintf(out, n, "%de%d", m, k);
}

/* Where some labels of a log axis need an exponent, all get one (1e-8 ... 1e4, not 0.01, 1). */
static void log_labels_alike(plot_tick *t, int n)
{
    int plain = 1;
    for (int i = 0; i < n; i++)
        if (t[i].labelled && strchr(t[i].label, 'e')) plain = 0;
    for (int i = 0; !plain && i < n; i++) {
        if (!t[i].labelled) continue;
        int k = (int)floor(log10(t[i].value) + 1e-9);
        snprintf(t[i].label, sizeof t[i].label, "%de%d", (int)lround(t[i].value / pow(10, k)), k);
    }
}

/* Whether labelled ticks leave room between their labels: along x, their widths plus a gap;
 * along y, more than twice the labels' height apart. With thin, a label too close to the one
 * before is dropped instead (its tick stays, as a minor one). */
static int ticks_fit(const plot_axis *a, int horizontal, int scale, plot_tick *t, int n, int thin)
{
    double prev = 0;
    int prev_w = 0, have = 0;
    for (int i = 0; i < n; i++) {
        if (!t[i].labelled) continue;
        double p = plot_axis_pixel(a, t[i].value);
        int w = horizontal ? plot_text_width(t[i].label, scale) : 0;
        double need = horizontal ? (prev_w + w) / 2.0 + 10 * scale : 2.2 * FONT_FULL * scale;
        if (have && fabs(p - prev) < need) {
            if (!thin) return 0;
            t[i].labelled = 0;
            continue;
        }
        prev = p;
        prev_w = w;
        have = 1;
    }
    return 1;
}

static int add_tick(plot_tick *t, int n, double v, int labelled)
{
    if (n >= PLOT_MAX_TICKS) return n;
    t[n].value = v;
    t[n].labelled = labelled;
    t[n].label[0] = 0;
    return n + 1;
}

/* Labelled ticks at the multiples of step inside the axis. */
static int linear_ticks(const plot_axis *a, double step, plot_tick *t)
{
    double k0 = ceil(a->lo / step - 1e-9), k1 = floor(a->hi / step + 1e-9), max_abs = 0;
    int n = 0;
    for (double k = k0; k <= k1 && n < PLOT_MAX_TICKS; k++) {
        double v = k == 0 ? 0 : k * step;
        n = add_tick(t, n, v, 1);
        if (fabs(v) > max_abs) max_abs = fabs(v);
    }
    for (int i = 0; i < n; i++) linear_label(t[i].value, step, max_abs, t[i].label, sizeof t[i].label);
    return n;
}

static int linear_axis_ticks(const plot_axis *a, int horizontal, int scale, plot_tick *t)
{
    /* at most about 8 labels, then coarser steps until the labels fit; where the step that fits
     * has only one multiple inside the axis, the finer step before it with every other (or every
     * third ...) label left out */
    double step = plot_nice_step((a->hi - a->lo) / 8);
    int n = linear_ticks(a, step, t);
    for (int tries = 0; tries < 40 && !ticks_fit(a, horizontal, scale, t, n, 0); tries++) {
        double coarser = plot_nice_step(step * 1.5); /* the next of 1, 2, 5 x 10^k */
        int m = linear_ticks(a, coarser, t);
        if (m < 2 && n >= 2) {
            n = linear_ticks(a, step, t);
            ticks_fit(a, horizontal, scale, t, n, 1);
            break;
        }
        step = coarser;
        n = m;
    }
    return n;
}

static int log_axis_ticks(const plot_axis *a, int horizontal, int scale, plot_tick *t)
{
    double l0 = log10(a->lo), l1 = log10(a->hi);
    int k0 = (int)ceil(l0 - 1e-9), k1 = (int)floor(l1 + 1e-9), n = 0;
    double decade_px = fabs(a->pixel_hi - a->pixel_lo) / (l1 - l0);
    if (k1 - k0 + 1 >= 2) {
        /* decades, every stride-th labelled (stride 1, 2, 5, 10, ...; about 10 labels at most) */
        for (int stride = 1;; stride = (int)plot_nice_step(stride * 1.5)) {
            n = 0;
            int minors = stride == 1 && decade_px >= 24.0 * scale;
            for (int k = k0 - 1; k <= k1; k++) {
                if (k >= k0) {
                    int labelled = ((k % stride) + stride) % stride == 0;
                    n = add_tick(t, n, pow(10, k), labelled);
                    if (labelled) log_label(1, k, t[n - 1].label, sizeof t[n - 1].label);
                }
                for (int m = 2; minors && m <= 9; m++) {
                    double v = m * pow(10, k);
                    if (v >= a->lo && v <= a->hi) n = add_tick(t, n, v, 0);
                }
            }
            int labels = 0;
            for (int i = 0; i < n; i++) labels += t[i].labelled;
            log_labels_alike(t, n);
            if ((labels <= 10 && ticks_fit(a, horizontal, scale, t, n, 0)) || stride >= k1 - k0) return n;
        }
    }
    /* less than two decades: 1 to 9, or 1, 2, 5 (the rest minor ticks) times the powers of ten,
     * if two of them fit */
    for (int coarse = 0; coarse < 2; coarse++) {
        n = 0;
        int labels = 0;
        for (int k = k0 - 1; k <= k1; k++) {
            for (int m = 1; m <= 9; m++) {
                double v = m * pow(10, k);
                if (v < a->lo * (1 - 1e-9) || v > a->hi * (1 + 1e-9)) continue;
                int labelled = !coarse || m == 1 || m == 2 || m == 5;
                n = add_tick(t, n, v, labelled);
                if (labelled) log_label(m, k, t[n - 1].label, sizeof t[n - 1].label);
                labels += labelled;
            }
        }
        log_labels_alike(t, n);
        if (labels >= 2 && ticks_fit(a, horizontal, scale, t, n, 0)) return n;
    }
    /* a narrow range: linear ticks, which land unevenly but correctly on the log scale */
    return linear_axis_ticks(a, horizontal, scale, t);
}

int plot_axis_ticks(const plot_axis *a, int horizontal, int text_scale, plot_tick *ticks)
{
    return a->log ? log_axis_ticks(a, horizontal, text_scale, ticks) : linear_axis_ticks(a, horizontal, text_scale, ticks);
}

/* The range an axis shows of data from lo to hi: 5% more on each side (of the logarithms on a
 * log axis); with zero_base, 0 included and the range starting (or ending) exactly there. */
static void auto_range(double lo, double hi, int log_axis, int zero_base, double out[2])
{
    if (log_axis) {
        double l0 = log10(lo), l1 = log10(hi), pad = l1 > l0 ? 0.05 * (l1 - l0) : 0.3;
        out[0] = pow(10, l0 - pad);
        out[1] = pow(10, l1 + pad);
        return;
    }
    if (zero_base) {
        if (lo > 0) lo = 0;
        if (hi < 0) hi = 0;
    }
    double span = hi - lo, pad = span > 0 ? 0.05 * span : (hi != 0 ? 0.1 * fabs(hi) : 1);
    out[0] = zero_base && lo == 0 && span > 0 ? 0 : lo - pad;
    out[1] = zero_base && hi == 0 && span > 0 ? 0 : hi + pad;
}

/* ---- Checking the chart ---- */

static int has_text(const char *s) { return s && *s; }

static const char *series_name(const plot_series *s) { return s->name && *s->name ? s->name : "(unnamed)"; }

static smoe_status check_chart(const plot_chart *c, smoe_err *err)
{
    if (c->width < PLOT_MIN_SIDE || c->width > PLOT_MAX_SIDE || c->height < PLOT_MIN_SIDE || c->height > PLOT_MAX_SIDE)
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "the image is %dx%d pixels; each side must be %d to %d", c->width, c->height, PLOT_MIN_SIDE,
                    PLOT_MAX_SIDE);
    if (c->series_count < 1 || c->series_count > PLOT_MAX_SERIES || !c->series)
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "%d series; a chart has 1 to %d", c->series_count, PLOT_MAX_SERIES);
    if (c->kind != PLOT_LINE && c->kind != PLOT_BAR) return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "unknown chart kind %d", (int)c->kind);
    if (c->kind == PLOT_BAR && c->logx) return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "a bar chart's x axis has categories; it cannot be logarithmic");
    if (c->kind == PLOT_BAR && (c->category_count < 1 || !c->categories))
        return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "a bar chart needs at least one category");
    for (int a = 0; a < 2; a++) {
        int set = a ? c->ylim_set : c->xlim_set, lg = a ? c->logy : c->logx;
        const double *lim = a ? c->ylim : c->xlim;
        if (set && (!isfinite(lim[0]) || !isfinite(lim[1]) || !(lim[0] < lim[1])))
            return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "the %c axis limits %g, %g are not an increasing pair of numbers", a ? 'y' : 'x', lim[0], lim[1]);
        if (set && lg && lim[0] <= 0)
            return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "the %c axis is logarithmic, but its lower limit %g is not positive", a ? 'y' : 'x', lim[0]);
    }
    if (c->kind == PLOT_BAR && c->xlim_set) return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "a bar chart's x axis has categories; it takes no limits");
    int points = 0;
    for (int s = 0; s < c->series_count; s++) {
        const plot_series *sr = &c->series[s];
        if (sr->count < 0 || (sr->count > 0 && (!sr->x || !sr->y)))
            return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "series \"%s\" has no data arrays", series_name(sr));
        for (int i = 0; i < sr->count; i++) {
            double x = sr->x[i], y = sr->y[i], e = sr->yerr ? sr->yerr[i] : 0;
            if (!isfinite(x) || !isfinite(y) || !isfinite(e))
                return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "series \"%s\" point %d is not finite", series_name(sr), i + 1);
            if (e < 0) return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "series \"%s\" point %d has a negative error %g", series_name(sr), i + 1, e);
            if (c->kind == PLOT_BAR && (x != floor(x) || x < 0 || x >= c->category_count))
                return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "series \"%s\" point %d is in category %g, not one of 0 to %d", series_name(sr), i + 1, x,
                            c->category_count - 1);
            if (c->logx && x <= 0)
                return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "series \"%s\" point %d has x = %g; the x axis is logarithmic and needs values > 0",
                            series_name(sr), i + 1, x);
            if (c->logy && y <= 0)
                return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "series \"%s\" point %d has y = %g; the y axis is logarithmic and needs values > 0",
                            series_name(sr), i + 1, y);
        }
        points += sr->count;
    }
    if (!points) return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "no data: every series is empty");
    return SMOE_OK;
}

/* The data's extent along x (a = 0) or y (a = 1), error bars included (on a log axis, only the
 * positive ends). */
static void data_extent(const plot_chart *c, int a, double *lo, double *hi)
{
    *lo = INFINITY;
    *hi = -INFINITY;
    for (int s = 0; s < c->series_count; s++) {
        const plot_series *sr = &c->series[s];
        for (int i = 0; i < sr->count; i++) {
            double v = a ? sr->y[i] : sr->x[i], e = a && sr->yerr ? sr->yerr[i] : 0;
            double vals[3] = {v, v - e, v + e};
            for (int j = 0; j < 3; j++) {
                if (a && c->logy && vals[j] <= 0) continue;
                if (vals[j] < *lo) *lo = vals[j];
                if (vals[j] > *hi) *hi = vals[j];
            }
        }
    }
}

/* ---- Layout ---- */

/* Everything render places, beyond plot_layout. */
typedef struct scene {
    plot_layout l;
    int pad, tick_len, title_scale, line_width;
    plot_tick xt[PLOT_MAX_TICKS], yt[PLOT_MAX_TICKS];
    int nxt, nyt;
    /* bar chart category labels: in a row, staggered over two rows, or (when even that would
     * overlap) reading upwards; the height they take below the ticks */
    enum { CATEGORIES_FLAT, CATEGORIES_STAGGERED, CATEGORIES_UPWARDS } categories;
    int category_labels_h;
    int legend_right;
    int legend_row_h, legend_sample_w;
    int legend_entry_x[PLOT_MAX_SERIES], legend_entry_y[PLOT_MAX_SERIES]; /* top-left of each entry */
} scene;

/* Legend entries flowed left to right in rows no wider than avail (below the area) or one per
 * row (at the right); sets the entries' offsets inside the box and returns the box's size. */
static void legend_flow(const plot_chart *c, scene *sc, int one_per_row, int avail, int *w, int *h)
{
    int s = sc->l.font_scale, x = sc->pad, y = sc->pad, row_w = 0, max_w = 0;
    if (has_text(c->legend_title)) {
        max_w = sc->pad + plot_text_width(c->legend_title, s);
        y += sc->legend_row_h;
    }
    for (int i = 0; i < c->series_count; i++) {
        int ew = sc->legend_sample_w + 4 * s + plot_text_width(series_name(&c->series[i]), s);
        if (!one_per_row && x > sc->pad && x + ew + sc->pad > avail) {
            x = sc->pad;
            y += sc->legend_row_h;
        }
        sc->legend_entry_x[i] = x;
        sc->legend_entry_y[i] = y;
        row_w = x + ew;
        if (row_w > max_w) max_w = row_w;
        if (one_per_row) y += sc->legend_row_h;
        else x += ew + 3 * sc->pad;
    }
    if (!one_per_row) y += sc->legend_row_h;
    *w = max_w + sc->pad;
    *h = y - (sc->legend_row_h - FONT_FULL * s) + sc->pad;
}

static void place_axes(const plot_chart *c, scene *sc, const double xr[2], const double yr[2])
{
    plot_layout *l = &sc->l;
    l->x = (plot_axis){xr[0], xr[1], c->logx, l->area.x0, l->area.x1};
    l->y = (plot_axis){yr[0], yr[1], c->logy, l->area.y1, l->area.y0};
}

static smoe_status layout(const plot_chart *c, scene *sc, smoe_err *err)
{
    plot_layout *l = &sc->l;
    memset(sc, 0, sizeof *sc);
    int s = 1 + (c->width < c->height ? c->width : c->height) / 360;
    l->font_scale = s;
    l->marker_radius = 2 * s + 1;
    sc->pad = 6 * s;
    sc->tick_len = 4 * s;
    sc->title_scale = s + 1;
    sc->line_width = s;
    sc->legend_row_h = (FONT_FULL + 5) * s;
    sc->legend_sample_w = c->kind == PLOT_BAR ? FONT_FULL * s : 6 * l->marker_radius;

    double xr[2], yr[2], lo, hi;
    if (c->kind == PLOT_BAR) {
        xr[0] = -0.5;
        xr[1] = c->category_count - 0.5;
    } else if (c->xlim_set) {
        xr[0] = c->xlim[0];
        xr[1] = c->xlim[1];
    } else {
        data_extent(c, 0, &lo, &hi);
        auto_range(lo, hi, c->logx, 0, xr);
    }
    if (c->ylim_set) {
        yr[0] = c->ylim[0];
        yr[1] = c->ylim[1];
    } else {
        data_extent(c, 1, &lo, &hi);
        auto_range(lo, hi, c->logy, c->kind == PLOT_BAR, yr);
    }
    for (int a = 0; a < 2; a++) {
        const double *r = a ? yr : xr;
        if (!isfinite(r[1] - r[0]) || !(r[1] > r[0]) || ((a ? c->logy : c->logx) && !(r[0] > 0 && isfinite(r[1] / r[0]))))
            return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "the %c values span more than a chart can show (%g to %g)", a ? 'y' : 'x', r[0], r[1]);
    }

    int legend = c->legend == PLOT_LEGEND_AUTO ? (c->series_count > 1 ? PLOT_LEGEND_AUTO : PLOT_LEGEND_NONE) : c->legend;
    int lw, lh;
    legend_flow(c, sc, 1, 0, &lw, &lh);
    l->legend_shown = legend != PLOT_LEGEND_NONE;
    sc->legend_right = legend == PLOT_LEGEND_RIGHT ||
                       (legend == PLOT_LEGEND_AUTO && lw <= c->width / 3 && lh <= c->height - 2 * sc->pad);

    int cat_w = 0;
    for (int i = 0; c->kind == PLOT_BAR && i < c->category_count; i++) {
        int w = plot_text_width(c->categories[i], s);
        if (w > cat_w) cat_w = w;
    }
    /* Margins depend on tick labels, which depend on the area the margins leave: iterate to a
     * fixed point (two or three rounds in practice). */
    int left = 40 * s, right = sc->pad, top = sc->pad, bottom = 30 * s, legend_w = 0, legend_h = 0;
    for (int pass = 0; pass < 8; pass++) {
        l->area = (plot_rect){left, top, c->width - 1 - right, c->height - 1 - bottom};
        if (l->area.x1 - l->area.x0 < 40 || l->area.y1 - l->area.y0 < 40)
            return smoe_fail(err, SMOE_ERROR_INVALID_ARGUMENT, "a %dx%d image is too small for this chart's labels and legend", c->width, c->height);
        place_axes(c, sc, xr, yr);
        sc->nyt = plot_axis_ticks(&l->y, 0, s, sc->yt);
        int ytick_w = 0;
        for (int i = 0; i < sc->nyt; i++) {
            int w = sc->yt[i].labelled ? plot_text_width(sc->yt[i].label, s) : 0;
            if (w > ytick_w) ytick_w = w;
        }
        int xlabels_h = FONT_FULL * s, overhang = 0, left_overhang = 0;
        if (c->kind == PLOT_BAR) {
            sc->nxt = 0;
            double cat_px = (l->area.x1 - l->area.x0) / (double)c->category_count;
            sc->categories = cat_w + 6 * s <= cat_px           ? CATEGORIES_FLAT
                             : cat_w + 6 * s <= 2 * cat_px ? CATEGORIES_STAGGERED
                                                           : CATEGORIES_UPWARDS;
            if (sc->categories == CATEGORIES_STAGGERED) xlabels_h = sc->legend_row_h + FONT_FULL * s;
            if (sc->categories == CATEGORIES_UPWARDS) xlabels_h = cat_w;
            else {
                /* the first and last labels may reach past the area's sides */
                int first = plot_text_width(c->categories[0], s), last = plot_text_width(c->categories[c->category_count - 1], s);
                left_overhang = (int)(first / 2 - cat_px / 2);
                overhang = (int)(last / 2 - cat_px / 2);
            }
            sc->category_labels_h = xlabels_h;
        } else {
            sc->nxt = plot_axis_ticks(&l->x, 1, s, sc->xt);
            for (int i = 0; i < sc->nxt; i++) {
                if (!sc->xt[i].labelled) continue;
                int end = (int)plot_axis_pixel(&l->x, sc->xt[i].value) + plot_text_width(sc->xt[i].label, s) / 2;
                if (end - l->area.x1 > overhang) overhang = end - l->area.x1;
            }
        }
        if (l->legend_shown) {
            if (sc->legend_right) legend_flow(c, sc, 1, 0, &legend_w, &legend_h);
            else legend_flow(c, sc, 0, c->width - 2 * sc->pad, &legend_w, &legend_h);
        }
        int nl = sc->pad + (has_text(c->ylabel) ? FONT_FULL * s + sc->pad : 0) + ytick_w + 2 * s + sc->tick_len;
        if (nl < sc->pad + left_overhang) nl = sc->pad + left_overhang;
        int nt = sc->pad + (has_text(c->title) ? FONT_FULL * sc->title_scale + sc->pad : FONT_CAP * s / 2);
        int nb = sc->tick_len + 3 * s + xlabels_h + (has_text(c->xlabel) ? sc->pad + FONT_FULL * s : 0) + sc->pad +
                 (l->legend_shown && !sc->legend_right ? sc->pad + legend_h : 0);
        int nr = sc->pad + (overhang > 0 ? overhang : 0) + (l->legend_shown && sc->legend_right ? 2 * sc->pad + legend_w : 0);
        if (nl == left && nt == top && nb == bottom && nr == right) break;
        left = nl;
        top = nt;
        bottom = nb;
        right = nr;
    }
    if (l->legend_shown) {
        int x0, y0;
        if (sc->legend_right) {
            x0 = l->area.x1 + 2 * sc->pad;
            y0 = l->area.y0;
        } else {
            x0 = sc->pad;
            y0 = c->height - sc->pad - legend_h;
        }
        l->legend = (plot_rect){x0, y0, x0 + legend_w - 1, y0 + legend_h - 1};
    }
    return SMOE_OK;
}

/* ---- Drawing ---- */

void plot_bar_columns(const plot_chart *c, const plot_layout *l, int category, int s, int *x0, int *x1)
{
    double group = 0.8, each = group / c->series_count, left = category - group / 2 + s * each;
    int a = (int)lround(plot_axis_pixel(&l->x, left)), b = (int)lround(plot_axis_pixel(&l->x, left + each)) - 1;
    if (b - a >= 4) b--; /* a pixel of background between neighbouring bars */
    if (b < a) b = a;
    *x0 = a;
    *x1 = b;
}

static void draw_grid_and_frame(const plot_chart *c, scene *sc, canvas *cv, int frame)
{
    const plot_layout *l = &sc->l;
    const plot_rect *r = &l->area;
    if (!frame) {
        for (int i = 0; i < sc->nyt; i++) {
            int y = (int)lround(plot_axis_pixel(&l->y, sc->yt[i].value));
            if (sc->yt[i].labelled && y > r->y0 && y < r->y1) fill_rect(cv, r->x0 + 1, y, r->x1 - 1, y, grid);
        }
        for (int i = 0; i < sc->nxt; i++) {
            int x = (int)lround(plot_axis_pixel(&l->x, sc->xt[i].value));
            if (sc->xt[i].labelled && x > r->x0 && x < r->x1) fill_rect(cv, x, r->y0 + 1, x, r->y1 - 1, grid);
        }
        return;
    }
    int s = l->font_scale, w = s > 1 ? s / 2 + (s & 1) : 1; /* frame and tick thickness */
    fill_rect(cv, r->x0, r->y0, r->x1, r->y0 + w - 1, ink);
    fill_rect(cv, r->x0, r->y1 - w + 1, r->x1, r->y1, ink);
    fill_rect(cv, r->x0, r->y0, r->x0 + w - 1, r->y1, ink);
    fill_rect(cv, r->x1 - w + 1, r->y0, r->x1, r->y1, ink);
    for (int i = 0; i < sc->nyt; i++) {
        int y = (int)lround(plot_axis_pixel(&l->y, sc->yt[i].value));
        int len = sc->yt[i].labelled ? sc->tick_len : sc->tick_len / 2;
        fill_rect(cv, r->x0 - len, y - (w - 1) / 2, r->x0 - 1, y + w / 2, ink);
        if (!sc->yt[i].labelled) continue;
        int tw = plot_text_width(sc->yt[i].label, s);
        draw_text(cv, r->x0 - sc->tick_len - 2 * s - tw, y - FONT_CAP * s / 2, sc->yt[i].label, s, 0, ink);
    }
    int label_top = r->y1 + sc->tick_len + 3 * s;
    for (int i = 0; i < sc->nxt; i++) {
        int x = (int)lround(plot_axis_pixel(&l->x, sc->xt[i].value));
        int len = sc->xt[i].labelled ? sc->tick_len : sc->tick_len / 2;
        fill_rect(cv, x - (w - 1) / 2, r->y1 + 1, x + w / 2, r->y1 + len, ink);
        if (sc->xt[i].labelled)
            draw_text(cv, x - plot_text_width(sc->xt[i].label, s) / 2, label_top, sc->xt[i].label, s, 0, ink);
    }
    int labels_h = c->kind == PLOT_BAR ? sc->category_labels_h : FONT_FULL * s;
    for (int i = 0; c->kind == PLOT_BAR && i < c->category_count; i++) {
        int x = (int)lround(plot_axis_pixel(&l->x, i)), tw = plot_text_width(c->categories[i], s);
        fill_rect(cv, x - (w - 1) / 2, r->y1 + 1, x + w / 2, r->y1 + sc->tick_len, ink);
        if (sc->categories == CATEGORIES_UPWARDS)
            draw_text(cv, x - FONT_CAP * s / 2, label_top + tw - 1, c->categories[i], s, 1, ink);
        else
            draw_text(cv, x - tw / 2, label_top + (sc->categories == CATEGORIES_STAGGERED && i % 2 ? sc->legend_row_h : 0),
                      c->categories[i], s, 0, ink);
    }
    if (has_text(c->xlabel)) {
        int tw = plot_text_width(c->xlabel, s);
        draw_text(cv, (r->x0 + r->x1) / 2 - tw / 2, label_top + labels_h + sc->pad, c->xlabel, s, 0, ink);
    }
    if (has_text(c->ylabel)) {
        int tw = plot_text_width(c->ylabel, s);
        draw_text(cv, sc->pad, (r->y0 + r->y1) / 2 + tw / 2, c->ylabel, s, 1, ink);
    }
    if (has_text(c->title)) {
        int ts = sc->title_scale, tw = plot_text_width(c->title, ts);
        int x = (r->x0 + r->x1) / 2 - tw / 2;
        if (x + tw > c->width - sc->pad) x = c->width - sc->pad - tw; /* a long title: fit the image if it can */
        if (x < sc->pad) x = sc->pad;
        draw_text(cv, x, sc->pad, c->title, ts, 0, ink);
    }
}

/* An error bar from y - e to y + e at column x, with caps half as wide as a marker. */
static void draw_error_bar(canvas *cv, const scene *sc, int x, double y, double e, int width, colour col)
{
    const plot_axis *a = &sc->l.y;
    double top = plot_axis_pixel(a, y + e);
    /* on a log axis a lower end at or below zero runs off the bottom of the area */
    double bottom = a->log && y - e <= 0 ? sc->l.area.y1 + 1.0 : plot_axis_pixel(a, y - e);
    int cap = sc->l.marker_radius, lo = -(width / 2), hi = width - 1 - width / 2;
    int t = pixel_int(top), b = pixel_int(bottom);
    fill_rect(cv, x + lo, t, x + hi, b, col);
    fill_rect(cv, x - cap, t + lo, x + cap, t + hi, col);
    if (!(a->log && y - e <= 0)) fill_rect(cv, x - cap, b + lo, x + cap, b + hi, col);
}

static void draw_lines(const plot_chart *c, const scene *sc, canvas *cv)
{
    const plot_layout *l = &sc->l;
    for (int s = 0; s < c->series_count; s++) {
        const plot_series *sr = &c->series[s];
        colour col = palette[s];
        for (int i = 1; i < sr->count; i++)
            draw_segment(cv, plot_axis_pixel(&l->x, sr->x[i - 1]), plot_axis_pixel(&l->y, sr->y[i - 1]),
                         plot_axis_pixel(&l->x, sr->x[i]), plot_axis_pixel(&l->y, sr->y[i]), sc->line_width, col);
        for (int i = 0; sr->yerr && i < sr->count; i++)
            draw_error_bar(cv, sc, pixel_int(plot_axis_pixel(&l->x, sr->x[i])), sr->y[i], sr->yerr[i],
                           sc->line_width > 1 ? sc->line_width - 1 : 1, col);
    }
    /* markers over every line, so no series' line hides another's points */
    for (int s = 0; s < c->series_count; s++) {
        const plot_series *sr = &c->series[s];
        for (int i = 0; i < sr->count; i++)
            draw_marker(cv, s, pixel_int(plot_axis_pixel(&l->x, sr->x[i])), pixel_int(plot_axis_pixel(&l->y, sr->y[i])),
                        l->marker_radius, palette[s]);
    }
}

static void draw_bars(const plot_chart *c, const scene *sc, canvas *cv)
{
    const plot_layout *l = &sc->l;
    /* bars rise from 0, or from the bottom of a log axis or of an axis above 0 */
    double base = l->area.y1;
    if (!l->y.log && l->y.lo < 0) base = l->y.hi < 0 ? l->area.y0 : plot_axis_pixel(&l->y, 0);
    for (int s = 0; s < c->series_count; s++) {
        const plot_series *sr = &c->series[s];
        for (int i = 0; i < sr->count; i++) {
            int x0, x1;
            plot_bar_columns(c, l, (int)sr->x[i], s, &x0, &x1);
            fill_rect(cv, x0, pixel_int(base), x1, pixel_int(plot_axis_pixel(&l->y, sr->y[i])), palette[s]);
        }
    }
    for (int s = 0; s < c->series_count; s++) {
        const plot_series *sr = &c->series[s];
        for (int i = 0; sr->yerr && i < sr->count; i++) {
            int x0, x1;
            plot_bar_columns(c, l, (int)sr->x[i], s, &x0, &x1);
            draw_error_bar(cv, sc, (x0 + x1) / 2, sr->y[i], sr->yerr[i], sc->line_width, bar_whisker);
        }
    }
}

static void draw_legend(const plot_chart *c, const scene *sc, canvas *cv)
{
    const plot_layout *l = &sc->l;
    const plot_rect *r = &l->legend;
    int s = l->font_scale;
    fill_rect(cv, r->x0, r->y0, r->x1, r->y1, legend_edge);
    fill_rect(cv, r->x0 + 1, r->y0 + 1, r->x1 - 1, r->y1 - 1, white);
    if (has_text(c->legend_title)) draw_text(cv, r->x0 + sc->pad, r->y0 + sc->pad, c->legend_title, s, 0, ink);
    for (int i = 0; i < c->series_count; i++) {
        int x = r->x0 + sc->legend_entry_x[i], y = r->y0 + sc->legend_entry_y[i], mid = y + FONT_CAP * s / 2;
        if (c->kind == PLOT_BAR) {
            fill_rect(cv, x, y, x + sc->legend_sample_w - 1, y + FONT_FULL * s - 1, palette[i]);
        } else {
            draw_line(cv, x, mid, x + sc->legend_sample_w - 1, mid, sc->line_width, palette[i]);
            draw_marker(cv, i, x + sc->legend_sample_w / 2, mid, l->marker_radius, palette[i]);
        }
        draw_text(cv, x + sc->legend_sample_w + 4 * s, y, series_name(&c->series[i]), s, 0, ink);
    }
}

smoe_status plot_render(const plot_chart *c, plot_image *img, plot_layout *out_layout, smoe_err *err)
{
    memset(img, 0, sizeof *img);
    smoe_status st = check_chart(c, err);
    if (st) return st;
    scene *sc = malloc(sizeof *sc);
    unsigned char *rgb = malloc((size_t)c->width * (size_t)c->height * 3);
    if (!sc || !rgb) st = smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of memory for a %dx%d image", c->width, c->height);
    else st = layout(c, sc, err);
    if (st) {
        free(sc);
        free(rgb);
        return st;
    }
    canvas cv = {c->width, c->height, rgb, {0, 0, c->width - 1, c->height - 1}};
    fill_rect(&cv, 0, 0, c->width - 1, c->height - 1, white);
    draw_grid_and_frame(c, sc, &cv, 0);
    const plot_rect *a = &sc->l.area;
    set_clip(&cv, a->x0 + 1, a->y0 + 1, a->x1 - 1, a->y1 - 1);
    if (c->kind == PLOT_BAR) draw_bars(c, sc, &cv);
    else draw_lines(c, sc, &cv);
    unclip(&cv);
    draw_grid_and_frame(c, sc, &cv, 1);
    if (sc->l.legend_shown) draw_legend(c, sc, &cv);
    if (out_layout) *out_layout = sc->l;
    free(sc);
    img->width = c->width;
    img->height = c->height;
    img->rgb = rgb;
    return SMOE_OK;
}

void plot_image_free(plot_image *img)
{
    free(img->rgb);
    memset(img, 0, sizeof *img);
}

/* ---- PNG ---- */

typedef struct mem_out {
    unsigned char *data;
    size_t size, cap;
    int failed;
} mem_out;

static void mem_write(void *ctx, void *data, int size)
{
    mem_out *m = ctx;
    if (m->failed || size <= 0) return;
    if (m->size + (size_t)size > m->cap) {
        size_t cap = m->cap ? m->cap : 1 << 16;
        while (cap < m->size + (size_t)size) cap *= 2;
        unsigned char *grown = realloc(m->data, cap);
        if (!grown) {
            m->failed = 1;
            return;
        }
        m->data = grown;
        m->cap = cap;
    }
    memcpy(m->data + m->size, data, (size_t)size);
    m->size += (size_t)size;
}

smoe_status plot_write_png(const char *path, const plot_image *img, smoe_err *err)
{
    mem_out m = {0};
    if (!stbi_write_png_to_func(mem_write, &m, img->width, img->height, 3, img->rgb, img->width * 3) || m.failed) {
        free(m.data);
        return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of memory encoding the PNG");
    }
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    if (!tmp) {
        free(m.data);
        return smoe_fail(err, SMOE_ERROR_OUT_OF_HOST_MEMORY, "out of memory");
    }
    snprintf(tmp, plen + 32, "%s.%ld.tmp", path, (long)getpid());
    smoe_status st = SMOE_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) {
        st = smoe_fail(err, SMOE_ERROR_IO, "cannot write %s: %s", path, strerror(errno));
    } else {
        size_t done = 0;
        while (done < m.size && !st) {
            ssize_t w = write(fd, m.data + done, m.size - done);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) st = smoe_fail(err, SMOE_ERROR_IO, "cannot write %s: %s", path, w < 0 ? strerror(errno) : "nothing written");
            else done += (size_t)w;
        }
        if (close(fd) && !st) st = smoe_fail(err, SMOE_ERROR_IO, "cannot write %s: %s", path, strerror(errno));
        if (!st && rename(tmp, path)) st = smoe_fail(err, SMOE_ERROR_IO, "cannot write %s: %s", path, strerror(errno));
        if (st) unlink(tmp);
    }
    free(tmp);
    free(m.data);
    return st;
}
