/* The inner loop of every int8 input gradient (FULLY_CONNECTED, CONV_2D): acc[j] += sum_k h_k·r_k[j] over up to
 * four weight rows per pass, so each accumulator is loaded and stored once per four rows instead of once per row.
 * Callers list the rows whose h is nonzero (a ReLU-masked output contributes nothing) and hand them over in fours. */
#ifndef OPS_IGRAD_I8_H
#define OPS_IGRAD_I8_H

#include <stdint.h>
#include "qgrad.h"

/* acc[j] += h[0]·r[0][j] + ... + h[k-1]·r[k-1][j], j < n, for k in 1..4 (each row read from r[q] + off); always
 * inlined: on the M0+ a call keeps the four row pointers out of its eight low registers */
static inline __attribute__((always_inline)) void igrad_rows(int32_t *acc, uint32_t n, const int8_t *const *r,
                                                           const int32_t *h, uint32_t k, uint32_t off)
{
    if (k == 4u) {
        const int8_t *r0 = r[0] + off, *r1 = r[1] + off, *r2 = r[2] + off, *r3 = r[3] + off;
        const int32_t h0 = h[0], h1 = h[1], h2 = h[2], h3 = h[3];
        for (uint32_t j = 0; j < n; j++)
            acc[j] += h0 * r0[j] + h1 * r1[j] + h2 * r2[j] + h3 * r3[j];
        return;
    }
    if (k >= 2u) {
        const int8_t *r0 = r[0] + off, *r1 = r[1] + off;
        const int32_t h0 = h[0], h1 = h[1];
        for (uint32_t j = 0; j < n; j++)
            acc[j] += h0 * r0[j] + h1 * r1[j];
        r += 2;
        h += 2;
        k -= 2u;
    }
    if (k) {
        const int8_t *r0 = r[0] + off;
        const int32_t h0 = h[0];
        for (uint32_t j = 0; j < n; j++)
            acc[j] += h0 * r0[j];
    }
}

/* the next rows (up to four) from output channel *o on whose h is nonzero, read through w in ascending order (*cur as
 * qrows_get keeps it), their h in hv; returns how many, 0 when the channels are done */
static inline uint32_t igrad_next4(const qrows_t *w, const int16_t *h, uint32_t out_c, uint32_t *o, uint32_t *cur,
                                   const int8_t **rows, int32_t *hv)
{
    uint32_t k = 0;
    for (; *o < out_c && k < 4u; (*o)++) {
        const int8_t *row = qrows_get(w, *o, cur);
        if (h[*o] == 0)
            continue; /* masked (ReLU) outputs contribute nothing */
        rows[k] = row;
        hv[k++] = h[*o];
    }
    return k;
}

#endif
