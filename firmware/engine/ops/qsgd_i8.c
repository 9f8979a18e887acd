/* SGD on int8 weight codes with a Q16 residual per weight (docs/qplan-format.md, "Updates"): the step Δ is the
 * gradient accumulator times a host-computed multiplier (learning rate, QAS s_W^-2 and every static scale folded
 * in) times 2^E of this step's output gradient, in units of 2^-16 code. int8 codes cannot absorb sub-LSB steps; the
 * residual carries them to later steps, so the codes follow the real-valued SGD trajectory to 2^-16 LSB. */
#include "qgrad.h"
#include "qstep.h"

int32_t qsgd_delta(int32_t a, int32_t mult, int32_t shift_e)
{
    int64_t prod = (int64_t)a * mult;
    int32_t t = 31 - shift_e;
    if (prod == 0 || t >= 63)
        return 0;
    if (t > 0)
        prod = (prod + ((int64_t)1 << (t - 1))) >> t; /* half up: arithmetic shift floors */
    else if (t < 0)
        prod = (prod > ((int64_t)QGRAD_DELTA_MAX >> -t) || prod < -((int64_t)QGRAD_DELTA_MAX >> -t))
                   ? (prod > 0 ? QGRAD_DELTA_MAX : -QGRAD_DELTA_MAX)
                   : prod * ((int64_t)1 << -t);
    return prod > QGRAD_DELTA_MAX ? QGRAD_DELTA_MAX : prod < -QGRAD_DELTA_MAX ? -QGRAD_DELTA_MAX : (int32_t)prod;
}

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
/* (Ra·2^32 + a·b) >> 32 */
static inline int32_t qsgd_smmla(int32_t a, int32_t b, int32_t ra)
{
    int32_t v;
    __asm__("smmla %0, %1, %2, %3" : "=r"(v) : "r"(a), "r"(b), "r"(ra));
    return v;
}

/* (a·b + 2^31) >> 32 */
static inline int32_t qsgd_smmulr(int32_t a, int32_t b)
{
    int32_t v;
    __asm__("smmulr %0, %1, %2" : "=r"(v) : "r"(a), "r"(b));
    return v;
}

/* t in 32..62, the common case: Δ = (2^(t-1) + a·mult) >> t is SMMULR for t = 32, and for t > 32 SMMLA with the
 * rounding constant 2^(t-33) in its accumulate operand then a shift; every weight is stepped without a branch (a
 * zero gradient gives Δ = 0, which leaves the code and residual as they are) */
static int32_t qsgd_rows_t32(int8_t *w, uint16_t *r, const int32_t *a, uint32_t n, int32_t mult, int32_t t)
{
    int32_t sum = 0;
    if (t == 32) {
        for (uint32_t j = 0; j < n; j++) {
            int32_t old = w[j], u = qstep_sat24(old * 65536 + r[j] - qsgd_smmulr(a[j], mult)), q = u >> 16;
            w[j] = (int8_t)q;
            r[j] = (uint16_t)u;
            sum += q - old;
        }
        return sum;
    }
    {
        const int32_t k = 1 << (t - 33), s = t - 32;
        for (uint32_t j = 0; j < n; j++) {
            int32_t old = w[j], u = qstep_sat24(old * 65536 + r[j] - (qsgd_smmla(a[j], mult, k) >> s)), q = u >> 16;
            w[j] = (int8_t)q;
            r[j] = (uint16_t)u;
            sum += q - old;
        }
    }
    return sum;
}
#endif

int32_t qsgd_i8(int8_t *w, uint16_t *r, const int32_t *a, uint32_t n, int32_t mult, int32_t shift_e)
{
    int32_t changed = 0, t = 31 - shift_e;
    if (mult == 0 || t >= 63)
        return 0;
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
    if (t >= 32)
        return qsgd_rows_t32(w, r, a, n, mult, t);
#endif
    if (t >= 32) { /* |a·mult| < 2^62 gives |Δ| < 2^30: no clamp; the high word of round + a·mult (one SMLAL) */
        int64_t half = (int64_t)1 << (t - 1);
        for (uint32_t j = 0; j < n; j++) {
            int32_t d;
            if (a[j] == 0)
                continue;
            d = (int32_t)((half + (int64_t)a[j] * mult) >> 32) >> (t - 32);
            if (d)
                changed += qstep_code(w + j, r + j, d);
        }
    } else if (t >= 1) { /* |a| < 2^(t-1): |Δ| < 2^30 and the product scaled by 2^(32-t) stays below 2^62 */
        int64_t half = (int64_t)1 << (t - 1), up = (int64_t)1 << (32 - t);
        int32_t lim = (int32_t)(half > 0x7FFFFFFF ? 0x7FFFFFFF : half);
        for (uint32_t j = 0; j < n; j++) {
            int32_t d;
            if (a[j] == 0)
                continue;
            if (a[j] < lim && a[j] > -lim)
                d = (int32_t)(((half + (int64_t)a[j] * mult) * up) >> 32);
            else
                d = qsgd_delta(a[j], mult, shift_e);
            if (d)
                changed += qstep_code(w + j, r + j, d);
        }
    } else {
        for (uint32_t j = 0; j < n; j++) {
            int32_t d = a[j] ? qsgd_delta(a[j], mult, shift_e) : 0;
            if (d)
                changed += qstep_code(w + j, r + j, d);
        }
    }
    return changed;
}

int32_t qsgd_bias(int32_t *b, int16_t *r, int32_t a, int32_t mult, int32_t shift_e)
{
    int32_t d = qsgd_delta(a, mult, shift_e), old = *b;
    int64_t v = (int64_t)old * (1 << QGRAD_RES_BITS) + *r - d, q = (v + (1 << (QGRAD_RES_BITS - 1))) >> QGRAD_RES_BITS;
    if (q > QGRAD_BIAS_MAX || q < -QGRAD_BIAS_MAX) {
        *b = q > 0 ? QGRAD_BIAS_MAX : -QGRAD_BIAS_MAX;
        *r = 0;
    } else {
        *b = (int32_t)q;
        *r = (int16_t)(v - q * (1 << QGRAD_RES_BITS));
    }
    return *b - old;
}
