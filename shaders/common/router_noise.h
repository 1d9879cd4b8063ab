/* The sparse routers' training noise, the expert-subset random baseline's draws and the normal
 * distribution's tail, written once for C (host/cpu) and GLSL (shaders/).
 *
 * smoe_router_normal(step, layer, token, expert) is a standard normal sample drawn from a hash of
 * its four counters (Box-Muller on two 23/24-bit uniforms). It uses only integer operations and
 * float additions, subtractions and multiplications, which C and every Vulkan implementation
 * round correctly (SPIR-V's log, cos, sqrt and division may be a few ulps off, so they are not
 * used; GLSL marks each result precise so that no driver fuses a multiply and an add), hence the
 * CPU path and any GPU draw the same bits: a training run is reproducible on every device and
 * resumes exactly. log, sqrt and cos come from range reduction and short series.
 *
 * smoe_normal_sf(z) = 1 - Phi(z), from Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7),
 * for the Tokens Choice load loss; it uses exp and a division, so the paths agree to rounding. */
#ifndef SMOE_ROUTER_NOISE_H
#define SMOE_ROUTER_NOISE_H

#ifdef VULKAN
#define SMOE_RN_FN
#define SMOE_RN_U uint
#define SMOE_RN_I int
#define SMOE_RN_EXACT precise float
#define SMOE_RN_TO_FLOAT(x) float(x)
#define SMOE_RN_TO_INT(x) int(x)
#define SMOE_RN_TO_UINT(x) uint(x)
#define SMOE_RN_BITS(f) floatBitsToUint(f)
#define SMOE_RN_FROM_BITS(u) uintBitsToFloat(u)
#define SMOE_RN_FLOOR(x) floor(x)
#define SMOE_RN_EXP(x) exp(x)
#else
#include <stdint.h>
#include <string.h>
#define SMOE_RN_FN static inline
#define SMOE_RN_U uint32_t
#define SMOE_RN_I int32_t
#define SMOE_RN_EXACT float
#define SMOE_RN_TO_FLOAT(x) ((float)(x))
#define SMOE_RN_TO_INT(x) ((int32_t)(x))
#define SMOE_RN_TO_UINT(x) ((uint32_t)(x))
#define SMOE_RN_BITS(f) smoe_rn_bits(f)
#define SMOE_RN_FROM_BITS(u) smoe_rn_from_bits(u)
#define SMOE_RN_FLOOR(x) floorf(x)
#define SMOE_RN_EXP(x) expf(x)
#include <math.h>
static inline uint32_t smoe_rn_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float smoe_rn_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}
#endif

/* A 32-bit integer hash with good avalanche (two multiply-xorshift rounds). */
SMOE_RN_FN SMOE_RN_U smoe_rn_hash(SMOE_RN_U x)
{
    x ^= x >> 16;
    x *= 0x21f0aaadu;
    x ^= x >> 15;
    x *= 0x735a2d97u;
    x ^= x >> 15;
    return x;
}

/* ln(u) for 0 < u < 1 (a normal float): u = 2^e m with m in (sqrt(1/2), sqrt(2)], then
 * ln m = 2 atanh(s), s = (m-1)/(m+1), whose reciprocal comes from Newton steps. */
SMOE_RN_FN float smoe_rn_log(float u)
{
    SMOE_RN_U bits = SMOE_RN_BITS(u);
    SMOE_RN_I e = SMOE_RN_TO_INT(bits >> 23) - 127;
    SMOE_RN_EXACT m = SMOE_RN_FROM_BITS((bits & 0x7fffffu) | 0x3f800000u);
    if (m > 1.41421354f) {
        m = m * 0.5f;
        e += 1;
    }
    SMOE_RN_EXACT f = m - 1.0f;
    SMOE_RN_EXACT den = f + 2.0f;              /* in [1.71, 2.42] */
    SMOE_RN_EXACT r = 1.0f - 0.242640689f * den; /* 1/den within 3%; each step squares the error */
    r = r * (2.0f - den * r);
    r = r * (2.0f - den * r);
    r = r * (2.0f - den * r);
    SMOE_RN_EXACT s = f * r;
    SMOE_RN_EXACT s2 = s * s;
    SMOE_RN_EXACT series =
        1.0f + s2 * (0.333333343f + s2 * (0.200000003f + s2 * (0.142857149f + s2 * (0.111111112f + s2 * 0.0909090936f))));
    SMOE_RN_EXACT lnm = 2.0f * s * series;
    SMOE_RN_EXACT res = SMOE_RN_TO_FLOAT(e) * 0.693147182f + lnm;
    return res;
}

