/* Plain int8 FULLY_CONNECTED straight from the definition (host tests only). */
#include "qop.h"
#include "requant.h"

void fc_i8_ref(const qfc_t *p, const int8_t *x, const int8_t *w, int8_t *y)
{
    for (uint32_t r = 0; r < p->rows; r++)
        for (uint32_t o = 0; o < p->out_c; o++) {
            int32_t acc = p->bias ? p->bias[o] : 0;
            uint32_t q = p->rq_per_channel ? o : 0;
            for (uint32_t j = 0; j < p->in_c; j++)
                acc += (x[r * p->in_c + j] - p->zp_in) * w[o * p->in_c + j];
            y[r * p->out_c + o] = rq_out(acc, p->rq[2 * q], p->rq[2 * q + 1], p->zp_out, p->act_min, p->act_max);
        }
}
