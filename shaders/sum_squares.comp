#version 450
// Sum of squares in two levels. LEVEL 0: workgroup g of G writes the sum of x^2 over its strided
// share of n floats into out[g], and workgroup 0 zeroes out[G..seg) (the segment's padding).
// LEVEL 1: one workgroup writes the plain sum of n floats (the partials) into out[0].
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint LEVEL = 0;
#define SMOE_WG_REDUCE
#include "common/interface.h"
#include "common/util.glsl"

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Out { float o[]; };
SMOE_PUSH(SMOE_PUSH_SUMSQ)

void main()
{
    uint t = gl_LocalInvocationID.x, WG = gl_WorkGroupSize.x;
    uint g = gl_WorkGroupID.x, G = gl_NumWorkGroups.x;
    float acc = 0.0;
    for (uint i = g * WG + t; i < pc.n; i += G * WG) {
        float v = x[i];
        acc += LEVEL == 0 ? v * v : v;
    }
    acc = wg_sum(acc);
    if (t == 0) o[g] = acc;
    if (LEVEL == 0 && g == 0)
        for (uint i = G + t; i < pc.seg; i += WG) o[i] = 0.0;
}
