/* softmoe plot and its rasteriser (tools/plot.c, tools/csv.c): the axis mapping and ticks; charts
 * rendered and checked pixel by pixel (size, every series' colour in the plot area, each marker
 * and bar where the axis mapping puts it, log decades evenly spaced, the legend outside the plot
 * area with every series in it); the command's PNG decoded (stb_image) equal to the rasteriser's
 * image and the same bytes on every run; and each kind of bad input refused with a message naming
 * the problem and no file written; the CSV reader's quoting, line ends and line numbers.
 * argv[1]: the softmoe binary. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "csv.h"
#include "plot.h"
#include "test_util.h"

#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STBI_ONLY_PNG
#define STBI_NO_GIF /* STBI_ONLY_PNG sets it too late to hide the GIF prototype */
/* 2.27 declares this function under one name and defines it under another */
#define stbi_set_unpremultiply_on_load_thread stbi__unpremultiply_on_load_thread
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#endif
#include <stb/stb_image.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

static const char *cli;
static char tmpdir[256];

static void path_in(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", tmpdir, name); }

static void write_text(const char *name, const char *text)
{
    char p[320];
    path_in(p, sizeof p, name);
    FILE *f = fopen(p, "wb");
    CHECK(f && fputs(text, f) >= 0);
    if (f) fclose(f);
}

/* The whole file (NUL-terminated), or NULL; *size its length. */
static char *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0, got;
    do {
        if (n + 4096 + 1 > cap) {
            cap = 2 * cap + 8192;
            buf = realloc(buf, cap);
            if (!buf) break;
        }
        got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
    } while (got > 0);
    fclose(f);
    if (buf) buf[n] = 0;
    if (size) *size = n;
    return buf;
}

