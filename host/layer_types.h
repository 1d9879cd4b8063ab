/* Core types of the Soft MoE layer that every level shares (the CPU kernels, the ops, the model
 * kinds): its dimensions and the expert-subset setting. The maths is docs/format.md. */
#ifndef SMOE_LAYER_TYPES_H
#define SMOE_LAYER_TYPES_H

#include <stdint.h>

typedef struct smoe_layer_dims {
    int b, m, d, n, p, h; /* batch, tokens, model dim, experts, slots per expert, expert hidden */
    int dispatch, combine; /* smoe_mixing of D and C (softmoe.h; 0: soft). SMOE_MIX_IDENTITY on
                            * both, with n*p = m, or on neither. */
} smoe_layer_dims;

/* Expert-subset inference (Chung et al., arXiv 2409.00879, their forward_with_drop_no_renorm):
 * per sequence, score every expert by its combine mass (the sum of C over the tokens and the
 * expert's p slots), keep the k highest-scoring (equal scores: the lower index first), and run
 * only those: dropped experts' slots output zero, and the output combines the kept slots with
 * the original C (or, with renormalize, with each token's kept weights rescaled to sum to 1).
 * With random, the k kept experts are drawn instead (a baseline; see cpu/expert_subset_cpu.h). */
typedef struct smoe_keep {
    int k;           /* experts kept per sequence, 1..n; 0: all (the plain layer) */
    int renormalize; /* 0 or 1 */
    int random;      /* 0 or 1 */
    uint64_t seed;   /* random: the seed of the draws */
} smoe_keep;

/* What of a setting is recorded into a program (the seed lives in the random draws' state
 * tensor): two settings with equal keys replay the same program. */
typedef struct smoe_keep_key {
    int32_t k, renormalize, random;
} smoe_keep_key;

static inline smoe_keep_key smoe_keep_program_key(const smoe_keep *keep)
{
    return (smoe_keep_key){keep->k, keep->renormalize, keep->random};
}

#endif
