/* Fully connected layer, weights [out][in], bias [out] (may be NULL). */
#ifndef OPS_DENSE_H
#define OPS_DENSE_H

#include <stdint.h>
#include "wsplit.h"

/* y = W x + b, W's rows read through the view (every row, or split for sparse update) */
void dense_forward(const float *x, const wsplit_t *w, const float *b, float *y, uint32_t n_in, uint32_t n_out);
/* dx = W^T dy (weights as in the forward pass) */
void dense_input_grad(const float *dy, const wsplit_t *w, float *dx, uint32_t n_in, uint32_t n_out);
/* W -= lr * dy x^T, fused: the gradient dy x^T is never stored */
void dense_update_weights(float *w, const float *dy, const float *x, float lr, uint32_t n_in, uint32_t n_out);
/* b -= lr * dy */
void dense_update_bias(float *b, const float *dy, float lr, uint32_t n_out);

/* sel[j] -= lr * dy[idx[j]] x^T for the n_sel listed rows (sel is [n_sel][n_in]) */
void dense_update_rows(float *sel, const uint16_t *idx, uint32_t n_sel, const float *dy, const float *x, float lr,
                       uint32_t n_in);

/* Reference kernels: plain loops for the host unit tests. */
void dense_forward_ref(const float *x, const float *w, const float *b, float *y, uint32_t n_in, uint32_t n_out);
void dense_input_grad_ref(const float *dy, const float *w, float *dx, uint32_t n_in, uint32_t n_out);
/* g = dy x^T, the full weight gradient */
void dense_weight_grad_ref(const float *dy, const float *x, float *g, uint32_t n_in, uint32_t n_out);
void dense_update_weights_ref(float *w, const float *dy, const float *x, float lr, uint32_t n_in, uint32_t n_out);

#endif
