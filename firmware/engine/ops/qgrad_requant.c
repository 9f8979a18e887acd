/* int32 gradient accumulators to int8 codes with a per-tensor power-of-two scale chosen on the device: the smallest
 * right shift k >= 0 (rounding half away from zero) that brings the largest magnitude into [-127, 127]. Two passes:
 * the maximum, then the shift; the shift is found from the maximum alone (rounding is symmetric). */
#include "qgrad.h"
#include "requant.h"

int32_t qgrad_requant(const int32_t *acc, uint32_t n, int8_t *g)
{
    int32_t hi = 0, lo = 0, m, k = 0;
    uint32_t j = 0;
    for (; j + 2 <= n; j += 2) {
        int32_t a = acc[j], b = acc[j + 1];
        hi = a > hi ? a : hi;
        lo = a < lo ? a : lo;
        hi = b > hi ? b : hi;
        lo = b < lo ? b : lo;
    }
    for (; j < n; j++) {
        hi = acc[j] > hi ? acc[j] : hi;
        lo = acc[j] < lo ? acc[j] : lo;
    }
    m = -lo > hi ? -lo : hi;
    if (m > 127)
        k = 31 - __builtin_clz((uint32_t)m) - 6; /* 2^(k+6) <= m < 2^(k+7): rounding may still give 128 */
    while (rq_rdbp(m, k) > 127)
        k++;
    if (k == 0) {
        for (j = 0; j < n; j++)
            g[j] = (int8_t)acc[j];
        return 0;
    }
    for (j = 0; j < n; j++)
        g[j] = (int8_t)rq_rdbp(acc[j], k);
    return k;
}
