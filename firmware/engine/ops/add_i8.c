/* int8 ADD of two equally shaped tensors: each input minus its zero point, shifted left, rescaled to twice the
 * larger input scale, summed, requantised to the output (multipliers from the host). */
#include "qop.h"
#include "requant.h"

void add_i8(const qadd_t *p, const int8_t *x1, const int8_t *x2, int8_t *y)
{
    for (uint32_t j = 0; j < p->n; j++) {
        int32_t a = rq_mul((int32_t)((uint32_t)(x1[j] - p->zp1) << p->left_shift), p->m1, p->s1);
        int32_t b = rq_mul((int32_t)((uint32_t)(x2[j] - p->zp2) << p->left_shift), p->m2, p->s2);
        y[j] = rq_out_opt(a + b, p->mo, p->so, p->zp_out, p->act_min, p->act_max);
    }
}
