/* Plain residual update straight from the definition (host tests only): exact rational arithmetic on int64. */
#include "qgrad.h"

/* code and residual after a step of d: V = 65536·w + (r − 32768) − d is the signed value, clamped so that the
 * rounded code floor((V + 32768) / 65536) lies in [−128, 127] */
int32_t qsgd_step_ref(int8_t *w, uint16_t *r, int64_t d)
{
    int64_t v = (int64_t)*w * 65536 + ((int64_t)*r - 32768) - d, q;
    const int64_t lo = -128 * 65536 - 32768, hi = 127 * 65536 + 32767;
    int32_t old = *w;
    v = v < lo ? lo : v > hi ? hi : v;
    q = v >= -32768 ? (v + 32768) / 65536 : -((-(v + 32768) + 65535) / 65536); /* floor((v + 32768) / 65536) */
    *w = (int8_t)q;
    *r = (uint16_t)(v - q * 65536 + 32768);
    return (int32_t)q - old;
}

int32_t qsgd_i8_ref(int8_t *w, uint16_t *r, const int32_t *a, uint32_t n, int32_t mult, int32_t shift_e)
{
    int32_t changed = 0;
    for (uint32_t j = 0; j < n; j++)
        changed += qsgd_step_ref(w + j, r + j, qsgd_delta(a[j], mult, shift_e));
    return changed;
}
