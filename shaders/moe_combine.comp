#version 450
// The sparse layers' combine, one workgroup per token: dst[t, :] = sum over the token's slots
// (tok_slot [tokens, width]) of src[slot, :], times the slot's gate when WEIGHTED (the layer's
// output), or not (the gradient of x through the experts); rows = tokens.
#extension GL_GOOGLE_include_directive : require
#include "common/sparse_interface.h"
#include "common/util.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint WEIGHTED = 0;

layout(std430, binding = 0) readonly buffer Src { float src[]; };
layout(std430, binding = 1) readonly buffer TokSlot { uint tok_slot[]; };
layout(std430, binding = 2) readonly buffer SlotGate { float slot_gate[]; };
layout(std430, binding = 3) writeonly buffer Dst { float dst[]; };
SMOE_PUSH(SMOE_PUSH_SLOTS)

void main()
{
    uint t = group_linear(pc.groups_x);
    if (t >= pc.rows) return;
    for (uint k = gl_LocalInvocationID.x; k < pc.d; k += gl_WorkGroupSize.x) {
        float acc = 0.0;
        for (uint a = 0; a < pc.width; a++) {
            uint slot = tok_slot[t * pc.width + a];
            if (slot == SMOE_NO_SLOT_U) continue;
            acc += (WEIGHTED != 0 ? slot_gate[slot] : 1.0) * src[slot * pc.d + k];
        }
        dst[t * pc.d + k] = acc;
    }
}
