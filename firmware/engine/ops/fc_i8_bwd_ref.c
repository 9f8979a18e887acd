/* Plain int8 FULLY_CONNECTED backward straight from the definition (host tests only). */
#include "qgrad.h"

void fc_i8_input_grad_ref(const qfc_t *p, const int16_t *h, const qrows_t *w, int32_t *acc)
{
    for (uint32_t j = 0; j < p->in_c; j++) {
        uint32_t cur = 0;
        int32_t s = 0;
        for (uint32_t o = 0; o < p->out_c; o++)
            s += h[o] * qrows_get(w, o, &cur)[j];
        acc[j] = s;
    }
}

void fc_i8_weight_grad_ref(const qfc_t *p, int32_t h_o, const int8_t *x, int32_t *a)
{
    for (uint32_t j = 0; j < p->in_c; j++)
        a[j] = h_o * (x[j] - p->zp_in);
}
