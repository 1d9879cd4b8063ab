/* Expert-subset inference (smoe_model_set_keep_experts) on both paths:
 *  1. a case checked by hand: slots that point at one expert each, tokens that point at chosen
 *     experts, expert outputs that are their own unit vectors (fc2 weights zero, bias e_e), so y's
 *     column e is expert e's combine mass: the kept experts are known in advance, dropped
 *     experts contribute exactly 0, ties go to the lower index; against the float64 reference;
 *  2. k = n run through the subset machinery equals the plain layer bit for bit (layer and ViT);
 *  3. random layers: both paths against the float64 reference and each other, for several k,
 *     with and without renormalisation, b > 1 with inputs that keep different experts, sizes
 *     that are multiples of no tile;
 *  4. the random-subset baseline: both paths draw the same experts, k per input, afresh per call,
 *     reproducibly from the seed;
 *  5. a ViT with two Soft MoE layers: CPU vs Vulkan, asynchronous = synchronous;
 *  6. bad settings refused without change, gradient calls refused while experts are dropped, and
 *     the recorded program follows the setting. */
#define _POSIX_C_SOURCE 200809L
#include "model.h"
#include "ref_softmoe_f64.h"
#include "safetensors.h"
#include "test_vk.h"

#define TOL 1e-4      /* relative to the output's largest magnitude, as test_layer */
#define TOL_HAND 1e-5 /* the hand case: well-conditioned, values near 1 */

static const char *devices[2] = {"cpu", "vulkan"};
static smoe_context *ctxs[2];
static double worst_ref = 0, worst_paths = 0;

/* ---- layer models from arrays ---- */

typedef struct layer {
    smoe_layer_dims dm; /* b, m: the input's */
    float *prm[6];      /* phi, scale, w1, b1, w2, b2 */
    size_t count[6];
} layer;

static void layer_alloc(layer *L, int b, int m, int d, int n, int p, int h)
{
    L->dm = (smoe_layer_dims){.b = b, .m = m, .d = d, .n = n, .p = p, .h = h};
    size_t counts[6] = {(size_t)d * n * p, 1, (size_t)n * h * d, (size_t)n * h, (size_t)n * d * h, (size_t)n * d};
    for (int i = 0; i < 6; i++) {
        L->count[i] = counts[i];
        L->prm[i] = calloc(counts[i], 4);
    }
}

static void layer_free(layer *L)
{
    for (int i = 0; i < 6; i++) free(L->prm[i]);
}

static smoe_model *layer_load(smoe_context *ctx, const layer *L)
{
    const smoe_layer_dims *q = &L->dm;
    int64_t shapes[6][3] = {{q->d, q->n, q->p}, {1}, {q->n, q->h, q->d}, {q->n, q->h}, {q->n, q->d, q->h}, {q->n, q->d}};
    int ndims[6] = {3, 1, 3, 2, 3, 2};
    smoe_st_entry e[6];
    for (int i = 0; i < 6; i++) {
        e[i] = (smoe_st_entry){smoe_layer_param_name(i), SMOE_F32, ndims[i], {0}, L->prm[i]};
        memcpy(e[i].shape, shapes[i], sizeof shapes[i]);
    }
    smoe_st_meta meta = {"softmoe.kind", "layer"};
    uint8_t *img = NULL;
    size_t size = 0;
    smoe_err err;
    smoe_model *model = NULL;
    CHECK(smoe_st_serialize(e, 6, &meta, 1, &img, &size, &err) == SMOE_OK);
    CHECK_MSG(smoe_model_load_memory(ctx, img, size, &model) == SMOE_OK, "%s", smoe_last_error(ctx));
    free(img);
    return model;
}

