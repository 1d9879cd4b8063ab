/* The Soft MoE layer on the CPU path:
 *  1. the float64 reference's gradients against central finite differences of sum(y * dy);
 *  2. the float32 CPU path (forward and backward) against the float64 reference on random
 *     shapes, including the edge cases b=1, m=1, n=1, p=1 and S below and above m;
 *  3. both for each dispatch/combine variant of the routing ablation (soft, uniform, identity:
 *     smoe_mixing), and the float32 path's own gradients against finite differences where a
 *     side is soft. Where neither side is soft, phi and scale get exactly zero gradients. */
#include "ref_softmoe_f64.h"
#include "softmoe.h"
#include "softmoe_cpu.h"
#include "test_util.h"

#include <stdint.h>
#include <string.h>

/* ---- a small local PRNG (splitmix64) ---- */

static uint64_t rng_state = 0x5eed1234abcdULL;

static double rng_uniform(void) /* in [-1, 1) */
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (double)(z >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

static size_t rng_index(size_t n) { return (size_t)((rng_uniform() + 1.0) * 0.5 * (double)n) % n; }

/* ---- a problem: parameters, x and dy, all exactly representable in float ---- */

enum { T_X, T_PHI, T_SCALE, T_W1, T_B1, T_W2, T_B2, T_PARAMS }; /* the tensors with gradients */
static const char *const tensor_name[T_PARAMS] = {"x", "phi", "scale", "w1", "b1", "w2", "b2"};

typedef struct {
    smoe_layer_dims dm;
    size_t len[T_PARAMS];
    double *val[T_PARAMS]; /* x, phi, scale, w1, b1, w2, b2 */
    double *dy;
    size_t ylen;
} problem;

static double *random_tensor(size_t len, double amplitude)
{
    double *t = malloc(len * sizeof(double));
    if (!t) return NULL;
    for (size_t i = 0; i < len; i++) t[i] = (double)(float)(amplitude * rng_uniform());
    return t;
}

static int problem_make(problem *pr, smoe_layer_dims dm, double scale)
{
    const size_t b = dm.b, m = dm.m, d = dm.d, n = dm.n, p = dm.p, h = dm.h;
    memset(pr, 0, sizeof *pr);
    pr->dm = dm;
    pr->len[T_X] = b * m * d;
    pr->len[T_PHI] = d * n * p;
    pr->len[T_SCALE] = 1;
    pr->len[T_W1] = n * h * d;
    pr->len[T_B1] = n * h;
    pr->len[T_W2] = n * d * h;
    pr->len[T_B2] = n * d;
    pr->ylen = b * m * d;
    const double amp[T_PARAMS] = {1.5, 1.0, 0.0, 1.7 / sqrt((double)d), 0.3,
                                  1.7 / sqrt((double)h), 0.3};
    for (int t = 0; t < T_PARAMS; t++)
        if (!(pr->val[t] = random_tensor(pr->len[t], amp[t]))) return -1;
    pr->val[T_SCALE][0] = scale;
    if (!(pr->dy = random_tensor(pr->ylen, 1.0))) return -1;
    return 0;
}

static void problem_free(problem *pr)
{
    for (int t = 0; t < T_PARAMS; t++) free(pr->val[t]);
    free(pr->dy);
}

static ref_layer_params ref_params(const problem *pr)
{
    ref_layer_params rp = {pr->val[T_PHI], pr->val[T_SCALE], pr->val[T_W1],
                           pr->val[T_B1],  pr->val[T_W2],    pr->val[T_B2]};
    return rp;
}

/* sum(y * dy) from the reference forward; NAN when out of memory */
static double ref_loss(const problem *pr, double *y)
{
    ref_layer_params rp = ref_params(pr);
    if (ref_layer_f64(&pr->dm, &rp, pr->val[T_X], y, NULL, NULL, NULL) != 0) return NAN;
    double s = 0;
    for (size_t i = 0; i < pr->ylen; i++) s += y[i] * pr->dy[i];
    return s;
}

/* All gradients of the reference into g[T_PARAMS] (g[T_X] is dx); 0 on success. */
static int ref_grads(const problem *pr, double *y, double **g)
{
    ref_layer_params rp = ref_params(pr);
    ref_layer_grads rg = {g[T_PHI], g[T_SCALE], g[T_W1], g[T_B1], g[T_W2], g[T_B2]};
    return ref_layer_f64(&pr->dm, &rp, pr->val[T_X], y, pr->dy, g[T_X], &rg);
}

static double max_abs(const double *v, size_t n)
{
    double mx = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(v[i]) > mx) mx = fabs(v[i]);
    return mx;
}

