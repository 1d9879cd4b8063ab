/* OpenBLAS chooses its kernels from the CPU model when it is loaded. OpenBLAS 0.3.21 (Debian 12)
 * does not know some recent CPUs: on those it falls back to its generic SSE3 "Prescott" kernels,
 * an order of magnitude slower than its AVX-512 ones. It can only be told at load
 * time, through the environment, so the library reports the fix and the command applies it. */
#include <string.h>
#include <strings.h>

#include <cblas.h>

#include "softmoe.h"

const char *smoe_cpu_blas_coretype_hint(void)
{
    const char *core = openblas_get_corename();
    if (!core) return NULL;
    const char *generic[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom", "Katmai", "Northwood"};
    int is_generic = 0;
    for (size_t i = 0; i < sizeof generic / sizeof generic[0]; i++) is_generic |= !strcasecmp(core, generic[i]);
    if (!is_generic) return NULL;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return "SkylakeX";
    if (__builtin_cpu_supports("avx2")) return "Haswell";
#endif
    return NULL;
}