/* y [b, m, d] by the float64 reference keeping k experts (k = 0: all); scores and kept [b, n]. */
static void reference(const layer *L, const float *x, int k, int renormalize, double *y, double *scores, int *kept)
{
    double *prm[6];
    for (int i = 0; i < 6; i++) {
        prm[i] = malloc(L->count[i] * sizeof(double));
        for (size_t j = 0; j < L->count[i]; j++) prm[i][j] = L->prm[i][j];
    }
    size_t io = (size_t)L->dm.b * L->dm.m * L->dm.d;
    double *xd = malloc(io * sizeof(double));
    for (size_t j = 0; j < io; j++) xd[j] = x[j];
    ref_layer_params rp = {prm[0], prm[1], prm[2], prm[3], prm[4], prm[5]};
    int rc = k ? ref_layer_keep_f64(&L->dm, &rp, xd, y, k, renormalize, scores, kept)
               : ref_layer_f64(&L->dm, &rp, xd, y, NULL, NULL, NULL);
    CHECK(rc == 0);
    for (int i = 0; i < 6; i++) free(prm[i]);
    free(xd);
}

/* Largest |got - want| over the largest |want|. */
static double rel_err_f64(const float *got, const double *want, size_t n)
{
    double diff = 0, ref = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(got[i] - want[i]);
        if (!(e <= diff)) diff = e;
        if (fabs(want[i]) > ref) ref = fabs(want[i]);
    }
    return diff / (ref > 0 ? ref : 1);
}

static void forward(smoe_context *ctx, smoe_model *model, const layer *L, const float *x, float *y)
{
    smoe_status st = smoe_layer_forward(model, L->dm.b, L->dm.m, x, y);
    CHECK_MSG(st == SMOE_OK, "%s", smoe_last_error(ctx));
}

/* ---- 1. the hand-checked case ---- */

/* b = 3 sequences of m = 6 tokens, d = 6, n = 4 experts of p = 2 slots, h = 3. Slot j of expert
 * e points at e_e + 0.2 e_{4+j}; token i of sequence z is 3 e_{a(z,i)} (sequence 0 with a little
 * e_4 too, the same for every expert), or zero (sequence 2: every logit 0, every expert the same
 * score). The scale is 6: a token sends about 0.98 of its combine mass to its expert. Expert e
 * outputs e_e exactly (fc2 weights 0, bias e_e), so y[z, i, e] is token i's combine weight on
 * expert e's slots when e is kept, and exactly 0 when it is dropped. */
static const int assign[2][6] = {{2, 2, 2, 0, 0, 3}, {1, 1, 1, 1, 3, 3}};
/* expected kept experts per k and sequence: scores ~ (2, 0, 3, 1), (0, 4, 0, 2) with experts 0
 * and 2 tied exactly, and all tied */
static const int expect_kept[4][3][4] = {
    {{0}},
    {{0, 0, 1, 0}, {0, 1, 0, 0}, {1, 0, 0, 0}},
    {{1, 0, 1, 0}, {0, 1, 0, 1}, {1, 1, 0, 0}},
    {{1, 0, 1, 1}, {1, 1, 0, 1}, {1, 1, 1, 0}},
};

static void hand_layer(layer *L, float *x)
{
    layer_alloc(L, 3, 6, 6, 4, 2, 3);
    const int d = 6, n = 4, p = 2, h = 3, S = n * p;
    for (int e = 0; e < n; e++)
        for (int j = 0; j < p; j++) {
            L->prm[0][(size_t)e * S + e * p + j] = 1.0f;       /* phi[e, slot] */
            L->prm[0][(size_t)(4 + j) * S + e * p + j] = 0.2f; /* phi[4 + j, slot] */
        }
    L->prm[1][0] = 6.0f;
    uint64_t seed = 77;
    for (size_t i = 0; i < L->count[2]; i++) L->prm[2][i] = 0.5f * test_rand(&seed); /* w1 */
    for (size_t i = 0; i < L->count[3]; i++) L->prm[3][i] = 0.1f * test_rand(&seed); /* b1 */
    for (int e = 0; e < n; e++) L->prm[5][(size_t)e * d + e] = 1.0f;                  /* b2 = e_e */
    (void)h;
    memset(x, 0, sizeof(float) * 3 * 6 * 6);
    for (int z = 0; z < 2; z++)
        for (int i = 0; i < 6; i++) {
            float *xi = x + ((size_t)z * 6 + i) * d;
            xi[assign[z][i]] = 3.0f;
            if (z == 0) xi[4] = 0.3f * (float)(i % 3);
        }
}

