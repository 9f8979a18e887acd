/* Single-precision exp and log written for this engine: no double arithmetic (Cortex-M FPUs here are single
 * precision only; newlib's expf/logf go through double and soft-float calls). Relative error about 2e-7. */
#ifndef OPS_FMATH_H
#define OPS_FMATH_H

float fm_exp(float x);
/* natural log for x > 0 (finite); returns -inf for 0 and NaN for negative input */
float fm_log(float x);

#endif
