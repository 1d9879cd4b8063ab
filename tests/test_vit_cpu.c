/* The ViT ops on the CPU (host/cpu/vit_cpu.c):
 *  1. every float32 kernel against the float64 reference (tests/ref_vit_f64.c) on odd shapes;
 *  2. every float64 reference backward against central finite differences of its forward
 *     (loss = sum(y * dy) with random dy);
 *  3. AdamW on a hand-computed two-step case, cross-entropy on known cases, sum of squares;
 *  4. im2col + linear_forward against a direct convolution with stride = kernel = P. */
#include "ref_vit_f64.h"
#include "test_util.h"
#include "vit_cpu.h"

#include <stdint.h>
#include <string.h>

#define TOL_F32 1e-5 /* float32 kernel vs float64 reference, relative to the max magnitude */
#define TOL_FD 1e-6  /* float64 backward vs finite differences */
#define FD_EPS 1e-6

/* ---- a small local PRNG (splitmix64) ---- */

static uint64_t rng_state = 0x71739a5eedULL;

static double rng_uniform(void) /* in [-1, 1) */
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (double)(z >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

/* ---- tensors: every test value lives as a double array whose entries are exact floats ---- */

static double *dalloc(size_t n)
{
    double *p = calloc(n ? n : 1, sizeof(double));
    if (!p) abort();
    return p;
}

static float *falloc(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) abort();
    return p;
}

/* offset + amplitude * uniform(-1, 1), rounded to float. */
static double *drandom(size_t n, double offset, double amplitude)
{
    double *p = dalloc(n);
    for (size_t i = 0; i < n; i++) p[i] = (double)(float)(offset + amplitude * rng_uniform());
    return p;
}

static float *to_float(size_t n, const double *d)
{
    float *p = falloc(n);
    for (size_t i = 0; i < n; i++) p[i] = (float)d[i];
    return p;
}

static void fill_nan(size_t n, float *p)
{
    for (size_t i = 0; i < n; i++) p[i] = NAN;
}

/* Largest |a - b| over the largest |b| (1 if b is all zero); NaN in a gives +inf. */
static double rel_err(const float *a, const double *b, size_t n)
{
    double maxdiff = 0.0, maxref = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - b[i]);
        if (!(d <= maxdiff)) maxdiff = isnan(d) ? INFINITY : d;
        if (fabs(b[i]) > maxref) maxref = fabs(b[i]);
    }
    return maxdiff / (maxref > 0 ? maxref : 1.0);
}

static double rel_err_dd(const double *a, const double *b, size_t n)
{
    double maxdiff = 0.0, maxref = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs(a[i] - b[i]);
        if (!(d <= maxdiff)) maxdiff = isnan(d) ? INFINITY : d;
        if (fabs(b[i]) > maxref) maxref = fabs(b[i]);
    }
    return maxdiff / (maxref > 0 ? maxref : 1.0);
}

/* CHECK_MSG(err <= tol, label...), then the error itself on a second line. */
#define CHECK_REL(err, tol, ...)                                                                 \
    do {                                                                                         \
        const double err_ = (err);                                                               \
        CHECK_MSG(err_ <= (tol), __VA_ARGS__);                                                   \
        if (!(err_ <= (tol))) fprintf(stderr, "    relative error %.3g, tolerance %.1g\n", err_, (double)(tol)); \
    } while (0)

/* ---- finite differences ---- */

/* A float64 forward: y = f(inputs). ctx carries the shape. */
typedef void (*fwd_fn)(const void *ctx, double *const *in, double *y);

/* sum(f(in) * dy) */
static double fd_loss(fwd_fn f, const void *ctx, double *const *in, double *y, size_t ylen, const double *dy)
{
    f(ctx, in, y);
    double s = 0.0;
    for (size_t i = 0; i < ylen; i++) s += y[i] * dy[i];
    return s;
}

/* Worst relative error, over the nin inputs, of grad[t] against central differences of
 * sum(f(in) * dy) with respect to in[t]. */
