#version 450
// The matmul family (matmul.comp: transposes, operand transforms, epilogue, two-level rows, row
// indirection, batch z) register-tiled for drivers that run shaders on the CPU: each invocation
// computes a TM x TN block of C in registers from operands read through uniform texel buffers,
// four floats along K (or along M, N for the operands stored that way) per fetch, with no shared
// memory and no barrier. An operand whose rows start at multiples of 4 floats is an rgba32f view (VEC_A,
// VEC_B), any other an r32f view read a float at a time; C is written four floats at a time
// where it is so aligned (VEC_C).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_EXT_samplerless_texture_functions : require
#include "common/interface.h"
#include "common/util.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = SMOE_MM_TRANS_A) const uint TRANS_A = 0;
layout(constant_id = SMOE_MM_TRANS_B) const uint TRANS_B = 0;
layout(constant_id = SMOE_MM_TM) const uint TM = 4; // a multiple of 4
layout(constant_id = SMOE_MM_TN) const uint TN = 4; // a multiple of 4
layout(constant_id = SMOE_MM_A_XFORM) const uint A_XFORM = 0;
layout(constant_id = SMOE_MM_B_XFORM) const uint B_XFORM = 0;
layout(constant_id = SMOE_MM_EPI) const uint EPI = 0;
layout(constant_id = SMOE_MM_GATHER) const uint GATHER = 0;
layout(constant_id = SMOE_MM_VEC_A) const uint VEC_A = 1;
layout(constant_id = SMOE_MM_VEC_B) const uint VEC_B = 1;
layout(constant_id = SMOE_MM_VEC_C) const uint VEC_C = 1; // C and its epilogue's buffers

// textureBuffer, not samplerBuffer: a sampled image of Dim Buffer is invalid SPIR-V from 1.6 on
layout(binding = 0) uniform textureBuffer ta;
layout(binding = 1) uniform textureBuffer tb;
layout(std430, binding = 5) readonly buffer BufStat { float stat[]; };
layout(std430, binding = 9) readonly buffer BufIdx { uint idx[]; };
SMOE_PUSH(SMOE_PUSH_MATMUL)
#include "common/matmul_epilogue.glsl"

// Which index the softmax statistic of an EXP transform follows: the stored column (EXP_COL) or
// row (EXP_ROW) of A, which is m or k depending on the transpose (written without && and ||:
// glslang 12's optimizer crashes on that form of the constant).
const bool EXP_A = A_XFORM == SMOE_XFORM_EXP_COL || A_XFORM == SMOE_XFORM_EXP_ROW;
const bool STAT_BY_M = (A_XFORM == SMOE_XFORM_EXP_COL ? TRANS_A : A_XFORM == SMOE_XFORM_EXP_ROW ? 1 - TRANS_A : 0) != 0;

float acc[TM * TN];
uint M; // pc.M, or (GATHER_COUNT) the rows of this batch
// Operands stored with rows along m (A) or n (B): where each of the invocation's rows starts.
// Stored with rows along k: the invocation's columns within a row, and the running address of
// stored row k (kr = k mod the row group, wrap = what crossing a group adds).
uint a_pos[TM], b_pos[TN];
uint a_k, a_kr, a_wrap, b_k, b_kr, b_wrap;
float s_exp, stat_m[TM];

// Row indirection (GATHER, interface.h): A's stored rows and columns, and where stored row r of A starts.
uint gathered(uint u) { return idx[pc.idx_off + gl_WorkGroupID.z * pc.idx_bs + u]; }
uint a_row(uint r) { return (GATHER & SMOE_GATHER_A_ROW) != 0 ? gathered(r) : r; }
uint a_col(uint c) { return (GATHER & SMOE_GATHER_A_COL) != 0 ? gathered(c) : c; }
uint a_row_start(uint r) { return at(r, 0, pc.a_off, pc.a_bs, pc.a_ld, pc.a_g, pc.a_gs, gl_WorkGroupID.z); }
// The statistic's index of an EXP transform: A's stored column (EXP_COL) or row (EXP_ROW) u.
uint stat_of(uint u) { return A_XFORM == SMOE_XFORM_EXP_COL ? a_col(u) : a_row(u); }
// With A's stored rows gathered, where stored row k starts; else the running address.
uint a_k_start(uint k) { return (GATHER & SMOE_GATHER_A_ROW) != 0 ? a_row_start(gathered(k)) : a_k; }

