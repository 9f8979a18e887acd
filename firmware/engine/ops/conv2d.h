/* 2-D convolution: activations HWC, weights OHWI ([out_c][k][kw][in_c]: k rows of kw taps), bias [out_c] (may be
 * NULL).
 * Padding is given explicitly (pad_top, pad_left); rows/columns outside the input read as zero. */
#ifndef OPS_CONV2D_H
#define OPS_CONV2D_H

#include <stdint.h>
#include "wsplit.h"

typedef struct {
    uint16_t in_h, in_w, in_c;
    uint16_t out_h, out_w, out_c;
    uint16_t k, stride;
    uint16_t pad_top, pad_left;
    uint16_t kw; /* kernel width (conv, depthwise); k is its height. The plan loader sets it (k when the record's is 0) */
} conv_shape_t;

/* the weights' output-channel rows are read through the view: every row, or split for sparse update */
void conv2d_forward(const conv_shape_t *s, const float *x, const wsplit_t *w, const float *b, float *y);
/* dx = d(out)/d(in)^T dy, weights as in the forward pass; dx is fully overwritten */
void conv2d_input_grad(const conv_shape_t *s, const float *dy, const wsplit_t *w, float *dx);
/* g[k][kw][in_c] = dL/dW[oc] for one output channel; g is fully overwritten */
void conv2d_weight_grad_channel(const conv_shape_t *s, const float *dy, const float *x, uint32_t oc, float *g);
/* dL/db[oc] = sum over output pixels of dy[.,.,oc] */
float conv2d_bias_grad_channel(const conv_shape_t *s, const float *dy, uint32_t oc);
/* w -= lr * g over n values (one output channel's weights) */
void conv2d_update_channel(float *w, const float *g, float lr, uint32_t n);


/* Reference kernels for the host unit tests. */
void conv2d_forward_ref(const conv_shape_t *s, const float *x, const float *w, const float *b, float *y);
void conv2d_input_grad_ref(const conv_shape_t *s, const float *dy, const float *w, float *dx);
void conv2d_weight_grad_channel_ref(const conv_shape_t *s, const float *dy, const float *x, uint32_t oc, float *g);
float conv2d_bias_grad_channel_ref(const conv_shape_t *s, const float *dy, uint32_t oc);

#endif
