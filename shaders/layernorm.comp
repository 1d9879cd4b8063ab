#version 450
// LayerNorm forward, one workgroup (or invocation: util.glsl) per row of x [rows, d]: y = (x - mean) * rstd * gamma + beta,
// rstd = 1/sqrt(var + eps) (eps = pc.alpha, variance by the two-pass formula); saves mean, rstd.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
#define SMOE_WG_REDUCE
#define SMOE_ROW_KERNEL
#include "common/interface.h"
#include "common/util.glsl"

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer Gamma { float gamma[]; };
layout(std430, binding = 2) readonly buffer Beta { float beta[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
layout(std430, binding = 4) writeonly buffer Mean { float mean[]; };
layout(std430, binding = 5) writeonly buffer Rstd { float rstd[]; };
SMOE_PUSH(SMOE_PUSH_ROWS)

void main()
{
    uint r = row_of(pc.groups_x);
    if (r >= pc.rows) return; // uniform over the workgroup (a row per workgroup), or no barrier follows
    uint t = row_lane(), d = pc.cols, base = r * d;
    float s = 0.0;
    for (uint i = t; i < d; i += row_step()) s += x[base + i];
    float mu = wg_sum(s) / float(d);
    float q = 0.0;
    for (uint i = t; i < d; i += row_step()) {
        float v = x[base + i] - mu;
        q += v * v;
    }
    float rs = 1.0 / sqrt(wg_sum(q) / float(d) + pc.alpha);
    for (uint i = t; i < d; i += row_step()) y[base + i] = (x[base + i] - mu) * rs * gamma[i] + beta[i];
    if (t == 0) {
        mean[r] = mu;
        rstd[r] = rs;
    }
}