// Four consecutive floats from float index i (a multiple of 4 for rgba32f views).
vec4 fetch4(bool vec4_view, bool is_a, uint i)
{
    if (vec4_view) return is_a ? texelFetch(ta, int(i >> 2)) : texelFetch(tb, int(i >> 2));
    vec4 v;
    [[unroll]] for (int j = 0; j < 4; j++) v[j] = is_a ? texelFetch(ta, int(i) + j).x : texelFetch(tb, int(i) + j).x;
    return v;
}

// The float at index i.
float fetch1(bool vec4_view, bool is_a, uint i)
{
    if (vec4_view) return is_a ? texelFetch(ta, int(i >> 2))[i & 3u] : texelFetch(tb, int(i >> 2))[i & 3u];
    return is_a ? texelFetch(ta, int(i)).x : texelFetch(tb, int(i)).x;
}

void step_a()
{
    a_k += pc.a_ld;
    if (++a_kr == pc.a_g) {
        a_kr = 0;
        a_k += a_wrap;
    }
}

void step_b()
{
    b_k += pc.b_ld;
    if (++b_kr == pc.b_g) {
        b_kr = 0;
        b_k += b_wrap;
    }
}

float xform_a(float v, uint k, uint i)
{
    if (A_XFORM == SMOE_XFORM_GELU) return gelu(v);
    if (!EXP_A) return v;
    if (STAT_BY_M) return exp(s_exp * v - stat_m[i]);
    return exp(s_exp * v - stat[gl_WorkGroupID.z * pc.stat_bs + stat_of(k)]);
}

// Accumulates k0 <= k < k0 + 4 (all within K).
void block4(uint k0)
{
    float av[4 * TM], bv[4 * TN];
    if (TRANS_A == 0 && (GATHER & SMOE_GATHER_A_COL) != 0) {
        // gathered columns: a float at a time (VEC_A is off), each column looked up once
        uint col[4];
        [[unroll]] for (uint kk = 0; kk < 4; kk++) col[kk] = gathered(k0 + kk);
        [[unroll]] for (uint i = 0; i < TM; i++)
            [[unroll]] for (uint kk = 0; kk < 4; kk++) av[kk * TM + i] = texelFetch(ta, int(a_pos[i] + col[kk])).x;
    } else if (TRANS_A == 0) {
        [[unroll]] for (uint i = 0; i < TM; i++) {
            vec4 v = fetch4(VEC_A != 0, true, a_pos[i] + k0);
            [[unroll]] for (uint kk = 0; kk < 4; kk++) av[kk * TM + i] = v[kk];
        }
    } else {
        [[unroll]] for (uint kk = 0; kk < 4; kk++) {
            uint ak = a_k_start(k0 + kk);
            if (VEC_A != 0) {
                [[unroll]] for (uint i = 0; i < TM; i += 4) {
                    vec4 v = texelFetch(ta, int((ak + a_pos[i]) >> 2));
                    [[unroll]] for (uint e = 0; e < 4; e++) av[kk * TM + i + e] = v[e];
                }
            } else {
                [[unroll]] for (uint i = 0; i < TM; i++) av[kk * TM + i] = texelFetch(ta, int(ak + a_pos[i])).x;
            }
            step_a();
        }
    }
    if (TRANS_B != 0) {
        [[unroll]] for (uint j = 0; j < TN; j++) {
            vec4 v = fetch4(VEC_B != 0, false, b_pos[j] + k0);
            [[unroll]] for (uint kk = 0; kk < 4; kk++) bv[kk * TN + j] = v[kk];
        }
    } else {
        [[unroll]] for (uint kk = 0; kk < 4; kk++) {
            if (VEC_B != 0) {
                [[unroll]] for (uint j = 0; j < TN; j += 4) {
                    vec4 v = texelFetch(tb, int((b_k + b_pos[j]) >> 2));
                    [[unroll]] for (uint e = 0; e < 4; e++) bv[kk * TN + j + e] = v[e];
                }
            } else {
                [[unroll]] for (uint j = 0; j < TN; j++) bv[kk * TN + j] = texelFetch(tb, int(b_k + b_pos[j])).x;
            }
            step_b();
        }
    }
    [[unroll]] for (uint kk = 0; kk < 4; kk++) {
        if (A_XFORM != SMOE_XFORM_NONE)
            [[unroll]] for (uint i = 0; i < TM; i++) av[kk * TM + i] = xform_a(av[kk * TM + i], k0 + kk, i);
        if (B_XFORM == SMOE_XFORM_GELU)
            [[unroll]] for (uint j = 0; j < TN; j++) bv[kk * TN + j] = gelu(bv[kk * TN + j]);
        [[unroll]] for (uint i = 0; i < TM; i++)
            [[unroll]] for (uint j = 0; j < TN; j++)
                acc[i * TN + j] = fma(av[kk * TM + i], bv[kk * TN + j], acc[i * TN + j]);
    }
}

