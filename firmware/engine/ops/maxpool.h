/* fp32 MAXPOOL2D, HWC, k×k windows at stride `stride`, valid padding (out = (in − k) / stride + 1). The backward
 * routes each output gradient to its window's first maximum in row-major (ky, kx) order, found again from the kept
 * input (no argmax buffer): the rule bench/numerics/fp32.py uses. */
#ifndef OPS_MAXPOOL_H
#define OPS_MAXPOOL_H

#include <stdint.h>
#include "conv2d.h"

void maxpool_forward(const conv_shape_t *s, const float *x, float *y);
/* dx is fully overwritten */
void maxpool_input_grad(const conv_shape_t *s, const float *x, const float *dy, float *dx);

/* Reference kernels for the host unit tests. */
void maxpool_forward_ref(const conv_shape_t *s, const float *x, float *y);
void maxpool_input_grad_ref(const conv_shape_t *s, const float *x, const float *dy, float *dx);

#endif
