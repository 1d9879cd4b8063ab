/* Expert-subset inference on the CPU path: which experts each sequence keeps. The same rule as
 * shaders/expert_topk.comp, so that both paths keep the same experts whenever their scores order
 * the same way. */
#ifndef SMOE_EXPERT_SUBSET_CPU_H
#define SMOE_EXPERT_SUBSET_CPU_H

#include <stdint.h>

/* scores[z*n + e] = sum over the m tokens i and the p slots j of expert e of C[z, i, e*p + j]
 * (i outer, j inner), for the b sequences of C [b, m, n*p]. */
void smoe_keep_scores(int b, int m, int n, int p, const float *C, float *scores);

/* kept[z*k + t], t < k: the k experts with the largest scores[z*n + e] (all >= 0), in increasing
 * expert order; of equal scores the lower index is kept first. 1 <= k <= n. */
void smoe_keep_top(int b, int n, int k, const float *scores, int *kept);

#endif
