#include "add.h"

void add_forward_ref(const float *x, const float *s, float *y, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        y[i] = x[i] + s[i];
}

void add_accumulate_ref(float *acc, const float *g, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        acc[i] += g[i];
}
