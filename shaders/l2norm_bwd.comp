#version 450
// Backward of v_hat = inv * v (inv = 1/sqrt(|v|^2 + eps)) for every row or column v of a
// [rows x cols] matrix, given Q = inv * G_vhat (the router backward folds the inv factor in):
//   G_v = Q - inv^2 * v * (v . Q)
// One workgroup (or invocation: util.glsl) per vector; ACCUMULATE adds to out (the token gradient also has a value part).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
#define SMOE_WG_REDUCE
#define SMOE_ROW_KERNEL
#include "common/interface.h"
#include "common/util.glsl"

layout(constant_id = 3) const uint AXIS = SMOE_AXIS_ROWS;
layout(constant_id = 4) const uint ACCUMULATE = 0;
layout(std430, binding = 0) readonly buffer V { float x[]; };
layout(std430, binding = 1) readonly buffer Q { float q[]; };
layout(std430, binding = 2) readonly buffer Inv { float inv[]; };
layout(std430, binding = 3) buffer Out { float o[]; };
SMOE_PUSH(SMOE_PUSH_REDUCE)

void main()
{
    uint v = row_of(pc.groups_x);
    uint count = AXIS == SMOE_AXIS_ROWS ? pc.rows : pc.cols;
    if (v >= count) return; // whole workgroup leaves together, or no barrier follows
    uint len = AXIS == SMOE_AXIS_ROWS ? pc.cols : pc.rows;
    uint base = gl_WorkGroupID.z * pc.in_bs + (AXIS == SMOE_AXIS_ROWS ? v * pc.cols : v);
    uint stride = AXIS == SMOE_AXIS_ROWS ? 1 : pc.cols;
    float acc = 0.0;
    for (uint i = row_lane(); i < len; i += row_step()) acc += x[base + i * stride] * q[base + i * stride];
    acc = wg_sum(acc);
    float s = inv[gl_WorkGroupID.z * pc.out_bs + v];
    float k = s * s * acc;
    for (uint i = row_lane(); i < len; i += row_step()) {
        uint e = base + i * stride;
        float g = q[e] - k * x[e];
        o[e] = ACCUMULATE != 0 ? o[e] + g : g;
    }
}
