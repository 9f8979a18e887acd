/* The reconstruction loss of an fp32 autoencoder: the mean squared error of its output y[n] against its input x[n]. */
#ifndef OPS_MSE_H
#define OPS_MSE_H

#include <stdint.h>

/* Returns (1/n)·Σ (y − x)²; writes dy = (2/n)·(y − x) when dy != NULL (dy must not alias y or x). */
float mse_recon(const float *y, const float *x, uint32_t n, float *dy);

/* Reference in double precision, for the host tests. */
float mse_recon_ref(const float *y, const float *x, uint32_t n, float *dy);

#endif
