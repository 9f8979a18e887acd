/* Backward of int8 AVERAGE_POOL_2D (input gradient only: the op has no parameters). Each output's gradient g is
 * spread over the in-bounds taps of its window, weighted by its Q16 reciprocal R = round(65536 / count) (count = the
 * in-bounds taps, as the forward pass counts them): acc[in] = sum over the windows covering it of g·R. The caller
 * requantises acc with qgrad_requant; the exponent drops by QGRAD_POOL_SHIFT. Per window, the taps of one kernel row
 * are one contiguous run of (x1 - x0)·c accumulators, so the inner loop is acc[j] += g[j % c]·R. */
#include <string.h>
#include "qgrad.h"

void avgpool_i8_input_grad(const qpool_t *p, const int8_t *g, int32_t *acc)
{
    uint32_t c = p->c, xrow = (uint32_t)p->in_w * c;
    memset(acc, 0, (uint32_t)p->in_h * xrow * sizeof *acc);
    for (int32_t oy = 0; oy < p->out_h; oy++)
        for (int32_t ox = 0; ox < p->out_w; ox++, g += c) {
            qpool_win_t win = qpool_window(p, oy, ox);
            int32_t y0 = win.y0, x0 = win.x0, y1 = win.y1, x1 = win.x1;
            int32_t count = (y1 - y0) * (x1 - x0), r;
            if (count <= 0)
                continue;
            r = ((1 << QGRAD_POOL_SHIFT) + count / 2) / count;
            for (int32_t iy = y0; iy < y1; iy++) {
                int32_t *ar = acc + (uint32_t)iy * xrow + (uint32_t)x0 * c;
                for (int32_t ix = x0; ix < x1; ix++, ar += c) {
                    uint32_t j = 0;
                    for (; j + 4 <= c; j += 4) {
                        ar[j] += g[j] * r;
                        ar[j + 1] += g[j + 1] * r;
                        ar[j + 2] += g[j + 2] * r;
                        ar[j + 3] += g[j + 3] * r;
                    }
                    for (; j < c; j++)
                        ar[j] += g[j] * r;
                }
            }
        }
}