static double fd_check(fwd_fn f, const void *ctx, int nin, double *const *in, const size_t *len, size_t ylen,
                       const double *dy, double *const *grad)
{
    double *y = dalloc(ylen), worst = 0.0;
    for (int t = 0; t < nin; t++) {
        double *fd = dalloc(len[t]);
        for (size_t e = 0; e < len[t]; e++) {
            const double keep = in[t][e];
            in[t][e] = keep + FD_EPS;
            const double lp = fd_loss(f, ctx, in, y, ylen, dy);
            in[t][e] = keep - FD_EPS;
            const double lm = fd_loss(f, ctx, in, y, ylen, dy);
            in[t][e] = keep;
            fd[e] = (lp - lm) / (2.0 * FD_EPS);
        }
        const double err = rel_err_dd(grad[t], fd, len[t]);
        if (err > worst) worst = err;
        free(fd);
    }
    free(y);
    return worst;
}

/* ---- linear ---- */

typedef struct {
    int rows, in, out;
} linear_dims;

static void linear_fwd(const void *ctx, double *const *in, double *y)
{
    const linear_dims *d = ctx;
    ref_linear_forward(d->rows, d->in, d->out, in[0], in[1], in[2], y);
}

static void test_linear(int rows, int in, int out, int do_fd)
{
    const size_t nx = (size_t)rows * in, nw = (size_t)out * in, ny = (size_t)rows * out;
    double *x = drandom(nx, 0.0, 1.0), *w = drandom(nw, 0.0, 1.0 / sqrt(in)), *b = drandom(out, 0.0, 0.5);
    double *dy = drandom(ny, 0.0, 1.0);
    double *y = dalloc(ny), *y0 = dalloc(ny), *dx = dalloc(nx), *dw = dalloc(nw), *db = dalloc(out);
    ref_linear_forward(rows, in, out, x, w, b, y);
    ref_linear_forward(rows, in, out, x, w, NULL, y0);
    ref_linear_backward(rows, in, out, x, w, dy, dx, dw, db);

    float *fx = to_float(nx, x), *fw = to_float(nw, w), *fb = to_float(out, b), *fdy = to_float(ny, dy);
    float *fy = falloc(ny), *fdx = falloc(nx), *fdw = falloc(nw), *fdb = falloc(out);
    fill_nan(ny, fy);
    smoe_cpu_linear_forward(rows, in, out, fx, fw, fb, fy);
    CHECK_REL(rel_err(fy, y, ny), TOL_F32, "linear forward %dx%dx%d", rows, in, out);
    fill_nan(ny, fy);
    smoe_cpu_linear_forward(rows, in, out, fx, fw, NULL, fy);
    CHECK_REL(rel_err(fy, y0, ny), TOL_F32, "linear forward (no bias) %dx%dx%d", rows, in, out);

    fill_nan(nx, fdx);
    fill_nan(nw, fdw);
    fill_nan(out, fdb);
    smoe_cpu_linear_backward(rows, in, out, fx, fw, fdy, fdx, fdw, fdb, 0);
    CHECK_REL(rel_err(fdx, dx, nx), TOL_F32, "linear dx %dx%dx%d", rows, in, out);
    CHECK_REL(rel_err(fdw, dw, nw), TOL_F32, "linear dw %dx%dx%d", rows, in, out);
    CHECK_REL(rel_err(fdb, db, out), TOL_F32, "linear db %dx%dx%d", rows, in, out);

    /* accumulate: start from dw_old = 1, db_old = -2, dx_old = 0.5; dx and db optional */
    double *acc_dx = dalloc(nx), *acc_dw = dalloc(nw), *acc_db = dalloc(out);
    for (size_t i = 0; i < nx; i++) fdx[i] = 0.5f, acc_dx[i] = 0.5 + dx[i];
    for (size_t i = 0; i < nw; i++) fdw[i] = 1.0f, acc_dw[i] = 1.0 + dw[i];
    for (int i = 0; i < out; i++) fdb[i] = -2.0f, acc_db[i] = -2.0 + db[i];
    smoe_cpu_linear_backward(rows, in, out, fx, fw, fdy, fdx, fdw, fdb, 1);
    CHECK_REL(rel_err(fdx, acc_dx, nx), TOL_F32, "linear dx (accumulate)");
    CHECK_REL(rel_err(fdw, acc_dw, nw), TOL_F32, "linear dw (accumulate)");
    CHECK_REL(rel_err(fdb, acc_db, out), TOL_F32, "linear db (accumulate)");
    fill_nan(nw, fdw);
    smoe_cpu_linear_backward(rows, in, out, fx, fw, fdy, NULL, fdw, NULL, 0);
    CHECK_REL(rel_err(fdw, dw, nw), TOL_F32, "linear dw (dx, db NULL)");

    if (do_fd) {
        linear_dims d = {rows, in, out};
        double *inputs[3] = {x, w, b}, *grads[3] = {dx, dw, db};
        const size_t len[3] = {nx, nw, (size_t)out};
        CHECK_REL(fd_check(linear_fwd, &d, 3, inputs, len, ny, dy, grads), TOL_FD, "linear fd %dx%dx%d", rows, in,
                  out);
    }
    free(x), free(w), free(b), free(dy), free(y), free(y0), free(dx), free(dw), free(db);
    free(fx), free(fw), free(fb), free(fdy), free(fy), free(fdx), free(fdw), free(fdb);
    free(acc_dx), free(acc_dw), free(acc_db);
}

