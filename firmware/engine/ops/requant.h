/* Fixed-point arithmetic of int8 TFLite inference (gemmlowp semantics, as bench/quant.py specifies them):
 * x * M for M = (multiplier Q0.31, shift) is a saturating rounding doubling high multiply followed by a rounding
 * divide by a power of two (two roundings). Inline: the kernels requantise every output without a call. */
#ifndef OPS_REQUANT_H
#define OPS_REQUANT_H

#include <stdint.h>

/* round(a * b / 2^31), the one overflow case (INT32_MIN^2) saturated */
static inline int32_t rq_srdhm(int32_t a, int32_t b)
{
    int64_t ab, s;
    if (a == INT32_MIN && b == INT32_MIN)
        return INT32_MAX;
    ab = (int64_t)a * b;
    s = ab + (ab >= 0 ? (int64_t)(1 << 30) : (int64_t)(1 - (1 << 30)));
    return (int32_t)(s >= 0 ? s >> 31 : -((-s) >> 31)); /* C division by 2^31: truncates toward zero */
}

/* x / 2^e rounded to nearest, ties away from zero; e in 0..31 */
static inline int32_t rq_rdbp(int32_t x, int32_t e)
{
    int32_t mask = (int32_t)((1u << e) - 1u);
    int32_t threshold = (mask >> 1) + (x < 0);
    return (x >> e) + ((x & mask) > threshold);
}

/* rq_srdhm for b >= 0 (validated multipliers): the saturating case cannot occur */
static inline int32_t rq_srdhm_pos(int32_t a, int32_t b)
{
    int64_t s = (int64_t)a * b;
    s += s >= 0 ? (int64_t)(1 << 30) : (int64_t)(1 - (1 << 30));
    if (s < 0)
        s += 0x7FFFFFFF; /* truncating division by 2^31 as an arithmetic shift */
    return (int32_t)(s >> 31);
}

/* x * M: left shift first for M >= 1 (shift > 0), rounding right shift after for M < 1; shift in -31..30 */
static inline int32_t rq_mul(int32_t x, int32_t mult, int32_t shift)
{
    if (shift > 0)
        return rq_srdhm((int32_t)((uint32_t)x << shift), mult);
    return rq_rdbp(rq_srdhm(x, mult), -shift);
}

/* requantise an accumulator with a validated multiplier (>= 0), add the output zero point, clamp */
static inline int8_t rq_out(int32_t acc, int32_t mult, int32_t shift, int32_t zp, int32_t lo, int32_t hi)
{
    int32_t v;
    if (shift > 0)
        v = rq_srdhm_pos((int32_t)((uint32_t)acc << shift), mult);
    else
        v = rq_rdbp(rq_srdhm_pos(acc, mult), -shift);
    v += zp;
    return (int8_t)(v < lo ? lo : v > hi ? hi : v);
}

/* round(a * b / 2^32) by SMMULR where the core has it (floor of the product / 2^32 plus a half) */
static inline int32_t rq_smmulr(int32_t a, int32_t b)
{
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
    int32_t r;
    __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
#else
    return (int32_t)(((int64_t)a * b + ((int64_t)1 << 31)) >> 32);
#endif
}

/* rq_out in fewer instructions, for the optimized kernels (the reference kernels keep rq_out). For a validated
 * multiplier SRDHM(x, M) is floor(x·M / 2^31 + 1/2), which is SMMULR(2x, M) whenever 2x fits in 32 bits; the
 * rounding divide by 2^e (ties away from zero) is floor((v + 2^(e-1) - [v < 0]) / 2^e). Accumulators outside ±2^30
 * (after the left shift) take rq_out itself. |v| <= 2^30 here, so the rounding add cannot overflow. */
static inline int8_t rq_out_fast(int32_t acc, int32_t mult, int32_t shift, int32_t zp, int32_t lo, int32_t hi)
{
    int32_t x = shift > 0 ? (int32_t)((uint32_t)acc << shift) : acc, x2 = (int32_t)((uint32_t)x << 1), v;
    if ((x2 >> 1) != x)
        return rq_out(acc, mult, shift, zp, lo, hi);
    v = rq_smmulr(x2, mult);
    if (shift < 0)
        v = (v + (1 << (-shift - 1)) + (v >> 31)) >> -shift;
    v += zp;
    return (int8_t)(v < lo ? lo : v > hi ? hi : v);
}

/* the same for shift = -e < 0 (the usual case: M < 1/2) with the rounding constant and the zero point in one
 * addend, add = 2^(e-1) + zp·2^e (floor((n + zp·2^e) / 2^e) = floor(n / 2^e) + zp), which a loop hoists per
 * channel. For e <= 22 and |zp| <= 255 the sum stays inside 32 bits beside |v| <= 2^30. */
static inline int8_t rq_out_neg(int32_t acc, int32_t mult, int32_t e, int32_t add, int32_t zp, int32_t lo,
                                int32_t hi)
{
    int32_t x2 = (int32_t)((uint32_t)acc << 1), v;
    if ((x2 >> 1) != acc)
        return rq_out(acc, mult, -e, zp, lo, hi);
    v = rq_smmulr(x2, mult);
    v = (v + add + (v >> 31)) >> e;
    return (int8_t)(v < lo ? lo : v > hi ? hi : v);
}

/* whether every accumulator bias + (n products of two int8 codes, |x·w| <= 2^14) stays inside ±2^30, so that 2·acc
 * fits 32 bits and rq_out_neg's range test can be skipped (rq_out_neg_small) */
static inline int rq_acc_small(int32_t bias, uint32_t n)
{
    return bias > -(1 << 29) && bias < (1 << 29) && n <= (1u << 15);
}

/* rq_out_neg for an accumulator known to be inside ±2^30 (rq_acc_small): SRDHM is SMMULR(2·acc, M) */
static inline int8_t rq_out_neg_small(int32_t acc, int32_t mult, int32_t e, int32_t add, int32_t lo, int32_t hi)
{
    int32_t v = rq_smmulr((int32_t)((uint32_t)acc << 1), mult);
    v = (v + add + (v >> 31)) >> e;
    return (int8_t)(v < lo ? lo : v > hi ? hi : v);
}

/* whether rq_out_neg applies to a channel, and its addend */
static inline int rq_neg_ok(int32_t shift, int32_t zp)
{
    return shift < 0 && shift >= -22 && zp >= -255 && zp <= 255;
}

static inline int32_t rq_neg_add(int32_t shift, int32_t zp)
{
    return (1 << (-shift - 1)) + zp * (1 << -shift);
}

/* what the optimized kernels requantise with: rq_out_fast on cores with SMMULR, rq_out elsewhere (on the M0+ the
 * 64-bit product costs the same either way) */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#define rq_out_opt rq_out_fast
#else
#define rq_out_opt rq_out
#endif

/* gemmlowp helpers used by the int8 softmax (requant.c) */
int32_t rq_exp_on_negative_values(int32_t a);           /* exp(a) in Q0.31 for a <= 0 in Q5.26 */
int32_t rq_reciprocal(int32_t x, int32_t *bits_over_unit); /* 1/x for x > 0 in Q12.19 (see requant.c) */
int32_t rq_rdbp64(int32_t x, int32_t e);                 /* rq_rdbp for e in 0..63 */

#endif
