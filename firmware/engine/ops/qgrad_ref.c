/* Plain loss gradient at the logits, bias gradient and bias update (host tests only), from their definitions. */
#include "qgrad.h"
#include "requant_ref.h"

/* the smallest k >= 0 for which every round(e_c / 2^k) fits [-127, 127], found by trying k = 0, 1, ... */
int32_t qgrad_logits_ref(const int8_t *p, uint32_t n, uint32_t label, int8_t *g)
{
    for (int32_t k = 0;; k++) {
        int fits = 1;
        for (uint32_t c = 0; c < n; c++) {
            int32_t v = ref_rdbp(p[c] + 128 - (c == label ? 256 : 0), k);
            fits = fits && v >= -127 && v <= 127;
        }
        if (!fits)
            continue;
        for (uint32_t c = 0; c < n; c++)
            g[c] = (int8_t)ref_rdbp(p[c] + 128 - (c == label ? 256 : 0), k);
        return k;
    }
}

/* sum of h over the positions (position-major [n_pos][out_c]) of channel oc */
int32_t qgrad_bias_ref(const int16_t *h, uint32_t n_pos, uint32_t out_c, uint32_t oc)
{
    int64_t s = 0;
    for (uint32_t pos = 0; pos < n_pos; pos++)
        s += h[pos * out_c + oc];
    return (int32_t)s;
}

/* V = 65536·b + r − Δ in exact int64; b = round half up of V / 65536 (clamped to ±2^30, residual 0 then) */
int32_t qsgd_bias_ref(int32_t *b, int16_t *r, int32_t a, int32_t mult, int32_t shift_e)
{
    int32_t old = *b;
    int64_t v = (int64_t)old * 65536 + *r - qsgd_delta(a, mult, shift_e), q;
    int64_t t = v + 32768;
    q = t >= 0 ? t / 65536 : -((-t + 65535) / 65536); /* floor */
    if (q > QGRAD_BIAS_MAX || q < -QGRAD_BIAS_MAX) {
        *b = q > 0 ? QGRAD_BIAS_MAX : -QGRAD_BIAS_MAX;
        *r = 0;
    } else {
        *b = (int32_t)q;
        *r = (int16_t)(v - q * 65536);
    }
    return *b - old;
}

/* the reconstruction loss gradient from its definition: d = (y − zp_y) − x·M (64-bit reference multiply), then the
 * smallest k >= 0 whose rounded codes all fit, found by trying k = 0, 1, ... */
int32_t qgrad_recon_ref(const qrecon_t *r, const int8_t *y, const int8_t *x, uint32_t n, int8_t *g)
{
    for (int32_t k = 0;; k++) {
        int fits = 1;
        for (uint32_t j = 0; j < n && fits; j++) {
            int32_t v = ref_rdbp((int64_t)(y[j] - r->zp_y) - ref_mul(x[j] - r->zp_x, r->mult, r->shift), k);
            fits = v >= -127 && v <= 127;
        }
        if (!fits)
            continue;
        for (uint32_t j = 0; j < n; j++)
            g[j] = (int8_t)ref_rdbp((int64_t)(y[j] - r->zp_y) - ref_mul(x[j] - r->zp_x, r->mult, r->shift), k);
        return k;
    }
}