/* ---- 1. reference gradients vs central differences ---- */

static double fd_worst[T_PARAMS];

/* The routing ablation's variants (dispatch, combine), the plain layer first. */
static const int variants[5][2] = {
    {SMOE_MIX_SOFT, SMOE_MIX_SOFT},       {SMOE_MIX_SOFT, SMOE_MIX_UNIFORM}, {SMOE_MIX_UNIFORM, SMOE_MIX_SOFT},
    {SMOE_MIX_UNIFORM, SMOE_MIX_UNIFORM}, {SMOE_MIX_IDENTITY, SMOE_MIX_IDENTITY},
};
static const char *const mix_name[3] = {"soft", "uniform", "identity"};

/* A shape {b, m, d, n, p, h} with variant v's dispatch and combine. */
static smoe_layer_dims dims_of(const int s[6], int v)
{
    return (smoe_layer_dims){s[0], s[1], s[2], s[3], s[4], s[5], variants[v][0], variants[v][1]};
}

/* phi and scale have no part in the output when neither side is soft */
static int routing_free(const smoe_layer_dims *dm, int t)
{
    return (t == T_PHI || t == T_SCALE) && dm->dispatch != SMOE_MIX_SOFT && dm->combine != SMOE_MIX_SOFT;
}

static void check_reference_gradients(smoe_layer_dims dm)
{
    problem pr;
    double *g[T_PARAMS] = {0}, *y = NULL;
    int ok = problem_make(&pr, dm, 1.3) == 0;
    for (int t = 0; ok && t < T_PARAMS; t++) ok = (g[t] = malloc(pr.len[t] * sizeof(double))) != NULL;
    ok = ok && (y = malloc(pr.ylen * sizeof(double))) != NULL;
    CHECK(ok);
    if (ok) CHECK(ref_grads(&pr, y, g) == 0);

    const double eps = 1e-6;
    for (int t = 0; ok && t < T_PARAMS; t++) {
        const size_t len = pr.len[t];
        const double gmax = max_abs(g[t], len);
        const int all = len <= 50;
        double worst = 0;
        for (size_t s = 0; s < (all ? len : 50); s++) {
            size_t i = all ? s : rng_index(len);
            double keep = pr.val[t][i];
            pr.val[t][i] = keep + eps;
            double lp = ref_loss(&pr, y);
            pr.val[t][i] = keep - eps;
            double lm = ref_loss(&pr, y);
            pr.val[t][i] = keep;
            double fd = (lp - lm) / (2 * eps);
            double err = fabs(fd - g[t][i]) / (gmax > 0 ? gmax : 1.0);
            if (!(err <= worst)) worst = err;
        }
        if (routing_free(&dm, t)) CHECK_MSG(gmax == 0, "reference grad of %s is not zero", tensor_name[t]);
        else CHECK_MSG(gmax > 0, "reference grad of %s is all zero", tensor_name[t]);
        CHECK_MSG(worst <= 1e-6, "b=%d m=%d d=%d n=%d p=%d h=%d %s/%s: d%s vs finite differences: %.3g", dm.b, dm.m,
                  dm.d, dm.n, dm.p, dm.h, mix_name[dm.dispatch], mix_name[dm.combine], tensor_name[t], worst);
        if (!(worst <= fd_worst[t])) fd_worst[t] = worst;
    }
    for (int t = 0; t < T_PARAMS; t++) free(g[t]);
    free(y);
    problem_free(&pr);
}

/* ---- 2. float32 CPU path vs float64 reference ---- */