/* sqrt(x) for a normal x > 0: x times 1/sqrt(x) from the bit estimate and three Newton steps. */
SMOE_RN_FN float smoe_rn_sqrt(float x)
{
    SMOE_RN_EXACT y = SMOE_RN_FROM_BITS(0x5f3759dfu - (SMOE_RN_BITS(x) >> 1));
    SMOE_RN_EXACT hx = 0.5f * x;
    y = y * (1.5f - hx * y * y);
    y = y * (1.5f - hx * y * y);
    y = y * (1.5f - hx * y * y);
    SMOE_RN_EXACT res = x * y;
    return res;
}

/* cos(2 pi t) for 0 <= t < 1: t = q/4 + r with |r| <= 1/8, then the series of cos or sin of
 * x = 2 pi r (|x| <= pi/4) by quadrant. */
SMOE_RN_FN float smoe_rn_cos_turns(float t)
{
    SMOE_RN_EXACT q = SMOE_RN_FLOOR(t * 4.0f + 0.5f);
    SMOE_RN_EXACT x = (t - q * 0.25f) * 6.28318548f;
    SMOE_RN_EXACT x2 = x * x;
    SMOE_RN_EXACT c = 1.0f + x2 * (-0.5f + x2 * (0.0416666679f + x2 * (-0.00138888892f + x2 * 2.48015876e-05f)));
    SMOE_RN_EXACT s = x * (1.0f + x2 * (-0.166666672f + x2 * (0.00833333377f + x2 * -0.000198412701f)));
    SMOE_RN_U quadrant = SMOE_RN_TO_UINT(q) & 3u;
    float res = quadrant == 0u ? c : quadrant == 1u ? -s : quadrant == 2u ? -c : s;
    return res;
}

/* A standard normal sample for (step, layer, token, expert). */
SMOE_RN_FN float smoe_router_normal(SMOE_RN_U step, SMOE_RN_U layer, SMOE_RN_U token, SMOE_RN_U expert)
{
    SMOE_RN_U h = smoe_rn_hash(step * 0x9e3779b9u + layer);
    h = smoe_rn_hash(h ^ token);
    SMOE_RN_U b1 = smoe_rn_hash(h ^ (expert * 2u));
    SMOE_RN_U b2 = smoe_rn_hash(h ^ (expert * 2u + 1u));
    SMOE_RN_EXACT u1 = SMOE_RN_TO_FLOAT(((b1 >> 9) << 1) | 1u) * 5.96046448e-08f; /* odd/2^24: in (0, 1) */
    SMOE_RN_EXACT u2 = SMOE_RN_TO_FLOAT(b2 >> 8) * 5.96046448e-08f;              /* in [0, 1) */
    SMOE_RN_EXACT res = smoe_rn_sqrt(-2.0f * smoe_rn_log(u1)) * smoe_rn_cos_turns(u2);
    return res;
}

/* The expert-subset random baseline's score of expert e for sequence z in a layer: 24 uniform bits
 * of a hash of the seed (two words), the call counter, the layer, z and e, in [0, 1). */
SMOE_RN_FN float smoe_rn_subset_score(SMOE_RN_U seed_lo, SMOE_RN_U seed_hi, SMOE_RN_U call, SMOE_RN_U layer, SMOE_RN_U z,
                                      SMOE_RN_U e)
{
    SMOE_RN_U h = smoe_rn_hash(seed_lo ^ 0x9e3779b9u);
    h = smoe_rn_hash(h ^ seed_hi);
    h = smoe_rn_hash(h ^ call);
    h = smoe_rn_hash(h ^ layer);
    h = smoe_rn_hash(h ^ z);
    h = smoe_rn_hash(h ^ e);
    return SMOE_RN_TO_FLOAT(h >> 8) * 5.96046448e-08f;
}

/* 1 - Phi(z), the standard normal's upper tail. */
SMOE_RN_FN float smoe_normal_sf(float z)
{
    float x = (z < 0.0f ? -z : z) * 0.707106781f;
    float t = 1.0f / (1.0f + 0.3275911f * x);
    float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    float half_erfc = 0.5f * poly * SMOE_RN_EXP(-x * x);
    return z < 0.0f ? 1.0f - half_erfc : half_erfc;
}

#endif
