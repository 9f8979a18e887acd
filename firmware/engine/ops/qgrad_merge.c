/* Where a residual branch starts, the gradient of its input is the sum of two: the branch's (g_b, exponent e_b,
 * the path's constant c) and the skip's that the ADD passed down (g_s, e_s, constant c_s). The host folds
 * c_s / c = mult·2^(shift − 31) (Q0.31, mult > 0). The sum is formed at the common exponent E0 = max(e_b, e_s + shift)
 * − QGRAD_MERGE_BITS, where both terms are integers below 2^29 (g_b·2^(e_b − E0), and g_s·mult rounded by
 * 2^(E0 − (shift − 31 + e_s)) >= 2^9, half away from zero), then requantised to int8 by qgrad_requant: E = E0 + k.
 * g is overwritten with the merged codes; acc (n int32) is scratch. */
#include "qgrad.h"
#include "requant.h"

static int32_t rdbp64(int64_t v, int32_t k)
{
    int64_t q;
    if (k > 62)
        return 0;
    q = ((v < 0 ? -v : v) + ((int64_t)1 << (k - 1))) >> k;
    return (int32_t)(v < 0 ? -q : q);
}

int32_t qgrad_merge(int8_t *g, const int8_t *gs, uint32_t n, int32_t e_b, int32_t e_s, int32_t mult, int32_t shift,
                    int32_t *acc)
{
    int32_t top = e_b > e_s + shift ? e_b : e_s + shift, e0 = top - QGRAD_MERGE_BITS;
    int32_t sb = e_b - e0, ss = e0 - (shift - 31 + e_s);
    if (sb >= 0)
        for (uint32_t j = 0; j < n; j++)
            acc[j] = (int32_t)((uint32_t)g[j] << sb) + rdbp64((int64_t)gs[j] * mult, ss);
    else
        for (uint32_t j = 0; j < n; j++)
            acc[j] = (-sb > 30 ? 0 : rq_rdbp(g[j], -sb)) + rdbp64((int64_t)gs[j] * mult, ss);
    return e0 + qgrad_requant(acc, n, g);
}