enum { K_Y = T_PARAMS, K_KINDS }; /* the compared tensors: the gradients, then y */
static const char *kind_name(int k) { return k == K_Y ? "y" : k == T_X ? "dx" : tensor_name[k]; }
static double f32_worst[K_KINDS];

/* Largest |a - b| over the largest |b|. */
static double rel_err_f64(const float *a, const double *b, size_t n)
{
    double maxdiff = 0, maxref = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= maxdiff)) maxdiff = d;
        if (fabs(b[i]) > maxref) maxref = fabs(b[i]);
    }
    return maxdiff / (maxref > 0 ? maxref : 1.0);
}

static float *to_float(const double *v, size_t n)
{
    float *f = malloc((n ? n : 1) * sizeof(float));
    if (f)
        for (size_t i = 0; i < n; i++) f[i] = (float)v[i];
    return f;
}

static float *filled(size_t n, float value)
{
    float *f = malloc((n ? n : 1) * sizeof(float));
    if (f)
        for (size_t i = 0; i < n; i++) f[i] = value;
    return f;
}

static void check_cpu_against_reference(smoe_layer_dims dm)
{
    problem pr;
    double *g[T_PARAMS] = {0}, *yref = NULL;
    float *v32[T_PARAMS] = {0}, *g32[T_PARAMS] = {0}, *dy32 = NULL, *y32 = NULL, *ws = NULL;
    int ok = problem_make(&pr, dm, 1.7) == 0;
    for (int t = 0; ok && t < T_PARAMS; t++)
        ok = (g[t] = malloc(pr.len[t] * sizeof(double))) && (v32[t] = to_float(pr.val[t], pr.len[t])) &&
             (g32[t] = filled(pr.len[t], NAN));
    size_t wsize = smoe_cpu_layer_workspace(&dm);
    ok = ok && (yref = malloc(pr.ylen * sizeof(double))) && (dy32 = to_float(pr.dy, pr.ylen)) &&
         (y32 = filled(pr.ylen, NAN)) && (ws = filled(wsize, NAN));
    CHECK(ok);
    if (ok) CHECK(ref_grads(&pr, yref, g) == 0);

    if (ok) {
        smoe_layer_params p32 = {v32[T_PHI], v32[T_SCALE], v32[T_W1], v32[T_B1], v32[T_W2], v32[T_B2]};
        smoe_layer_grads gr32 = {g32[T_PHI], g32[T_SCALE], g32[T_W1], g32[T_B1], g32[T_W2], g32[T_B2]};
        smoe_cpu_layer_forward(&dm, &p32, v32[T_X], y32, ws);
        /* twice: the outputs start as NaN, and the second call must overwrite, not accumulate */
        smoe_cpu_layer_backward(&dm, &p32, v32[T_X], dy32, ws, g32[T_X], &gr32);
        smoe_cpu_layer_backward(&dm, &p32, v32[T_X], dy32, ws, g32[T_X], &gr32);

        double err[K_KINDS];
        err[K_Y] = rel_err_f64(y32, yref, pr.ylen);
        for (int t = 0; t < T_PARAMS; t++) err[t] = rel_err_f64(g32[t], g[t], pr.len[t]);
        for (int k = 0; k < K_KINDS; k++) {
            CHECK_MSG(err[k] <= 1e-4, "b=%d m=%d d=%d n=%d p=%d h=%d %s/%s: %s rel err %.3g", dm.b, dm.m,
                      dm.d, dm.n, dm.p, dm.h, mix_name[dm.dispatch], mix_name[dm.combine], kind_name(k), err[k]);
            if (!(err[k] <= f32_worst[k])) f32_worst[k] = err[k];
        }
        /* fixed weights on both sides: phi and scale get exactly zero */
        for (int t = 0; t < T_PARAMS; t++)
            if (routing_free(&dm, t))
                for (size_t i = 0; i < pr.len[t]; i++) CHECK_MSG(g32[t][i] == 0.0f, "d%s[%zu] is %g", tensor_name[t], i, g32[t][i]);
    }
    for (int t = 0; t < T_PARAMS; t++) free(g[t]), free(v32[t]), free(g32[t]);
    free(yref), free(dy32), free(y32), free(ws);
    problem_free(&pr);
}

