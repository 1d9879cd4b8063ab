#version 450
// Softmax backward over every row, in place on the gradient: dS = P * (dP - sum(dP * P)), one
// workgroup (or invocation: util.glsl) per row.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
#define SMOE_WG_REDUCE
#define SMOE_ROW_KERNEL
#include "common/interface.h"
#include "common/util.glsl"

layout(std430, binding = 0) readonly buffer P { float p[]; };
layout(std430, binding = 1) buffer G { float g[]; };
SMOE_PUSH(SMOE_PUSH_ROWS)

void main()
{
    uint r = row_of(pc.groups_x);
    if (r >= pc.rows) return; // uniform over the workgroup (a row per workgroup), or no barrier follows
    uint t = row_lane(), base = r * pc.cols;
    float dot = 0.0;
    for (uint i = t; i < pc.cols; i += row_step()) dot += p[base + i] * g[base + i];
    dot = wg_sum(dot);
    for (uint i = t; i < pc.cols; i += row_step()) g[base + i] = p[base + i] * (g[base + i] - dot);
}
