#include <math.h>
#include "softmax_ce.h"

float softmax_ce_ref(const float *z, uint32_t n, uint32_t label, float *dz, uint32_t *pred)
{
    double m = z[0], sum = 0.0;
    uint32_t best = 0;
    for (uint32_t j = 1; j < n; j++)
        if (z[j] > z[best])
            best = j;
    m = z[best];
    for (uint32_t j = 0; j < n; j++)
        sum += exp((double)z[j] - m);
    if (dz)
        for (uint32_t j = 0; j < n; j++)
            dz[j] = (float)(exp((double)z[j] - m) / sum - (j == label ? 1.0 : 0.0));
    if (pred)
        *pred = best;
    return (float)(log(sum) - ((double)z[label] - m));
}
