/* Reference dense kernels: obviously correct, used only to check the optimized ones. */
#include "dense.h"

void dense_forward_ref(const float *x, const float *w, const float *b, float *y, uint32_t n_in, uint32_t n_out)
{
    for (uint32_t o = 0; o < n_out; o++) {
        float acc = b ? b[o] : 0.0f;
        for (uint32_t i = 0; i < n_in; i++)
            acc += w[o * n_in + i] * x[i];
        y[o] = acc;
    }
}

void dense_input_grad_ref(const float *dy, const float *w, float *dx, uint32_t n_in, uint32_t n_out)
{
    for (uint32_t i = 0; i < n_in; i++) {
        float acc = 0.0f;
        for (uint32_t o = 0; o < n_out; o++)
            acc += w[o * n_in + i] * dy[o];
        dx[i] = acc;
    }
}

void dense_weight_grad_ref(const float *dy, const float *x, float *g, uint32_t n_in, uint32_t n_out)
{
    for (uint32_t o = 0; o < n_out; o++)
        for (uint32_t i = 0; i < n_in; i++)
            g[o * n_in + i] = dy[o] * x[i];
}

void dense_update_weights_ref(float *w, const float *dy, const float *x, float lr, uint32_t n_in, uint32_t n_out)
{
    for (uint32_t o = 0; o < n_out; o++)
        for (uint32_t i = 0; i < n_in; i++)
            w[o * n_in + i] -= lr * (dy[o] * x[i]);
}
