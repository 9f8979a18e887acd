/* Backward of int8 FULLY_CONNECTED (one input row): the input gradient accumulates four weight rows per pass over
 * acc (acc[j] += h0·w0[j] + h1·w1[j] + h2·w2[j] + h3·w3[j]), rows read through qrows_t (sparse update: trained
 * rows from the arena, the others from flash); the weight gradient of one channel is h_o·(x - zp_in). */
#include <string.h>
#include "qgrad.h"

void fc_i8_input_grad(const qfc_t *p, const int16_t *h, const qrows_t *w, int32_t *acc)
{
    uint32_t n = p->in_c, o = 0, cur = 0;
    memset(acc, 0, n * sizeof *acc);
    while (o < p->out_c) {
        const int8_t *r[4];
        int32_t hv[4];
        uint32_t k = 0;
        for (; k < 4 && o < p->out_c; o++) {
            const int8_t *row = qrows_get(w, o, &cur);
            if (h[o] == 0)
                continue; /* masked (ReLU) outputs contribute nothing */
            r[k] = row;
            hv[k++] = h[o];
        }
        if (k == 4) {
            const int8_t *r0 = r[0], *r1 = r[1], *r2 = r[2], *r3 = r[3];
            int32_t h0 = hv[0], h1 = hv[1], h2 = hv[2], h3 = hv[3];
            for (uint32_t j = 0; j < n; j++)
                acc[j] += h0 * r0[j] + h1 * r1[j] + h2 * r2[j] + h3 * r3[j];
        } else {
            for (uint32_t q = 0; q < k; q++)
                for (uint32_t j = 0; j < n; j++)
                    acc[j] += hv[q] * r[q][j];
        }
    }
}

void fc_i8_weight_grad(const qfc_t *p, int32_t h_o, const int8_t *x, int32_t *a)
{
    uint32_t n = p->in_c, j = 0;
    int32_t off = -h_o * p->zp_in;
    if (h_o == 0) {
        memset(a, 0, n * sizeof *a);
        return;
    }
    for (; j + 4 <= n; j += 4) {
        a[j] = h_o * x[j] + off;
        a[j + 1] = h_o * x[j + 1] + off;
        a[j + 2] = h_o * x[j + 2] + off;
        a[j + 3] = h_o * x[j + 3] + off;
    }
    for (; j < n; j++)
        a[j] = h_o * x[j] + off;
}
