/* Plain residual update straight from the definition (host tests only): exact rational arithmetic on int64. */
#include "qgrad.h"

int32_t qsgd_i8_ref(int8_t *w, int16_t *r, const int32_t *a, uint32_t n, int32_t mult, int32_t shift_e)
{
    int32_t changed = 0;
    for (uint32_t j = 0; j < n; j++) {
        int64_t v = (int64_t)w[j] * 65536 + r[j] - qsgd_delta(a[j], mult, shift_e), q;
        if (v > 127 * 65536)
            v = 127 * 65536;
        if (v < -127 * 65536)
            v = -127 * 65536;
        q = v >= -32768 ? (v + 32768) / 65536 : -((-(v + 32768) + 65535) / 65536); /* floor((v + 32768) / 65536) */
        changed += (int32_t)q - w[j];
        w[j] = (int8_t)q;
        r[j] = (int16_t)(v - q * 65536);
    }
    return changed;
}
