/* Global average pool: HWC input of n = h·w pixels -> one value per channel (TFLite AVERAGE_POOL_2D whose single
 * window covers the input, and MEAN over h and w). No parameters. */
#ifndef OPS_GAVGPOOL_H
#define OPS_GAVGPOOL_H

#include <stdint.h>

void gavgpool_forward(const float *x, float *y, uint32_t n, uint32_t c);
/* dx[p][ch] = dy[ch] / n, fully overwritten */
void gavgpool_input_grad(const float *dy, float *dx, uint32_t n, uint32_t c);

void gavgpool_forward_ref(const float *x, float *y, uint32_t n, uint32_t c);
void gavgpool_input_grad_ref(const float *dy, float *dx, uint32_t n, uint32_t c);

#endif
