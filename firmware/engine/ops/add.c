/* fp32 residual ADD, four elements per pass (the loads of one pass are issued before its stores, which the
 * compiler cannot do itself when y may alias x or s); add_ref.c is the plain loop it is tested against. */
#include "add.h"

void add_forward(const float *x, const float *s, float *y, uint32_t n)
{
    uint32_t i = 0;
    for (; i + 4u <= n; i += 4u) {
        float a0 = x[i] + s[i], a1 = x[i + 1] + s[i + 1], a2 = x[i + 2] + s[i + 2], a3 = x[i + 3] + s[i + 3];
        y[i] = a0;
        y[i + 1] = a1;
        y[i + 2] = a2;
        y[i + 3] = a3;
    }
    for (; i < n; i++)
        y[i] = x[i] + s[i];
}

void add_accumulate(float *acc, const float *g, uint32_t n)
{
    add_forward(acc, g, acc, n);
}
