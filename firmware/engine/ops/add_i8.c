/* int8 ADD of two equally shaped tensors: each input minus its zero point, shifted left, rescaled to twice the
 * larger input scale, summed, requantised to the output (multipliers from the host).
 * On cores with SMMULR each input's rescale is one SMMULR and a rounding shift: (x - zp) << left_shift fits in 29
 * bits (|x - zp| <= 255, left_shift <= 21), so SRDHM(x << l, M) = SMMULR(x << (l + 1), M) exactly, and for a shift
 * -e <= 0 the divide by 2^e rounding half away from zero is (v + 2^(e-1) - [v < 0]) >> e (rq_out_fast's rule). Other
 * constants take the plain loop, the one add_i8_ref.c is checked against. */
#include "qop.h"
#include "requant.h"

static void add_plain(const qadd_t *p, const int8_t *x1, const int8_t *x2, int8_t *y)
{
    for (uint32_t j = 0; j < p->n; j++) {
        int32_t a = rq_mul((int32_t)((uint32_t)(x1[j] - p->zp1) << p->left_shift), p->m1, p->s1);
        int32_t b = rq_mul((int32_t)((uint32_t)(x2[j] - p->zp2) << p->left_shift), p->m2, p->s2);
        y[j] = rq_out_opt(a + b, p->mo, p->so, p->zp_out, p->act_min, p->act_max);
    }
}

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
/* x·M / 2^e for x = (code - zp) << (l + 1) as above; r = 2^(e-1) and t = -1, or both 0 for e = 0 */
static inline int32_t rescale(int32_t x, int32_t m, int32_t e, int32_t r, int32_t t)
{
    int32_t v = rq_smmulr(x, m);
    return (v + r + ((v >> 31) & t)) >> e;
}

/* the constants are read into locals first: the int8 stores could alias *p, which would reload them per element */
static int add_fast(const qadd_t *p, const int8_t *x1, const int8_t *x2, int8_t *y)
{
    const int32_t l = p->left_shift + 1, e1 = -p->s1, e2 = -p->s2, zp1 = p->zp1, zp2 = p->zp2;
    const int32_t m1 = p->m1, m2 = p->m2, mo = p->mo, so = p->so, zp = p->zp_out, lo = p->act_min, hi = p->act_max;
    const uint32_t n = p->n;
    int32_t r1, r2, t1, t2, add;
    if (p->left_shift < 0 || p->left_shift > 21 || e1 < 0 || e1 > 31 || e2 < 0 || e2 > 31)
        return 0;
    r1 = e1 ? 1 << (e1 - 1) : 0;
    r2 = e2 ? 1 << (e2 - 1) : 0;
    t1 = e1 ? -1 : 0;
    t2 = e2 ? -1 : 0;
    if (rq_neg_ok(so, zp)) { /* the usual output constants: rounding and zero point in one addend */
        add = rq_neg_add(so, zp);
        for (uint32_t j = 0; j < n; j++) {
            int32_t a = rescale((int32_t)((uint32_t)(x1[j] - zp1) << l), m1, e1, r1, t1);
            int32_t b = rescale((int32_t)((uint32_t)(x2[j] - zp2) << l), m2, e2, r2, t2);
            y[j] = rq_out_neg(a + b, mo, -so, add, zp, lo, hi);
        }
        return 1;
    }
    for (uint32_t j = 0; j < n; j++) {
        int32_t a = rescale((int32_t)((uint32_t)(x1[j] - zp1) << l), m1, e1, r1, t1);
        int32_t b = rescale((int32_t)((uint32_t)(x2[j] - zp2) << l), m2, e2, r2, t2);
        y[j] = rq_out_fast(a + b, mo, so, zp, lo, hi);
    }
    return 1;
}
#endif

void add_i8(const qadd_t *p, const int8_t *x1, const int8_t *x2, int8_t *y)
{
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
    if (add_fast(p, x1, x2, y))
        return;
#endif
    add_plain(p, x1, x2, y);
}
