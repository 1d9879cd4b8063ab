#version 450
// Inverse l2 norms 1/sqrt(sum v^2 + 1e-6) of the rows (tokens of X) or the columns (slots of phi)
// of a [rows x cols] matrix per batch z; one workgroup per vector.
#extension GL_GOOGLE_include_directive : require
#include "common/interface.h"
#include "common/util.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint AXIS = SMOE_AXIS_ROWS;
layout(std430, binding = 0) readonly buffer In { float x[]; };
layout(std430, binding = 1) writeonly buffer Out { float inv[]; };
SMOE_PUSH(SMOE_PUSH_REDUCE)

shared float part[gl_WorkGroupSize.x];

void main()
{
    uint v = group_linear(pc.groups_x);
    uint count = AXIS == SMOE_AXIS_ROWS ? pc.rows : pc.cols;
    if (v >= count) return; // whole workgroup leaves together
    uint len = AXIS == SMOE_AXIS_ROWS ? pc.cols : pc.rows;
    uint base = gl_WorkGroupID.z * pc.in_bs + (AXIS == SMOE_AXIS_ROWS ? v * pc.cols : v);
    uint stride = AXIS == SMOE_AXIS_ROWS ? 1 : pc.cols;
    float acc = 0.0;
    for (uint i = gl_LocalInvocationID.x; i < len; i += gl_WorkGroupSize.x) {
        float e = x[base + i * stride];
        acc += e * e;
    }
    part[gl_LocalInvocationID.x] = acc;
    barrier();
    for (uint w = gl_WorkGroupSize.x / 2; w > 0; w /= 2) {
        if (gl_LocalInvocationID.x < w) part[gl_LocalInvocationID.x] += part[gl_LocalInvocationID.x + w];
        barrier();
    }
    if (gl_LocalInvocationID.x == 0) inv[gl_WorkGroupID.z * pc.out_bs + v] = inversesqrt(part[0] + 1e-6);
}
