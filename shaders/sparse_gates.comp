#version 450
// The sparse routers' gates, one workgroup per token: softmax over the experts of the logits plus,
// in training, the noise N(0,1)/n (router_noise.h: the same bits as the CPU path); the clean
// softmax for the auxiliary losses; the token's top-K experts (ties: the lower expert); and τ,
// the noisy logit of its K-th choice (the load loss's threshold).
#extension GL_GOOGLE_include_directive : require
#include "common/sparse_interface.h"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
#define SMOE_WG_REDUCE
#include "common/util.glsl"
#include "common/router_noise.h"

layout(constant_id = 3) const uint TOPK = 0;   // experts chosen per token (Tokens Choice); 0: none
layout(constant_id = 4) const uint NOISE = 0;  // training: noisy logits
layout(constant_id = 5) const uint PROBS = 0;  // also the clean softmax
layout(constant_id = 6) const uint THRESH = 0; // also τ

layout(std430, binding = 0) readonly buffer Logits { float logits[]; };
layout(std430, binding = 1) readonly buffer Step { float step_count[]; };
layout(std430, binding = 2) buffer Gates { float gates[]; };
layout(std430, binding = 3) buffer Probs { float probs[]; };
layout(std430, binding = 4) writeonly buffer TopE { uint topk_e[]; };
layout(std430, binding = 5) writeonly buffer TopG { float topk_g[]; };
layout(std430, binding = 6) writeonly buffer Thresh { float thresh[]; };
SMOE_PUSH(SMOE_PUSH_GATES)

shared float best_v[gl_WorkGroupSize.x];
shared uint best_e[gl_WorkGroupSize.x];

float noisy_logit(uint t, uint e, uint step)
{
    precise float v = logits[t * pc.experts + e] + smoe_router_normal(step, pc.layer, t, e) * pc.inv_n;
    return v;
}

// out[t, :] = softmax of the (noisy) logits; every invocation keeps to its own experts, so it
// reads back only what it wrote.
void softmax_row(uint t, uint step, bool noisy, bool to_probs)
{
    uint n = pc.experts, tid = gl_LocalInvocationID.x, base = t * n;
    float mx = -3.4e38;
    for (uint e = tid; e < n; e += gl_WorkGroupSize.x) {
        float v = noisy ? noisy_logit(t, e, step) : logits[base + e];
        if (to_probs) probs[base + e] = v;
        else gates[base + e] = v;
        mx = max(mx, v);
    }
    mx = wg_max(mx);
    float sum = 0.0;
    for (uint e = tid; e < n; e += gl_WorkGroupSize.x) {
        float v = exp((to_probs ? probs[base + e] : gates[base + e]) - mx);
        if (to_probs) probs[base + e] = v;
        else gates[base + e] = v;
        sum += v;
    }
    sum = wg_sum(sum);
    for (uint e = tid; e < n; e += gl_WorkGroupSize.x) {
        if (to_probs) probs[base + e] /= sum;
        else gates[base + e] /= sum;
    }
}

void main()
{
    uint t = group_linear(pc.groups_x);
    if (t >= pc.tokens) return;
    uint n = pc.experts, tid = gl_LocalInvocationID.x, base = t * n;
    uint step = NOISE != 0 ? uint(step_count[0]) : 0u;
    softmax_row(t, step, NOISE != 0, false);
    if (PROBS != 0) {
        if (NOISE != 0) softmax_row(t, step, false, true);
        else
            for (uint e = tid; e < n; e += gl_WorkGroupSize.x) probs[base + e] = gates[base + e];
    }
    uint chosen = SMOE_NO_SLOT_U;
    for (uint k = 0; k < TOPK; k++) {
        // the best gate not chosen yet: per invocation, then a tree over the workgroup
        float bv = -1.0;
        uint be = SMOE_NO_SLOT_U;
        for (uint e = tid; e < n; e += gl_WorkGroupSize.x) {
            float v = gates[base + e];
            if (e != chosen && (be == SMOE_NO_SLOT_U || v > bv)) bv = v, be = e;
        }
        best_v[tid] = bv;
        best_e[tid] = be;
        barrier();
        for (uint w = gl_WorkGroupSize.x / 2; w > 0; w /= 2) {
            if (tid < w) {
                float ov = best_v[tid + w];
                uint oe = best_e[tid + w];
                if (oe != SMOE_NO_SLOT_U && (best_e[tid] == SMOE_NO_SLOT_U || ov > best_v[tid] || (ov == best_v[tid] && oe < best_e[tid])))
                    best_v[tid] = ov, best_e[tid] = oe;
            }
            barrier();
        }
        chosen = best_e[0];
        if (tid == 0) {
            topk_e[t * TOPK + k] = chosen;
            topk_g[t * TOPK + k] = best_v[0];
            if (THRESH != 0 && k + 1 == TOPK) thresh[t] = noisy_logit(t, chosen, step);
        }
        barrier();
    }
}
