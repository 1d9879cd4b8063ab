#version 450
// y[e] = alpha * x[(e / (rows*cols))*cols + e % cols] (+ y[e] when accumulate), e < n: y += x
// (rows 1), a vector added to every row (position embedding), a row per batch repeated over
// rows (mean pooling backward).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
#include "common/interface.h"
#include "common/util.glsl"

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) buffer Y { float y[]; };
SMOE_PUSH(SMOE_PUSH_BCAST)

void main()
{
    uint e = item_linear(pc.groups_x, gl_WorkGroupSize.x);
    if (e >= pc.n) return;
    uint z = e / (pc.rows * pc.cols), j = e % pc.cols;
    float v = pc.alpha * x[z * pc.cols + j];
    if (pc.accumulate != 0) v += y[e];
    y[e] = v;
}
