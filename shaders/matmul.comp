#version 450
// The one matmul family: C[z] = epilogue(op(A[z]) op(B[z])) with shared-memory tiles BM x BN x BK,
// each invocation owning a TM x TN register tile. Every matmul of the Soft MoE layer, forward and
// backward, is an instance: transposes, operand transforms (GELU, dispatch/combine softmax rebuilt
// from logits on the fly) and the epilogue are specialization constants. GATHER adds a row
// indirection (expert-subset inference: only the kept slots and the rows routed to each expert).
#extension GL_GOOGLE_include_directive : require
#include "common/interface.h"
#include "common/util.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = SMOE_MM_TRANS_A) const uint TRANS_A = 0;
layout(constant_id = SMOE_MM_TRANS_B) const uint TRANS_B = 0;
layout(constant_id = SMOE_MM_BM) const uint BM = 64;
layout(constant_id = SMOE_MM_BN) const uint BN = 64;
layout(constant_id = SMOE_MM_BK) const uint BK = 16;
layout(constant_id = SMOE_MM_TM) const uint TM = 4;
layout(constant_id = SMOE_MM_TN) const uint TN = 4;
layout(constant_id = SMOE_MM_A_XFORM) const uint A_XFORM = 0;
layout(constant_id = SMOE_MM_B_XFORM) const uint B_XFORM = 0;
layout(constant_id = SMOE_MM_EPI) const uint EPI = 0;
layout(constant_id = SMOE_MM_GATHER) const uint GATHER = 0;

layout(std430, binding = 0) readonly buffer BufA { float a[]; };
layout(std430, binding = 1) readonly buffer BufB { float b[]; };
layout(std430, binding = 5) readonly buffer BufStat { float stat[]; };
layout(std430, binding = 9) readonly buffer BufIdx { uint idx[]; };
SMOE_PUSH(SMOE_PUSH_MATMUL)
#include "common/matmul_epilogue.glsl"

shared float As[BK * BM];
shared float Bs[BK * BN];

uint gathered(uint u, uint z) { return idx[pc.idx_off + z * pc.idx_bs + u]; }

float load_a(uint m, uint k, uint z, float s)
{
    uint r = TRANS_A == 0 ? m : k;
    uint col = TRANS_A == 0 ? k : m;
    if ((GATHER & SMOE_GATHER_A_ROW) != 0) r = gathered(r, z);
    if ((GATHER & SMOE_GATHER_A_COL) != 0) col = gathered(col, z);
    float v = a[at(r, col, pc.a_off, pc.a_bs, pc.a_ld, pc.a_g, pc.a_gs, z)];
    if (A_XFORM == SMOE_XFORM_GELU) v = gelu(v);
    else if (A_XFORM == SMOE_XFORM_EXP_COL) v = exp(s * v - stat[z * pc.stat_bs + col]);
    else if (A_XFORM == SMOE_XFORM_EXP_ROW) v = exp(s * v - stat[z * pc.stat_bs + r]);
    return v;
}

float load_b(uint k, uint n, uint z)
{
    uint r = TRANS_B == 0 ? k : n;
    uint col = TRANS_B == 0 ? n : k;
    float v = b[at(r, col, pc.b_off, pc.b_bs, pc.b_ld, pc.b_g, pc.b_gs, z)];
    if (B_XFORM == SMOE_XFORM_GELU) v = gelu(v);
    return v;
}

void main()
{
    const uint WM = BM / TM, WN = BN / TN, NT = WM * WN;
    uint z = gl_WorkGroupID.z;
    uint tid = gl_LocalInvocationIndex;
    uint row0 = gl_WorkGroupID.y * BM, col0 = gl_WorkGroupID.x * BN;
    uint tr = tid / WN, tc = tid % WN;
    float s = (A_XFORM == SMOE_XFORM_EXP_COL || A_XFORM == SMOE_XFORM_EXP_ROW) ? scalar[0] : 1.0;
    uint M = pc.M;
    if ((GATHER & SMOE_GATHER_COUNT) != 0) {
        M = min(idx[z], pc.M);
        if (row0 >= M) return; // the whole workgroup: no barrier is skipped by part of it
    }

    float acc[TM * TN];
    for (uint i = 0; i < TM * TN; i++) acc[i] = 0.0;

    for (uint k0 = 0; k0 < pc.K; k0 += BK) {
        // Fill the tiles; consecutive invocations walk the operand's contiguous storage dimension.
        for (uint i = tid; i < BM * BK; i += NT) {
            uint mm = TRANS_A == 0 ? i / BK : i % BM;
            uint kk = TRANS_A == 0 ? i % BK : i / BM;
            uint gm = row0 + mm, gk = k0 + kk;
            As[kk * BM + mm] = (gm < M && gk < pc.K) ? load_a(gm, gk, z, s) : 0.0;
        }
        for (uint i = tid; i < BN * BK; i += NT) {
            uint nn = TRANS_B == 0 ? i % BN : i / BK;
            uint kk = TRANS_B == 0 ? i / BN : i % BK;
            uint gn = col0 + nn, gk = k0 + kk;
            Bs[kk * BN + nn] = (gn < pc.N && gk < pc.K) ? load_b(gk, gn, z) : 0.0;
        }
        barrier();
        for (uint kk = 0; kk < BK; kk++) {
            float av[TM], bv[TN];
            for (uint i = 0; i < TM; i++) av[i] = As[kk * BM + tr + i * WM];
            for (uint j = 0; j < TN; j++) bv[j] = Bs[kk * BN + tc + j * WN];
            for (uint i = 0; i < TM; i++)
                for (uint j = 0; j < TN; j++) acc[i * TN + j] = fma(av[i], bv[j], acc[i * TN + j]);
        }
        barrier();
    }

    for (uint i = 0; i < TM; i++) {
        uint r = row0 + tr + i * WM;
        if (r >= M) continue;
        uint cr = (GATHER & SMOE_GATHER_C_ROW) != 0 ? gathered(r, z) : r;
        for (uint j = 0; j < TN; j++) {
            uint col = col0 + tc + j * WN;
            if (col < pc.N) store_c(at(cr, col, pc.c_off, pc.c_bs, pc.c_ld, pc.c_g, pc.c_gs, z), r, col, z, acc[i * TN + j]);
        }
    }
}
