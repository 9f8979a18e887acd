/* Depthwise 2-D convolution, depth multiplier 1: activations HWC, in_c == out_c; weights channel-major
 * [c][k][kw] (one contiguous row of k·kw taps per channel, so a channel is a row as for CONV2D: the host transposes
 * TFLite's [1][k][kw][c]); bias [c] (may be NULL). Padding as conv2d (pad_top, pad_left; outside reads zero). The
 * bias gradient and the update of a channel are conv2d's (conv2d_bias_grad_channel, conv2d_update_channel). */
#ifndef OPS_DWCONV2D_H
#define OPS_DWCONV2D_H

#include <stdint.h>
#include "conv2d.h"
#include "wsplit.h"

void dwconv2d_forward(const conv_shape_t *s, const float *x, const wsplit_t *w, const float *b, float *y);
/* dx fully overwritten */
void dwconv2d_input_grad(const conv_shape_t *s, const float *dy, const wsplit_t *w, float *dx);
/* g[k][kw] = dL/dW[c]; fully overwritten */
void dwconv2d_weight_grad_channel(const conv_shape_t *s, const float *dy, const float *x, uint32_t c, float *g);

void dwconv2d_forward_ref(const conv_shape_t *s, const float *x, const float *w, const float *b, float *y);
void dwconv2d_input_grad_ref(const conv_shape_t *s, const float *dy, const float *w, float *dx);
void dwconv2d_weight_grad_channel_ref(const conv_shape_t *s, const float *dy, const float *x, uint32_t c, float *g);

#endif
