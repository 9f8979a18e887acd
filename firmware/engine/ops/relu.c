/* ReLU on the bit patterns: a float is > 0 exactly when its bits, read as a signed integer, are > 0 (NaN aside).
 * Integer compares and masks cost one instruction each, also on soft-float cores where a float compare is a call. */
#include <string.h>
#include "relu.h"

static int32_t bits(const float *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v); /* compiles to one load; avoids aliasing a float as an int */
    return v;
}

static void put(float *p, int32_t v)
{
    memcpy(p, &v, sizeof v);
}

/* all ones when v > 0, else zero */
static int32_t positive_mask(int32_t v)
{
    return -(int32_t)(v > 0);
}

void relu_forward(const float *x, float *y, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        int32_t v = bits(x + i);
        put(y + i, v & positive_mask(v));
    }
}

void relu_backward(const float *y, const float *dy, float *dx, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        put(dx + i, bits(dy + i) & positive_mask(bits(y + i)));
}
