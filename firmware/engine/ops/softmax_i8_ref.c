/* Plain SOFTMAX (host tests only): each row's exponentials computed once into a table, summed, then each scaled by
 * the reciprocal of the sum. The fixed-point exp and reciprocal are gemmlowp's (requant.c, tested on their own);
 * the scaling and rounding around them use the plain arithmetic. */
#include "qop.h"
#include "requant.h"
#include "requant_ref.h"

void softmax_i8_ref(const qsoftmax_t *p, const int8_t *x, int8_t *y)
{
    int32_t e[4096];
    for (uint32_t r = 0; r < p->rows; r++) {
        const int8_t *xr = x + r * p->depth;
        int32_t mx = xr[0], sum = 0, bits, recip;
        for (uint32_t j = 1; j < p->depth; j++)
            mx = xr[j] > mx ? xr[j] : mx;
        for (uint32_t j = 0; j < p->depth; j++) {
            int32_t diff = xr[j] - mx;
            e[j] = diff >= p->diff_min ? rq_exp_on_negative_values(ref_mul(diff, p->mult, p->shift)) : 0;
            sum += diff >= p->diff_min ? ref_rdbp(e[j], 12) : 0; /* Q0.31 to the Q12.19 of the sum */
        }
        recip = rq_reciprocal(sum, &bits);
        for (uint32_t j = 0; j < p->depth; j++)
            y[r * p->depth + j] = (int8_t)(e[j] ? ref_clamp(ref_rdbp(ref_srdhm(recip, e[j]), bits + 31 - 8) - 128,
                                                            -128, 127)
                                                : -128);
    }
}
