/* int8 SOFTMAX over the last axis (TFLite semantics): differences to the row maximum scaled to Q5.26 (host
 * multiplier), gemmlowp fixed-point exp, sum in Q12.19, fixed-point reciprocal; output scale 1/256, zero point -128.
 * Differences below diff_min give exp = 0 and the output -128. */
#include "qop.h"
#include "requant.h"

void softmax_i8(const qsoftmax_t *p, const int8_t *x, int8_t *y)
{
    for (uint32_t r = 0; r < p->rows; r++, x += p->depth, y += p->depth) {
        int32_t mx = -128, sum = 0, bits, recip;
        for (uint32_t j = 0; j < p->depth; j++)
            mx = x[j] > mx ? x[j] : mx;
        for (uint32_t j = 0; j < p->depth; j++) {
            int32_t diff = x[j] - mx;
            if (diff >= p->diff_min)
                sum += rq_rdbp(rq_exp_on_negative_values(rq_mul(diff, p->mult, p->shift)), 12);
        }
        recip = rq_reciprocal(sum, &bits);
        for (uint32_t j = 0; j < p->depth; j++) {
            int32_t diff = x[j] - mx, v = -128;
            if (diff >= p->diff_min) {
                int32_t e = rq_exp_on_negative_values(rq_mul(diff, p->mult, p->shift));
                v = rq_rdbp64(rq_srdhm(recip, e), bits + 31 - 8) - 128;
                v = v < -128 ? -128 : v > 127 ? 127 : v;
            }
            y[j] = (int8_t)v;
        }
    }
}
