/* Backward of int8 ADD (a residual's join). In real terms y = x1 + x2, so both inputs get the output gradient as it
 * is (same codes, exponent and per-tensor constant), zeroed where the fused activation holds the output at a bound
 * (y <= lo or y >= hi, as qgrad_prep masks). One pass writes the chain input's gradient and, when the skip input's
 * producer is on the backward path, the skip's (merged later by the op where the branch starts, qgrad_merge). */
#include "qgrad.h"

void add_i8_input_grad(const int8_t *g, const int8_t *y, int32_t lo, int32_t hi, uint32_t n, int8_t *din,
                       int8_t *skip)
{
    if (y)
        for (uint32_t j = 0; j < n; j++) {
            int8_t v = (y[j] <= lo || y[j] >= hi) ? 0 : g[j];
            din[j] = v;
            if (skip)
                skip[j] = v;
        }
    else
        for (uint32_t j = 0; j < n; j++) {
            din[j] = g[j];
            if (skip)
                skip[j] = g[j];
        }
}
