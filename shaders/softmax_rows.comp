#version 450
// Softmax over every row of a [rows, cols] matrix, in place (attention probabilities), one
// workgroup (or invocation: util.glsl) per row.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
#define SMOE_WG_REDUCE
#define SMOE_ROW_KERNEL
#include "common/interface.h"
#include "common/util.glsl"

layout(std430, binding = 0) buffer S { float s[]; };
SMOE_PUSH(SMOE_PUSH_ROWS)

void main()
{
    uint r = row_of(pc.groups_x);
    if (r >= pc.rows) return; // uniform over the workgroup (a row per workgroup), or no barrier follows
    uint t = row_lane(), base = r * pc.cols;
    float mx = -3.4e38;
    for (uint i = t; i < pc.cols; i += row_step()) mx = max(mx, s[base + i]);
    mx = wg_max(mx);
    float sum = 0.0;
    for (uint i = t; i < pc.cols; i += row_step()) sum += exp(s[base + i] - mx);
    float inv = 1.0 / wg_sum(sum);
    for (uint i = t; i < pc.cols; i += row_step()) s[base + i] = exp(s[base + i] - mx) * inv;
}
