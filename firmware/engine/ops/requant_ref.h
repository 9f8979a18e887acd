/* gemmlowp requantisation written plainly from its definition, for the reference kernels only (host tests): 64-bit
 * products and divisions instead of requant.h's shifts and masks, so a slip in either shows as a mismatch. */
#ifndef OPS_REQUANT_REF_H
#define OPS_REQUANT_REF_H

#include <stdint.h>

/* round(a·b / 2^31) with ties away from zero, saturating the one overflow case */
static inline int32_t ref_srdhm(int32_t a, int32_t b)
{
    int64_t ab = (int64_t)a * b, half = (int64_t)1 << 30;
    if (a == INT32_MIN && b == INT32_MIN)
        return INT32_MAX;
    return (int32_t)((ab >= 0 ? ab + half : ab + 1 - half) / ((int64_t)1 << 31));
}

/* x / 2^e rounded to nearest, ties away from zero */
static inline int32_t ref_rdbp(int64_t x, int32_t e)
{
    int64_t d = (int64_t)1 << e, q = ((x < 0 ? -x : x) + d / 2) / d;
    return (int32_t)(x < 0 ? -q : q);
}

/* x·M for M = (multiplier, shift): x·2^shift (wrapping as int32, as TFLite's int32 arithmetic does) then srdhm for
 * shift > 0; srdhm then a rounding divide by 2^-shift otherwise */
static inline int32_t ref_mul(int32_t x, int32_t mult, int32_t shift)
{
    if (shift > 0)
        return ref_srdhm((int32_t)(uint32_t)((uint64_t)(uint32_t)x << shift), mult);
    return ref_rdbp(ref_srdhm(x, mult), -shift);
}

static inline int32_t ref_clamp(int32_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

#endif