/* ---- 3. the float32 path's own gradients vs central differences ---- */

static double fd32_worst;

/* sum(y * dy) in double from the float32 forward */
static double cpu_loss(const smoe_layer_dims *dm, const smoe_layer_params *p32, const float *x, const float *dy, float *y,
                       float *ws, size_t ylen)
{
    smoe_cpu_layer_forward(dm, p32, x, y, ws);
    double s = 0;
    for (size_t i = 0; i < ylen; i++) s += (double)y[i] * dy[i];
    return s;
}

/* 12 coordinates of every tensor, eps 2e-2: smaller steps drown the scale's one small gradient
 * in float32 rounding of the loss (eps 3e-3: 3e-3 of it), larger ones in the eps² term; measured
 * 2.4e-4 of each tensor's largest gradient, and a missing or wrong term is far above 2e-3. */
static void check_cpu_finite_differences(smoe_layer_dims dm)
{
    problem pr;
    float *v32[T_PARAMS] = {0}, *g32[T_PARAMS] = {0}, *dy32 = NULL, *y32 = NULL, *ws = NULL;
    int ok = problem_make(&pr, dm, 1.3) == 0;
    for (int t = 0; ok && t < T_PARAMS; t++)
        ok = (v32[t] = to_float(pr.val[t], pr.len[t])) && (g32[t] = filled(pr.len[t], NAN));
    ok = ok && (dy32 = to_float(pr.dy, pr.ylen)) && (y32 = filled(pr.ylen, NAN)) &&
         (ws = filled(smoe_cpu_layer_workspace(&dm), NAN));
    CHECK(ok);
    if (ok) {
        smoe_layer_params p32 = {v32[T_PHI], v32[T_SCALE], v32[T_W1], v32[T_B1], v32[T_W2], v32[T_B2]};
        smoe_layer_grads gr32 = {g32[T_PHI], g32[T_SCALE], g32[T_W1], g32[T_B1], g32[T_W2], g32[T_B2]};
        smoe_cpu_layer_forward(&dm, &p32, v32[T_X], y32, ws);
        smoe_cpu_layer_backward(&dm, &p32, v32[T_X], dy32, ws, g32[T_X], &gr32);
        const float eps = 2e-2f;
        for (int t = 0; t < T_PARAMS; t++) {
            float gmax = 0;
            for (size_t i = 0; i < pr.len[t]; i++) gmax = fabsf(g32[t][i]) > gmax ? fabsf(g32[t][i]) : gmax;
            double worst = 0;
            for (int s = 0; s < 12; s++) {
                size_t i = rng_index(pr.len[t]);
                float keep = v32[t][i];
                v32[t][i] = keep + eps;
                double lp = cpu_loss(&dm, &p32, v32[T_X], dy32, y32, ws, pr.ylen);
                v32[t][i] = keep - eps;
                double lm = cpu_loss(&dm, &p32, v32[T_X], dy32, y32, ws, pr.ylen);
                v32[t][i] = keep;
                double fd = (lp - lm) / ((double)(keep + eps) - (double)(keep - eps));
                double err = fabs(fd - g32[t][i]) / (gmax > 0 ? gmax : 1.0);
                if (!(err <= worst)) worst = err;
            }
            CHECK_MSG(worst <= 2e-3, "b=%d m=%d d=%d n=%d p=%d h=%d %s/%s: float32 d%s vs finite differences: %.3g", dm.b,
                      dm.m, dm.d, dm.n, dm.p, dm.h, mix_name[dm.dispatch], mix_name[dm.combine], tensor_name[t], worst);
            if (!(worst <= fd32_worst)) fd32_worst = worst;
        }
    }
    for (int t = 0; t < T_PARAMS; t++) free(v32[t]), free(g32[t]);
    free(dy32), free(y32), free(ws);
    problem_free(&pr);
}

