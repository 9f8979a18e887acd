/* int8 MAX_POOL_2D (TFLite semantics): the largest in-bounds tap of each window (padding taps are not candidates),
 * clamped to the fused activation; input and output share scale and zero point. Channels innermost: per window tap
 * one contiguous run of c values is compared against the running maxima. */
#include "qop.h"

void maxpool_i8(const qpool_t *p, const int8_t *x, int8_t *y)
{
    const uint32_t c_n = p->c;
    for (int32_t oy = 0; oy < p->out_h; oy++)
        for (int32_t ox = 0; ox < p->out_w; ox++, y += c_n) {
            qpool_win_t win = qpool_window(p, oy, ox);
            int32_t y0 = win.y0, x0 = win.x0, y1 = win.y1, x1 = win.x1;
            for (uint32_t c = 0; c < c_n; c++)
                y[c] = -128;
            for (int32_t iy = y0; iy < y1; iy++)
                for (int32_t ix = x0; ix < x1; ix++) {
                    const int8_t *xt = x + (uint32_t)(iy * p->in_w + ix) * c_n;
                    for (uint32_t c = 0; c < c_n; c++)
                        y[c] = xt[c] > y[c] ? xt[c] : y[c];
                }
            for (uint32_t c = 0; c < c_n; c++)
                y[c] = (int8_t)(y[c] < p->act_min ? p->act_min : y[c] > p->act_max ? p->act_max : y[c]);
        }
}
