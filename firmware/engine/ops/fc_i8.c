/* Optimized int8 FULLY_CONNECTED: per input row, two outputs share each input load (dot2_i8: every value stays in a
 * register); the input zero point is folded into bias_eff on the host. */
#include "qop.h"
#include "dot_i8.h"
#include "requant.h"

#ifdef DOT_I8_DSP
#define FC_XW_WORDS 192u /* 768 B of stack: an input row of up to 384 values, widened (longer rows: dot2_i8) */

/* M4/M7: the input row is widened once (SXTB16 pairs per four values), then two output rows at a time stream their
 * weights through dot_rows2_xw, eight inputs per pass; the requantisation's constants folded per channel. Returns
 * 0 when the row is too long for the stack buffer. */
static int fc_widened(const qfc_t *p, const int8_t *x, const int8_t *w, int8_t *y)
{
    uint32_t xw[FC_XW_WORDS];
    const uint32_t n = p->in_c, N = p->out_c, pairs = n >> 3, done = pairs << 3, st = p->rq_per_channel ? 2u : 0u;
    const int32_t zp = p->zp_out, lo = p->act_min, hi = p->act_max;
    if (n > 2u * FC_XW_WORDS || pairs == 0u)
        return 0;
    for (uint32_t r = 0; r < p->rows; r++, x += n, y += N) {
        const int32_t *rq = p->rq;
        for (uint32_t g = 0; g < (n >> 2); g++) {
            uint32_t v = dot_ld32(x + 4 * g);
            xw[2 * g] = dot_sxtb16(v);
            xw[2 * g + 1] = dot_sxtb16_ror8(v);
        }
        for (uint32_t o = 0; o < N; o += 2) {
            const int8_t *w0 = w + o * n, *w1 = o + 1u < N ? w0 + n : w0; /* an odd last row computed twice */
            int32_t acc[2];
            acc[0] = p->bias_eff[o];
            acc[1] = o + 1u < N ? p->bias_eff[o + 1] : 0;
            dot_rows2_xw(xw, w0, w1, pairs, acc);
            for (uint32_t j = done; j < n; j++) {
                acc[0] += x[j] * w0[j];
                acc[1] += x[j] * w1[j];
            }
            for (uint32_t k = 0; k < 2u && o + k < N; k++, rq += st) {
                const int32_t mult = rq[0], shift = rq[1];
                y[o + k] = rq_neg_ok(shift, zp) ? rq_out_neg(acc[k], mult, -shift, rq_neg_add(shift, zp), zp, lo, hi)
                                                : rq_out_opt(acc[k], mult, shift, zp, lo, hi);
            }
        }
    }
    return 1;
}
#endif

void fc_i8(const qfc_t *p, const int8_t *x, const int8_t *w, int8_t *y)
{
    uint32_t n = p->in_c, N = p->out_c;
#ifdef DOT_I8_DSP
    if (fc_widened(p, x, w, y))
        return;
#endif
    for (uint32_t r = 0; r < p->rows; r++, x += n, y += N) {
        uint32_t o = 0;
        int32_t acc[2];
        for (; o + 2 <= N; o += 2) {
            acc[0] = p->bias_eff[o];
            acc[1] = p->bias_eff[o + 1];
            dot2_i8(x, w + o * n, n, n, acc);
            for (uint32_t k = 0; k < 2; k++) {
                const int32_t *rq = p->rq + (p->rq_per_channel ? 2u * (o + k) : 0u);
                y[o + k] = rq_out_opt(acc[k], rq[0], rq[1], p->zp_out, p->act_min, p->act_max);
            }
        }
        for (; o < N; o++) {
            const int32_t *rq = p->rq + (p->rq_per_channel ? 2u * o : 0u);
            int32_t a = p->bias_eff[o] + dot1_i8(x, w + o * n, n);
            y[o] = rq_out_opt(a, rq[0], rq[1], p->zp_out, p->act_min, p->act_max);
        }
    }
}
