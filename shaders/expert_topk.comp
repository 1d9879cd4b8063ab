#version 450
// Expert-subset inference (Chung et al., arXiv 2409.00879): the experts each sequence keeps, one
// workgroup per sequence z. score_e = the sum over the tokens i and the p slots j of expert e of
// C_ij (rebuilt from the logits as the combine does), or with RANDOM a hash of (seed, call, layer,
// z, e); the k largest are kept, equal scores going to the lower index (the rule of
// host/cpu/expert_subset_cpu.c). Writes mask[z, e] = 1 + the expert's place among the kept (0:
// dropped), the kept slots slots[z, t] (t < k*p, in expert order) and, with RENORM, the
// log-sum-exp of scale*P over the kept slots per token, so that exp(scale*P - lse_kept) are the
// renormalised combine weights.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
#define SMOE_WG_SCAN
#include "common/interface.h"
#include "common/util.glsl"
#include "common/router_noise.h"

layout(constant_id = 3) const uint RANDOM = 0;
layout(constant_id = 4) const uint RENORM = 0;
layout(std430, binding = 0) readonly buffer Logits { float logits[]; };
layout(std430, binding = 1) readonly buffer LseRow { float lse_row[]; };
layout(std430, binding = 2) readonly buffer Scale { float scale[]; };
layout(std430, binding = 3) readonly buffer State { uint state[]; }; // seed (2 words), call
layout(std430, binding = 4) coherent buffer Scores { float scores[]; };
layout(std430, binding = 5) writeonly buffer Mask { uint mask[]; };
layout(std430, binding = 6) coherent buffer Slots { uint slots[]; };
layout(std430, binding = 7) writeonly buffer LseKept { float lse_kept[]; };
SMOE_PUSH(SMOE_PUSH_KEEP)

const uint WG = gl_WorkGroupSize.x;

// The random baseline's score (router_noise.h: the same draws as the CPU path).
float random_score(uint z, uint e) { return smoe_rn_subset_score(state[0], state[1], state[2], pc.layer, z, e); }

void main()
{
    uint z = group_linear(pc.groups_x);
    if (z >= pc.batch) return;
    uint t = gl_LocalInvocationID.x;
    uint n = pc.n, p = pc.p, S = n * p, kp = pc.k * p;
    uint base = z * pc.m * S;
    float s = scale[0];

    for (uint e = t; e < n; e += WG) {
        float acc = 0.0;
        if (RANDOM != 0) {
            acc = random_score(z, e);
        } else {
            for (uint i = 0; i < pc.m; i++) {
                float lr = lse_row[z * pc.m + i];
                uint at = base + i * S + e * p;
                for (uint j = 0; j < p; j++) acc += exp(s * logits[at + j] - lr);
            }
        }
        scores[z * n + e] = acc;
    }
    memoryBarrierBuffer();
    barrier();

    // The k-th largest score, bit by bit: scores are >= 0, so their bit patterns order as uints.
    uint kth = 0;
    for (int bit = 31; bit >= 0; bit--) {
        uint cand = kth | (1u << uint(bit));
        uint c = 0;
        for (uint e = t; e < n; e += WG) c += floatBitsToUint(scores[z * n + e]) >= cand ? 1u : 0u;
        if (wg_sum_uint(c) >= pc.k) kth = cand;
    }
    uint above = 0;
    for (uint e = t; e < n; e += WG) above += floatBitsToUint(scores[z * n + e]) > kth ? 1u : 0u;
    uint ties_wanted = pc.k - wg_sum_uint(above);

    // Keep those above the k-th score and the first ties_wanted equal to it, in expert order.
    uint ties_before = 0, kept_before = 0;
    for (uint e0 = 0; e0 < n; e0 += WG) {
        uint e = e0 + t;
        uint key = e < n ? floatBitsToUint(scores[z * n + e]) : 0u;
        uint tie = e < n && key == kth ? 1u : 0u, tie_total, kept_total;
        uint tie_rank = ties_before + wg_scan_exclusive(tie, tie_total);
        uint kept = e < n && (key > kth || (tie != 0 && tie_rank < ties_wanted)) ? 1u : 0u;
        uint pos = kept_before + wg_scan_exclusive(kept, kept_total);
        if (e < n) mask[z * n + e] = kept != 0 ? pos + 1 : 0u;
        if (kept != 0)
            for (uint j = 0; j < p; j++) slots[z * kp + pos * p + j] = e * p + j;
        ties_before += tie_total;
        kept_before += kept_total;
    }

    if (RENORM != 0) {
        memoryBarrierBuffer();
        barrier();
        for (uint i = t; i < pc.m; i += WG) {
            uint row = base + i * S;
            float mx = -3.4e38;
            for (uint u = 0; u < kp; u++) mx = max(mx, s * logits[row + slots[z * kp + u]]);
            float sum = 0.0;
            for (uint u = 0; u < kp; u++) sum += exp(s * logits[row + slots[z * kp + u]] - mx);
            lse_kept[z * pc.m + i] = mx + log(sum);
        }
    }
}
