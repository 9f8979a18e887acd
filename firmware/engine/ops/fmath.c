#include <stdint.h>
#include <string.h>
#include "fmath.h"

#define LN2_HI 0.693145751953125f     /* ln 2 split so that n * LN2_HI is exact for |n| < 2^8 */
#define LN2_LO 1.428606765330187e-06f
#define LOG2E 1.44269504088896341f

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* exp(x) = 2^n * exp(r), |r| <= ln2/2; exp(r) by its Taylor series to r^6 (truncation < 1.3e-7 relative) */
float fm_exp(float x)
{
    int32_t n;
    float r, p;
    if (x != x)
        return x;
    if (x > 88.72f)
        return from_bits(0x7F800000u);
    if (x < -87.33f)
        return 0.0f; /* below the normal range: flush, softmax never needs denormals */
    n = (int32_t)(x * LOG2E + (x >= 0.0f ? 0.5f : -0.5f));
    r = (x - (float)n * LN2_HI) - (float)n * LN2_LO;
    p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
    /* n can reach 128 at the top of the range: scale in two halves so 2^n never overflows the exponent field */
    if (n > 126) {
        p *= 2.0f;
        n -= 1;
    }
    if (n < -126) {
        p *= 0.5f;
        n += 1;
    }
    return p * from_bits((uint32_t)(n + 127) << 23);
}

/* log(x) = e ln2 + log(m), m in [sqrt(1/2), sqrt(2)); log(m) = 2 atanh(s), s = (m-1)/(m+1), |s| <= 0.172 */
float fm_log(float x)
{
    uint32_t u = to_bits(x);
    int32_t e;
    float m, s, s2, t;
    if (x != x || x < 0.0f)
        return from_bits(0x7FC00000u);
    if (x == 0.0f)
        return from_bits(0xFF800000u);
    if (u >= 0x7F800000u)
        return x;
    e = 0;
    if (u < 0x00800000u) { /* denormal: normalise first */
        x *= 8388608.0f;   /* 2^23 */
        u = to_bits(x);
        e = -23;
    }
    e += (int32_t)(u >> 23) - 127;
    m = from_bits((u & 0x007FFFFFu) | 0x3F800000u);
    if (m > 1.41421356f) {
        m *= 0.5f;
        e += 1;
    }
    s = (m - 1.0f) / (m + 1.0f);
    s2 = s * s;
    t = 1.0f + s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9))));
    return (float)e * LN2_HI + ((float)e * LN2_LO + 2.0f * s * t);
}
