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

/* gemmlowp helpers used by the int8 softmax (requant.c) */
int32_t rq_exp_on_negative_values(int32_t a);           /* exp(a) in Q0.31 for a <= 0 in Q5.26 */
int32_t rq_reciprocal(int32_t x, int32_t *bits_over_unit); /* 1/x for x > 0 in Q12.19 (see requant.c) */
int32_t rq_rdbp64(int32_t x, int32_t e);                 /* rq_rdbp for e in 0..63 */

#endif
