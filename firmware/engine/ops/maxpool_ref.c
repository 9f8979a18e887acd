/* Plain fp32 MAXPOOL2D straight from the definition (host tests only). */
#include "maxpool.h"

static uint32_t at(const conv_shape_t *s, uint32_t y, uint32_t x, uint32_t c)
{
    return (y * s->in_w + x) * s->in_c + c;
}

void maxpool_forward_ref(const conv_shape_t *s, const float *x, float *y)
{
    for (uint32_t oy = 0; oy < s->out_h; oy++)
        for (uint32_t ox = 0; ox < s->out_w; ox++)
            for (uint32_t c = 0; c < s->in_c; c++) {
                float m = x[at(s, oy * s->stride, ox * s->stride, c)];
                for (uint32_t ky = 0; ky < s->k; ky++)
                    for (uint32_t kx = 0; kx < s->k; kx++) {
                        float v = x[at(s, oy * s->stride + ky, ox * s->stride + kx, c)];
                        m = v > m ? v : m;
                    }
                y[(oy * s->out_w + ox) * s->in_c + c] = m;
            }
}

void maxpool_input_grad_ref(const conv_shape_t *s, const float *x, const float *dy, float *dx)
{
    for (uint32_t j = 0; j < (uint32_t)s->in_h * s->in_w * s->in_c; j++)
        dx[j] = 0.0f;
    for (uint32_t oy = 0; oy < s->out_h; oy++)
        for (uint32_t ox = 0; ox < s->out_w; ox++)
            for (uint32_t c = 0; c < s->in_c; c++) {
                uint32_t best = at(s, oy * s->stride, ox * s->stride, c);
                for (uint32_t ky = 0; ky < s->k; ky++)
                    for (uint32_t kx = 0; kx < s->k; kx++) {
                        uint32_t j = at(s, oy * s->stride + ky, ox * s->stride + kx, c);
                        if (x[j] > x[best]) /* strictly greater: the first maximum in (ky, kx) order wins */
                            best = j;
                    }
                dx[best] += dy[(oy * s->out_w + ox) * s->in_c + c];
            }
}
