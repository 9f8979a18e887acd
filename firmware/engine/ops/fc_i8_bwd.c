/* Backward of int8 FULLY_CONNECTED (one input row): the input gradient accumulates four weight rows per pass over
 * acc (acc[j] += h0·w0[j] + h1·w1[j] + h2·w2[j] + h3·w3[j]), rows read through qrows_t (sparse update: trained
 * rows from the arena, the others from flash); the weight gradient of one channel is h_o·(x - zp_in), which training
 * never stores: fc_i8_update_row folds it into the update, and the report reads it one value at a time. */
#include <string.h>
#include "qgrad.h"
#include "qstep.h"
#include "igrad_i8.h"

/* the same listing as igrad_next4, written out: on the M0+ that form costs this loop 14% (its four row pointers
 * spill), where conv_i8_input_grad gains from it */
void fc_i8_input_grad(const qfc_t *p, const int16_t *h, const qrows_t *w, int32_t *acc)
{
    uint32_t n = p->in_c, cur = 0, k = 0;
    const int8_t *r[4];
    int32_t hv[4];
    memset(acc, 0, n * sizeof *acc);
    for (uint32_t o = 0; o < p->out_c; o++) {
        const int8_t *row = qrows_get(w, o, &cur);
        if (h[o] == 0)
            continue; /* masked (ReLU) outputs contribute nothing */
        r[k] = row;
        hv[k++] = h[o];
        if (k == 4u) {
            igrad_rows(acc, n, r, hv, k, 0);
            k = 0;
        }
    }
    if (k)
        igrad_rows(acc, n, r, hv, k, 0);
}

int32_t fc_i8_weight_grad_at(const qfc_t *p, int32_t h_o, const int8_t *x, uint32_t j)
{
    return h_o * (x[j] - p->zp_in);
}

/* the row step: M and s as fc_i8_update_row (qgrad.h) defines them; returns 0 when every Δ of the row is 0 */
static int row_step(int32_t h_o, int32_t mult, int32_t shift_e, int32_t *m, int32_t *s)
{
    int64_t p = (int64_t)h_o * mult;
    uint64_t mag = (uint64_t)(p < 0 ? -p : p);
    int32_t k = 0;
    if (p == 0)
        return 0;
    if (mag >> 22)
        k = 64 - __builtin_clzll(mag) - 22;
    *m = (int32_t)(k ? (p + ((int64_t)1 << (k - 1))) >> k : p);
    *s = 31 - shift_e - k;
    return *s < 31;
}

/* s <= 0: steps of a code or more (a huge learning rate); 64-bit, clamped like qsgd_delta */
static int32_t update_row_big(const int8_t *x, int32_t zp, uint32_t n, int32_t m, int32_t s, int8_t *w, uint16_t *r)
{
    int32_t changed = 0;
    for (uint32_t j = 0; j < n; j++) {
        int64_t v = (int64_t)(x[j] - zp) * m;
        int32_t d;
        if (v == 0)
            continue;
        if (-s >= 31 || v > ((int64_t)QGRAD_DELTA_MAX >> -s) || v < -((int64_t)QGRAD_DELTA_MAX >> -s))
            d = v > 0 ? QGRAD_DELTA_MAX : -QGRAD_DELTA_MAX;
        else
            d = (int32_t)(v * ((int64_t)1 << -s));
        changed += qstep_code(w + j, r + j, d);
    }
    return changed;
}

void fc_i8_update_list(const int8_t *x, int32_t zp, uint32_t n, int32_t *list)
{
    uint32_t k = 0;
    for (uint32_t j = 0; j < n; j++) {
        int32_t z = x[j] - zp;
        if (!z)
            continue;
        if (k + 1u < n)
            list[1u + k] = (int32_t)(j << 16 | ((uint32_t)z & 0xFFFFu));
        k++;
    }
    list[0] = (int32_t)k;
}

int32_t fc_i8_update_row_listed(const int32_t *list, const int8_t *x, int32_t zp, uint32_t n, int32_t h_o,
                                int32_t mult, int32_t shift_e, int8_t *w, uint16_t *r)
{
    uint32_t count = (uint32_t)list[0];
    int32_t m, s, changed = 0, rnd;
    if (count + 1u >= n) /* the list did not fit (or hardly saves anything): every column */
        return fc_i8_update_row(x, zp, n, h_o, mult, shift_e, w, r);
    if (!row_step(h_o, mult, shift_e, &m, &s))
        return 0;
    if (s <= 0)
        return update_row_big(x, zp, n, m, s, w, r);
    rnd = (int32_t)(1u << (s - 1));
    for (const int32_t *e = list + 1, *end = e + count; e < end; e++) {
        uint32_t j = (uint32_t)*e >> 16;
        int32_t d = ((int32_t)(int16_t)(*e & 0xFFFF) * m + rnd) >> s; /* |z·M| < 2^30: no overflow */
        if (d)
            changed += qstep_code(w + j, r + j, d);
    }
    return changed;
}

/* The common case, s >= 1: Δ = (x·M + c) >> s with c = 2^(s−1) − zp·M folded once per row (wrapping uint32
 * arithmetic: the true value z·M + 2^(s−1) fits int32), so a weight costs one multiply-accumulate and a shift before
 * its SSAT step; Δ = 0 (x = zp, or a step below half a unit) leaves the weight untouched. */
int32_t fc_i8_update_row(const int8_t *x, int32_t zp, uint32_t n, int32_t h_o, int32_t mult, int32_t shift_e,
                         int8_t *w, uint16_t *r)
{
    int32_t m, s, changed = 0;
    uint32_t c;
    if (!row_step(h_o, mult, shift_e, &m, &s))
        return 0;
    if (s <= 0)
        return update_row_big(x, zp, n, m, s, w, r);
    c = (1u << (s - 1)) - (uint32_t)zp * (uint32_t)m;
    for (uint32_t q = n >> 1; q; q--, x += 2, w += 2, r += 2) { /* two per pass: half the loop overhead */
        int32_t d0 = (int32_t)((uint32_t)x[0] * (uint32_t)m + c) >> s;
        int32_t d1 = (int32_t)((uint32_t)x[1] * (uint32_t)m + c) >> s;
        if (d0)
            changed += qstep_code(w, r, d0);
        if (d1)
            changed += qstep_code(w + 1, r + 1, d1);
    }
    if (n & 1u) {
        int32_t d = (int32_t)((uint32_t)x[0] * (uint32_t)m + c) >> s;
        if (d)
            changed += qstep_code(w, r, d);
    }
    return changed;
}
