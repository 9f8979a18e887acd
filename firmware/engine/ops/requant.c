/* gemmlowp fixed-point exp on negative values and reciprocal, for the int8 softmax (bench/quant.py). Integer
 * arithmetic only; constants are Q0.31 (or Q2.29 where noted) values of the named reals, rounded. */
#include "requant.h"

#define Q31_ONE_THIRD 715827883          /* 1/3 */
#define Q31_EXP_MINUS_EIGHTH 1895147668  /* exp(-1/8) */
#define Q229_48_OVER_17 1515870810       /* 48/17 in Q2.29 */
#define Q229_32_OVER_17 1010580540       /* 32/17 in Q2.29 */

/* exp(-2^k) for k = -2..4: applied for each set bit of the argument's integer and high fraction part */
static const int32_t exp_of_powers[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242};

int32_t rq_rdbp64(int32_t x, int32_t e)
{
    int64_t v = x, mask, threshold;
    if (e <= 31)
        return rq_rdbp(x, e);
    mask = ((int64_t)1 << e) - 1;
    threshold = (mask >> 1) + (v < 0);
    return (int32_t)((v >> e) + ((v & mask) > threshold));
}

/* x * 2^e saturated to int32 (e in 1..30) */
static int32_t sat_shl(int32_t x, int32_t e)
{
    int32_t threshold = (int32_t)((1u << (31 - e)) - 1u);
    if (x > threshold)
        return INT32_MAX;
    if (x < -threshold)
        return INT32_MIN;
    return (int32_t)((uint32_t)x << e);
}

/* exp(a) for a in [-1/4, 0) in Q0.31: Taylor series around -1/8 */
static int32_t exp_quarter(int32_t a)
{
    int32_t x = a + (1 << 28);
    int32_t x2 = rq_srdhm(x, x), x3 = rq_srdhm(x2, x);
    int32_t x4_over_4 = rq_rdbp(rq_srdhm(x2, x2), 2);
    int32_t poly = rq_rdbp(rq_srdhm(x4_over_4 + x3, Q31_ONE_THIRD) + x2, 1);
    return Q31_EXP_MINUS_EIGHTH + rq_srdhm(Q31_EXP_MINUS_EIGHTH, x + poly);
}

int32_t rq_exp_on_negative_values(int32_t a)
{
    const int32_t frac_bits = 26, quarter = 1 << 24;
    int32_t amq = (a & (quarter - 1)) - quarter;
    int32_t result = exp_quarter(sat_shl(amq, 5));
    int32_t remainder = amq - a;
    if (a == 0)
        return INT32_MAX;
    for (int32_t k = -2; k <= 4; k++)
        if (remainder & (1 << (frac_bits + k)))
            result = rq_srdhm(result, exp_of_powers[k + 2]);
    return result;
}

/* 1/(1+a) for a in [0, 1) in Q0.31: Newton-Raphson in Q2.29 */
static int32_t one_over_one_plus_x(int32_t a)
{
    int64_t s = (int64_t)a + INT32_MAX;
    int32_t half_den = (int32_t)((s + 1) / 2);
    int32_t x = Q229_48_OVER_17 + rq_srdhm(half_den, -Q229_32_OVER_17);
    for (int i = 0; i < 3; i++) {
        int32_t err = (1 << 29) - rq_srdhm(half_den, x);
        x = x + sat_shl(rq_srdhm(x, err), 2);
    }
    return sat_shl(x, 1);
}

int32_t rq_reciprocal(int32_t x, int32_t *bits_over_unit)
{
    uint32_t u = (uint32_t)x;
    int32_t headroom_plus_one = 0;
    while (!(u & 0x80000000u)) {
        u <<= 1;
        headroom_plus_one++;
    }
    *bits_over_unit = 12 - headroom_plus_one;
    return one_over_one_plus_x((int32_t)(u - 0x80000000u));
}
