#version 450
// Sums over rows per batch z: y[z*cols + c] = alpha * sum_r x[(z*rows + r)*cols + c]. x invocations
// walk columns, y invocations split the rows; then a tree over y. Bias gradients, the position
// embedding's gradient, mean pooling, the mean of the losses.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
#include "common/interface.h"
#include "common/util.glsl"

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Y { float y[]; };
SMOE_PUSH(SMOE_PUSH_SUMROWS)

shared float part[gl_WorkGroupSize.x * gl_WorkGroupSize.y];

void main()
{
    uint col = group_linear(pc.groups_x) * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    uint z = gl_WorkGroupID.z;
    float acc = 0.0;
    if (col < pc.cols)
        for (uint r = gl_LocalInvocationID.y; r < pc.rows; r += gl_WorkGroupSize.y) acc += x[(z * pc.rows + r) * pc.cols + col];
    uint t = gl_LocalInvocationID.y * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    part[t] = acc;
    barrier();
    for (uint w = gl_WorkGroupSize.y / 2; w > 0; w /= 2) {
        if (gl_LocalInvocationID.y < w) part[t] += part[t + w * gl_WorkGroupSize.x];
        barrier();
    }
    if (gl_LocalInvocationID.y == 0 && col < pc.cols) y[z * pc.cols + col] = pc.alpha * part[gl_LocalInvocationID.x];
}