static int dir_entries(void)
{
    DIR *d = opendir(tmpdir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    if (d) closedir(d);
    return n;
}

/* softmoe plot ARGS... (NULL-terminated) with stderr to tmpdir/stderr.txt: the exit status. */
static int run_plot(const char *const *args)
{
    char err_path[320];
    path_in(err_path, sizeof err_path, "stderr.txt");
    const char *argv[64] = {cli, "plot"};
    int n = 2;
    while (*args && n < 63) argv[n++] = *args++;
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644), null = open("/dev/null", O_WRONLY);
        if (fd >= 0) dup2(fd, 2);
        if (null >= 0) dup2(null, 1);
        execv(cli, (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int same_rgb(const unsigned char *p, const unsigned char c[3]) { return p[0] == c[0] && p[1] == c[1] && p[2] == c[2]; }

static const unsigned char *pixel(const plot_image *img, int x, int y)
{
    return img->rgb + ((size_t)y * (size_t)img->width + (size_t)x) * 3;
}

static int count_colour(const plot_image *img, plot_rect r, const unsigned char c[3])
{
    int n = 0;
    for (int y = r.y0; y <= r.y1; y++)
        for (int x = r.x0; x <= r.x1; x++) n += same_rgb(pixel(img, x, y), c);
    return n;
}

static plot_rect inner(plot_rect r) { return (plot_rect){r.x0 + 1, r.y0 + 1, r.x1 - 1, r.y1 - 1}; }

/* ---- CSV ---- */

static void csv_files(void)
{
    char p[320];
    smoe_err err;
    csv_table t;
    /* a byte order mark, CRLF, quoted commas, quotes and a line break, spaces trimmed outside
     * quotes only, a blank line, no newline at the end */
    write_text("t.csv", "\xEF\xBB\xBFname, value ,note\r\n"
                        "\"a,b\",1,\"say \"\"hi\"\"\"\r\n"
                        "\r\n"
                        "  c  , 2.5 ,\" two\nlines \"\n"
                        "d,-3,");
    path_in(p, sizeof p, "t.csv");
    CHECK(csv_read(p, &t, &err) == 0);
    CHECK(t.cols == 3 && t.rows == 3);
    if (t.cols == 3 && t.rows == 3) {
        CHECK(!strcmp(t.header[0], "name") && !strcmp(t.header[1], "value") && csv_column(&t, "note") == 2);
        CHECK(!strcmp(csv_cell(&t, 0, 0), "a,b") && !strcmp(csv_cell(&t, 0, 2), "say \"hi\""));
        CHECK(!strcmp(csv_cell(&t, 1, 0), "c") && !strcmp(csv_cell(&t, 1, 1), "2.5") && !strcmp(csv_cell(&t, 1, 2), " two\nlines "));
        CHECK(!strcmp(csv_cell(&t, 2, 1), "-3") && !strcmp(csv_cell(&t, 2, 2), ""));
        CHECK(t.lines[0] == 2 && t.lines[1] == 4 && t.lines[2] == 6); /* the quoted line break counts */
        CHECK(csv_column(&t, "missing") == -1);
    }
    csv_free(&t);
    write_text("t.csv", "a,b,a\n1,2,3\n");
    CHECK(csv_read(p, &t, &err) == 0 && csv_column(&t, "a") == -2 && csv_column(&t, "b") == 1);
    csv_free(&t);
    write_text("t.csv", "a,b\n\"x\"y,2\n");
    CHECK(csv_read(p, &t, &err) != 0 && strstr(err.msg, "line 2") && strstr(err.msg, "after a closing quote") && !t.header);
    FILE *f = fopen(p, "wb");
    CHECK(f && fwrite("a,b\n1,\0\n", 1, 8, f) == 8);
    if (f) fclose(f);
    CHECK(csv_read(p, &t, &err) != 0 && strstr(err.msg, "line 2") && strstr(err.msg, "NUL"));
    remove(p);
}

/* ---- the axis mapping and ticks ---- */

static void axes(void)
{
    plot_axis lg = {1, 1000, 1, 100, 400}, up = {1, 1000, 1, 400, 100}, lin = {0, 10, 0, 20, 520};
    CHECK(fabs(plot_axis_pixel(&lg, 1) - 100) < 1e-9 && fabs(plot_axis_pixel(&lg, 1000) - 400) < 1e-9);
    CHECK(fabs(plot_axis_pixel(&lg, 10) - 200) < 1e-9 && fabs(plot_axis_pixel(&lg, 100) - 300) < 1e-9);
    CHECK(fabs(plot_axis_pixel(&up, 10) - 300) < 1e-9 && fabs(plot_axis_pixel(&lg, sqrt(10)) - 150) < 1e-9);
    CHECK(fabs(plot_axis_pixel(&lin, 2.5) - 145) < 1e-9);

    const double raw[] = {0.13, 0.3, 7, 1, 2, 3e-7, 120, 5, 0.0501};
    const double nice[] = {0.2, 0.5, 10, 1, 2, 5e-7, 200, 5, 0.1};
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++)
        CHECK_MSG(fabs(plot_nice_step(raw[i]) / nice[i] - 1) < 1e-12, "nice step of %g: %g", raw[i], plot_nice_step(raw[i]));

    /* linear axes over random ranges, along x and along y: ticks inside the range evenly spaced by
     * 1, 2 or 5 x 10^k, at least two of them labelled, labels distinct and (along x) not
     * overlapping */
    uint64_t rng = 42;
    plot_tick t[PLOT_MAX_TICKS];
    for (int trial = 0; trial < 400; trial++) {
        double w = pow(10, 5 * test_uniform(&rng)), c = 3 * w * test_uniform(&rng); /* up to 3 widths off 0 */
        plot_axis a = {c - w * (0.1 + fabs(test_uniform(&rng))), c + w, 0, 60, 60 + 200 + 500 * fabs(test_uniform(&rng))};
        int horizontal = trial & 1, n = plot_axis_ticks(&a, horizontal, 2, t), labels = 0, last = -1;
        CHECK(n >= 2 && n <= 12);
        double step = n >= 2 ? plot_nice_step(0.999 * (t[1].value - t[0].value)) : 0;
        double m = step / pow(10, floor(log10(step) + 1e-9));
        CHECK_MSG(fabs(m - 1) < 1e-6 || fabs(m - 2) < 1e-6 || fabs(m - 5) < 1e-6, "step %g on [%g, %g]", step, a.lo, a.hi);
        for (int i = 0; i < n; i++) {
            CHECK(t[i].value >= a.lo - 1e-9 * w && t[i].value <= a.hi + 1e-9 * w);
            CHECK(fabs(t[i].value / step - round(t[i].value / step)) < 1e-6);
            if (!t[i].labelled) continue;
            labels++;
            if (last >= 0 && strcmp(t[i].label, t[last].label) == 0)
                CHECK_MSG(0, "labels repeat: %s on [%g, %g]", t[i].label, a.lo, a.hi);
            if (last >= 0) {
                double gap = plot_axis_pixel(&a, t[i].value) - plot_axis_pixel(&a, t[last].value);
                double need = horizontal ? (plot_text_width(t[i].label, 2) + plot_text_width(t[last].label, 2)) / 2.0 : 18;
                CHECK_MSG(gap > need, "labels %s and %s overlap", t[last].label, t[i].label);
            }
            last = i;
        }
        CHECK_MSG(labels >= 2, "%d labels on [%g, %g] over %g pixels", labels, a.lo, a.hi, a.pixel_hi - a.pixel_lo);
    }
    /* labels of nice numbers */
    plot_axis b = {-0.04, 0.93, 0, 0, 600};
    int n = plot_axis_ticks(&b, 1, 1, t);
    CHECK(n == 5 && !strcmp(t[0].label, "0") && !strcmp(t[1].label, "0.2") && !strcmp(t[4].label, "0.8"));

    /* log axes: every decade inside is a labelled tick, decades evenly spaced; minor ticks between */
    plot_axis d = {0.5e-3, 2e3, 1, 50, 750};
    n = plot_axis_ticks(&d, 1, 2, t);
    int decades = 0, minors = 0;
    double first = 0, spacing = 0;
    for (int i = 0; i < n; i++) {
        if (!t[i].labelled) {
            minors++;
            continue;
        }
        double k = log10(t[i].value), p = plot_axis_pixel(&d, t[i].value);
        CHECK(fabs(k - round(k)) < 1e-12);
        if (decades == 1) spacing = p - first;
        if (decades == 0) first = p;
        else CHECK(fabs(p - first - decades * spacing) < 1e-6);
        decades++;
    }
    CHECK(decades == 7 && minors > 0 && spacing > 0);
    /* a log axis of less than two decades: 1-2-5 ticks */
    plot_axis e = {3, 40, 1, 0, 300};
    n = plot_axis_ticks(&e, 0, 2, t);
    int labels = 0;
    for (int i = 0; i < n; i++) {
        if (!t[i].labelled) continue;
        labels++;
        double m = t[i].value / pow(10, floor(log10(t[i].value) + 1e-9));
        CHECK(fabs(m - 1) < 1e-9 || fabs(m - 2) < 1e-9 || fabs(m - 5) < 1e-9);
    }
    CHECK(labels >= 2);
}

/* ---- charts rendered here ---- */

/* Black tick marks where the axis mapping puts every labelled tick, below and left of the area. */
static void check_ticks(const plot_image *img, const plot_layout *l)
{
    plot_tick t[PLOT_MAX_TICKS];
    const unsigned char black[3] = {0, 0, 0};
    int n = plot_axis_ticks(&l->x, 1, l->font_scale, t), seen = 0;
    for (int i = 0; i < n; i++) {
        if (!t[i].labelled) continue;
        int x = (int)lround(plot_axis_pixel(&l->x, t[i].value));
        CHECK_MSG(same_rgb(pixel(img, x, l->area.y1 + 2), black), "x tick %s at column %d", t[i].label, x);
        seen++;
    }
    n = plot_axis_ticks(&l->y, 0, l->font_scale, t);
    for (int i = 0; i < n; i++) {
        if (!t[i].labelled) continue;
        int y = (int)lround(plot_axis_pixel(&l->y, t[i].value));
        CHECK_MSG(same_rgb(pixel(img, l->area.x0 - 2, y), black), "y tick %s at row %d", t[i].label, y);
        seen++;
    }
    CHECK(seen >= 4);
}

/* Series of one point each (no lines): each marker's pixels are centred on the pixel the axis
 * mapping gives its point; on a log x axis, points at the decades 1 to 10^4 land equally far apart. */
static void markers_alone(void)
{
    static const double xs[5] = {1, 10, 100, 1000, 10000}, ys[5] = {3, 1, 4, 1.5, 9};
    static const char *const names[5] = {"a", "b", "c", "d", "e"};
    smoe_err err;
    plot_series s[5];
    for (int i = 0; i < 5; i++) s[i] = (plot_series){names[i], 1, &xs[i], &ys[i], NULL};
    for (int logx = 0; logx < 2; logx++) {
        plot_chart c = {.kind = PLOT_LINE, .width = 700, .height = 450, .logx = logx, .series_count = 5, .series = s};
        plot_image img;
        plot_layout l;
        CHECK(plot_render(&c, &img, &l, &err) == 0);
        if (!img.rgb) continue;
        int prev_x = 0, prev_gap = 0;
        for (int i = 0; i < 5; i++) {
            unsigned char col[3];
            plot_series_colour(i, col);
            int px = (int)lround(plot_axis_pixel(&l.x, xs[i])), py = (int)lround(plot_axis_pixel(&l.y, ys[i]));
            int x0 = img.width, x1 = -1, y0 = img.height, y1 = -1;
            plot_rect a = inner(l.area);
            for (int y = a.y0; y <= a.y1; y++)
                for (int x = a.x0; x <= a.x1; x++)
                    if (same_rgb(pixel(&img, x, y), col)) {
                        if (x < x0) x0 = x;
                        if (x > x1) x1 = x;
                        if (y < y0) y0 = y;
                        if (y > y1) y1 = y;
                    }
            CHECK_MSG(x1 >= x0 && x0 + x1 == 2 * px && y0 + y1 == 2 * py && y1 - y0 >= 2 * l.marker_radius - 2,
                      "marker %d: pixels (%d,%d)-(%d,%d), its point maps to (%d,%d)", i, x0, y0, x1, y1, px, py);
            if (logx && i >= 2) CHECK_MSG(abs(px - prev_x - prev_gap) <= 1, "decade %d: %d pixels after the last, not %d", i,
                                          px - prev_x, prev_gap);
            if (i) prev_gap = px - prev_x;
            prev_x = px;
        }
        check_ticks(&img, &l);
        CHECK(!l.legend_shown || l.legend.x0 > l.area.x1 || l.legend.y0 > l.area.y1);
        plot_image_free(&img);
    }
}

#define NPTS 5
static const double line_x[NPTS] = {1, 2, 4, 8, 16};
static const double line_y[3][NPTS] = {{0.50, 0.62, 0.71, 0.78, 0.80}, {0.20, 0.31, 0.44, 0.52, 0.56}, {0.05, 0.09, 0.15, 0.30, 0.95}};
static const char *const line_names[3] = {"soft", "tokens", "experts"};

static plot_chart line_chart(plot_series *s, int logx)
{
    for (int i = 0; i < 3; i++) s[i] = (plot_series){line_names[i], NPTS, line_x, line_y[i], NULL};
    return (plot_chart){.kind = PLOT_LINE, .width = 640, .height = 400, .title = "Accuracy", .xlabel = "experts",
                        .ylabel = "accuracy", .logx = logx, .legend_title = "router", .series_count = 3, .series = s};
}

/* Each series' colour in the plot area and in the legend, a marker at every point's mapped pixel,
 * the legend outside the plot area, the frame and the title drawn. */
static void check_line_chart(const plot_chart *c, const plot_image *img, const plot_layout *l)
{
    CHECK(img->width == c->width && img->height == c->height);
    CHECK(l->area.x0 > 0 && l->area.y0 > 0 && l->area.x1 < img->width - 1 && l->area.y1 < img->height - 1);
    CHECK(l->legend_shown);
    /* the axes span the area, and the data lies inside them */
    CHECK(l->x.pixel_lo == l->area.x0 && l->x.pixel_hi == l->area.x1 && l->y.pixel_lo == l->area.y1 && l->y.pixel_hi == l->area.y0);
    CHECK(l->x.lo < 1 && l->x.hi > 16 && l->y.lo < 0.05 && l->y.hi > 0.95);
    check_ticks(img, l);
    int apart = l->legend.x0 > l->area.x1 || l->legend.y0 > l->area.y1;
    CHECK_MSG(apart, "legend (%d,%d)-(%d,%d) overlaps the plot area (%d,%d)-(%d,%d)", l->legend.x0, l->legend.y0,
              l->legend.x1, l->legend.y1, l->area.x0, l->area.y0, l->area.x1, l->area.y1);
    CHECK(l->legend.x1 < img->width && l->legend.y1 < img->height);
    for (int s = 0; s < c->series_count; s++) {
        unsigned char col[3];
        plot_series_colour(s, col);
        CHECK_MSG(count_colour(img, inner(l->area), col) > 200, "series %d in the plot area", s);
        CHECK_MSG(count_colour(img, l->legend, col) > 20, "series %d in the legend", s);
        for (int i = 0; i < c->series[s].count; i++) {
            int x = (int)lround(plot_axis_pixel(&l->x, c->series[s].x[i]));
            int y = (int)lround(plot_axis_pixel(&l->y, c->series[s].y[i]));
            CHECK_MSG(x > l->area.x0 && x < l->area.x1 && y > l->area.y0 && y < l->area.y1, "point %d of series %d", i, s);
            CHECK_MSG(same_rgb(pixel(img, x, y), col), "series %d point %d: pixel (%d, %d) is %02x%02x%02x", s, i, x, y,
                      pixel(img, x, y)[0], pixel(img, x, y)[1], pixel(img, x, y)[2]);
            /* a marker, not a line: its colour reaches marker_radius - 1 above and below */
            CHECK(same_rgb(pixel(img, x, y - l->marker_radius + 1), col) && same_rgb(pixel(img, x, y + l->marker_radius - 1), col));
        }
    }
    const unsigned char black[3] = {0, 0, 0};
    CHECK(same_rgb(pixel(img, l->area.x0, l->area.y0), black) && same_rgb(pixel(img, l->area.x1, l->area.y1), black));
    CHECK(count_colour(img, (plot_rect){0, 0, img->width - 1, l->area.y0 - 2}, black) > 100); /* the title */
    CHECK(count_colour(img, (plot_rect){0, l->area.y1 + 2, l->area.x1, img->height - 1}, black) > 100); /* x labels */
    CHECK(count_colour(img, (plot_rect){0, 0, l->area.x0 - 2, img->height - 1}, black) > 100); /* y labels */
}

static void rendered_charts(void)
{
    smoe_err err;
    plot_series s[3];
    plot_chart c = line_chart(s, 0);
    plot_image img;
    plot_layout l;
    CHECK(plot_render(&c, &img, &l, &err) == 0);
    if (img.rgb) check_line_chart(&c, &img, &l);
    CHECK(l.font_scale == 2 && l.x.pixel_lo == l.area.x0 && l.y.pixel_lo == l.area.y1); /* y grows upwards */
    plot_image_free(&img);

    /* log x: the markers at 1, 2, 4, 8, 16 land equally far apart, and decades map evenly */
    c = line_chart(s, 1);
    CHECK(plot_render(&c, &img, &l, &err) == 0);
    if (img.rgb) check_line_chart(&c, &img, &l);
    double p1 = plot_axis_pixel(&l.x, 1), p2 = plot_axis_pixel(&l.x, 2), p16 = plot_axis_pixel(&l.x, 16);
    CHECK(fabs((p16 - p1) - 4 * (p2 - p1)) < 1e-9);
    CHECK(fabs(plot_axis_pixel(&l.x, 10) - p1 - (plot_axis_pixel(&l.x, 100) - plot_axis_pixel(&l.x, 10))) < 1e-9);
    plot_image_free(&img);

    /* a bar chart: the bars of a category side by side, each of its series' colour from the base to
     * its value, error bars above them; the legend below when asked */
    static const char *const cats[3] = {"dense", "soft_moe", "experts_choice"};
    static const double bx[3] = {0, 1, 2}, by[2][3] = {{0.88, 0.90, 0.89}, {0.60, 0.75, 0.70}}, be[3] = {0.01, 0.02, 0.005};
    plot_series bs[2] = {{"accuracy", 3, bx, by[0], be}, {"top-1", 3, bx, by[1], NULL}};
    plot_chart b = {.kind = PLOT_BAR, .width = 500, .height = 400, .xlabel = "model", .legend = PLOT_LEGEND_BELOW,
                    .series_count = 2, .series = bs, .category_count = 3, .categories = cats};
    CHECK(plot_render(&b, &img, &l, &err) == 0);
    CHECK(l.legend_shown && l.legend.y0 > l.area.y1);
    CHECK(l.y.lo == 0); /* bars rest on the axis */
    for (int k = 0; img.rgb && k < 3; k++) {
        int prev_x1 = -1;
        for (int si = 0; si < 2; si++) {
            unsigned char col[3];
            plot_series_colour(si, col);
            int x0, x1;
            plot_bar_columns(&b, &l, k, si, &x0, &x1);
            CHECK(x0 > prev_x1 && x1 - x0 >= 10);
            prev_x1 = x1;
            int top = (int)lround(plot_axis_pixel(&l.y, by[si][k])), mid = (x0 + x1) / 2;
            CHECK(same_rgb(pixel(&img, x0, top + 2), col) && same_rgb(pixel(&img, x1, l.area.y1 - 1), col));
            CHECK(!same_rgb(pixel(&img, x0, top - 3), col)); /* nothing above the bar's value at its edge */
            if (si == 0) { /* the error bar's top cap */
                int cap = (int)lround(plot_axis_pixel(&l.y, by[0][k] + be[k]));
                CHECK(!same_rgb(pixel(&img, mid, cap), col) && pixel(&img, mid, cap)[0] < 0x80);
            }
            CHECK(count_colour(&img, l.legend, col) > 20);
        }
    }
    plot_image_free(&img);

    /* what the rasteriser refuses */
    b.logx = 1;
    CHECK(plot_render(&b, &img, &l, &err) != 0 && strstr(err.msg, "logarithmic") && !img.rgb);
    c = line_chart(s, 1);
    double bad_x[NPTS] = {1, 0, 4, 8, 16};
    s[1].x = bad_x;
    CHECK(plot_render(&c, &img, &l, &err) != 0 && strstr(err.msg, "\"tokens\"") && strstr(err.msg, "x = 0"));
    c = line_chart(s, 0);
    c.width = 20;
    CHECK(plot_render(&c, &img, &l, &err) != 0 && strstr(err.msg, "20x400"));
}

/* ---- the command ---- */

static plot_image decode(const char *path)
{
    plot_image img = {0};
    int w, h, comp;
    unsigned char *px = stbi_load(path, &w, &h, &comp, 3);
    CHECK_MSG(px != NULL, "%s decodes", path);
    if (px) {
        img.width = w;
        img.height = h;
        img.rgb = malloc((size_t)w * (size_t)h * 3);
        if (img.rgb) memcpy(img.rgb, px, (size_t)w * (size_t)h * 3);
        stbi_image_free(px);
    }
    return img;
}

static void same_image(const char *path, const plot_chart *c, const char *what)
{
    smoe_err err;
    plot_image want, got = decode(path);
    CHECK(plot_render(c, &want, NULL, &err) == 0);
    CHECK_MSG(got.rgb && want.rgb && got.width == want.width && got.height == want.height &&
                  memcmp(got.rgb, want.rgb, (size_t)want.width * (size_t)want.height * 3) == 0,
              "%s: the command's PNG is the rasteriser's image", what);
    plot_image_free(&want);
    plot_image_free(&got);
}

static void command_output(void)
{
    /* long format, one row per (router, experts), rows not in x order */
    char csv[2048] = "router,experts,acc\n", out[320], out2[320];
    for (int i = NPTS - 1; i >= 0; i--)
        for (int s = 0; s < 3; s++) {
            int row = s == 1 ? NPTS - 1 - i : i; /* series 1 in increasing x */
            snprintf(csv + strlen(csv), sizeof csv - strlen(csv), "%s,%g,%.2f\n", line_names[s], line_x[row], line_y[s][row]);
        }
    write_text("lines.csv", csv);
    char data[320];
    path_in(data, sizeof data, "lines.csv");
    path_in(out, sizeof out, "lines.png");
    path_in(out2, sizeof out2, "lines2.png");
    const char *args[] = {data, "--x", "experts", "--y", "acc", "--series", "router", "--title", "Accuracy", "--ylabel",
                          "accuracy", "--width", "640", "--height", "400", "--out", out, NULL};
    CHECK(run_plot(args) == 0);
    plot_series s[3];
    plot_chart c = line_chart(s, 0);
    same_image(out, &c, "lines");
    /* the same again, bytes and all */
    args[16] = out2;
    CHECK(run_plot(args) == 0);
    size_t n1 = 0, n2 = 0;
    char *b1 = read_all(out, &n1), *b2 = read_all(out2, &n2);
    CHECK(b1 && b2 && n1 > 8 && n1 == n2 && memcmp(b1, b2, n1) == 0 && memcmp(b1, "\x89PNG", 4) == 0);
    free(b1);
    free(b2);
    /* log x, from standard input is not testable here: the same file, --logx */
    const char *logargs[] = {data, "--x", "experts", "--y", "acc", "--series", "router", "--title", "Accuracy", "--ylabel",
                             "accuracy", "--width", "640", "--height", "400", "--logx", "--out", out, NULL};
    CHECK(run_plot(logargs) == 0);
    c = line_chart(s, 1);
    same_image(out, &c, "log lines");

    /* bars: categories from a text column, two --y columns with their error columns */
    write_text("bars.csv", "model,acc,acc_sd,top1,top1_sd\n"
                           "dense,0.88,0.01,0.60,0.02\n"
                           "\"soft_moe\",0.90,0.02,0.75,0.01\n"
                           "experts_choice,0.89,0.005,0.70,0\n");
    path_in(data, sizeof data, "bars.csv");
    const char *barargs[] = {data, "--x", "model", "--y", "acc,top1", "--yerr", "acc_sd,top1_sd", "--kind", "bar",
                             "--width", "500", "--height", "400", "--legend", "below", "--out", out, NULL};
    CHECK(run_plot(barargs) == 0);
    static const char *const cats[3] = {"dense", "soft_moe", "experts_choice"};
    static const double bx[3] = {0, 1, 2}, by[2][3] = {{0.88, 0.90, 0.89}, {0.60, 0.75, 0.70}};
    static const double be[2][3] = {{0.01, 0.02, 0.005}, {0.02, 0.01, 0}};
    plot_series bs[2] = {{"acc", 3, bx, by[0], be[0]}, {"top1", 3, bx, by[1], be[1]}};
    plot_chart b = {.kind = PLOT_BAR, .width = 500, .height = 400, .xlabel = "model", .legend = PLOT_LEGEND_BELOW,
                    .series_count = 2, .series = bs, .category_count = 3, .categories = cats};
    same_image(out, &b, "bars");

    const char *help[] = {"--help", NULL};
    CHECK(run_plot(help) == 0);
}

/* Bad input: a non-zero exit, a message containing each of words (up to three), no file in the
 * directory that was not there, and an existing output left as it was. */
static void refused(const char *what, int want_status, const char *const *args, const char *w1, const char *w2, const char *w3)
{
    char out[320], err_path[320];
    path_in(out, sizeof out, "old.png");
    path_in(err_path, sizeof err_path, "stderr.txt");
    write_text("old.png", "old contents");
    int before = dir_entries();
    int st = run_plot(args);
    char *msg = read_all(err_path, NULL);
    CHECK_MSG(want_status ? st == want_status : st != 0, "%s: exit status %d", what, st);
    const char *words[3] = {w1, w2, w3};
    for (int i = 0; i < 3; i++)
        if (words[i]) CHECK_MSG(msg && strstr(msg, words[i]), "%s: \"%s\" not in the message: %s", what, words[i], msg ? msg : "");
    CHECK_MSG(dir_entries() == before, "%s: a file was written", what);
    char *old = read_all(out, NULL);
    CHECK_MSG(old && !strcmp(old, "old contents"), "%s: the existing output changed", what);
    free(old);
    free(msg);
}

static void bad_input(void)
{
    char good[320], out[320], missing[320], file[16][320];
    path_in(out, sizeof out, "old.png");
    path_in(good, sizeof good, "good.csv");
    path_in(missing, sizeof missing, "no_such_file.csv");
    write_text("good.csv", "router,experts,ms,sd\nsoft,8,1.5,0.1\nsoft,16,2.5,0.2\ntokens,8,3,0.1\n");
    static const char *const bodies[] = {
        "router,experts,ms,sd\nsoft,8,1.5,0.1\nsoft,16,fast,0.2\n", /* 0: not a number, line 3 */
        "router,experts,ms,sd\n",                                  /* 1: no data */
        "",                                                        /* 2: an empty file */
        "router,experts,ms,sd\nsoft,8,1.5,0.1\n\nsoft,16,0,0.2\n", /* 3: 0 on a log axis, line 4 */
        "router,experts,ms,sd\nsoft,8,1.5,0.1\nsoft,16\n",          /* 4: a short row */
        "router,experts,ms,sd\nsoft,8,1.5,-0.1\n",                  /* 5: a negative error */
        "router,experts,ms,sd\n\"soft,8,1.5,0.1\n",                 /* 6: an unclosed quote */
        "router,experts,ms,sd\nsoft,8,1.5,0.1\nsoft,8,2,0.1\n",     /* 7: two bars for one category */
        "s,x,y\na,1,1\nb,1,1\nc,1,1\nd,1,1\ne,1,1\nf,1,1\ng,1,1\nh,1,1\ni,1,1\nj,1,1\nk,1,1\n", /* 8: 11 series */
        "router,experts,ms,sd\nsoft,8,,0.1\n",                      /* 9: an empty cell */
        "router,experts,ms,ms\nsoft,8,1,2\n",                       /* 10: a column name twice */
        "router,experts,ms,sd\nsoft,8,inf,0.1\n",                   /* 11: not finite */
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "bad%zu.csv", i);
        write_text(name, bodies[i]);
        path_in(file[i], sizeof file[i], name);
    }
#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})
    refused("a missing file", 1, ARGS(missing, "--x", "experts", "--y", "ms", "--out", out), "cannot open", "no_such_file.csv", NULL);
    refused("a missing column", 1, ARGS(good, "--x", "experts", "--y", "ms,latency", "--out", out), "no column \"latency\"",
            "\"ms\"", NULL);
    refused("a missing series column", 1, ARGS(good, "--x", "experts", "--y", "ms", "--series", "kind", "--out", out),
            "no column \"kind\"", NULL, NULL);
    refused("a word for a number", 1, ARGS(file[0], "--x", "experts", "--y", "ms", "--out", out), "line 3", "\"ms\"", "\"fast\"");
    refused("a header only", 1, ARGS(file[1], "--x", "experts", "--y", "ms", "--out", out), "no data", NULL, NULL);
    refused("an empty file", 1, ARGS(file[2], "--x", "experts", "--y", "ms", "--out", out), "empty", NULL, NULL);
    refused("zero on a log axis", 1, ARGS(file[3], "--x", "experts", "--y", "ms", "--logy", "--out", out), "line 4", "\"ms\"",
            "not positive");
    refused("a short row", 1, ARGS(file[4], "--x", "experts", "--y", "ms", "--out", out), "line 3", "2 fields", NULL);
    refused("a negative error", 1, ARGS(file[5], "--x", "experts", "--y", "ms", "--yerr", "sd", "--out", out), "line 2", "\"sd\"",
            "negative");
    refused("an unclosed quote", 1, ARGS(file[6], "--x", "experts", "--y", "ms", "--out", out), "line 2", "not closed", NULL);
    refused("two bars in one place", 1, ARGS(file[7], "--x", "experts", "--y", "ms", "--kind", "bar", "--out", out),
            "lines 2 and 3", "category \"8\"", NULL);
    refused("too many series", 1, ARGS(file[8], "--x", "x", "--y", "y", "--series", "s", "--out", out), "more than 10 series",
            NULL, NULL);
    refused("an empty cell", 1, ARGS(file[9], "--x", "experts", "--y", "ms", "--out", out), "line 2", "\"ms\"", "empty");
    refused("an ambiguous column", 1, ARGS(file[10], "--x", "experts", "--y", "ms", "--out", out), "several columns named \"ms\"",
            NULL, NULL);
    refused("infinity", 1, ARGS(file[11], "--x", "experts", "--y", "ms", "--out", out), "line 2", "\"inf\"", NULL);
    refused("a non-positive x on a log axis", 1, ARGS(file[3], "--x", "ms", "--y", "experts", "--logx", "--out", out), "line 4",
            "--logx", NULL);
    char nodir[320];
    path_in(nodir, sizeof nodir, "no_such_dir/plot.png");
    refused("an unwritable output", 1, ARGS(good, "--x", "experts", "--y", "ms", "--out", nodir), "cannot write", "no_such_dir",
            NULL);
    /* bad options: exit status 2 */
    refused("an unknown option", 2, ARGS(good, "--x", "experts", "--y", "ms", "--colour", "red", "--out", out),
            "unknown option \"--colour\"", NULL, NULL);
    refused("an unknown kind", 2, ARGS(good, "--x", "experts", "--y", "ms", "--kind", "pie", "--out", out), "--kind \"pie\"",
            NULL, NULL);
    refused("a tiny width", 2, ARGS(good, "--x", "experts", "--y", "ms", "--width", "10", "--out", out), "--width \"10\"", NULL,
            NULL);
    refused("a height that is no number", 2, ARGS(good, "--x", "experts", "--y", "ms", "--height", "tall", "--out", out),
            "--height", NULL, NULL);
    refused("no output", 2, ARGS(good, "--x", "experts", "--y", "ms"), "--out", "required", NULL);
    refused("no x", 2, ARGS(good, "--y", "ms", "--out", out), "--x", "required", NULL);
    refused("no data file", 2, ARGS("--x", "experts", "--y", "ms", "--out", out), "data file", "required", NULL);
    refused("two data files", 2, ARGS(good, good, "--x", "experts", "--y", "ms", "--out", out), "one data file", NULL, NULL);
    refused("a value missing", 2, ARGS(good, "--x", "experts", "--y", "ms", "--out"), "--out needs a value", NULL, NULL);
    refused("errors for some columns", 2, ARGS(good, "--x", "experts", "--y", "ms,sd", "--yerr", "sd", "--out", out), "--yerr",
            "one per --y column", NULL);
    refused("limits the wrong way round", 2, ARGS(good, "--x", "experts", "--y", "ms", "--ylim", "5,1", "--out", out), "--ylim",
            "LO < HI", NULL);
    refused("a log axis from zero", 2, ARGS(good, "--x", "experts", "--y", "ms", "--logy", "--ylim", "0,10", "--out", out),
            "--ylim", "--logy", NULL);
    refused("a log axis of categories", 2, ARGS(good, "--x", "router", "--y", "ms", "--kind", "bar", "--logx", "--out", out),
            "--logx", "categories", NULL);
    refused("an unknown legend place", 2, ARGS(good, "--x", "experts", "--y", "ms", "--legend", "left", "--out", out),
            "--legend \"left\"", NULL, NULL);
#undef ARGS
}

static void remove_all(void)
{
    DIR *d = opendir(tmpdir);
    char p[512];
    for (struct dirent *e; d && (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
        unlink(p);
    }
    if (d) closedir(d);
    rmdir(tmpdir);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_plot SOFTMOE_BINARY\n");
        return 2;
    }
    cli = argv[1];
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/test_plot.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    csv_files();
    axes();
    markers_alone();
    rendered_charts();
    command_output();
    bad_input();
    remove_all();
    return test_finish("test_plot");
}
