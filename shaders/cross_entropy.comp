#version 450
// Softmax cross-entropy, one workgroup (or invocation: util.glsl) per example row of logits
// [b, classes]: probabilities,
// the example's loss lse - logit[label], and (HAS_DLOGITS) dlogits = (probs - onehot) * alpha,
// alpha = 1/b. The mean of the losses is taken by a second dispatch (sum_rows).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint HAS_DLOGITS = 1;
#define SMOE_WG_REDUCE
#define SMOE_ROW_KERNEL
#include "common/interface.h"
#include "common/util.glsl"

layout(std430, binding = 0) readonly buffer Logits { float logits[]; };
layout(std430, binding = 1) readonly buffer Labels { int labels[]; };
layout(std430, binding = 2) writeonly buffer Probs { float probs[]; };
layout(std430, binding = 3) writeonly buffer Losses { float losses[]; };
layout(std430, binding = 4) writeonly buffer DLogits { float dlogits[]; };
SMOE_PUSH(SMOE_PUSH_ROWS)

void main()
{
    uint r = row_of(pc.groups_x);
    if (r >= pc.rows) return; // uniform over the workgroup (a row per workgroup), or no barrier follows
    uint t = row_lane(), C = pc.cols, base = r * C;
    float mx = -3.4e38;
    for (uint i = t; i < C; i += row_step()) mx = max(mx, logits[base + i]);
    mx = wg_max(mx);
    float sum = 0.0;
    for (uint i = t; i < C; i += row_step()) sum += exp(logits[base + i] - mx);
    sum = wg_sum(sum);
    float inv = 1.0 / sum;
    int label = labels[r];
    for (uint i = t; i < C; i += row_step()) {
        float p = exp(logits[base + i] - mx) * inv;
        probs[base + i] = p;
        if (HAS_DLOGITS != 0) dlogits[base + i] = (p - (int(i) == label ? 1.0 : 0.0)) * pc.alpha;
    }
    if (t == 0) {
        // a label outside [0, classes) reads nothing out of bounds; its loss is NaN
        losses[r] = (label >= 0 && uint(label) < C) ? mx + log(sum) - logits[base + uint(label)] : uintBitsToFloat(0x7fc00000u);
    }
}
