#version 450
// Expert-subset inference: the kept slot rows routed to each expert, one workgroup per expert e,
// from the mask of expert_topk.comp. rows[e] = the number of its rows, and
// rows[n + e*batch*p + r] = the compact slot row (z*k*p + t) of its row r, sequences in order:
// the row indirection through which matmul.comp runs fc1 and fc2 over the kept rows only.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
#define SMOE_WG_SCAN
#include "common/interface.h"
#include "common/util.glsl"

layout(std430, binding = 0) readonly buffer Mask { uint mask[]; };
layout(std430, binding = 1) writeonly buffer Rows { uint rows[]; };
SMOE_PUSH(SMOE_PUSH_KEEP)

void main()
{
    uint e = group_linear(pc.groups_x);
    if (e >= pc.n) return;
    uint t = gl_LocalInvocationID.x;
    uint n = pc.n, p = pc.p, kp = pc.k * p;
    uint out0 = n + e * pc.batch * p, total = 0;
    for (uint z0 = 0; z0 < pc.batch; z0 += gl_WorkGroupSize.x) {
        uint z = z0 + t;
        uint place = z < pc.batch ? mask[z * n + e] : 0u;
        uint chunk;
        uint before = total + wg_scan_exclusive(place != 0 ? 1u : 0u, chunk);
        if (place != 0)
            for (uint j = 0; j < p; j++) rows[out0 + before * p + j] = z * kp + (place - 1) * p + j;
        total += chunk;
    }
    if (t == 0) rows[e] = total * p;
}
