#version 450
// The sparse routers' routing, in stages between the sorts (bitonic.comp), per group of tokens:
//   Tokens Choice: KEYS1 (top-1 gate keys: the BPR order) -> sort -> KEYS2 (every choice keyed by
//   its expert, then its serving order: all first choices, then all second) -> sort -> ASSIGN
//   (rank within the expert = position in its buffer; past the capacity: dropped).
//   Experts Choice: KEYS (gate keys per expert) -> sort -> ASSIGN (the top C tokens).
// A gate's key 0x7f800000 - bits(gate) sorts gates descending (they are >= 0); values break ties
// (the lower token first); padding (0xffffffff, 0xffffffff) sorts last. The same keys and order
// as the CPU path's (host/cpu/sparse_moe_cpu.c).
#extension GL_GOOGLE_include_directive : require
#include "common/sparse_interface.h"
#include "common/util.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint STAGE = SMOE_ROUTE_TC_KEYS1;

layout(std430, binding = 0) readonly buffer Gates { float gates[]; };
layout(std430, binding = 1) readonly buffer TopE { uint topk_e[]; };
layout(std430, binding = 2) readonly buffer TopG { float topk_g[]; };
layout(std430, binding = 3) buffer Keys1 { uint keys1[]; };
layout(std430, binding = 4) buffer Vals1 { uint vals1[]; };
layout(std430, binding = 5) buffer Keys2 { uint keys2[]; };
layout(std430, binding = 6) buffer Vals2 { uint vals2[]; };
layout(std430, binding = 7) buffer SlotToken { uint slot_token[]; };
layout(std430, binding = 8) buffer SlotGate { float slot_gate[]; };
layout(std430, binding = 9) buffer TokSlot { uint tok_slot[]; };
SMOE_PUSH(SMOE_PUSH_ROUTE)

uint descending_key(float gate) { return 0x7f800000u - floatBitsToUint(gate); }
uint count_of(uint g) { return g + 1 == pc.groups ? pc.last : pc.group; }
uint cap_of(uint g) { return g + 1 == pc.groups ? pc.cap_last : pc.cap; }

// The first index of [lo, hi) whose key2 is >= e (the keys ascend there).
uint lower_bound(uint lo, uint hi, uint e)
{
    while (lo < hi) {
        uint mid = (lo + hi) / 2;
        if (keys2[mid] < e) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

void main()
{
    uint item = item_linear(pc.groups_x, gl_WorkGroupSize.x);
    if (item >= pc.items) return;
    uint K = pc.k, n = pc.experts;
    if (STAGE == SMOE_ROUTE_TC_KEYS1) {
        uint g = item / pc.len1, i = item % pc.len1;
        bool real = i < count_of(g);
        keys1[item] = real ? descending_key(topk_g[(g * pc.group + i) * K]) : 0xffffffffu;
        vals1[item] = real ? i : 0xffffffffu;
    } else if (STAGE == SMOE_ROUTE_TC_KEYS2) {
        uint g = item / pc.len2, i = item % pc.len2, count = count_of(g);
        if (i < K * count) {
            uint k = i / count, s = i % count;
            uint tok = g * pc.group + vals1[g * pc.len1 + s];
            keys2[item] = topk_e[tok * K + k];
            vals2[item] = k * pc.group + s;
        } else {
            keys2[item] = 0xffffffffu;
            vals2[item] = 0xffffffffu;
        }
    } else if (STAGE == SMOE_ROUTE_TC_ASSIGN) {
        uint g = item / pc.len2, i = item % pc.len2, count = count_of(g);
        if (i >= K * count) return;
        uint e = keys2[item], o = vals2[item];
        uint first = g * pc.len2, pos = i - (lower_bound(first, first + K * count, e) - first);
        uint k = o / pc.group, s = o % pc.group;
        uint tok = g * pc.group + vals1[g * pc.len1 + s];
        uint slot = SMOE_NO_SLOT_U;
        if (pos < cap_of(g)) {
            slot = e * pc.rows + g * pc.cap + pos;
            slot_token[slot] = tok;
            slot_gate[slot] = topk_g[tok * K + k];
        }
        tok_slot[tok * K + k] = slot;
    } else if (STAGE == SMOE_ROUTE_EC_KEYS) {
        uint seg = item / pc.len1, i = item % pc.len1, g = seg / n, e = seg % n;
        bool real = i < count_of(g);
        keys1[item] = real ? descending_key(gates[(g * pc.group + i) * n + e]) : 0xffffffffu;
        vals1[item] = real ? i : 0xffffffffu;
    } else { // SMOE_ROUTE_EC_ASSIGN
        uint seg = item / pc.cap, c = item % pc.cap, g = seg / n, e = seg % n;
        if (c >= cap_of(g)) return;
        uint tok = g * pc.group + vals1[seg * pc.len1 + c];
        uint slot = e * pc.rows + g * pc.cap + c;
        slot_token[slot] = tok;
        slot_gate[slot] = gates[tok * n + e];
        tok_slot[tok * n + e] = slot;
    }
}