/* ---- im2col + linear = convolution ---- */

static void test_patch_embed(int b, int c, int H, int W, int P, int dim)
{
    const int ph = H / P, pw = W / P, K = c * P * P, rows = b * ph * pw;
    const size_t nimg = (size_t)b * c * H * W, nw = (size_t)dim * K, ny = (size_t)rows * dim;
    double *img = drandom(nimg, 0.0, 1.0), *w = drandom(nw, 0.0, 0.3), *bias = drandom(dim, 0.0, 0.3);
    double *y = dalloc(ny);
    ref_patch_conv(b, c, H, W, P, dim, img, w, bias, y);
    float *fimg = to_float(nimg, img), *fw = to_float(nw, w), *fb = to_float(dim, bias);
    float *patches = falloc((size_t)rows * K), *fy = falloc(ny);
    fill_nan((size_t)rows * K, patches);
    smoe_cpu_im2col(b, c, H, W, P, fimg, patches);
    /* exact gather: patch (n, py, px), column (ch, i, j) is image pixel (n, ch, py*P+i, px*P+j) */
    int mismatches = 0;
    for (int n = 0; n < b; n++)
        for (int py = 0; py < ph; py++)
            for (int px = 0; px < pw; px++)
                for (int ch = 0; ch < c; ch++)
                    for (int i = 0; i < P; i++)
                        for (int j = 0; j < P; j++) {
                            const float got = patches[(size_t)((n * ph + py) * pw + px) * K + (ch * P + i) * P + j];
                            const float want = fimg[(((size_t)n * c + ch) * H + py * P + i) * W + px * P + j];
                            mismatches += got != want;
                        }
    CHECK_MSG(mismatches == 0, "im2col: %d values misplaced", mismatches);
    smoe_cpu_linear_forward(rows, K, dim, patches, fw, fb, fy);
    CHECK_REL(rel_err(fy, y, ny), TOL_F32, "im2col+linear vs conv %dx%dx%dx%d P=%d", b, c, H, W, P);
    free(img), free(w), free(bias), free(y), free(fimg), free(fw), free(fb), free(patches), free(fy);
}

/* ---- layernorm ---- */

typedef struct {
    int rows, d;
} ln_dims;

static void ln_fwd(const void *ctx, double *const *in, double *y)
{
    const ln_dims *d = ctx;
    ref_layernorm_forward(d->rows, d->d, in[0], in[1], in[2], y);
}

