#version 450
// The gradient of a combine weight, one workgroup per expert slot: dlogits[token, expert] =
// dy[token, :] . out[slot, :] (out includes b2); empty slots leave their zeros.
#extension GL_GOOGLE_include_directive : require
#include "common/sparse_interface.h"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
#define SMOE_WG_REDUCE
#include "common/util.glsl"

layout(std430, binding = 0) readonly buffer Dy { float dy[]; };
layout(std430, binding = 1) readonly buffer Out { float outs[]; };
layout(std430, binding = 2) readonly buffer SlotToken { uint slot_token[]; };
layout(std430, binding = 3) writeonly buffer Dl { float dl[]; };
SMOE_PUSH(SMOE_PUSH_SLOTS)

void main()
{
    uint slot = group_linear(pc.groups_x);
    if (slot >= pc.rows) return;
    uint tok = slot_token[slot];
    if (tok == SMOE_NO_SLOT_U) return; // the whole workgroup: before any barrier
    float acc = 0.0;
    for (uint k = gl_LocalInvocationID.x; k < pc.d; k += gl_WorkGroupSize.x) acc += dy[tok * pc.d + k] * outs[slot * pc.d + k];
    acc = wg_sum(acc);
    if (gl_LocalInvocationID.x == 0) dl[tok * pc.experts + slot / pc.expert_rows] = acc;
}