static void hand_case(void)
{
    layer L;
    float x[3 * 6 * 6], y[3 * 6 * 6], y_all[3 * 6 * 6];
    double want[3 * 6 * 6], scores[12];
    int kept[12];
    hand_layer(&L, x);
    const size_t io = sizeof y / sizeof y[0];
    /* the reference keeps what the construction says */
    for (int k = 1; k <= 3; k++) {
        reference(&L, x, k, 0, want, scores, kept);
        for (int z = 0; z < 3; z++)
            for (int e = 0; e < 4; e++)
                CHECK_MSG(kept[z * 4 + e] == expect_kept[k][z][e], "reference, k=%d: sequence %d expert %d kept %d", k, z,
                          e, kept[z * 4 + e]);
    }
    CHECK(scores[1 * 4 + 0] == scores[1 * 4 + 2]); /* the exact tie of sequence 1 */
    for (int dv = 0; dv < 2; dv++) {
        smoe_context *ctx = ctxs[dv];
        smoe_model *model = layer_load(ctx, &L);
        if (!model) continue;
        forward(ctx, model, &L, x, y_all);
        for (int k = 1; k <= 4; k++)
            for (int renorm = 0; renorm < 2; renorm++) {
                CHECK(smoe_model_set_keep_experts(model, k, renorm) == SMOE_OK);
                forward(ctx, model, &L, x, y);
                if (k == 4) { /* k = n: all experts, the plain layer */
                    CHECK_MSG(!memcmp(y, y_all, sizeof y), "%s: k = n differs from the plain layer", devices[dv]);
                    continue;
                }
                reference(&L, x, k, renorm, want, scores, kept);
                double e = rel_err_f64(y, want, io);
                if (e > worst_ref) worst_ref = e;
                CHECK_MSG(e <= TOL_HAND, "%s hand case k=%d renormalize=%d: %.3g from the reference", devices[dv], k, renorm,
                          e);
                for (int z = 0; z < 3; z++)
                    for (int i = 0; i < 6; i++) {
                        const float *yi = y + ((size_t)z * 6 + i) * 6;
                        double sum = 0;
                        for (int c = 0; c < 6; c++) {
                            int dropped = c >= 4 || !expect_kept[k][z][c];
                            if (dropped)
                                CHECK_MSG(yi[c] == 0.0f, "%s k=%d: dropped expert %d of sequence %d gives %g to token %d",
                                          devices[dv], k, c, z, yi[c], i);
                            else
                                CHECK_MSG(yi[c] > 0.0f, "%s k=%d: kept expert %d of sequence %d gives nothing to token %d",
                                          devices[dv], k, c, z, i);
                            sum += yi[c];
                        }
                        /* renormalised, each token's kept weights sum to 1 */
                        if (renorm) CHECK_MSG(fabs(sum - 1) < TOL_HAND, "%s k=%d renormalised: token weights sum to %.7f",
                                              devices[dv], k, sum);
                    }
            }
        smoe_model_free(model);
    }
    layer_free(&L);
}

/* ---- 2./3. random layers ---- */

static void random_layer(layer *L, int b, int m, int d, int n, int p, int h, uint64_t seed, float *x)
{
    layer_alloc(L, b, m, d, n, p, h);
    float amp[6] = {1.0f, 0, 1.0f / sqrtf((float)d), 0.1f, 1.0f / sqrtf((float)h), 0.1f};
    for (int i = 0; i < 6; i++)
        for (size_t j = 0; j < L->count[i]; j++) L->prm[i][j] = amp[i] * test_rand(&seed);
    L->prm[1][0] = 4.0f; /* routing sharp enough that inputs prefer different experts */
    for (size_t i = 0; i < (size_t)b * m * d; i++) x[i] = 2.0f * test_rand(&seed);
}

/* The smallest gap, over the sequences, between the k-th and the (k+1)-th score, relative to the
 * mean score m/n: the float paths keep the reference's experts only when it is well above their
 * rounding. */