static void test_layernorm(int rows, int d, double offset, int do_fd)
{
    const size_t n = (size_t)rows * d;
    double *x = drandom(n, offset, 1.0), *g = drandom(d, 1.0, 0.5), *be = drandom(d, 0.0, 0.5);
    double *dy = drandom(n, 0.0, 1.0), *y = dalloc(n), *dx = dalloc(n), *dg = dalloc(d), *db = dalloc(d);
    ref_layernorm_forward(rows, d, x, g, be, y);
    ref_layernorm_backward(rows, d, x, g, dy, dx, dg, db);
    double *mu = dalloc(rows), *rs = dalloc(rows);
    for (int r = 0; r < rows; r++) {
        double s = 0.0, v = 0.0;
        for (int k = 0; k < d; k++) s += x[(size_t)r * d + k];
        s /= d;
        for (int k = 0; k < d; k++) v += (x[(size_t)r * d + k] - s) * (x[(size_t)r * d + k] - s);
        mu[r] = s;
        rs[r] = 1.0 / sqrt(v / d + 1e-6);
    }

    float *fx = to_float(n, x), *fg = to_float(d, g), *fbe = to_float(d, be), *fdy = to_float(n, dy);
    float *fy = falloc(n), *fmu = falloc(rows), *frs = falloc(rows), *fdx = falloc(n), *fdg = falloc(d),
          *fdb = falloc(d);
    fill_nan(n, fy);
    smoe_cpu_layernorm_forward(rows, d, fx, fg, fbe, fy, fmu, frs);
    CHECK_REL(rel_err(fy, y, n), TOL_F32, "layernorm forward %dx%d", rows, d);
    CHECK_REL(rel_err(fmu, mu, rows), TOL_F32, "layernorm mean %dx%d", rows, d);
    CHECK_REL(rel_err(frs, rs, rows), TOL_F32, "layernorm rstd %dx%d", rows, d);
    fill_nan(n, fdx);
    fill_nan(d, fdg);
    fill_nan(d, fdb);
    smoe_cpu_layernorm_backward(rows, d, fx, fg, fmu, frs, fdy, fdx, fdg, fdb);
    CHECK_REL(rel_err(fdx, dx, n), TOL_F32, "layernorm dx %dx%d", rows, d);
    CHECK_REL(rel_err(fdg, dg, d), TOL_F32, "layernorm dgamma %dx%d", rows, d);
    CHECK_REL(rel_err(fdb, db, d), TOL_F32, "layernorm dbeta %dx%d", rows, d);

    if (do_fd) {
        ln_dims dd = {rows, d};
        double *inputs[3] = {x, g, be}, *grads[3] = {dx, dg, db};
        const size_t len[3] = {n, (size_t)d, (size_t)d};
        CHECK_REL(fd_check(ln_fwd, &dd, 3, inputs, len, n, dy, grads), TOL_FD, "layernorm fd %dx%d", rows, d);
    }
    free(x), free(g), free(be), free(dy), free(y), free(dx), free(dg), free(db), free(mu), free(rs);
    free(fx), free(fg), free(fbe), free(fdy), free(fy), free(fmu), free(frs), free(fdx), free(fdg), free(fdb);
}

/* ---- attention ---- */

typedef struct {
    int b, T, dim, heads;
} att_dims;

static void att_fwd(const void *ctx, double *const *in, double *y)
{
    const att_dims *d = ctx;
    ref_attention_forward(d->b, d->T, d->dim, d->heads, in[0], NULL, y);
}

