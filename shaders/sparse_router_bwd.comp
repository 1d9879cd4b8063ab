#version 450
// The sparse routers' backward, one workgroup per token: dlogits[t, :] holds the combine
// weights' gradients (sparse_slot_dot) and becomes the logits' gradient: the gates' softmax
// backward, plus (IMP) the importance loss through the clean softmax, plus (LOAD) the load loss
// directly and through tau, the noisy logit of the K-th choice. In place: each invocation keeps
// to its own experts.
#extension GL_GOOGLE_include_directive : require
#include "common/sparse_interface.h"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
#define SMOE_WG_REDUCE
#include "common/util.glsl"

layout(constant_id = 3) const uint IMP = 0;
layout(constant_id = 4) const uint LOAD = 0;

layout(std430, binding = 0) readonly buffer Gates { float gates[]; };
layout(std430, binding = 1) readonly buffer Probs { float probs[]; };
layout(std430, binding = 2) readonly buffer Logits { float logits[]; };
layout(std430, binding = 3) readonly buffer Thresh { float thresh[]; };
layout(std430, binding = 4) readonly buffer TopE { uint topk_e[]; };
layout(std430, binding = 5) readonly buffer Stats { float stats[]; };
layout(std430, binding = 6) buffer Dl { float dl[]; };
SMOE_PUSH(SMOE_PUSH_ROUTER_BWD)

const float INV_SQRT_2PI = 0.398942280;

// The load loss's direct term for expert e: dAux/dp_te * phi(z) * n, z = (tau - logit) n.
float load_term(uint t, uint e, uint st)
{
    float n = float(pc.experts), z = (thresh[t] - logits[t * pc.experts + e]) * n;
    return stats[st + pc.experts + e] * INV_SQRT_2PI * exp(-0.5 * z * z) * n;
}

void main()
{
    uint t = group_linear(pc.groups_x);
    if (t >= pc.tokens) return;
    uint n = pc.experts, tid = gl_LocalInvocationID.x, row = t * n, st = (t / pc.group) * 2 * n;
    float sc = 0.0, si = 0.0, sl = 0.0;
    for (uint e = tid; e < n; e += gl_WorkGroupSize.x) {
        sc += gates[row + e] * dl[row + e];
        if (IMP != 0) si += probs[row + e] * stats[st + e];
        if (LOAD != 0) sl += load_term(t, e, st);
    }
    sc = wg_sum(sc);
    if (IMP != 0) si = wg_sum(si);
    if (LOAD != 0) sl = wg_sum(sl);
    uint last = LOAD != 0 ? topk_e[t * pc.k + pc.k - 1] : SMOE_NO_SLOT_U;
    for (uint e = tid; e < n; e += gl_WorkGroupSize.x) {
        float v = gates[row + e] * (dl[row + e] - sc);
        if (IMP != 0) v += probs[row + e] * (stats[st + e] - si);
        if (LOAD != 0) v += load_term(t, e, st) - (e == last ? sl : 0.0);
        dl[row + e] = v;
    }
}
