/* Reference conv2d kernels: direct index arithmetic with a bounds test per tap. */
#include "conv2d.h"

/* input index of tap (ky, kx) for output pixel (oy, ox), or -1 when it falls in the padding */
static long tap(const conv_shape_t *s, uint32_t oy, uint32_t ox, uint32_t ky, uint32_t kx)
{
    long iy = (long)(oy * s->stride + ky) - (long)s->pad_top;
    long ix = (long)(ox * s->stride + kx) - (long)s->pad_left;
    if (iy < 0 || ix < 0 || iy >= (long)s->in_h || ix >= (long)s->in_w)
        return -1;
    return (iy * (long)s->in_w + ix) * (long)s->in_c;
}

static uint32_t widx(const conv_shape_t *s, uint32_t oc, uint32_t ky, uint32_t kx)
{
    return ((oc * s->k + ky) * s->kw + kx) * s->in_c;
}

void conv2d_forward_ref(const conv_shape_t *s, const float *x, const float *w, const float *b, float *y)
{
    for (uint32_t oy = 0; oy < s->out_h; oy++)
        for (uint32_t ox = 0; ox < s->out_w; ox++)
            for (uint32_t oc = 0; oc < s->out_c; oc++) {
                float acc = b ? b[oc] : 0.0f;
                for (uint32_t ky = 0; ky < s->k; ky++)
                    for (uint32_t kx = 0; kx < s->kw; kx++) {
                        long t = tap(s, oy, ox, ky, kx);
                        if (t < 0)
                            continue;
                        for (uint32_t ic = 0; ic < s->in_c; ic++)
                            acc += x[t + ic] * w[widx(s, oc, ky, kx) + ic];
                    }
                y[(oy * s->out_w + ox) * s->out_c + oc] = acc;
            }
}

void conv2d_input_grad_ref(const conv_shape_t *s, const float *dy, const float *w, float *dx)
{
    for (uint32_t i = 0; i < (uint32_t)s->in_h * s->in_w * s->in_c; i++)
        dx[i] = 0.0f;
    for (uint32_t oy = 0; oy < s->out_h; oy++)
        for (uint32_t ox = 0; ox < s->out_w; ox++)
            for (uint32_t oc = 0; oc < s->out_c; oc++) {
                float g = dy[(oy * s->out_w + ox) * s->out_c + oc];
                for (uint32_t ky = 0; ky < s->k; ky++)
                    for (uint32_t kx = 0; kx < s->kw; kx++) {
                        long t = tap(s, oy, ox, ky, kx);
                        if (t < 0)
                            continue;
                        for (uint32_t ic = 0; ic < s->in_c; ic++)
                            dx[t + ic] += g * w[widx(s, oc, ky, kx) + ic];
                    }
            }
}

void conv2d_weight_grad_channel_ref(const conv_shape_t *s, const float *dy, const float *x, uint32_t oc, float *g)
{
    for (uint32_t ky = 0; ky < s->k; ky++)
        for (uint32_t kx = 0; kx < s->kw; kx++)
            for (uint32_t ic = 0; ic < s->in_c; ic++) {
                float acc = 0.0f;
                for (uint32_t oy = 0; oy < s->out_h; oy++)
                    for (uint32_t ox = 0; ox < s->out_w; ox++) {
                        long t = tap(s, oy, ox, ky, kx);
                        if (t >= 0)
                            acc += dy[(oy * s->out_w + ox) * s->out_c + oc] * x[t + ic];
                    }
                g[widx(s, 0, ky, kx) + ic] = acc;
            }
}

float conv2d_bias_grad_channel_ref(const conv_shape_t *s, const float *dy, uint32_t oc)
{
    float acc = 0.0f;
    for (uint32_t p = 0; p < (uint32_t)s->out_h * s->out_w; p++)
        acc += dy[p * s->out_c + oc];
    return acc;
}