static void test_attention(int b, int T, int dim, int heads, double amp, int do_fd)
{
    const size_t nqkv = (size_t)b * T * 3 * dim, nout = (size_t)b * T * dim, natt = (size_t)b * heads * T * T;
    double *qkv = drandom(nqkv, 0.0, amp), *dout = drandom(nout, 0.0, 1.0);
    double *att = dalloc(natt), *out = dalloc(nout), *dqkv = dalloc(nqkv);
    ref_attention_forward(b, T, dim, heads, qkv, att, out);
    CHECK(ref_attention_backward(b, T, dim, heads, qkv, dout, dqkv) == 0);

    float *fqkv = to_float(nqkv, qkv), *fdout = to_float(nout, dout);
    float *fatt = falloc(natt), *fout = falloc(nout), *fdqkv = falloc(nqkv);
    fill_nan(natt, fatt);
    fill_nan(nout, fout);
    smoe_cpu_attention_forward(b, T, dim, heads, fqkv, fatt, fout);
    CHECK_REL(rel_err(fatt, att, natt), TOL_F32, "attention probs b%d T%d dim%d h%d", b, T, dim, heads);
    CHECK_REL(rel_err(fout, out, nout), TOL_F32, "attention out b%d T%d dim%d h%d", b, T, dim, heads);
    fill_nan(nqkv, fdqkv);
    smoe_cpu_attention_backward(b, T, dim, heads, fqkv, fatt, fdout, fdqkv);
    /* each of dq, dk, dv against its own magnitude */
    const char *part[3] = {"dq", "dk", "dv"};
    for (int which = 0; which < 3; which++) {
        double maxdiff = 0.0, maxref = 0.0;
        for (size_t r = 0; r < (size_t)b * T; r++)
            for (int t = 0; t < dim; t++) {
                const size_t i = r * 3 * dim + (size_t)which * dim + t;
                const double diff = fabs((double)fdqkv[i] - dqkv[i]);
                if (!(diff <= maxdiff)) maxdiff = isnan(diff) ? INFINITY : diff;
                if (fabs(dqkv[i]) > maxref) maxref = fabs(dqkv[i]);
            }
        CHECK_REL(maxdiff / (maxref > 0 ? maxref : 1.0), TOL_F32, "attention %s b%d T%d dim%d h%d", part[which],
                  b, T, dim, heads);
    }
    CHECK_REL(rel_err(fdqkv, dqkv, nqkv), TOL_F32, "attention dqkv b%d T%d dim%d h%d", b, T, dim, heads);

    /* rows of att sum to 1 */
    double worst = 0.0;
    for (size_t r = 0; r < (size_t)b * heads * T; r++) {
        double s = 0.0;
        for (int j = 0; j < T; j++) s += fatt[r * T + j];
        if (fabs(s - 1.0) > worst) worst = fabs(s - 1.0);
    }
    CHECK_MSG(worst < 1e-5, "attention rows sum to 1 within %.3g", worst);

    if (do_fd) {
        att_dims d = {b, T, dim, heads};
        double *inputs[1] = {qkv}, *grads[1] = {dqkv};
        const size_t len[1] = {nqkv};
        CHECK_REL(fd_check(att_fwd, &d, 1, inputs, len, nout, dout, grads), TOL_FD, "attention fd b%d T%d dim%d h%d",
                  b, T, dim, heads);
    }
    free(qkv), free(dout), free(att), free(out), free(dqkv), free(fqkv), free(fdout), free(fatt), free(fout),
        free(fdqkv);
}

/* ---- gelu ---- */

static void gelu_fwd(const void *ctx, double *const *in, double *y)
{
    const size_t n = *(const size_t *)ctx;
    for (size_t i = 0; i < n; i++) y[i] = ref_gelu(in[0][i]);
}

static void test_gelu(size_t n)
{
    double *x = drandom(n, 0.0, 6.0), *dy = drandom(n, 0.0, 1.0), *y = dalloc(n), *dx = dalloc(n);
    x[0] = 0.0, x[1] = -12.0, x[2] = 12.0; /* the saturated tails */
    for (size_t i = 0; i < n; i++) y[i] = ref_gelu(x[i]), dx[i] = dy[i] * ref_gelu_grad(x[i]);
    float *fx = to_float(n, x), *fdy = to_float(n, dy), *fy = falloc(n), *fdx = falloc(n);
    fill_nan(n, fy);
    fill_nan(n, fdx);
    smoe_cpu_gelu_forward(n, fx, fy);
    smoe_cpu_gelu_backward(n, fx, fdy, fdx);
    CHECK_REL(rel_err(fy, y, n), TOL_F32, "gelu forward");
    CHECK_REL(rel_err(fdx, dx, n), TOL_F32, "gelu backward");
    /* elementwise too, for the small values near 0 */
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad += !(fabs(fy[i] - y[i]) <= 1e-6 * fabs(y[i]) + 1e-7);
    CHECK_MSG(bad == 0, "gelu forward: %d values off elementwise", bad);
    double *inputs[1] = {x}, *grads[1] = {dx};
    const size_t len[1] = {n};
    CHECK_REL(fd_check(gelu_fwd, &n, 1, inputs, len, n, dy, grads), TOL_FD, "gelu fd");
    free(x), free(dy), free(y), free(dx), free(fx), free(fdy), free(fy), free(fdx);
}

/* ---- mean pool ---- */

typedef struct {
    int b, T, d;
} pool_dims;

static void pool_fwd(const void *ctx, double *const *in, double *y)
{
    const pool_dims *p = ctx;
    ref_meanpool_forward(p->b, p->T, p->d, in[0], y);
}

