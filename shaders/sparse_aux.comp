#version 450
// Tokens Choice's auxiliary losses. Phase 0, one workgroup per group: the importance
// I_e = sum_t probs and (LOAD) the load P_e = mean_t (1 - Phi((tau_t - logit_te) n)), their CV²
// (variance over mean², population variance) weighted and averaged over the groups into
// group_loss, and into stats [groups, 2, n] the gradients dAux/dI_e and dAux/dp_te. Phase 1, one
// workgroup: aux[0] = the sum of group_loss.
#extension GL_GOOGLE_include_directive : require
#include "common/sparse_interface.h"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
#define SMOE_WG_REDUCE
#include "common/util.glsl"
#include "common/router_noise.h"

layout(constant_id = 3) const uint PHASE = 0;
layout(constant_id = 4) const uint LOAD = 0;

layout(std430, binding = 0) readonly buffer Probs { float probs[]; };
layout(std430, binding = 1) readonly buffer Logits { float logits[]; };
layout(std430, binding = 2) readonly buffer Thresh { float thresh[]; };
layout(std430, binding = 3) buffer Stats { float stats[]; };
layout(std430, binding = 4) buffer GroupLoss { float group_loss[]; };
layout(std430, binding = 5) writeonly buffer Aux { float aux[]; };
SMOE_PUSH(SMOE_PUSH_AUX)

// CV² of the n values at stats[at + e] and, in their place, its gradient times weight; each
// invocation keeps to its own experts, so it reads back only what it wrote.
float cv2(uint at, float weight)
{
    uint n = pc.experts, tid = gl_LocalInvocationID.x;
    float s = 0.0;
    for (uint e = tid; e < n; e += gl_WorkGroupSize.x) s += stats[at + e];
    float mean = wg_sum(s) / float(n);
    float v = 0.0;
    for (uint e = tid; e < n; e += gl_WorkGroupSize.x) v += (stats[at + e] - mean) * (stats[at + e] - mean);
    float var = wg_sum(v) / float(n);
    bool ok = mean > 1e-30;
    for (uint e = tid; e < n; e += gl_WorkGroupSize.x)
        stats[at + e] = ok ? weight * (2.0 * (stats[at + e] - mean) / (float(n) * mean * mean) - 2.0 * var / (float(n) * mean * mean * mean)) : 0.0;
    return ok ? var / (mean * mean) : 0.0;
}

void main()
{
    uint tid = gl_LocalInvocationID.x, n = pc.experts;
    if (PHASE == 1) {
        float s = 0.0;
        for (uint g = tid; g < pc.groups; g += gl_WorkGroupSize.x) s += group_loss[g];
        s = wg_sum(s);
        if (tid == 0) aux[0] = s;
        return;
    }
    uint g = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    if (g >= pc.groups) return;
    uint first = g * pc.group, count = g + 1 == pc.groups ? pc.last : pc.group;
    uint imp = g * 2 * n, ld = imp + n;
    for (uint e = tid; e < n; e += gl_WorkGroupSize.x) {
        float si = 0.0, sl = 0.0;
        for (uint t = first; t < first + count; t++) {
            si += probs[t * n + e];
            if (LOAD != 0) sl += smoe_normal_sf((thresh[t] - logits[t * n + e]) * float(n));
        }
        stats[imp + e] = si;
        stats[ld + e] = sl / float(count);
    }
    float G = float(pc.groups);
    float loss = pc.importance_weight * cv2(imp, pc.importance_weight / G);
    if (LOAD != 0) loss += pc.load_weight * cv2(ld, pc.load_weight / G / float(count));
    else
        for (uint e = tid; e < n; e += gl_WorkGroupSize.x) stats[ld + e] = 0.0;
    if (tid == 0) group_loss[g] = loss / G;
}
