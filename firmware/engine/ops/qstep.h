/* One weight code and its offset Q16 residual after a step of d units of 2^-16 code (qgrad.h, qsgd_i8): shared by
 * the optimized update loops. U = 65536·w + r − d saturated to 24 bits is one SSAT where the core has it; w is U's
 * top byte and r its low halfword, so no rounding step is left. */
#ifndef OPS_QSTEP_H
#define OPS_QSTEP_H

#include <stdint.h>

static inline int32_t qstep_sat24(int32_t u)
{
#if defined(__ARM_FEATURE_SAT) && __ARM_FEATURE_SAT
    int32_t v;
    __asm__("ssat %0, #24, %1" : "=r"(v) : "r"(u));
    return v;
#else
    return u < -(1 << 23) ? -(1 << 23) : u > (1 << 23) - 1 ? (1 << 23) - 1 : u;
#endif
}

/* returns the code change */
static inline int32_t qstep_code(int8_t *w, uint16_t *r, int32_t d)
{
    int32_t old = *w, u = qstep_sat24(old * 65536 + *r - d), q = u >> 16;
    *w = (int8_t)q;
    *r = (uint16_t)u;
    return q - old;
}

#endif
