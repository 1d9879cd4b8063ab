/* The sparse MoE layers, Tokens Choice and Experts Choice, as google-research/vmoe
 * (vmoe/nn/routing.py, vmoe/moe.py) defines them, on the CPU path: readable C with OpenMP over
 * tokens, groups and experts; the experts run through the Soft MoE layer's per-expert GEMMs
 * (softmoe_cpu.h). The reference the Vulkan op (ops/sparse_moe_layer.c) is checked against; the
 * dimensions and the routing plan below are shared with it.
 *
 * Both layers, per group of g consecutive tokens of the batch (by default one sequence):
 *   logits = x W_gᵀ [tokens, n]; in training + N(0, 1)/n noise (router_noise.h);
 *   gates  = softmax over the experts of the (noisy) logits.
 * Tokens Choice: each token picks its top-K experts by gate (ties: the lower expert index);
 *   Batch Priority Routing serves the tokens in order of their top-1 gate (descending; ties: the
 *   lower token), all first choices before any second choice; an expert takes at most
 *   C = ceil(K*g*c/n), rounded up to a multiple of 4, and later arrivals are dropped. A token's
 *   output is the sum over its kept choices of gate * expert(x); a token with none kept gives 0
 *   (the block keeps only the residual). Auxiliary losses, per group and averaged over groups:
 *   importance CV²(Σ_tokens softmax(clean logits)) and, in training, load CV²(P) with
 *   P_e = mean_t (1 - Phi((τ_t - logit_te) n)), τ_t the noisy logit of the token's K-th choice.
 * Experts Choice: each expert takes its top C = round(g*c/n) tokens by gate (round half to even,
 *   as Python's round; at least 1, at most g; ties: the lower token); a token's output is the sum
 *   of gate * expert(x) over the experts that took it. No auxiliary loss.
 * Gradients flow through the gates of the kept assignments (the combine weights) into W_g and x,
 * through the auxiliary losses, and through the experts; the discrete choices are constants.
 *
 * Expert rows: expert e has R = groups * C rows (group γ's C rows from γ C); row r of expert e is
 * slot e*R + r. A routing is the slot tables slot_token [n*R] (the token, or SMOE_NO_SLOT) and
 * slot_gate [n*R] (its gate, or 0), and per token tok_slot [T, A] (A = K for Tokens Choice: its
 * k-th choice's slot, or SMOE_NO_SLOT when dropped; A = n for Experts Choice: the slot of expert
 * e, or SMOE_NO_SLOT). */
#ifndef SMOE_SPARSE_MOE_CPU_H
#define SMOE_SPARSE_MOE_CPU_H

#include <stddef.h>
#include <stdint.h>

#define SMOE_NO_SLOT 0xffffffffu
#define SMOE_AUX_LOSS_WEIGHT 0.005f /* the importance and load losses' weight (vmoe's V-MoE configs) */

typedef struct smoe_sparse_dims {
    int b, m, d, n, h;         /* batch, tokens per sequence, model dim, experts, expert hidden */
    int kind;                  /* SMOE_MOE_TOKENS_CHOICE or SMOE_MOE_EXPERTS_CHOICE */
    int top_k;                 /* Tokens Choice: K, 1 or 2 */
    float capacity_factor;     /* c > 0 */
    int group_size;            /* tokens per routing group; 0: one sequence (m) */
    int layer;                 /* a counter of the training noise (the block index) */
    float importance_weight;   /* Tokens Choice auxiliary losses' weights */
    float load_weight;
    int sort_block;            /* Vulkan: the longest segment sorted in shared memory (a power of two);
                                * 0: as many as the device's shared memory holds (tests set it small
                                * to exercise the multi-pass sort) */
} smoe_sparse_dims;

/* What a pass computes: inference; gradients (deterministic routing, importance loss); a
 * training step (noise from the step counter, importance and load losses). */
enum { SMOE_ROUTE_INFER = 0, SMOE_ROUTE_GRADS = 1, SMOE_ROUTE_TRAIN = 2 };

typedef struct smoe_sparse_plan {
    int T;       /* tokens, b*m */
    int G;       /* tokens per group */
    int groups;  /* ceil(T / G) */
    int last;    /* tokens in the last group (G unless T is not a multiple of G) */
    int C;       /* capacity per expert and group */
    int C_last;  /* the last group's capacity (from its own size) */
    int R;       /* rows per expert: groups * C */
    int A;       /* tok_slot entries per token: K or n */
} smoe_sparse_plan;

/* ceil(k*tokens*c/n) rounded up to a multiple of 4 (vmoe's _compute_capacity, "ceil"). */
int smoe_tokens_choice_capacity(int k, int tokens, double c, int n);
/* round(tokens*c/n), half to even, clamped to [1, tokens]. */
int smoe_experts_choice_capacity(int tokens, double c, int n);
void smoe_sparse_plan_make(const smoe_sparse_dims *d, smoe_sparse_plan *p);
/* Whether the auxiliary losses are computed in mode, and whether noise is added. */
int smoe_sparse_has_aux(const smoe_sparse_dims *d, int mode);

/* The layer's host buffers (the CPU path of ops/sparse_moe_layer.h's tensors). */
typedef struct smoe_sparse_host {
    const float *gate, *w1, *b1, *w2, *b2;  /* gate [n, d]; experts as softmoe_cpu.h */
    float *g_gate, *g_w1, *g_b1, *g_w2, *g_b2;
    const float *x, *dy;                    /* [b*m, d] */
    float *y, *dx;
    const float *step;                      /* [1] the training step (SMOE_ROUTE_TRAIN) */
    float *aux;                             /* [1] the auxiliary loss (Tokens Choice, mode >= GRADS) */
    /* forward state, read by backward */
    float *logits;                          /* [T, n] x W_gᵀ */
    float *gates;                           /* [T, n] softmax of the (noisy) logits */
    float *probs;                           /* [T, n] softmax of the clean logits (aux) */
    float *thresh;                          /* [T] τ, the noisy logit of the K-th choice (train) */
    uint32_t *topk_e;                       /* [T, K] Tokens Choice: the chosen experts */
    float *topk_g;                          /* [T, K] and their gates */
    uint32_t *slot_token, *tok_slot;        /* the routing (see above) */
    float *slot_gate;
    float *stats;                           /* [groups, 2, n] the aux losses' dL/dI_e, dL/dp_te */
    float *xs, *pre, *act, *out;            /* expert rows [n, R, d|h|h|d]; out includes b2 */
    /* backward scratch */
    float *g_out, *g_pre, *g_xs, *dlogits;
    /* scratch */
    uint64_t *sort;                         /* smoe_cpu_sparse_sort_words() */
    float *pack;                            /* smoe_cpu_gemm_pack_floats() */
} smoe_sparse_host;

/* 64-bit words of sorting scratch the CPU routing needs. */
size_t smoe_cpu_sparse_sort_words(const smoe_sparse_dims *d);

/* y (and in modes >= GRADS the auxiliary loss) from x. */
void smoe_cpu_sparse_forward(const smoe_sparse_dims *d, int mode, const smoe_sparse_host *t);
/* dx and every gradient (overwritten) from dy, after the forward pass in the same mode. */
void smoe_cpu_sparse_backward(const smoe_sparse_dims *d, int mode, const smoe_sparse_host *t);

#endif