static void test_meanpool(int b, int T, int d)
{
    const size_t nx = (size_t)b * T * d, ny = (size_t)b * d;
    double *x = drandom(nx, 0.0, 1.0), *dy = drandom(ny, 0.0, 1.0), *y = dalloc(ny), *dx = dalloc(nx);
    ref_meanpool_forward(b, T, d, x, y);
    ref_meanpool_backward(b, T, d, dy, dx);
    float *fx = to_float(nx, x), *fdy = to_float(ny, dy), *fy = falloc(ny), *fdx = falloc(nx);
    fill_nan(ny, fy);
    fill_nan(nx, fdx);
    smoe_cpu_meanpool_forward(b, T, d, fx, fy);
    smoe_cpu_meanpool_backward(b, T, d, fdy, fdx);
    CHECK_REL(rel_err(fy, y, ny), TOL_F32, "meanpool forward %dx%dx%d", b, T, d);
    CHECK_REL(rel_err(fdx, dx, nx), TOL_F32, "meanpool backward %dx%dx%d", b, T, d);
    pool_dims p = {b, T, d};
    double *inputs[1] = {x}, *grads[1] = {dx};
    const size_t len[1] = {nx};
    CHECK_REL(fd_check(pool_fwd, &p, 1, inputs, len, ny, dy, grads), TOL_FD, "meanpool fd");
    free(x), free(dy), free(y), free(dx), free(fx), free(fdy), free(fy), free(fdx);
}

/* ---- cross-entropy ---- */

typedef struct {
    int b, classes;
    const int32_t *labels;
} ce_dims;

static void ce_fwd(const void *ctx, double *const *in, double *y)
{
    const ce_dims *c = ctx;
    y[0] = ref_cross_entropy_forward(c->b, c->classes, in[0], c->labels, NULL);
}

static void test_cross_entropy(int b, int classes)
{
    const size_t n = (size_t)b * classes;
    int32_t *labels = malloc((size_t)b * sizeof(int32_t));
    if (!labels) abort();
    for (int i = 0; i < b; i++) labels[i] = (int32_t)((i * 7 + 3) % classes);
    double *logits = drandom(n, 0.0, 4.0), *probs = dalloc(n), *dl = dalloc(n);
    const double loss = ref_cross_entropy_forward(b, classes, logits, labels, probs);
    ref_cross_entropy_backward(b, classes, logits, labels, dl);
    float *fl = to_float(n, logits), *fp = falloc(n), *fdl = falloc(n);
    fill_nan(n, fp);
    fill_nan(n, fdl);
    const float floss = smoe_cpu_cross_entropy_forward(b, classes, fl, labels, fp);
    smoe_cpu_cross_entropy_backward(b, classes, fp, labels, fdl);
    CHECK_MSG(fabs(floss - loss) <= TOL_F32 * fabs(loss), "cross-entropy loss %.9g vs %.9g", floss, loss);
    CHECK_REL(rel_err(fp, probs, n), TOL_F32, "cross-entropy probs %dx%d", b, classes);
    CHECK_REL(rel_err(fdl, dl, n), TOL_F32, "cross-entropy dlogits %dx%d", b, classes);
    ce_dims c = {b, classes, labels};
    double one = 1.0, *inputs[1] = {logits}, *grads[1] = {dl};
    const size_t len[1] = {n};
    CHECK_REL(fd_check(ce_fwd, &c, 1, inputs, len, 1, &one, grads), TOL_FD, "cross-entropy fd");
    free(labels), free(logits), free(probs), free(dl), free(fl), free(fp), free(fdl);
}

