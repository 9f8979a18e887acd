/* Plain int8 ADD backward straight from the definition (host tests only): each input's gradient is the output
 * gradient where the output is strictly inside the fused activation's range, else 0. */
#include "qgrad.h"

void add_i8_input_grad_ref(const int8_t *g, const int8_t *y, int32_t lo, int32_t hi, uint32_t n, int8_t *din,
                           int8_t *skip)
{
    for (uint32_t j = 0; j < n; j++) {
        int pass = y == 0 || (y[j] > lo && y[j] < hi);
        din[j] = pass ? g[j] : 0;
        if (skip)
            skip[j] = pass ? g[j] : 0;
    }
}
