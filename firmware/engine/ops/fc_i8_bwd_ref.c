/* Plain int8 FULLY_CONNECTED backward straight from the definition (host tests only). */
#include "qgrad.h"

void fc_i8_input_grad_ref(const qfc_t *p, const int16_t *h, const qrows_t *w, int32_t *acc)
{
    for (uint32_t j = 0; j < p->in_c; j++) {
        uint32_t cur = 0;
        int32_t s = 0;
        for (uint32_t o = 0; o < p->out_c; o++)
            s += h[o] * qrows_get(w, o, &cur)[j];
        acc[j] = s;
    }
}

void fc_i8_weight_grad_ref(const qfc_t *p, int32_t h_o, const int8_t *x, int32_t *a)
{
    for (uint32_t j = 0; j < p->in_c; j++)
        a[j] = h_o * (x[j] - p->zp_in);
}

/* the fused row update from its definition (qgrad.h): P, k, M and s by plain 64-bit arithmetic, then each weight's Δ
 * and the qsgd_i8 rule (qsgd_step_ref) */
int32_t fc_i8_update_row_ref(const int8_t *x, int32_t zp, uint32_t n, int32_t h_o, int32_t mult, int32_t shift_e,
                             int8_t *w, uint16_t *r)
{
    int64_t p = (int64_t)h_o * mult, mag = p < 0 ? -p : p, m;
    int32_t k = 0, s, changed = 0;
    if (p == 0)
        return 0;
    while ((mag >> k) >= ((int64_t)1 << 22))
        k++;
    m = k ? (p + ((int64_t)1 << (k - 1))) >> k : p; /* arithmetic shift: floor, so half up */
    s = 31 - shift_e - k;
    for (uint32_t j = 0; j < n; j++) {
        int64_t v = (int64_t)(x[j] - zp) * m, d;
        if (s >= 1) {
            d = s >= 62 ? 0 : (v + ((int64_t)1 << (s - 1))) >> s;
        } else {
            /* |v| < 2^30: below a shift of 31 the product fits int64 */
            d = -s >= 31 ? (v > 0 ? QGRAD_DELTA_MAX : v < 0 ? -QGRAD_DELTA_MAX : 0) : v * ((int64_t)1 << -s);
            d = d > QGRAD_DELTA_MAX ? QGRAD_DELTA_MAX : d < -QGRAD_DELTA_MAX ? -QGRAD_DELTA_MAX : d;
        }
        changed += qsgd_step_ref(w + j, r + j, d);
    }
    return changed;
}
