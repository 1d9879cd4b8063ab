/* Push-constant layouts of the sparse MoE layers' shaders (host/ops/sparse_moe_layer.c), shared by
 * C and GLSL as common/interface.h's are. */
#ifndef SMOE_SPARSE_INTERFACE_H
#define SMOE_SPARSE_INTERFACE_H

#include "common/interface.h"

#define SMOE_NO_SLOT_U 0xffffffffu /* an empty slot or a dropped assignment */

/* sparse_gates: one workgroup per token of logits [tokens, experts]; inv_n = 1/experts. */
#define SMOE_PUSH_GATES(F) F(uint, tokens) F(uint, experts) F(uint, layer) F(float, inv_n) F(uint, groups_x)

/* sparse_route: the routing plan (sparse_moe_cpu.h) and the padded sort lengths; items: the
 * stage's work items in a 1D range. */
#define SMOE_PUSH_ROUTE(F)                                                                              \
    F(uint, group) F(uint, groups) F(uint, last) F(uint, cap) F(uint, cap_last) F(uint, rows) F(uint, experts) \
    F(uint, k) F(uint, len1) F(uint, len2) F(uint, items) F(uint, groups_x)
#define SMOE_ROUTE_TC_KEYS1 0  /* Tokens Choice: BPR keys (top-1 gates) per group */
#define SMOE_ROUTE_TC_KEYS2 1  /* Tokens Choice: (expert, serving order) of every choice per group */
#define SMOE_ROUTE_TC_ASSIGN 2 /* Tokens Choice: positions in the experts' buffers, capacity */
#define SMOE_ROUTE_EC_KEYS 3   /* Experts Choice: gate keys per (group, expert) */
#define SMOE_ROUTE_EC_ASSIGN 4 /* Experts Choice: the top tokens into the experts' buffers */

/* bitonic: total pairs in segments of len (powers of two); stage k, step j. */
#define SMOE_PUSH_SORT(F) F(uint, len) F(uint, total) F(uint, k) F(uint, j) F(uint, groups_x)
#define SMOE_SORT_LOCAL 0  /* every stage up to BLOCK, on blocks in shared memory */
#define SMOE_SORT_MERGE 1  /* stage k's steps below BLOCK, on blocks in shared memory */
#define SMOE_SORT_GLOBAL 2 /* one step (k, j) over all pairs in global memory */

/* moe_gather (rows of the experts' buffers), moe_combine (tokens), sparse_slot_dot (rows):
 * width = tok_slot entries per token, expert_rows = R. */
#define SMOE_PUSH_SLOTS(F) F(uint, rows) F(uint, d) F(uint, width) F(uint, expert_rows) F(uint, experts) F(uint, groups_x)

/* sparse_aux: per group (phase 0), then the sum over groups (phase 1). */
#define SMOE_PUSH_AUX(F) F(uint, group) F(uint, groups) F(uint, last) F(uint, experts) F(float, importance_weight) F(float, load_weight)

/* sparse_router_bwd: one workgroup per token. */
#define SMOE_PUSH_ROUTER_BWD(F) F(uint, tokens) F(uint, experts) F(uint, group) F(uint, k) F(uint, groups_x)

#ifndef VULKAN
SMOE_PUSH_STRUCT(smoe_push_gates, SMOE_PUSH_GATES)
SMOE_PUSH_STRUCT(smoe_push_route, SMOE_PUSH_ROUTE)
SMOE_PUSH_STRUCT(smoe_push_sort, SMOE_PUSH_SORT)
SMOE_PUSH_STRUCT(smoe_push_slots, SMOE_PUSH_SLOTS)
SMOE_PUSH_STRUCT(smoe_push_aux, SMOE_PUSH_AUX)
SMOE_PUSH_STRUCT(smoe_push_router_bwd, SMOE_PUSH_ROUTER_BWD)
#endif

#endif
