#include "relu.h"

void relu_forward_ref(const float *x, float *y, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void relu_backward_ref(const float *y, const float *dy, float *dx, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

void relu6_forward_ref(const float *x, float *y, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        y[i] = x[i] <= 0.0f ? 0.0f : x[i] >= 6.0f ? 6.0f : x[i]; /* -0 becomes +0, as in relu */
}

void relu6_backward_ref(const float *y, const float *dy, float *dx, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        dx[i] = (y[i] <= 0.0f || y[i] >= 6.0f) ? 0.0f : dy[i];
}
