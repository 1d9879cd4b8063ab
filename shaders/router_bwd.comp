#version 450
// Backward of the two softmaxes of the router, with D and C rebuilt from the logits P:
//   G_L = D*(G_D - colsum(D*G_D)) + C*(G_C - rowsum(C*G_C))
// SIDES (interface.h) says which halves exist: a fixed dispatch or combine (the routing ablation)
// does not depend on L, and its buffers here are neither computed nor read.
// PHASE 0, one workgroup (or invocation: util.glsl) per slot column j of sequence z: cs[j] = sum_i D_ij G_D_ij.
// PHASE 1, one per token row i: rs = sum_j C_ij G_C_ij, then G_L_ij, and
//   U_ij = scale * r_i * c_j * G_L_ij written over G_D (the l2 backward's input, see docs/format.md), and
//   partial[i] = sum_j G_L_ij P_ij (summed later into the scale's gradient).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
#define SMOE_WG_REDUCE
#define SMOE_ROW_KERNEL
#include "common/interface.h"
#include "common/util.glsl"

layout(constant_id = 3) const uint PHASE = 0;
layout(constant_id = 4) const uint SIDES = SMOE_ROUTER_SOFT_DISPATCH | SMOE_ROUTER_SOFT_COMBINE;
const bool SOFT_D = (SIDES & SMOE_ROUTER_SOFT_DISPATCH) != 0, SOFT_C = (SIDES & SMOE_ROUTER_SOFT_COMBINE) != 0;
layout(std430, binding = 0) readonly buffer Logits { float p[]; };
layout(std430, binding = 1) readonly buffer LseCol { float lse_col[]; };
layout(std430, binding = 2) readonly buffer LseRow { float lse_row[]; };
layout(std430, binding = 3) buffer GradD { float gd[]; };
layout(std430, binding = 4) readonly buffer GradC { float gc[]; };
layout(std430, binding = 5) buffer ColSum { float cs[]; };
layout(std430, binding = 6) readonly buffer RowInv { float rinv[]; };
layout(std430, binding = 7) readonly buffer ColInv { float cinv[]; };
layout(std430, binding = 8) readonly buffer Scale { float scale[]; };
layout(std430, binding = 9) writeonly buffer Partial { float partial[]; };
SMOE_PUSH(SMOE_PUSH_ROUTER)

void main()
{
    uint v = row_of(pc.groups_x);
    uint z = gl_WorkGroupID.z;
    uint t = row_lane();
    float s = scale[0];
    uint base = z * pc.m * pc.S;
    if (PHASE == 0) {
        if (v >= pc.S) return; // whole workgroup leaves together, or no barrier follows
        uint j = v;
        float lc = lse_col[z * pc.S + j];
        float acc = 0.0;
        for (uint i = t; i < pc.m; i += row_step()) {
            uint e = base + i * pc.S + j;
            acc += exp(s * p[e] - lc) * gd[e];
        }
        acc = wg_sum(acc);
        if (t == 0) cs[z * pc.S + j] = acc;
    } else {
        if (v >= pc.m) return;
        uint i = v;
        float lr = SOFT_C ? lse_row[z * pc.m + i] : 0.0;
        uint row = base + i * pc.S;
        float rs = 0.0;
        if (SOFT_C) {
            float acc = 0.0;
            for (uint j = t; j < pc.S; j += row_step()) acc += exp(s * p[row + j] - lr) * gc[row + j];
            rs = wg_sum(acc);
        }
        float ri = rinv[z * pc.m + i];
        float pl = 0.0;
        for (uint j = t; j < pc.S; j += row_step()) {
            float l = s * p[row + j];
            float gl = 0.0;
            if (SOFT_D) gl += exp(l - lse_col[z * pc.S + j]) * (gd[row + j] - cs[z * pc.S + j]);
            if (SOFT_C) gl += exp(l - lr) * (gc[row + j] - rs);
            pl += gl * p[row + j];
            gd[row + j] = s * ri * cinv[j] * gl;
        }
        pl = wg_sum(pl);
        if (t == 0) partial[z * pc.m + i] = pl;
    }
}
