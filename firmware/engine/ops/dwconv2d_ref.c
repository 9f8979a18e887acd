/* Reference depthwise kernels: direct index arithmetic with a bounds test per tap (host tests only). */
#include "dwconv2d.h"

/* input index of channel 0 at tap (ky, kx) of output pixel (oy, ox), or -1 in the padding */
static long tap(const conv_shape_t *s, uint32_t oy, uint32_t ox, uint32_t ky, uint32_t kx)
{
    long iy = (long)(oy * s->stride + ky) - (long)s->pad_top, ix = (long)(ox * s->stride + kx) - (long)s->pad_left;
    if (iy < 0 || ix < 0 || iy >= (long)s->in_h || ix >= (long)s->in_w)
        return -1;
    return (iy * (long)s->in_w + ix) * (long)s->in_c;
}

void dwconv2d_forward_ref(const conv_shape_t *s, const float *x, const float *w, const float *b, float *y)
{
    for (uint32_t oy = 0; oy < s->out_h; oy++)
        for (uint32_t ox = 0; ox < s->out_w; ox++)
            for (uint32_t c = 0; c < s->in_c; c++) {
                float acc = 0.0f;
                for (uint32_t ky = 0; ky < s->k; ky++)
                    for (uint32_t kx = 0; kx < s->kw; kx++) {
                        long t = tap(s, oy, ox, ky, kx);
                        if (t >= 0)
                            acc += x[t + c] * w[(c * s->k + ky) * s->kw + kx];
                    }
                y[(oy * s->out_w + ox) * s->in_c + c] = acc + (b ? b[c] : 0.0f);
            }
}

void dwconv2d_input_grad_ref(const conv_shape_t *s, const float *dy, const float *w, float *dx)
{
    for (uint32_t i = 0; i < (uint32_t)s->in_h * s->in_w * s->in_c; i++)
        dx[i] = 0.0f;
    for (uint32_t oy = 0; oy < s->out_h; oy++)
        for (uint32_t ox = 0; ox < s->out_w; ox++)
            for (uint32_t c = 0; c < s->in_c; c++)
                for (uint32_t ky = 0; ky < s->k; ky++)
                    for (uint32_t kx = 0; kx < s->kw; kx++) {
                        long t = tap(s, oy, ox, ky, kx);
                        if (t >= 0)
                            dx[t + c] += dy[(oy * s->out_w + ox) * s->in_c + c] * w[(c * s->k + ky) * s->kw + kx];
                    }
}

void dwconv2d_weight_grad_channel_ref(const conv_shape_t *s, const float *dy, const float *x, uint32_t c, float *g)
{
    for (uint32_t ky = 0; ky < s->k; ky++)
        for (uint32_t kx = 0; kx < s->kw; kx++) {
            float acc = 0.0f;
            for (uint32_t oy = 0; oy < s->out_h; oy++)
                for (uint32_t ox = 0; ox < s->out_w; ox++) {
                    long t = tap(s, oy, ox, ky, kx);
                    if (t >= 0)
                        acc += dy[(oy * s->out_w + ox) * s->in_c + c] * x[t + c];
                }
            g[ky * s->kw + kx] = acc;
        }
}