static double score_margin(const double *scores, int b, int n, int m, int k)
{
    double worst = INFINITY;
    for (int z = 0; z < b; z++) {
        double kth = INFINITY, next = -INFINITY;
        const double *s = scores + (size_t)z * n;
        for (int e = 0; e < n; e++) {
            int rank = 0;
            for (int f = 0; f < n; f++) rank += s[f] > s[e] || (s[f] == s[e] && f < e);
            if (rank == k - 1) kth = s[e];
            if (rank == k) next = s[e];
        }
        if (k < n && kth - next < worst) worst = kth - next;
    }
    return worst / ((double)m / n);
}

static int differing_inputs = 0; /* batches whose inputs kept different experts */

static void random_case(const int *shape, uint64_t seed)
{
    const int b = shape[0], m = shape[1], d = shape[2], n = shape[3], p = shape[4], h = shape[5];
    const int ks[3] = {1, n / 2 > 1 ? n / 2 : 1, n - 1};
    size_t io = (size_t)b * m * d;
    float *x = malloc(io * 4), *y[2], *y_all = malloc(io * 4);
    double *want = malloc(io * sizeof(double)), *scores = malloc((size_t)b * n * sizeof(double));
    int *kept = malloc((size_t)b * n * sizeof(int));
    y[0] = malloc(io * 4), y[1] = malloc(io * 4);
    layer L;
    /* a draw whose scores separate the k-th expert clearly (almost always the first) */
    for (int attempt = 0;; attempt++) {
        random_layer(&L, b, m, d, n, p, h, seed + 1000003u * (uint64_t)attempt, x);
        double margin = INFINITY;
        for (int t = 0; t < 3; t++) {
            reference(&L, x, ks[t], 0, want, scores, kept);
            double g = score_margin(scores, b, n, m, ks[t]);
            if (g < margin) margin = g;
        }
        if (margin > 1e-3 || attempt == 20) {
            CHECK_MSG(margin > 1e-3, "no well-separated draw for shape %d,%d,%d,%d,%d,%d", b, m, d, n, p, h);
            break;
        }
        layer_free(&L);
    }
    smoe_model *model[2] = {layer_load(ctxs[0], &L), layer_load(ctxs[1], &L)};
    for (int t = 0; t < 3 && model[0] && model[1]; t++)
        for (int renorm = 0; renorm < 2; renorm++) {
            int k = ks[t];
            reference(&L, x, k, renorm, want, scores, kept);
            for (int z = 1; z < b; z++) differing_inputs += memcmp(kept, kept + (size_t)z * n, (size_t)n * sizeof(int)) != 0;
            for (int dv = 0; dv < 2; dv++) {
                CHECK(smoe_model_set_keep_experts(model[dv], k, renorm) == SMOE_OK);
                forward(ctxs[dv], model[dv], &L, x, y[dv]);
                double e = rel_err_f64(y[dv], want, io);
                if (e > worst_ref) worst_ref = e;
                CHECK_MSG(e <= TOL, "%s b=%d m=%d d=%d n=%d p=%d h=%d k=%d renormalize=%d: %.3g from the reference",
                          devices[dv], b, m, d, n, p, h, k, renorm, e);
            }
            double e = test_rel_err(y[1], y[0], io);
            if (e > worst_paths) worst_paths = e;
            CHECK_MSG(e <= TOL, "b=%d m=%d d=%d n=%d p=%d h=%d k=%d: CPU and Vulkan differ by %.3g", b, m, d, n, p, h, k, e);
        }
    /* k = n through the subset machinery (the setting stores it as "all", so set it inside) is
     * the plain layer bit for bit; and the setting set back to all gives the plain layer again */
    for (int dv = 0; dv < 2 && model[0] && model[1]; dv++) {
        CHECK(smoe_model_set_keep_experts(model[dv], 0, 0) == SMOE_OK);
        forward(ctxs[dv], model[dv], &L, x, y_all);
        model[dv]->keep.k = n;
        forward(ctxs[dv], model[dv], &L, x, y[dv]);
        CHECK_MSG(!memcmp(y[dv], y_all, io * 4), "%s b=%d m=%d d=%d n=%d p=%d h=%d: k = n through the subset differs by %.3g",
                  devices[dv], b, m, d, n, p, h, test_rel_err(y[dv], y_all, io));
        model[dv]->keep.k = 0;
        forward(ctxs[dv], model[dv], &L, x, y[dv]);
        CHECK(!memcmp(y[dv], y_all, io * 4));
    }
    smoe_model_free(model[0]);
    smoe_model_free(model[1]);
    layer_free(&L);
    free(x), free(y[0]), free(y[1]), free(y_all), free(want), free(scores), free(kept);
}

