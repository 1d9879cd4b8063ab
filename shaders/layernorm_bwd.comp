#version 450
// LayerNorm backward for dx, one workgroup (or invocation: util.glsl) per row: with xh = (x - mean) * rstd and g = dy * gamma,
//   dx = rstd * (g - mean(g) - xh * mean(g * xh)).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
#define SMOE_WG_REDUCE
#define SMOE_ROW_KERNEL
#include "common/interface.h"
#include "common/util.glsl"

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer Gamma { float gamma[]; };
layout(std430, binding = 2) readonly buffer Mean { float mean[]; };
layout(std430, binding = 3) readonly buffer Rstd { float rstd[]; };
layout(std430, binding = 4) readonly buffer DY { float dy[]; };
layout(std430, binding = 5) writeonly buffer DX { float dx[]; };
SMOE_PUSH(SMOE_PUSH_ROWS)

void main()
{
    uint r = row_of(pc.groups_x);
    if (r >= pc.rows) return; // uniform over the workgroup (a row per workgroup), or no barrier follows
    uint t = row_lane(), d = pc.cols, base = r * d;
    float mu = mean[r], rs = rstd[r];
    float sg = 0.0, sgx = 0.0;
    for (uint i = t; i < d; i += row_step()) {
        float g = dy[base + i] * gamma[i];
        sg += g;
        sgx += g * (x[base + i] - mu) * rs;
    }
    float mg = wg_sum(sg) / float(d);
    float mgx = wg_sum(sgx) / float(d);
    for (uint i = t; i < d; i += row_step()) {
        float g = dy[base + i] * gamma[i];
        float xh = (x[base + i] - mu) * rs;
        dx[base + i] = rs * (g - mg - xh * mgx);
    }
}