static void test_cross_entropy_known(void)
{
    /* all-zero logits: loss = log(classes), dlogits = (1/classes - onehot) / b */
    enum { B = 4, C = 10 };
    float logits[B * C] = {0}, probs[B * C], dl[B * C];
    const int32_t labels[B] = {0, 9, 3, 3};
    const float loss = smoe_cpu_cross_entropy_forward(B, C, logits, labels, probs);
    CHECK_MSG(fabs(loss - log(10.0)) < 1e-6, "loss %.9g, want log(10)", loss);
    smoe_cpu_cross_entropy_backward(B, C, probs, labels, dl);
    int bad = 0;
    for (int i = 0; i < B; i++)
        for (int c = 0; c < C; c++) {
            const double want = (0.1 - (c == labels[i])) / B;
            bad += !(fabs(dl[i * C + c] - want) < 1e-7);
            bad += !(fabs(probs[i * C + c] - 0.1) < 1e-7);
        }
    CHECK_MSG(bad == 0, "zero logits: %d wrong probs/gradients", bad);

    /* huge logits stay finite: [1000, 0, -1000], label 0 -> loss 0; label 2 -> 2000 */
    const float big[2 * 3] = {1000.0f, 0.0f, -1000.0f, 1000.0f, 0.0f, -1000.0f};
    const int32_t lb0[2] = {0, 0}, lb2[2] = {2, 2};
    float pb[2 * 3];
    const float l0 = smoe_cpu_cross_entropy_forward(2, 3, big, lb0, pb);
    const float l2 = smoe_cpu_cross_entropy_forward(2, 3, big, lb2, pb);
    CHECK_MSG(fabs(l0) < 1e-6, "huge logits, right label: loss %.9g", l0);
    CHECK_MSG(fabs(l2 - 2000.0) < 1e-3, "huge logits, wrong label: loss %.9g", l2);
    CHECK(pb[0] == 1.0f && pb[1] == 0.0f && pb[2] == 0.0f);
}

/* ---- sum of squares, AdamW ---- */

static void test_sum_squares(void)
{
    const size_t n = 100003;
    double *x = drandom(n, 0.5, 1.0), want = 0.0;
    for (size_t i = 0; i < n; i++) want += x[i] * x[i];
    float *fx = to_float(n, x);
    const double got = smoe_cpu_sum_squares(n, fx);
    CHECK_MSG(fabs(got - want) <= 1e-12 * want, "sum of squares %.17g vs %.17g", got, want);
    CHECK(smoe_cpu_sum_squares(0, fx) == 0.0);
    free(x), free(fx);
}

static void test_adamw(void)
{
    enum { N = 7 }; /* 4 + 3: both the 4-wide and the scalar tail of the kernel */
    /* the hyperparameters as the float kernel sees them */
    const double lr = (float)0.01, b1 = (float)0.9, b2 = (float)0.999, eps = (float)1e-8, wd = (float)0.05, gs = 0.5;
    const double p0[N] = {1.0, -0.5, 2.0, 0.25, -3.0, 0.0, 1.5};
    const double g1[N] = {0.1, -0.2, 0.0, 4.0, 1e-3, -2.0, 0.0}, g2[N] = {0.3, 0.1, -0.05, 4.0, -1e-3, 0.5, 0.0};
    float p[N], m[N] = {0}, v[N] = {0}, grad[N];
    double ep[N], em[N] = {0}, ev[N] = {0};
    for (int i = 0; i < N; i++) p[i] = (float)p0[i], ep[i] = p0[i];

    /* step 1 by hand: mhat = g, vhat = g^2, so the update is lr (wd p + g / (|g| + eps)) */
    for (int i = 0; i < N; i++) grad[i] = (float)g1[i];
    smoe_cpu_adamw(N, p, grad, m, v, (float)lr, (float)b1, (float)b2, (float)eps, (float)wd, (float)gs, 1);
    for (int i = 0; i < N; i++) {
        const double g = g1[i] * gs;
        const double want = p0[i] - lr * (wd * p0[i] + g / (fabs(g) + eps));
        CHECK_MSG(fabs(p[i] - want) <= 1e-6 * fabs(want), "adamw step 1 p[%d] = %.9g, want %.9g", i, p[i], want);
    }
    /* element 2 (g = 0) only decays; element 0 moves by lr (wd + 1) */
    CHECK(fabs(p[2] - 2.0 * (1.0 - lr * wd)) < 1e-7);
    CHECK(fabs(p[6] - 1.5 * (1.0 - lr * wd)) < 1e-7);
    CHECK(fabs(p[0] - (1.0 - 0.01 * 1.05)) < 1e-6); /* g > 0: mhat / sqrt(vhat) = 1 */

    /* two steps of the formula in double */
    for (int t = 1; t <= 2; t++) {
        const double *gg = t == 1 ? g1 : g2;
        for (int i = 0; i < N; i++) {
            const double g = gg[i] * gs;
            em[i] = b1 * em[i] + (1 - b1) * g;
            ev[i] = b2 * ev[i] + (1 - b2) * g * g;
            const double mh = em[i] / (1 - pow(b1, t)), vh = ev[i] / (1 - pow(b2, t));
            ep[i] -= lr * (wd * ep[i] + mh / (sqrt(vh) + eps));
        }
    }
    for (int i = 0; i < N; i++) grad[i] = (float)g2[i];
    smoe_cpu_adamw(N, p, grad, m, v, (float)lr, (float)b1, (float)b2, (float)eps, (float)wd, (float)gs, 2);
    for (int i = 0; i < N; i++) {
        CHECK_MSG(fabs(p[i] - ep[i]) <= 1e-6 * fabs(ep[i]), "adamw step 2 p[%d] = %.9g, want %.9g", i, p[i], ep[i]);
        CHECK_MSG(fabs(m[i] - em[i]) <= 1e-6 * fabs(em[i]) + 1e-12, "adamw m[%d]", i);
        CHECK_MSG(fabs(v[i] - ev[i]) <= 1e-6 * fabs(ev[i]) + 1e-12, "adamw v[%d]", i);
    }
}

