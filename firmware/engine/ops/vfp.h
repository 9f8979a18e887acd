/* fp32 inner loops for cores with a single-precision FPU (Cortex-M4F/M7: VFPv4/v5, s0-s31), as inline assembly:
 * GCC loads floats one VLDR at a time and copies blocks through core registers, while one VLDMIA moves eight floats
 * (one instruction). Each block keeps the operation order of the plain C loop it replaces (one fused multiply-add
 * per element, in index order per accumulator), so results are bit-identical to it. Without an FPU (M0+, soft
 * float) or on the host, VFP_BLOCKS is undefined and the C loops run. */
#ifndef OPS_VFP_H
#define OPS_VFP_H

#include <stdint.h>

#if defined(__ARM_FP) && (__ARM_FP & 4) && defined(__thumb2__) && defined(__ARM_PCS_VFP)
#define VFP_BLOCKS 1

/* four rows' dot products over eight inputs: a_k += w_k[0..8) · x[0..8); pointers advance by eight */
static inline __attribute__((always_inline)) void vfp_dot4x8(const float **x, const float **w0, const float **w1,
                                                             const float **w2, const float **w3, float *a0,
                                                             float *a1, float *a2, float *a3)
{
    __asm__ volatile("vldmia %[x]!, {s0-s7}\n\t"
                     "vldmia %[w0]!, {s8-s15}\n\t"
                     "vldmia %[w1]!, {s16-s23}\n\t"
                     "vfma.f32 %[a0], s0, s8\n\tvfma.f32 %[a1], s0, s16\n\t"
                     "vfma.f32 %[a0], s1, s9\n\tvfma.f32 %[a1], s1, s17\n\t"
                     "vfma.f32 %[a0], s2, s10\n\tvfma.f32 %[a1], s2, s18\n\t"
                     "vfma.f32 %[a0], s3, s11\n\tvfma.f32 %[a1], s3, s19\n\t"
                     "vfma.f32 %[a0], s4, s12\n\tvfma.f32 %[a1], s4, s20\n\t"
                     "vfma.f32 %[a0], s5, s13\n\tvfma.f32 %[a1], s5, s21\n\t"
                     "vfma.f32 %[a0], s6, s14\n\tvfma.f32 %[a1], s6, s22\n\t"
                     "vfma.f32 %[a0], s7, s15\n\tvfma.f32 %[a1], s7, s23\n\t"
                     "vldmia %[w2]!, {s8-s15}\n\t"
                     "vldmia %[w3]!, {s16-s23}\n\t"
                     "vfma.f32 %[a2], s0, s8\n\tvfma.f32 %[a3], s0, s16\n\t"
                     "vfma.f32 %[a2], s1, s9\n\tvfma.f32 %[a3], s1, s17\n\t"
                     "vfma.f32 %[a2], s2, s10\n\tvfma.f32 %[a3], s2, s18\n\t"
                     "vfma.f32 %[a2], s3, s11\n\tvfma.f32 %[a3], s3, s19\n\t"
                     "vfma.f32 %[a2], s4, s12\n\tvfma.f32 %[a3], s4, s20\n\t"
                     "vfma.f32 %[a2], s5, s13\n\tvfma.f32 %[a3], s5, s21\n\t"
                     "vfma.f32 %[a2], s6, s14\n\tvfma.f32 %[a3], s6, s22\n\t"
                     "vfma.f32 %[a2], s7, s15\n\tvfma.f32 %[a3], s7, s23\n\t"
                     : [x] "+r"(*x), [w0] "+r"(*w0), [w1] "+r"(*w1), [w2] "+r"(*w2), [w3] "+r"(*w3),
                       [a0] "+t"(*a0), [a1] "+t"(*a1), [a2] "+t"(*a2), [a3] "+t"(*a3)
                     :
                     : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13", "s14",
                       "s15", "s16", "s17", "s18", "s19", "s20", "s21", "s22", "s23", "memory");
}

/* w[0..8) -= g · x[0..8) (VFMS: w − g·x, one rounding, as the contracted C); both pointers advance by eight */
static inline __attribute__((always_inline)) void vfp_axpy_neg8(float **w, float g, const float **x)
{
    __asm__ volatile("vldmia %[x]!, {s0-s7}\n\t"
                     "vldmia %[w], {s8-s15}\n\t"
                     "vfms.f32 s8, %[g], s0\n\tvfms.f32 s9, %[g], s1\n\t"
                     "vfms.f32 s10, %[g], s2\n\tvfms.f32 s11, %[g], s3\n\t"
                     "vfms.f32 s12, %[g], s4\n\tvfms.f32 s13, %[g], s5\n\t"
                     "vfms.f32 s14, %[g], s6\n\tvfms.f32 s15, %[g], s7\n\t"
                     "vstmia %[w]!, {s8-s15}\n\t"
                     : [w] "+r"(*w), [x] "+r"(*x)
                     : [g] "t"(g)
                     : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13", "s14",
                       "s15", "memory");
}

/* eight columns of dx from one row: a_k += row[k] · d (k < 8); the eight sums are the caller's scalars, so they
 * stay in registers across the loop over rows (an array would be spilled around each block) */
typedef struct {
    float a0, a1, a2, a3, a4, a5, a6, a7;
} vfp_acc8_t;

#define VFP_COL8(row, d, s)                                                                                         \
    __asm__ volatile("vldmia %[r], {s0-s7}\n\t"                                                                     \
                     "vfma.f32 %[a0], s0, %[dd]\n\tvfma.f32 %[a1], s1, %[dd]\n\t"                                  \
                     "vfma.f32 %[a2], s2, %[dd]\n\tvfma.f32 %[a3], s3, %[dd]\n\t"                                  \
                     "vfma.f32 %[a4], s4, %[dd]\n\tvfma.f32 %[a5], s5, %[dd]\n\t"                                  \
                     "vfma.f32 %[a6], s6, %[dd]\n\tvfma.f32 %[a7], s7, %[dd]\n\t"                                  \
                     : [a0] "+t"((s).a0), [a1] "+t"((s).a1), [a2] "+t"((s).a2), [a3] "+t"((s).a3),                  \
                       [a4] "+t"((s).a4), [a5] "+t"((s).a5), [a6] "+t"((s).a6), [a7] "+t"((s).a7)                   \
                     : [r] "r"(row), [dd] "t"(d), "m"(*(const float(*)[8])(row))                                   \
                     : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7")
#endif

#endif
