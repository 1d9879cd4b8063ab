#version 450
// Segmented bitonic sort: each segment of len pairs (a power of two) at keys[s*len + i],
// vals[s*len + i] ends ascending by (key, value). SMOE_SORT_LOCAL runs every stage up to BLOCK on
// blocks of BLOCK pairs in shared memory (the whole sort when len <= BLOCK); SMOE_SORT_MERGE
// finishes stage k (its steps j < BLOCK) on blocks; SMOE_SORT_GLOBAL is one step (k, j >= BLOCK)
// over all pairs in global memory. A pair's direction comes from its index within its segment,
// so the blocks of a longer segment are parts of one network.
#extension GL_GOOGLE_include_directive : require
#include "common/sparse_interface.h"
#include "common/util.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint MODE = SMOE_SORT_LOCAL;
layout(constant_id = 4) const uint BLOCK = 2; // pairs per block in shared memory (a power of two)

layout(std430, binding = 0) buffer Keys { uint keys[]; };
layout(std430, binding = 1) buffer Vals { uint vals[]; };
SMOE_PUSH(SMOE_PUSH_SORT)

shared uint sk[BLOCK];
shared uint sv[BLOCK];

bool after(uint ka, uint va, uint kb, uint vb) { return ka > kb || (ka == kb && va > vb); }

// Step (k, j) on the block at global index base; i has bit j clear, its partner is i + j.
void local_step(uint base, uint k, uint j)
{
    for (uint q = gl_LocalInvocationID.x; q < BLOCK / 2; q += gl_WorkGroupSize.x) {
        uint i = 2 * j * (q / j) + q % j, l = i + j;
        bool up = (((base + i) % pc.len) & k) == 0;
        uint ka = sk[i], va = sv[i], kb = sk[l], vb = sv[l];
        if (after(ka, va, kb, vb) == up) {
            sk[i] = kb, sv[i] = vb;
            sk[l] = ka, sv[l] = va;
        }
    }
    barrier();
}

void main()
{
    if (MODE == SMOE_SORT_GLOBAL) {
        uint q = item_linear(pc.groups_x, gl_WorkGroupSize.x);
        if (q >= pc.total / 2) return;
        uint i = 2 * pc.j * (q / pc.j) + q % pc.j, l = i + pc.j;
        bool up = ((i % pc.len) & pc.k) == 0;
        uint ka = keys[i], va = vals[i], kb = keys[l], vb = vals[l];
        if (after(ka, va, kb, vb) == up) {
            keys[i] = kb, vals[i] = vb;
            keys[l] = ka, vals[l] = va;
        }
        return;
    }
    uint base = group_linear(pc.groups_x) * BLOCK;
    if (base >= pc.total) return;
    for (uint i = gl_LocalInvocationID.x; i < BLOCK; i += gl_WorkGroupSize.x) {
        sk[i] = keys[base + i];
        sv[i] = vals[base + i];
    }
    barrier();
    if (MODE == SMOE_SORT_LOCAL) {
        for (uint k = 2; k <= BLOCK; k <<= 1)
            for (uint j = k >> 1; j > 0; j >>= 1) local_step(base, k, j);
    } else {
        for (uint j = BLOCK >> 1; j > 0; j >>= 1) local_step(base, pc.k, j);
    }
    for (uint i = gl_LocalInvocationID.x; i < BLOCK; i += gl_WorkGroupSize.x) {
        keys[base + i] = sk[i];
        vals[base + i] = sv[i];
    }
}