int main(void)
{
    static const int fd_shapes[][6] = {
        {2, 5, 6, 3, 2, 7}, /* S = 6 > m = 5 */
        {1, 3, 5, 4, 2, 6}, /* S = 8 > m = 3 */
        {3, 6, 4, 1, 2, 5}, /* n = 1, S < m */
    };
    for (size_t i = 0; i < sizeof fd_shapes / sizeof fd_shapes[0]; i++)
        check_reference_gradients(dims_of(fd_shapes[i], 0));
    /* every variant of the routing ablation; identity needs n*p = m */
    static const int fd_mix_shapes[][6] = {
        {2, 6, 5, 3, 2, 7}, /* S = m = 6 */
        {1, 4, 6, 4, 1, 5}, /* S = m = 4, p = 1 */
    };
    for (int v = 1; v < 5; v++)
        for (size_t i = 0; i < sizeof fd_mix_shapes / sizeof fd_mix_shapes[0]; i++)
            check_reference_gradients(dims_of(fd_mix_shapes[i], v));
    for (int v = 1; v < 4; v++) check_reference_gradients(dims_of(fd_shapes[0], v));
    printf("f64 reference vs finite differences, worst error / max |grad|:\n");
    for (int t = 0; t < T_PARAMS; t++) printf("  d%-6s %.3g\n", tensor_name[t], fd_worst[t]);

    static const int shapes[][6] = {
        {1, 1, 4, 1, 1, 5},     /* everything minimal */
        {1, 1, 9, 4, 3, 11},    /* m = 1 < S */
        {2, 5, 6, 3, 2, 7},
        {1, 7, 16, 3, 3, 40},
        {3, 10, 24, 8, 1, 48},  /* p = 1 */
        {2, 16, 32, 4, 2, 64},
        {1, 3, 17, 5, 2, 33},   /* S = 10 > m = 3, odd sizes */
        {4, 9, 17, 1, 1, 33},   /* n = 1, p = 1 */
        {2, 13, 8, 2, 5, 9},    /* p = 5 */
        {3, 50, 33, 7, 3, 65},  /* S = 21 < m = 50 */
        {5, 40, 64, 40, 1, 96}, /* S = 40 spans two column blocks */
        {2, 70, 48, 9, 4, 100}, /* S = 36 < m = 70 */
        /* sizes that take the other matmul paths and cross the cache blocks: b*p > 16 and > 32
         * rows per expert, b*m > 512 tokens, inner sizes > 256, h > 2048 */
        {5, 110, 36, 6, 4, 300},
        {9, 6, 20, 2, 4, 24},
        {9, 2, 4, 1, 4, 2100},
        {1, 4, 8, 1, 1, 2100},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        check_cpu_against_reference(dims_of(shapes[i], 0));
    /* the routing variants: identity on shapes with n*p = m, the others also on the smaller and
     * the larger shapes above */
    static const int mix_shapes[][6] = {
        {1, 1, 4, 1, 1, 5}, {2, 6, 5, 3, 2, 7}, {3, 12, 24, 4, 3, 48}, {2, 40, 64, 40, 1, 96}, {5, 36, 36, 6, 6, 300},
    };
    for (int v = 1; v < 5; v++) {
        for (size_t i = 0; i < sizeof mix_shapes / sizeof mix_shapes[0]; i++)
            check_cpu_against_reference(dims_of(mix_shapes[i], v));
        if (variants[v][0] == SMOE_MIX_IDENTITY) continue;
        check_cpu_against_reference(dims_of(shapes[2], v));  /* S > m */
        check_cpu_against_reference(dims_of(shapes[9], v));  /* S < m */
        check_cpu_against_reference(dims_of(shapes[13], v)); /* b*p > 32 */
    }
    printf("float32 CPU path vs f64 reference, worst error / max |ref|:\n");
    for (int k = 0; k < K_KINDS; k++) printf("  %-7s %.3g\n", kind_name(k), f32_worst[k]);

    for (int v = 0; v < 4; v++) { /* a soft side */
        check_cpu_finite_differences(dims_of((const int[6]){2, 6, 5, 3, 2, 7}, v));
        check_cpu_finite_differences(dims_of((const int[6]){1, 9, 8, 2, 2, 6}, v));
    }
    printf("float32 CPU path vs finite differences (soft sides), worst error / max |grad|: %.3g\n", fd32_worst);

    return test_finish("test_cpu_layer");
}
