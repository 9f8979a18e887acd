/* int8 AVERAGE_POOL_2D: mean of the in-bounds taps only (padding is not counted), rounded half away from zero,
 * clamped to the fused activation; no requantisation (input and output share scale and zero point). */
#include "qop.h"

void avgpool_i8(const qpool_t *p, const int8_t *x, int8_t *y)
{
    for (int32_t oy = 0; oy < p->out_h; oy++)
        for (int32_t ox = 0; ox < p->out_w; ox++, y += p->c) {
            qpool_win_t win = qpool_window(p, oy, ox);
            int32_t y0 = win.y0, x0 = win.x0, y1 = win.y1, x1 = win.x1;
            int32_t count = (y1 - y0) * (x1 - x0);
            for (uint32_t c = 0; c < p->c; c++) {
                int32_t sum = 0, avg;
                for (int32_t iy = y0; iy < y1; iy++) {
                    const int8_t *xr = x + ((uint32_t)(iy * p->in_w + x0) * p->c) + c;
                    for (int32_t ix = x0; ix < x1; ix++, xr += p->c)
                        sum += *xr;
                }
                if (count <= 0)
                    avg = 0;
                else
                    avg = sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
                y[c] = (int8_t)(avg < p->act_min ? p->act_min : avg > p->act_max ? p->act_max : avg);
            }
        }
}
