/* ReLU. Both directions may run in place (y == x, dx == dy). */
#ifndef OPS_RELU_H
#define OPS_RELU_H

#include <stdint.h>

void relu_forward(const float *x, float *y, uint32_t n);
/* dx = dy where y > 0, else 0 (y is the forward output) */
void relu_backward(const float *y, const float *dy, float *dx, uint32_t n);

void relu_forward_ref(const float *x, float *y, uint32_t n);
void relu_backward_ref(const float *y, const float *dy, float *dx, uint32_t n);

#endif
