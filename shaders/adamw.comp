#version 450
// One AdamW step, elementwise over n parameters (PyTorch's AdamW). state = {t, lr} and norm2 (the
// squared global gradient norm) are read from buffers so that a recorded program can be replayed
// step after step. g is scaled by min(1, max_norm / (sqrt(norm2) + 1e-6)) when max_norm > 0.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
#include "common/interface.h"
#include "common/util.glsl"

layout(std430, binding = 0) buffer Param { float p[]; };
layout(std430, binding = 1) readonly buffer Grad { float g[]; };
layout(std430, binding = 2) buffer M { float m[]; };
layout(std430, binding = 3) buffer V { float v[]; };
layout(std430, binding = 4) readonly buffer State { float state[]; };
layout(std430, binding = 5) readonly buffer Norm2 { float norm2[]; };
SMOE_PUSH(SMOE_PUSH_ADAMW)

void main()
{
    uint i = item_linear(pc.groups_x, gl_WorkGroupSize.x);
    if (i >= pc.n) return;
    float t = state[0], lr = state[1] * pc.lr_mult;
    float scale = pc.max_norm > 0.0 ? min(1.0, pc.max_norm / (sqrt(norm2[0]) + 1e-6)) : 1.0;
    float gi = g[i] * scale;
    float mi = pc.beta1 * m[i] + (1.0 - pc.beta1) * gi;
    float vi = pc.beta2 * v[i] + (1.0 - pc.beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float bc1 = 1.0 - pow(pc.beta1, t);
    float bc2 = 1.0 - pow(pc.beta2, t);
    float pi = p[i];
    p[i] = pi - lr * (pc.wd * pi + (mi / bc1) / (sqrt(vi / bc2) + pc.eps));
}
