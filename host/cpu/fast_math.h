/* Vectorisable float helpers shared by the CPU kernels: libm's expf and tanhf do not vectorise
 * and would dominate the softmaxes and GELUs. */
#ifndef SMOE_FAST_MATH_H
#define SMOE_FAST_MATH_H

#include <stdint.h>
#include <string.h>

static inline uint32_t float_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline float bits_float(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* e^x for x in [-87, 88], relative error ~2 float ulps: n = round(x/ln2) with the 1.5*2^23
 * trick, e^r on r = x - n ln2 by its Taylor series, times 2^n through the exponent bits.
 * Branch-free, so that loops over it vectorise. */
static inline float exp_core(float x)
{
    const float shifter = 12582912.0f; /* 1.5 * 2^23: t's low mantissa bits hold n */
    const float t = x * 1.44269504088896341f + shifter;
    const float n = t - shifter;
    const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f; /* ln2 in two parts */
    const float e = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
    return bits_float(float_bits(e) + ((float_bits(t) - 0x4B400000u) << 23));
}

#endif