// Accumulates one k (the last K mod 4 of them): a float per fetch, a quarter of block4's code.
void step1(uint k)
{
    float av[TM], bv[TN];
    [[unroll]] for (uint i = 0; i < TM; i++) {
        // rows along k: an rgba32f group start stands for its 4 rows (see main)
        uint e = TRANS_A == 0 ? a_pos[i] + a_col(k) : a_k_start(k) + (VEC_A != 0 ? a_pos[i & ~3u] + (i & 3u) : a_pos[i]);
        av[i] = xform_a(fetch1(VEC_A != 0, true, e), k, i);
    }
    [[unroll]] for (uint j = 0; j < TN; j++) {
        uint idx = TRANS_B != 0 ? b_pos[j] + k : b_k + (VEC_B != 0 ? b_pos[j & ~3u] + (j & 3u) : b_pos[j]);
        float v = fetch1(VEC_B != 0, false, idx);
        bv[j] = B_XFORM == SMOE_XFORM_GELU ? gelu(v) : v;
    }
    if (TRANS_A != 0) step_a();
    if (TRANS_B == 0) step_b();
    [[unroll]] for (uint i = 0; i < TM; i++)
        [[unroll]] for (uint j = 0; j < TN; j++) acc[i * TN + j] = fma(av[i], bv[j], acc[i * TN + j]);
}

void main()
{
    uint z = gl_WorkGroupID.z;
    uint m0 = (gl_WorkGroupID.y * gl_WorkGroupSize.y + gl_LocalInvocationID.y) * TM;
    uint n0 = (gl_WorkGroupID.x * gl_WorkGroupSize.x + gl_LocalInvocationID.x) * TN;
    M = (GATHER & SMOE_GATHER_COUNT) != 0 ? min(idx[z], pc.M) : pc.M;
    if (m0 >= M || n0 >= pc.N) return; // no barriers here: idle invocations may leave
    s_exp = EXP_A ? scalar[0] : 1.0;

    // Rows past M or N are read as the last row (their results are dropped); in rows along k,
    // an rgba32f read starts at most at the last group of 4, so that it stays within the view
    // (the group's other floats, past M or N, are dropped too). Every read is thus within its
    // operand's view: nothing is clamped in the loops.
    [[unroll]] for (uint i = 0; i < TM; i++) {
        uint m = min(m0 + i, M - 1);
        if (TRANS_A == 0) a_pos[i] = a_row_start(a_row(m));
        else a_pos[i] = VEC_A != 0 ? min(m0 + i, (M - 1) & ~3u) : a_col(m);
        if (STAT_BY_M) stat_m[i] = stat[z * pc.stat_bs + stat_of(m)];
    }
    [[unroll]] for (uint j = 0; j < TN; j++) {
        uint n = min(n0 + j, pc.N - 1);
        if (TRANS_B != 0) b_pos[j] = at(n, 0, pc.b_off, pc.b_bs, pc.b_ld, pc.b_g, pc.b_gs, z);
        else b_pos[j] = VEC_B != 0 ? min(n0 + j, (pc.N - 1) & ~3u) : n;
    }
    a_k = pc.a_off + z * pc.a_bs;
    b_k = pc.b_off + z * pc.b_bs;
    a_kr = b_kr = 0;
    a_wrap = pc.a_gs - pc.a_g * pc.a_ld;
    b_wrap = pc.b_gs - pc.b_g * pc.b_ld;

    [[unroll]] for (uint i = 0; i < TM * TN; i++) acc[i] = 0.0;
    uint k0 = 0;
    for (; k0 + 4 <= pc.K; k0 += 4) block4(k0);
    for (; k0 < pc.K; k0++) step1(k0);

    [[unroll]] for (uint i = 0; i < TM; i++) {
        uint r = m0 + i;
        if (r >= M) break;
        uint ci = c_row((GATHER & SMOE_GATHER_C_ROW) != 0 ? gathered(r) : r, z) + n0;
        [[unroll]] for (uint j = 0; j < TN; j += 4) {
            uint col = n0 + j;
            if (VEC_C != 0 && col + 3 < pc.N) {
                vec4 v = vec4(acc[i * TN + j], acc[i * TN + j + 1], acc[i * TN + j + 2], acc[i * TN + j + 3]);
                store_c4(ci + j, r, col, z, v);
            } else {
                [[unroll]] for (uint e = 0; e < 4; e++)
                    if (col + e < pc.N) store_c(ci + j + e, r, col + e, z, acc[i * TN + j + e]);
            }
        }
    }
}