static void random_cases(void)
{
    /* b, m, d, n, p, h */
    const int shapes[][6] = {
        {1, 7, 16, 3, 3, 40}, {2, 16, 32, 4, 2, 64}, {3, 10, 24, 8, 1, 48}, {5, 9, 33, 7, 2, 65},
        {4, 33, 20, 16, 1, 17}, {2, 65, 17, 5, 3, 33}, {6, 12, 9, 12, 2, 13},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) random_case(shapes[i], 0xabc0 + i);
    CHECK_MSG(differing_inputs > 0, "no batch had inputs keeping different experts");
}

/* ---- 4. random subsets ---- */

/* The experts that gave token mass to sequence z (the hand case's y shows them). */
static unsigned kept_set(const float *y, int z)
{
    unsigned set = 0;
    for (int i = 0; i < 6; i++)
        for (int e = 0; e < 4; e++)
            if (y[((size_t)z * 6 + i) * 6 + e] != 0.0f) set |= 1u << e;
    return set;
}

static void random_subsets(void)
{
    enum { CALLS = 12 };
    layer L;
    float x[3 * 6 * 6], y[2][CALLS][3 * 6 * 6], again[3 * 6 * 6];
    hand_layer(&L, x);
    const size_t io = sizeof x / sizeof x[0];
    for (int dv = 0; dv < 2; dv++) {
        smoe_model *model = layer_load(ctxs[dv], &L);
        if (!model) return;
        CHECK(smoe_model_set_random_experts(model, 2, 0, 12345) == SMOE_OK);
        int k = 0, renorm = -1, random = 0;
        CHECK(smoe_model_get_keep_experts(model, &k, &renorm, &random) == SMOE_OK && k == 2 && renorm == 0 && random == 1);
        for (int c = 0; c < CALLS; c++) forward(ctxs[dv], model, &L, x, y[dv][c]);
        /* the same seed again: the same draws */
        CHECK(smoe_model_set_random_experts(model, 2, 0, 12345) == SMOE_OK);
        forward(ctxs[dv], model, &L, x, again);
        CHECK_MSG(!memcmp(again, y[dv][0], sizeof again), "%s: the same seed drew differently", devices[dv]);
        CHECK(smoe_model_set_random_experts(model, 2, 0, 54321) == SMOE_OK);
        forward(ctxs[dv], model, &L, x, again);
        CHECK_MSG(memcmp(again, y[dv][0], sizeof again), "%s: another seed drew the same", devices[dv]);
        smoe_model_free(model);
    }
    unsigned seen[3] = {0};
    int changed = 0;
    for (int c = 0; c < CALLS; c++) {
        double e = test_rel_err(y[1][c], y[0][c], io);
        CHECK_MSG(e <= TOL_HAND, "random subsets, call %d: CPU and Vulkan differ by %.3g", c, e);
        for (int z = 0; z < 3; z++) {
            unsigned s = kept_set(y[0][c], z);
            CHECK_MSG(__builtin_popcount(s) == 2, "random subsets: sequence %d kept experts 0x%x, not 2", z, s);
            CHECK(kept_set(y[1][c], z) == s);
            seen[z] |= s;
            if (c) changed += s != kept_set(y[0][c - 1], z);
        }
    }
    for (int z = 0; z < 3; z++) CHECK_MSG(seen[z] == 0xf, "random subsets: sequence %d never kept some expert (0x%x)", z, seen[z]);
    CHECK_MSG(changed > 0, "random subsets never changed between calls");
    layer_free(&L);
}

