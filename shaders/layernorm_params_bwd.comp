#version 450
// LayerNorm backward for the parameters: dgamma[c] = sum_r dy[r, c] * xh[r, c], dbeta[c] =
// sum_r dy[r, c]. x invocations walk columns, y invocations split the rows; then a tree over y.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
#include "common/interface.h"
#include "common/util.glsl"

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer Mean { float mean[]; };
layout(std430, binding = 2) readonly buffer Rstd { float rstd[]; };
layout(std430, binding = 3) readonly buffer DY { float dy[]; };
layout(std430, binding = 4) writeonly buffer DGamma { float dgamma[]; };
layout(std430, binding = 5) writeonly buffer DBeta { float dbeta[]; };
SMOE_PUSH(SMOE_PUSH_ROWS)

shared float pg[gl_WorkGroupSize.x * gl_WorkGroupSize.y];
shared float pb[gl_WorkGroupSize.x * gl_WorkGroupSize.y];

void main()
{
    uint col = group_linear(pc.groups_x) * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    float ag = 0.0, ab = 0.0;
    if (col < pc.cols)
        for (uint r = gl_LocalInvocationID.y; r < pc.rows; r += gl_WorkGroupSize.y) {
            uint i = r * pc.cols + col;
            float g = dy[i];
            ag += g * (x[i] - mean[r]) * rstd[r];
            ab += g;
        }
    uint t = gl_LocalInvocationID.y * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    pg[t] = ag;
    pb[t] = ab;
    barrier();
    for (uint w = gl_WorkGroupSize.y / 2; w > 0; w /= 2) {
        if (gl_LocalInvocationID.y < w) {
            pg[t] += pg[t + w * gl_WorkGroupSize.x];
            pb[t] += pb[t + w * gl_WorkGroupSize.x];
        }
        barrier();
    }
    if (gl_LocalInvocationID.y == 0 && col < pc.cols) {
        dgamma[col] = pg[gl_LocalInvocationID.x];
        dbeta[col] = pb[gl_LocalInvocationID.x];
    }
}
