/* Plain int8 AVERAGE_POOL_2D backward straight from the definition (host tests only): per input element, the sum
 * over the windows that cover it of g·round(65536 / count). */
#include "qgrad.h"

void avgpool_i8_input_grad_ref(const qpool_t *p, const int8_t *g, int32_t *acc)
{
    for (int32_t iy = 0; iy < p->in_h; iy++)
        for (int32_t ix = 0; ix < p->in_w; ix++)
            for (int32_t c = 0; c < p->c; c++) {
                int32_t s = 0;
                for (int32_t oy = 0; oy < p->out_h; oy++)
                    for (int32_t ox = 0; ox < p->out_w; ox++) {
                        int32_t wy = oy * p->stride_h - p->pad_top, wx = ox * p->stride_w - p->pad_left, count = 0;
                        if (iy < wy || iy >= wy + p->k_h || ix < wx || ix >= wx + p->k_w)
                            continue;
                        for (int32_t ky = 0; ky < p->k_h; ky++)
                            for (int32_t kx = 0; kx < p->k_w; kx++)
                                count += wy + ky >= 0 && wy + ky < p->in_h && wx + kx >= 0 && wx + kx < p->in_w;
                        s += g[(oy * p->out_w + ox) * p->c + c] * ((65536 + count / 2) / count);
                    }
                acc[(iy * p->in_w + ix) * p->c + c] = s;
            }
}