/* ---- 5. a ViT ---- */

/* A ViT with two Soft MoE blocks (8 experts of 2 slots) and random parameters, as a file image. */
static uint8_t *random_vit(smoe_context *ctx, size_t *size)
{
    smoe_vit_config c = {.image_size = 16, .patch_size = 4, .channels = 1, .dim = 24, .depth = 3, .heads = 2,
                         .mlp_dim = 40, .experts = 8, .slots_per_expert = 2, .num_classes = 5};
    c.moe_layers[0] = 1, c.moe_layers[1] = 2, c.moe_count = 2;
    const char *json = "{\"image_size\": 16, \"patch_size\": 4, \"channels\": 1, \"dim\": 24, \"depth\": 3, \"heads\": 2, "
                       "\"mlp_dim\": 40, \"moe_layers\": [1, 2], \"experts\": 8, \"slots_per_expert\": 2, \"num_classes\": 5}";
    smoe_model *proto = NULL;
    CHECK(smoe_vit_create(ctx, &c, 1, &proto) == SMOE_OK);
    if (!proto) return NULL;
    int np = smoe_model_param_count(proto);
    smoe_st_entry *e = calloc((size_t)np, sizeof *e);
    float **data = calloc((size_t)np, sizeof *data);
    uint64_t seed = 4242;
    for (int i = 0; i < np; i++) {
        smoe_param_info info;
        smoe_model_param_info(proto, i, &info);
        data[i] = malloc(info.count * 4);
        int is_scale = strstr(info.name, "moe.scale") != NULL, is_norm = strstr(info.name, "norm") != NULL;
        int64_t fan_in = info.ndim >= 2 ? info.shape[info.ndim - 1] : 1;
        for (size_t j = 0; j < info.count; j++)
            data[i][j] = is_scale ? 3.0f : (is_norm ? 1.0f : 0.0f) + test_rand(&seed) / sqrtf((float)fan_in);
        e[i] = (smoe_st_entry){info.name, SMOE_F32, info.ndim ? info.ndim : 1, {1}, data[i]};
        for (int k = 0; k < info.ndim; k++) e[i].shape[k] = info.shape[k];
    }
    smoe_st_meta meta[2] = {{"softmoe.kind", "vit"}, {"softmoe.config", (char *)json}};
    uint8_t *img = NULL;
    smoe_err err;
    CHECK(smoe_st_serialize(e, np, meta, 2, &img, size, &err) == SMOE_OK);
    for (int i = 0; i < np; i++) free(data[i]);
    free(data), free(e);
    smoe_model_free(proto);
    return img;
}

