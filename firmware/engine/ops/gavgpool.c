/* Global average pool: the sums run pixel by pixel over the contiguous channel vector (HWC), then one multiply by
 * 1/n per channel instead of a divide. */
#include "gavgpool.h"

void gavgpool_forward(const float *x, float *y, uint32_t n, uint32_t c)
{
    float inv = 1.0f / (float)n;
    for (uint32_t ch = 0; ch < c; ch++)
        y[ch] = 0.0f;
    for (uint32_t p = 0; p < n; p++, x += c)
        for (uint32_t ch = 0; ch < c; ch++)
            y[ch] += x[ch];
    for (uint32_t ch = 0; ch < c; ch++)
        y[ch] *= inv;
}

void gavgpool_input_grad(const float *dy, float *dx, uint32_t n, uint32_t c)
{
    float inv = 1.0f / (float)n;
    for (uint32_t ch = 0; ch < c; ch++)
        dx[ch] = dy[ch] * inv;
    for (uint32_t p = 1; p < n; p++)
        for (uint32_t ch = 0; ch < c; ch++)
            dx[p * c + ch] = dx[ch];
}
