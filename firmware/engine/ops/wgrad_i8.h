/* Shared by the CONV_2D and DEPTHWISE_CONV_2D weight gradients on cores with the DSP extension (conv_i8_bwd.c). */
#ifndef OPS_WGRAD_I8_H
#define OPS_WGRAD_I8_H

#include <stdint.h>
#include "qop.h"
#include "dot_i8.h"

#ifdef DOT_I8_DSP
/* the weight gradient of one output channel of a stride-1 layer reading one input channel, whose values sit every xs
 * bytes from x (h already offset to the channel); returns 0 when the planes do not fit (then nothing is written) */
int wgrad_plane_i8(const qconv_t *p, const int16_t *h, const int8_t *x, uint32_t xs, int32_t *a);
#endif

#endif
