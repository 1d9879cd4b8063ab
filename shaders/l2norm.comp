#version 450
// Inverse l2 norms 1/sqrt(sum v^2 + 1e-6) of the rows (tokens of X) or the columns (slots of phi)
// of a [rows x cols] matrix per batch z; one workgroup (or invocation: util.glsl) per vector.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
#define SMOE_WG_REDUCE
#define SMOE_ROW_KERNEL
#include "common/interface.h"
#include "common/util.glsl"

layout(constant_id = 3) const uint AXIS = SMOE_AXIS_ROWS;
layout(std430, binding = 0) readonly buffer In { float x[]; };
layout(std430, binding = 1) writeonly buffer Out { float inv[]; };
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
    for (uint i = row_lane(); i < len; i += row_step()) {
        float e = x[base + i * stride];
        acc += e * e;
    }
    acc = wg_sum(acc);
    if (row_lane() == 0) inv[gl_WorkGroupID.z * pc.out_bs + v] = inversesqrt(acc + 1e-6);
}
