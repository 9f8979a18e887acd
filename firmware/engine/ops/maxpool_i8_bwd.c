/* Backward of int8 MAX_POOL_2D (input gradient only: no parameters). Each output's gradient g goes to its window's
 * first in-bounds maximum of the input in row-major (ky, kx) order, found again from the kept input: acc[in] = sum
 * of the g routed to it (windows overlap when the stride is below the window). The caller requantises acc with
 * qgrad_requant; the exponent rises by its shift only. */
#include <string.h>
#include "qgrad.h"

void maxpool_i8_input_grad(const qpool_t *p, const int8_t *x, const int8_t *g, int32_t *acc)
{
    const uint32_t c_n = p->c, xrow = (uint32_t)p->in_w * c_n;
    memset(acc, 0, (uint32_t)p->in_h * xrow * sizeof *acc);
    for (int32_t oy = 0; oy < p->out_h; oy++)
        for (int32_t ox = 0; ox < p->out_w; ox++, g += c_n) {
            qpool_win_t win = qpool_window(p, oy, ox);
            int32_t y0 = win.y0, x0 = win.x0, y1 = win.y1, x1 = win.x1;
            if (y1 <= y0 || x1 <= x0)
                continue;
            for (uint32_t c = 0; c < c_n; c++) {
                const int8_t *first = x + (uint32_t)y0 * xrow + (uint32_t)x0 * c_n + c, *best = first;
                if (g[c] == 0)
                    continue;
                for (int32_t iy = y0; iy < y1; iy++) {
                    const int8_t *t = x + (uint32_t)iy * xrow + (uint32_t)x0 * c_n + c;
                    for (int32_t ix = x0; ix < x1; ix++, t += c_n)
                        best = *t > *best ? t : best;
                }
                acc[best - x] += g[c];
            }
        }
}
