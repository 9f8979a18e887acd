/* ReLU on the bit patterns: a float is > 0 exactly when its bits, read as a signed integer, are > 0 (NaN aside).
 * Integer masks cost one instruction each, also on soft-float cores where a float compare is a call; the masks are
 * built from shifts and BIC, with no compare or branch per element. */
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

/* all ones when v > 0 as a signed integer, else zero, without a compare: the sign bit of (−v) & ~v is set exactly
 * when v > 0 (v = INT32_MIN, the bits of −0.0, gives 0: −v is itself but ~v is positive) */
static int32_t positive_mask(int32_t v)
{
    uint32_t u = (uint32_t)v;
    return (int32_t)((0u - u) & ~u) >> 31;
}

/* v when v > 0, else 0: v & ~(v >> 31) is one BIC with a shifted operand (the sign bit clears every bit) */
static int32_t keep_positive(int32_t v)
{
    return v & ~(v >> 31);
}

void relu_forward(const float *x, float *y, uint32_t n)
{
    uint32_t i = 0;
    for (; i + 4 <= n; i += 4) { /* four per pass: block loads and stores */
        int32_t a = bits(x + i), b = bits(x + i + 1), c = bits(x + i + 2), d = bits(x + i + 3);
        put(y + i, keep_positive(a));
        put(y + i + 1, keep_positive(b));
        put(y + i + 2, keep_positive(c));
        put(y + i + 3, keep_positive(d));
    }
    for (; i < n; i++)
        put(y + i, keep_positive(bits(x + i)));
}

void relu_backward(const float *y, const float *dy, float *dx, uint32_t n)
{
    uint32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        int32_t m0 = positive_mask(bits(y + i)), m1 = positive_mask(bits(y + i + 1));
        int32_t m2 = positive_mask(bits(y + i + 2)), m3 = positive_mask(bits(y + i + 3));
        int32_t g0 = bits(dy + i), g1 = bits(dy + i + 1), g2 = bits(dy + i + 2), g3 = bits(dy + i + 3);
        put(dx + i, g0 & m0);
        put(dx + i + 1, g1 & m1);
        put(dx + i + 2, g2 & m2);
        put(dx + i + 3, g3 & m3);
    }
    for (; i < n; i++)
        put(dx + i, bits(dy + i) & positive_mask(bits(y + i)));
}

/* ReLU6 (MobileNets' fused activation): the clamp to [0, 6] in float; its backward passes dy where 0 < y < 6 (the
 * host reference's rule at both edges) */
void relu6_forward(const float *x, float *y, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        float v = x[i];
        y[i] = v > 6.0f ? 6.0f : v > 0.0f ? v : 0.0f;
    }
}

void relu6_backward(const float *y, const float *dy, float *dx, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        float v = y[i];
        dx[i] = v > 0.0f && v < 6.0f ? dy[i] : 0.0f;
    }
}
