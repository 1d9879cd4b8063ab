#version 450
// Column sums out[z*out_bs + c] (+)= sum_r X(z, r, c), X addressed like a matmul operand (rows in
// groups of x_g with stride x_gs): bias gradients over the rows routed to each expert, and the
// final sum of the scale gradient.
#extension GL_GOOGLE_include_directive : require
#include "common/interface.h"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint ACCUMULATE = 0;
layout(std430, binding = 0) readonly buffer In { float x[]; };
layout(std430, binding = 1) buffer Out { float o[]; };
SMOE_PUSH(SMOE_PUSH_COLSUM)

shared float part[gl_WorkGroupSize.x * gl_WorkGroupSize.y];

void main()
{
    // x threads walk columns, y threads split the rows; the y partial sums are then added.
    uint col = gl_WorkGroupID.x * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    uint z = gl_WorkGroupID.z;
    float acc = 0.0;
    if (col < pc.cols)
        for (uint r = gl_LocalInvocationID.y; r < pc.rows; r += gl_WorkGroupSize.y)
            acc += x[z * pc.x_bs + (r / pc.x_g) * pc.x_gs + (r % pc.x_g) * pc.x_ld + col];
    uint t = gl_LocalInvocationID.y * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    part[t] = acc;
    barrier();
    for (uint w = gl_WorkGroupSize.y / 2; w > 0; w /= 2) {
        if (gl_LocalInvocationID.y < w) part[t] += part[t + w * gl_WorkGroupSize.x];
        barrier();
    }
    if (gl_LocalInvocationID.y == 0 && col < pc.cols) {
        float v = part[gl_LocalInvocationID.x];
        if (ACCUMULATE != 0) v += o[z * pc.out_bs + col];
        o[z * pc.out_bs + col] = v;
    }
}