/* The kernel's 4-wide path and its scalar tail agree bit for bit: n = 4099 at once (1024 blocks
 * of 4 and a tail of 3) against one element per call (always the scalar path), over 3 steps. */
static void test_adamw_paths(void)
{
    enum { N = 4099 };
    float *pa = falloc(N), *ma = falloc(N), *va = falloc(N), *pb = falloc(N), *mb = falloc(N), *vb = falloc(N);
    float *g = falloc(N);
    for (int i = 0; i < N; i++) pa[i] = pb[i] = (float)rng_uniform();
    int differ = 0;
    for (int t = 1; t <= 3; t++) {
        for (int i = 0; i < N; i++) g[i] = (float)(rng_uniform() * (i % 3 == 0 ? 1e-4 : 2.0));
        smoe_cpu_adamw(N, pa, g, ma, va, 3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.25f, t);
        for (int i = 0; i < N; i++)
            smoe_cpu_adamw(1, pb + i, g + i, mb + i, vb + i, 3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.25f, t);
    }
    for (int i = 0; i < N; i++) differ += pa[i] != pb[i] || ma[i] != mb[i] || va[i] != vb[i];
    CHECK_MSG(differ == 0, "adamw: %d elements differ between the vector and scalar paths", differ);
    free(pa), free(ma), free(va), free(pb), free(mb), free(vb), free(g);
}

int main(void)
{
    test_linear(7, 13, 5, 1);
    test_linear(1, 3, 9, 1);
    test_linear(37, 70, 66, 0); /* more than one column block in db */

    test_patch_embed(1, 2, 8, 8, 4, 5);
    test_patch_embed(3, 2, 8, 12, 4, 7); /* non-square, b > 1 */
    test_patch_embed(2, 3, 6, 6, 3, 4);

    test_layernorm(7, 13, 0.0, 1);
    test_layernorm(3, 3, 3.0, 1); /* (d = 2 makes dx ~ 0 up to eps: all cancellation) */
    test_layernorm(5, 67, 10.0, 0);
    test_layernorm(1, 1, 1.0, 0); /* d = 1: xhat = 0 */

    test_attention(2, 5, 6, 2, 1.5, 1);
    test_attention(3, 7, 12, 3, 2.0, 1);
    test_attention(1, 1, 4, 1, 1.0, 1); /* T = 1: att = 1, dq = dk = 0, dv = dout */
    test_attention(2, 17, 16, 2, 1.0, 0);
    test_attention(2, 10, 8, 2, 1.0, 1); /* T a multiple of 2, not 4 */
    test_attention(1, 8, 6, 3, 1.0, 1);  /* T a multiple of 4, hd = 2 */

    test_gelu(203);
    test_meanpool(3, 5, 7);
    test_meanpool(1, 1, 4);
    test_cross_entropy(6, 11);
    test_cross_entropy(1, 2);
    test_cross_entropy_known();
    test_sum_squares();
    test_adamw();
    test_adamw_paths();
    return test_finish("test_vit_cpu");
}
