/* int8 dot products of one input run against 1 or 4 weight rows, accumulated into int32: the inner loops of conv_i8
 * and fc_i8. On cores with the DSP extension (Cortex-M4/M7) four int8 pairs are widened with SXTB16 and multiplied
 * two at a time with SMLAD (both operands see the same byte permutation: bytes 0,2 then 1,3); elsewhere (M0+) a
 * plain C loop. Inline: no call per element. */
#ifndef OPS_DOT_I8_H
#define OPS_DOT_I8_H

#include <stdint.h>
#include <string.h>

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#define DOT_I8_DSP 1
static inline uint32_t dot_ld32(const int8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4); /* one LDR: ARMv7-M allows unaligned word loads */
    return v;
}
static inline uint32_t dot_sxtb16(uint32_t v)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1" : "=r"(r) : "r"(v));
    return r;
}
static inline uint32_t dot_sxtb16_ror8(uint32_t v)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}
/* both 16-bit lanes of a minus those of b (no saturation needed for widened codes minus a zero point) */
static inline uint32_t dot_ssub16(uint32_t a, uint32_t b)
{
    uint32_t r;
    __asm__("ssub16 %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
static inline int32_t dot_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    int32_t r;
    __asm__("smlad %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
    return r;
}
/* one 16-bit product of chosen halves (B bottom, T top; first letter a's, second b's) plus acc: per-lane MACs where
 * lanes are separate channels or pixels */
#define DOT_SMLAXY(xy)                                                                                               \
    static inline int32_t dot_smla##xy(uint32_t a, uint32_t b, int32_t acc)                                          \
    {                                                                                                                \
        int32_t r;                                                                                                   \
        __asm__("smla" #xy " %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));                                  \
        return r;                                                                                                    \
    }
DOT_SMLAXY(bb)
DOT_SMLAXY(bt)
DOT_SMLAXY(tb)
DOT_SMLAXY(tt)
#undef DOT_SMLAXY

/* The asm loops' vocabulary: widen the next word of weight row w (SXTB16 lanes 0, 2 into lo, 1, 3 into hi), take
 * the next two widened input words (LDRD, word-aligned), two SMLADs into sum s */
#define DOT_W_WIDEN(w, lo, hi)                                                                                       \
    "ldr %[" #lo "], [%[" #w "]], #4\n\t"                                                                             \
    "sxtb16 %[" #hi "], %[" #lo "], ror #8\n\t"                                                                       \
    "sxtb16 %[" #lo "], %[" #lo "]\n\t"
#define DOT_X_PAIR(e, o) "ldrd %[" #e "], %[" #o "], [%[x]], #8\n\t"
#define DOT_MAC2(s, a, b, c, d)                                                                                      \
    "smlad %[" #s "], %[" #a "], %[" #b "], %[" #s "]\n\t"                                                            \
    "smlad %[" #s "], %[" #c "], %[" #d "], %[" #s "]\n\t"
#define DOT_XW_PIXEL(s) DOT_X_PAIR(t0, t1) DOT_MAC2(s, t0, v, t1, wo)

/* Four (two) widened pixels against one weight row, four inputs per pass: xw holds, per group of four inputs, each
 * pixel's even and odd SXTB16 pair (word-aligned: LDRD); w is the int8 row (any alignment: LDR). Written as one asm
 * loop because the compiler spills an accumulator out of the 11 live registers: sixteen MACs cost one LDR, two
 * SXTB16, four LDRD and eight SMLAD, and the loop two. groups >= 1. */
static inline void dot_xw4(const uint32_t *xw, const int8_t *w, uint32_t groups, int32_t *acc)
{
    const int8_t *end = w + 4u * groups;
    int32_t s0 = acc[0], s1 = acc[1], s2 = acc[2], s3 = acc[3];
    uint32_t v, wo, t0, t1;
    __asm__("1:\n\t" DOT_W_WIDEN(w, v, wo) DOT_XW_PIXEL(s0) DOT_XW_PIXEL(s1) DOT_XW_PIXEL(s2) DOT_XW_PIXEL(s3)
            "cmp %[w], %[end]\n\t"
            "bne 1b"
            : [s0] "+r"(s0), [s1] "+r"(s1), [s2] "+r"(s2), [s3] "+r"(s3), [w] "+r"(w), [x] "+r"(xw),
              [v] "=&r"(v), [wo] "=&r"(wo), [t0] "=&r"(t0), [t1] "=&r"(t1)
            : [end] "r"(end)
            : "cc", "memory");
    acc[0] = s0;
    acc[1] = s1;
    acc[2] = s2;
    acc[3] = s3;
}

static inline void dot_xw2(const uint32_t *xw, const int8_t *w, uint32_t groups, int32_t *acc)
{
    const int8_t *end = w + 4u * groups;
    int32_t s0 = acc[0], s1 = acc[1];
    uint32_t v, wo, t0, t1;
    __asm__("1:\n\t" DOT_W_WIDEN(w, v, wo) DOT_XW_PIXEL(s0) DOT_XW_PIXEL(s1)
            "cmp %[w], %[end]\n\t"
            "bne 1b"
            : [s0] "+r"(s0), [s1] "+r"(s1), [w] "+r"(w), [x] "+r"(xw), [v] "=&r"(v), [wo] "=&r"(wo),
              [t0] "=&r"(t0), [t1] "=&r"(t1)
            : [end] "r"(end)
            : "cc", "memory");
    acc[0] = s0;
    acc[1] = s1;
}

/* four inputs (one LDRD of their widened pairs) against two weight rows' next words */
#define DOT_ROWS2_GROUP                                                                                              \
    DOT_X_PAIR(xe, xo) DOT_W_WIDEN(w0, v, t) DOT_MAC2(s0, xe, v, xo, t) DOT_W_WIDEN(w1, v, t)                         \
        DOT_MAC2(s1, xe, v, xo, t)

/* One widened input (pairs per group of four, word-aligned) against two weight rows, eight inputs per pass: 32 MACs
 * cost two LDRD, four LDR, eight SXTB16 and eight SMLAD, and the loop two. pairs >= 1 (groups of eight). */
static inline void dot_rows2_xw(const uint32_t *xw, const int8_t *w0, const int8_t *w1, uint32_t pairs, int32_t *acc)
{
    const uint32_t *end = xw + 4u * pairs;
    int32_t s0 = acc[0], s1 = acc[1];
    uint32_t v, t, xe, xo;
    __asm__("1:\n\t" DOT_ROWS2_GROUP DOT_ROWS2_GROUP
            "cmp %[x], %[end]\n\t"
            "bne 1b"
            : [s0] "+r"(s0), [s1] "+r"(s1), [w0] "+r"(w0), [w1] "+r"(w1), [x] "+r"(xw), [v] "=&r"(v),
              [t] "=&r"(t), [xe] "=&r"(xe), [xo] "=&r"(xo)
            : [end] "r"(end)
            : "cc", "memory");
    acc[0] = s0;
    acc[1] = s1;
}
#endif

/* acc[0..3] += sum_j x[j] * w[k * stride + j] for k = 0..3 (pointers advance: few live registers) */
static inline void dot4_i8(const int8_t *x, const int8_t *w, uint32_t stride, uint32_t n, int32_t *acc)
{
    const int8_t *w0 = w, *w1 = w + stride, *w2 = w1 + stride, *w3 = w2 + stride;
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
#ifdef DOT_I8_DSP
    for (uint32_t q = n >> 2; q; q--) {
        uint32_t xv = dot_ld32(x), xa, xb, wv;
        x += 4;
        xa = dot_sxtb16(xv);
        xb = dot_sxtb16_ror8(xv);
        wv = dot_ld32(w0);
        w0 += 4;
        a0 = dot_smlad(xa, dot_sxtb16(wv), a0);
        a0 = dot_smlad(xb, dot_sxtb16_ror8(wv), a0);
        wv = dot_ld32(w1);
        w1 += 4;
        a1 = dot_smlad(xa, dot_sxtb16(wv), a1);
        a1 = dot_smlad(xb, dot_sxtb16_ror8(wv), a1);
        wv = dot_ld32(w2);
        w2 += 4;
        a2 = dot_smlad(xa, dot_sxtb16(wv), a2);
        a2 = dot_smlad(xb, dot_sxtb16_ror8(wv), a2);
        wv = dot_ld32(w3);
        w3 += 4;
        a3 = dot_smlad(xa, dot_sxtb16(wv), a3);
        a3 = dot_smlad(xb, dot_sxtb16_ror8(wv), a3);
    }
    n &= 3u;
#else
    for (uint32_t q = n >> 1; q; q--) {
        int32_t x0 = x[0], x1 = x[1];
        x += 2;
        a0 += x0 * w0[0] + x1 * w0[1];
        a1 += x0 * w1[0] + x1 * w1[1];
        a2 += x0 * w2[0] + x1 * w2[1];
        a3 += x0 * w3[0] + x1 * w3[1];
        w0 += 2;
        w1 += 2;
        w2 += 2;
        w3 += 2;
    }
    n &= 1u;
#endif
    for (; n; n--) {
        int32_t xv = *x++;
        a0 += xv * *w0++;
        a1 += xv * *w1++;
        a2 += xv * *w2++;
        a3 += xv * *w3++;
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

#ifdef DOT_I8_DSP
/* four inputs against two rows: one SXTB16 pair of x shared by both rows' SMLAD pairs */
static inline void dot2_step4(const int8_t *x, const int8_t *w0, const int8_t *w1, int32_t *a0, int32_t *a1)
{
    uint32_t xv = dot_ld32(x), xa = dot_sxtb16(xv), xb = dot_sxtb16_ror8(xv), wv = dot_ld32(w0);
    *a0 = dot_smlad(xb, dot_sxtb16_ror8(wv), dot_smlad(xa, dot_sxtb16(wv), *a0));
    wv = dot_ld32(w1);
    *a1 = dot_smlad(xb, dot_sxtb16_ror8(wv), dot_smlad(xa, dot_sxtb16(wv), *a1));
}
#endif

/* acc[0..1] += sum_j x[j] * w[k * stride + j] for k = 0..1: two rows per pass keep every pointer, sum and
 * temporary in a register (four rows spill on ARMv7-M's 13 registers), eight inputs per pass halve the loop cost */
static inline void dot2_i8(const int8_t *x, const int8_t *w, uint32_t stride, uint32_t n, int32_t *acc)
{
    const int8_t *w0 = w, *w1 = w + stride;
    int32_t a0 = acc[0], a1 = acc[1];
#ifdef DOT_I8_DSP
    for (uint32_t q = n >> 3; q; q--, x += 8, w0 += 8, w1 += 8) {
        dot2_step4(x, w0, w1, &a0, &a1);
        dot2_step4(x + 4, w0 + 4, w1 + 4, &a0, &a1);
    }
    if (n & 4u) {
        dot2_step4(x, w0, w1, &a0, &a1);
        x += 4;
        w0 += 4;
        w1 += 4;
    }
    n &= 3u;
#endif
    for (; n; n--) {
        int32_t xv = *x++;
        a0 += xv * *w0++;
        a1 += xv * *w1++;
    }
    acc[0] = a0;
    acc[1] = a1;
}

/* sum_j x[j] * w[j] */
static inline int32_t dot1_i8(const int8_t *x, const int8_t *w, uint32_t n)
{
    int32_t a = 0;
    uint32_t j = 0;
#ifdef DOT_I8_DSP
    for (; j + 4 <= n; j += 4) {
        uint32_t xv = dot_ld32(x + j), wv = dot_ld32(w + j);
        a = dot_smlad(dot_sxtb16(xv), dot_sxtb16(wv), a);
        a = dot_smlad(dot_sxtb16_ror8(xv), dot_sxtb16_ror8(wv), a);
    }
#endif
    for (; j < n; j++)
        a += (int32_t)x[j] * w[j];
    return a;
}

/* sum_j w[j] */
static inline int32_t sum_i8(const int8_t *w, uint32_t n)
{
    int32_t s = 0;
    for (uint32_t j = 0; j < n; j++)
        s += w[j];
    return s;
}

#endif
