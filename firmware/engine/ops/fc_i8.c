/* Optimized int8 FULLY_CONNECTED: per input row, two outputs share each input load (dot2_i8: every value stays in a
 * register); the input zero point is folded into bias_eff on the host. */
#include "qop.h"
#include "dot_i8.h"
#include "requant.h"

void fc_i8(const qfc_t *p, const int8_t *x, const int8_t *w, int8_t *y)
{
    uint32_t n = p->in_c, N = p->out_c;
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
