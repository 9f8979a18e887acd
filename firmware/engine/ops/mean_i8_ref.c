/* Plain MEAN over height and width (host tests only): the sum by (row, column), the zero point subtracted per
 * element, one requantisation with the plain gemmlowp arithmetic. */
#include "qop.h"
#include "requant_ref.h"

void mean_i8_ref(const qmean_t *p, const int8_t *x, int8_t *y)
{
    for (int32_t c = 0; c < p->c; c++) {
        int32_t acc = 0;
        for (int32_t iy = 0; iy < p->h; iy++)
            for (int32_t ix = 0; ix < p->w; ix++)
                acc += x[(iy * p->w + ix) * p->c + c] - p->zp_in;
        y[c] = (int8_t)ref_clamp(ref_mul(acc, p->mult, p->shift) + p->zp_out, -128, 127);
    }
}
