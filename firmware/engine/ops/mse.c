/* Reconstruction MSE: one pass computes the loss and the gradient, two partial sums keep the adds independent. */
#include "mse.h"

float mse_recon(const float *y, const float *x, uint32_t n, float *dy)
{
    float s0 = 0.0f, s1 = 0.0f, k = 2.0f / (float)n;
    uint32_t j = 0;
    for (; j + 2 <= n; j += 2) {
        float e0 = y[j] - x[j], e1 = y[j + 1] - x[j + 1];
        s0 += e0 * e0;
        s1 += e1 * e1;
        if (dy) {
            dy[j] = k * e0;
            dy[j + 1] = k * e1;
        }
    }
    if (j < n) {
        float e = y[j] - x[j];
        s0 += e * e;
        if (dy)
            dy[j] = k * e;
    }
    return (s0 + s1) / (float)n;
}