static void vit_case(void)
{
    enum { B = 5, PIX = 16 * 16, CL = 5 };
    size_t size = 0;
    uint8_t *img = random_vit(ctxs[0], &size);
    if (!img) return;
    float images[B * PIX], all[2][B * CL], got[2][B * CL], async[B * CL];
    uint64_t seed = 99;
    for (int i = 0; i < B * PIX; i++) images[i] = 0.5f + 0.5f * test_rand(&seed);
    smoe_model *vit[2] = {NULL, NULL};
    for (int dv = 0; dv < 2; dv++) {
        CHECK_MSG(smoe_model_load_memory(ctxs[dv], img, size, &vit[dv]) == SMOE_OK, "%s", smoe_last_error(ctxs[dv]));
        if (!vit[dv]) return;
        CHECK(smoe_vit_infer(vit[dv], B, images, all[dv]) == SMOE_OK);
        /* k = n through the subset machinery: bit for bit the plain model */
        vit[dv]->keep.k = 8;
        CHECK(smoe_vit_infer(vit[dv], B, images, got[dv]) == SMOE_OK);
        CHECK_MSG(!memcmp(got[dv], all[dv], sizeof got[dv]), "%s ViT: k = n through the subset differs by %.3g",
                  devices[dv], test_rel_err(got[dv], all[dv], B * CL));
        vit[dv]->keep.k = 0;
    }
    free(img);
    const int ks[3] = {1, 2, 4};
    for (int t = 0; t < 3; t++)
        for (int renorm = 0; renorm < 2; renorm++) {
            for (int dv = 0; dv < 2; dv++) {
                CHECK(smoe_model_set_keep_experts(vit[dv], ks[t], renorm) == SMOE_OK);
                CHECK_MSG(smoe_vit_infer(vit[dv], B, images, got[dv]) == SMOE_OK, "%s", smoe_last_error(ctxs[dv]));
                /* asynchronous inference runs the same program */
                smoe_job *job = NULL;
                CHECK(smoe_vit_infer_async(vit[dv], B, images, async, &job) == SMOE_OK);
                CHECK(smoe_job_wait(job) == SMOE_OK);
                smoe_job_free(job);
                CHECK_MSG(!memcmp(async, got[dv], sizeof async), "%s ViT k=%d: asynchronous inference differs", devices[dv],
                          ks[t]);
                CHECK_MSG(test_rel_err(got[dv], all[dv], B * CL) > 1e-3, "%s ViT k=%d: keeping fewer experts changed nothing",
                          devices[dv], ks[t]);
            }
            double e = test_rel_err(got[1], got[0], B * CL);
            if (e > worst_paths) worst_paths = e;
            CHECK_MSG(e <= TOL, "ViT k=%d renormalize=%d: CPU and Vulkan logits differ by %.3g", ks[t], renorm, e);
        }
    /* gradients need all experts */
    int32_t labels[B] = {0, 1, 2, 3, 4};
    float loss = 0;
    smoe_train_config cfg;
    smoe_train_config_default(&cfg);
    for (int dv = 0; dv < 2; dv++) {
        CHECK(smoe_model_set_keep_experts(vit[dv], 2, 0) == SMOE_OK);
        CHECK(smoe_vit_loss_grads(vit[dv], B, images, labels, &loss, NULL) == SMOE_ERROR_INVALID_ARGUMENT);
        CHECK(strstr(smoe_last_error(ctxs[dv]), "all experts") != NULL);
        CHECK(smoe_vit_train_step(vit[dv], &cfg, B, images, labels, &loss, NULL) == SMOE_ERROR_INVALID_ARGUMENT);
        CHECK(smoe_model_train_step_count(vit[dv]) == 0);
        CHECK(smoe_model_set_keep_experts(vit[dv], 0, 0) == SMOE_OK);
        CHECK(smoe_vit_loss_grads(vit[dv], B, images, labels, &loss, NULL) == SMOE_OK);
        CHECK(smoe_vit_infer(vit[dv], B, images, got[dv]) == SMOE_OK && !memcmp(got[dv], all[dv], sizeof got[dv]));
        /* a setting cannot change under an unfinished job */
        smoe_job *job = NULL;
        CHECK(smoe_vit_infer_async(vit[dv], B, images, async, &job) == SMOE_OK);
        CHECK(smoe_model_set_keep_experts(vit[dv], 1, 0) == SMOE_ERROR_INVALID_ARGUMENT);
        smoe_job_free(job);
        int k = -1;
        CHECK(smoe_model_get_keep_experts(vit[dv], &k, NULL, NULL) == SMOE_OK && k == 0);
        smoe_model_free(vit[dv]);
    }
}

/* ---- 6. settings ---- */

