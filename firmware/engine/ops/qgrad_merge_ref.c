/* Plain residual gradient merge straight from the definition (host tests only): both terms as exact 64-bit
 * integers at the common exponent, each rounded half away from zero by division, then qgrad_requant_ref. */
#include "qgrad.h"

static int64_t div_pow2_away(int64_t v, int32_t k) /* v / 2^k, ties away from zero; k >= 0 */
{
    int64_t a = v < 0 ? -v : v, d;
    if (k == 0)
        return v;
    if (k > 62)
        return 0;
    d = (int64_t)1 << k;
    a = (a + d / 2) / d;
    return v < 0 ? -a : a;
}

int32_t qgrad_merge_ref(int8_t *g, const int8_t *gs, uint32_t n, int32_t e_b, int32_t e_s, int32_t mult,
                        int32_t shift, int32_t *acc)
{
    int32_t top = e_b;
    if (e_s + shift > top)
        top = e_s + shift;
    int32_t e0 = top - QGRAD_MERGE_BITS;
    for (uint32_t j = 0; j < n; j++) {
        int64_t b = e_b >= e0 ? (int64_t)g[j] * ((int64_t)1 << (e_b - e0)) : div_pow2_away(g[j], e0 - e_b);
        int64_t s = div_pow2_away((int64_t)gs[j] * mult, e0 - (shift - 31 + e_s));
        acc[j] = (int32_t)(b + s);
    }
    return e0 + qgrad_requant_ref(acc, n, g);
}
