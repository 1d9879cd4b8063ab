#version 450
// The sparse layers' dispatch into the experts' buffers: dst[slot, :] = src[token of slot, :]
// (times the slot's gate when WEIGHTED: the gradient flowing into the experts), 0 for an empty
// slot; rows = n*R slots of width d.
#extension GL_GOOGLE_include_directive : require
#include "common/sparse_interface.h"
#include "common/util.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint WEIGHTED = 0;

layout(std430, binding = 0) readonly buffer Src { float src[]; };
layout(std430, binding = 1) readonly buffer SlotToken { uint slot_token[]; };
layout(std430, binding = 2) readonly buffer SlotGate { float slot_gate[]; };
layout(std430, binding = 3) writeonly buffer Dst { float dst[]; };
SMOE_PUSH(SMOE_PUSH_SLOTS)

void main()
{
    uint item = item_linear(pc.groups_x, gl_WorkGroupSize.x);
    if (item >= pc.rows * pc.d) return;
    uint slot = item / pc.d, k = item % pc.d, tok = slot_token[slot];
    float v = 0.0;
    if (tok != SMOE_NO_SLOT_U) v = src[tok * pc.d + k] * (WEIGHTED != 0 ? slot_gate[slot] : 1.0);
    dst[item] = v;
}
