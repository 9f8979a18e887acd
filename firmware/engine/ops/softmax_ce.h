/* Softmax cross-entropy on logits z[n] with integer label. */
#ifndef OPS_SOFTMAX_CE_H
#define OPS_SOFTMAX_CE_H

#include <stdint.h>

/* Returns the loss; writes dz = softmax(z) - onehot(label) when dz != NULL (dz must not alias z) and the argmax
 * (first maximum) to *pred when pred != NULL. */
float softmax_ce(const float *z, uint32_t n, uint32_t label, float *dz, uint32_t *pred);

/* Reference in double precision with libm, for the host tests. */
float softmax_ce_ref(const float *z, uint32_t n, uint32_t label, float *dz, uint32_t *pred);

#endif
