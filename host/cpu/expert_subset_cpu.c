/* Expert-subset inference on the CPU path: the scores and the choice of the kept experts, step
 * for step as shaders/expert_topk.comp does them. */
#include "expert_subset_cpu.h"

#include <stddef.h>
#include <string.h>

void smoe_keep_scores(int b, int m, int n, int p, const float *C, float *scores)
{
    const int S = n * p;
#pragma omp parallel for schedule(static)
    for (int z = 0; z < b; z++) {
        float *sc = scores + (size_t)z * n;
        for (int e = 0; e < n; e++) sc[e] = 0.0f;
        for (int i = 0; i < m; i++) {
            const float *row = C + ((size_t)z * m + i) * S;
            for (int e = 0; e < n; e++)
                for (int j = 0; j < p; j++) sc[e] += row[e * p + j];
        }
    }
}

/* Scores are >= 0, so their bit patterns order as the numbers do. */
static uint32_t key(float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return u;
}

void smoe_keep_top(int b, int n, int k, const float *scores, int *kept)
{
#pragma omp parallel for schedule(static)
    for (int z = 0; z < b; z++) {
        const float *sc = scores + (size_t)z * n;
        /* the k-th largest key, bit by bit from the top */
        uint32_t kth = 0;
        for (int bit = 31; bit >= 0; bit--) {
            const uint32_t cand = kth | (1u << bit);
            int count = 0;
            for (int e = 0; e < n; e++) count += key(sc[e]) >= cand;
            if (count >= k) kth = cand;
        }
        int above = 0;
        for (int e = 0; e < n; e++) above += key(sc[e]) > kth;
        /* all above it, then the first of those equal to it */
        int ties = k - above, t = 0;
        for (int e = 0; e < n; e++) {
            const uint32_t u = key(sc[e]);
            if (u > kth || (u == kth && ties-- > 0)) kept[(size_t)z * k + t++] = e;
        }
    }
}
