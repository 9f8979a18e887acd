/* Plain ADD (host tests only): each input minus its zero point, times 2^left_shift, rescaled, summed, rescaled to
 * the output, with the plain gemmlowp arithmetic. */
#include "qop.h"
#include "requant_ref.h"

void add_i8_ref(const qadd_t *p, const int8_t *x1, const int8_t *x2, int8_t *y)
{
    for (uint32_t j = 0; j < p->n; j++) {
        int32_t a = ref_mul((x1[j] - p->zp1) * (1 << p->left_shift), p->m1, p->s1);
        int32_t b = ref_mul((x2[j] - p->zp2) * (1 << p->left_shift), p->m2, p->s2);
        y[j] = (int8_t)ref_clamp(ref_mul(a + b, p->mo, p->so) + p->zp_out, p->act_min, p->act_max);
    }
}