static void settings(void)
{
    layer L;
    float x[3 * 6 * 6], y1[3 * 6 * 6], y2[3 * 6 * 6], y[3 * 6 * 6], dy[3 * 6 * 6];
    hand_layer(&L, x);
    for (size_t i = 0; i < sizeof dy / sizeof dy[0]; i++) dy[i] = 0.01f * (float)(i % 7);
    for (int dv = 0; dv < 2; dv++) {
        smoe_context *ctx = ctxs[dv];
        smoe_model *model = layer_load(ctx, &L);
        if (!model) continue;
        int k = -1, renorm = -1, random = -1;
        CHECK(smoe_model_get_keep_experts(model, &k, &renorm, &random) == SMOE_OK && k == 0 && renorm == 0 && random == 0);
        CHECK(smoe_model_set_keep_experts(model, 2, 1) == SMOE_OK);
        /* refused, and nothing changes */
        CHECK(smoe_model_set_keep_experts(model, -1, 0) == SMOE_ERROR_INVALID_ARGUMENT);
        CHECK(strstr(smoe_last_error(ctx), "at least 0") != NULL);
        CHECK(smoe_model_set_keep_experts(model, 1, 2) == SMOE_ERROR_INVALID_ARGUMENT);
        CHECK(smoe_model_set_random_experts(model, -3, 0, 1) == SMOE_ERROR_INVALID_ARGUMENT);
        CHECK(smoe_model_set_keep_experts(NULL, 1, 0) == SMOE_ERROR_INVALID_ARGUMENT);
        CHECK(smoe_model_get_keep_experts(NULL, &k, NULL, NULL) == SMOE_ERROR_INVALID_ARGUMENT);
        CHECK(smoe_model_get_keep_experts(model, &k, &renorm, &random) == SMOE_OK && k == 2 && renorm == 1 && random == 0);
        /* gradients refused while experts are dropped */
        CHECK(smoe_layer_forward_backward(model, 3, 6, x, dy, y, NULL, NULL) == SMOE_ERROR_INVALID_ARGUMENT);
        CHECK(strstr(smoe_last_error(ctx), "all experts") != NULL);
        /* k >= n is all experts */
        CHECK(smoe_model_set_keep_experts(model, 9, 1) == SMOE_OK);
        CHECK(smoe_model_get_keep_experts(model, &k, &renorm, NULL) == SMOE_OK && k == 0 && renorm == 0);
        CHECK_MSG(smoe_layer_forward_backward(model, 3, 6, x, dy, y2, NULL, NULL) == SMOE_OK, "%s", smoe_last_error(ctx));
        /* the program follows the setting: 1, 3, back to 1, then all */
        CHECK(smoe_model_set_keep_experts(model, 1, 0) == SMOE_OK);
        forward(ctx, model, &L, x, y1);
        CHECK(smoe_model_set_keep_experts(model, 3, 0) == SMOE_OK);
        forward(ctx, model, &L, x, y);
        CHECK(memcmp(y, y1, sizeof y) != 0);
        CHECK(smoe_model_set_keep_experts(model, 1, 0) == SMOE_OK);
        forward(ctx, model, &L, x, y);
        CHECK_MSG(!memcmp(y, y1, sizeof y), "%s: the same setting again gives another result", devices[dv]);
        CHECK(smoe_model_set_keep_experts(model, 0, 0) == SMOE_OK);
        forward(ctx, model, &L, x, y);
        CHECK_MSG(!memcmp(y, y2, sizeof y), "%s: all experts again differs from forward_backward's y", devices[dv]);
        smoe_model_free(model);

        /* a ViT without Soft MoE layers has no experts to keep */
        smoe_vit_config c = {.image_size = 8, .patch_size = 4, .channels = 1, .dim = 8, .depth = 1, .heads = 1,
                             .mlp_dim = 8, .num_classes = 3};
        smoe_model *dense = NULL;
        CHECK(smoe_vit_create(ctx, &c, 1, &dense) == SMOE_OK);
        CHECK(smoe_model_set_keep_experts(dense, 1, 0) == SMOE_ERROR_INVALID_ARGUMENT);
        CHECK(strstr(smoe_last_error(ctx), "no Soft MoE layer") != NULL);
        CHECK(smoe_model_set_keep_experts(dense, 0, 0) == SMOE_OK);
        smoe_model_free(dense);
    }
    layer_free(&L);
}

int main(void)
{
    for (int dv = 0; dv < 2; dv++) ctxs[dv] = test_open(devices[dv]);
    if (!ctxs[0] || !ctxs[1]) return test_finish("test_expert_subset");
    hand_case();
    random_cases();
    printf("  worst relative error vs the float64 reference: %.3g\n", worst_ref);
    random_subsets();
    vit_case();
    printf("  worst relative error CPU vs Vulkan: %.3g\n", worst_paths);
    settings();
    for (int dv = 0; dv < 2; dv++) test_close(ctxs[dv]);
    return test_finish("test_expert_subset");
}
