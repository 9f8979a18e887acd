/* The loss gradient at the logits of an int8 classifier ending in SOFTMAX (output scale 1/256, zero point -128):
 * dL/dz = p - onehot = (p_q + 128 - 256·onehot) / 256, an integer in [-256, 255] over 256, quantised to int8 by a
 * power-of-two shift chosen from its largest magnitude. */
#include "qgrad.h"
#include "requant.h"

int32_t qgrad_logits(const int8_t *p, uint32_t n, uint32_t label, int8_t *g)
{
    int32_t m = 0, k = 0;
    for (uint32_t c = 0; c < n; c++) {
        int32_t e = p[c] + 128 - (c == label ? 256 : 0);
        e = e < 0 ? -e : e;
        m = e > m ? e : m;
    }
    while (rq_rdbp(m, k) > 127)
        k++;
    for (uint32_t c = 0; c < n; c++)
        g[c] = (int8_t)rq_rdbp(p[c] + 128 - (c == label ? 256 : 0), k);
    return k;
}
