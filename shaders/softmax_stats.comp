#version 450
// Log-sum-exp of scale*P along one axis of the logits P [rows=m x cols=S] of every sequence z:
// per column (over tokens: the dispatch softmax) or per row (over slots: the combine softmax).
// With these, D and C are rebuilt on the fly and never stored.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
#define SMOE_WG_REDUCE
#define SMOE_ROW_KERNEL
#include "common/interface.h"
#include "common/util.glsl"

layout(constant_id = 3) const uint AXIS = SMOE_AXIS_ROWS;
layout(std430, binding = 0) readonly buffer In { float p[]; };
layout(std430, binding = 1) readonly buffer Scale { float scale[]; };
layout(std430, binding = 2) writeonly buffer Out { float lse[]; };
SMOE_PUSH(SMOE_PUSH_REDUCE)

void main()
{
    uint v = row_of(pc.groups_x);
    uint count = AXIS == SMOE_AXIS_ROWS ? pc.rows : pc.cols;
    if (v >= count) return; // whole workgroup leaves together, or no barrier follows
    uint len = AXIS == SMOE_AXIS_ROWS ? pc.cols : pc.rows;
    uint base = gl_WorkGroupID.z * pc.in_bs + (AXIS == SMOE_AXIS_ROWS ? v * pc.cols : v);
    uint stride = AXIS == SMOE_AXIS_ROWS ? 1 : pc.cols;
    float s = scale[0];
    float mx = -3.4e38;
    for (uint i = row_lane(); i < len; i += row_step()) mx = max(mx, s * p[base + i * stride]);
    mx = wg_max(mx);
    float sum = 0.0;
    for (uint i = row_lane(); i < len; i += row_step()) sum += exp(s * p[base + i * stride] - mx);
    sum = wg_sum(sum);
    if (row_lane() == 0) lse[gl_WorkGroupID.z * pc.out_bs + v] = mx + log(sum);
}
