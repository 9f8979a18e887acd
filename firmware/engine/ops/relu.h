/* ReLU and ReLU6. Both directions may run in place (y == x, dx == dy). */
#ifndef OPS_RELU_H
#define OPS_RELU_H

#include <stdint.h>

void relu_forward(const float *x, float *y, uint32_t n);
/* dx = dy where y > 0, else 0 (y is the forward output) */
void relu_backward(const float *y, const float *dy, float *dx, uint32_t n);

/* ReLU6: y = min(max(x, 0), 6); dx = dy where 0 < y < 6, else 0. Both may run in place. */
void relu6_forward(const float *x, float *y, uint32_t n);
void relu6_backward(const float *y, const float *dy, float *dx, uint32_t n);

void relu6_forward_ref(const float *x, float *y, uint32_t n);
void relu6_backward_ref(const float *y, const float *dy, float *dx, uint32_t n);
void relu_forward_ref(const float *x, float *y, uint32_t n);
void relu_backward_ref(const float *y, const float *dy, float *dx, uint32_t n);

#endif
