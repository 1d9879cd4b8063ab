#version 450
// Patches of images [b, c, H, W] as rows [b*(H/P)*(W/P), c*P*P]: one invocation per patch element,
// columns in the order (channel, row in patch, column in patch), patches row-major over the image.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
#include "common/interface.h"
#include "common/util.glsl"

layout(std430, binding = 0) readonly buffer Images { float img[]; };
layout(std430, binding = 1) writeonly buffer Patches { float patches[]; };
SMOE_PUSH(SMOE_PUSH_IM2COL)

void main()
{
    uint e = item_linear(pc.groups_x, gl_WorkGroupSize.x);
    if (e >= pc.n) return;
    uint P = pc.P, pp = P * P, cols = pc.c * pp;
    uint row = e / cols, col = e % cols;
    uint nw = pc.W / P, per = (pc.H / P) * nw;
    uint bi = row / per, pi = row % per;
    uint py = pi / nw, px = pi % nw;
    uint ch = col / pp, i = (col % pp) / P, j = col % P;
    patches[e] = img[((bi * pc.c + ch) * pc.H + py * P + i) * pc.W + px * P + j];
}
