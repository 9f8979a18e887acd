/* fp32 residual ADD: y = x + s; its backward hands dy to both inputs (dx = dy, ds = dy). */
#ifndef OPS_ADD_H
#define OPS_ADD_H

#include <stdint.h>

/* y = x + s; y may be x or s (elementwise) */
void add_forward(const float *x, const float *s, float *y, uint32_t n);
/* acc += g: the residual merge, where a branch's input gradient receives the skip's */
void add_accumulate(float *acc, const float *g, uint32_t n);

void add_forward_ref(const float *x, const float *s, float *y, uint32_t n);
void add_accumulate_ref(float *acc, const float *g, uint32_t n);

#endif
