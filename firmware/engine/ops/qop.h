/* Parameters of the int8 kernels (docs/qplan-format.md), shared by the optimized kernels, their plain references
 * and qexec. Activations are int8 HWC (NHWC, N = 1); conv weights OHWI, depthwise weights 1HWC (C = in_c * dm),
 * fully-connected weights [out][in]. TFLite semantics: acc = bias + sum (x - zp_in) * w over the in-bounds taps,
 * then requantised per output channel and clamped to [act_min, act_max]. */
#ifndef OPS_QOP_H
#define OPS_QOP_H

#include <stdint.h>

typedef struct {
    uint16_t in_h, in_w, in_c;
    uint16_t out_h, out_w, out_c;
    uint8_t k_h, k_w, stride_h, stride_w;
    uint8_t dm;                 /* depthwise channel multiplier (1 otherwise) */
    uint8_t rq_per_channel;     /* 1: rq has out_c pairs; 0: one pair for every channel */
    uint16_t pad_top, pad_left;
    int32_t zp_in, zp_out;
    int32_t act_min, act_max;
    const int32_t *bias;        /* raw int32 bias or NULL: what the reference kernels use */
    const int32_t *bias_eff;    /* bias - zp_in * sum(w) per output channel (host-precomputed): optimized kernels */
    const int32_t *rq;          /* (multiplier Q0.31, shift) pairs */
} qconv_t;

/* fully connected: rows = n_in / in_c input rows of in_c values, out_c outputs per row */
typedef struct {
    uint32_t rows;
    uint16_t in_c, out_c;
    uint8_t rq_per_channel;
    int32_t zp_in, zp_out, act_min, act_max;
    const int32_t *bias, *bias_eff, *rq;
} qfc_t;

/* average and max pool (no requantisation, padding taps not counted) */
typedef struct {
    uint16_t in_h, in_w, c, out_h, out_w;
    uint8_t k_h, k_w, stride_h, stride_w;
    uint16_t pad_top, pad_left;
    int32_t act_min, act_max;
} qpool_t;

/* the in-bounds taps [y0, y1) x [x0, x1) of pool output (oy, ox): the window clipped to the input (the pools' one
 * rule for padding: padding taps are not taps) */
typedef struct {
    int32_t y0, y1, x0, x1;
} qpool_win_t;

static inline qpool_win_t qpool_window(const qpool_t *p, int32_t oy, int32_t ox)
{
    int32_t iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
    qpool_win_t w;
    w.y0 = iy0 < 0 ? 0 : iy0;
    w.x0 = ix0 < 0 ? 0 : ix0;
    w.y1 = iy0 + p->k_h < p->in_h ? iy0 + p->k_h : p->in_h;
    w.x1 = ix0 + p->k_w < p->in_w ? ix0 + p->k_w : p->in_w;
    return w;
}

/* mean over h and w of an h x w x c tensor: (sum - zp_in * n) * M + zp_out, M folds 1/n in (host) */
typedef struct {
    uint16_t h, w, c;
    int32_t zp_in, zp_out, mult, shift;
} qmean_t;

/* elementwise add of two equally shaped tensors (TFLite: both inputs << left_shift, rescaled, summed) */
typedef struct {
    uint32_t n;
    int32_t zp1, zp2, zp_out, left_shift;
    int32_t m1, s1, m2, s2, mo, so;
    int32_t act_min, act_max;
} qadd_t;

/* softmax over rows of depth values; output scale 1/256, zero point -128 */
typedef struct {
    uint32_t rows;
    uint16_t depth;
    int32_t mult, shift, diff_min;
} qsoftmax_t;

void conv_i8(const qconv_t *p, const int8_t *x, const int8_t *w, int8_t *y);
void dwconv_i8(const qconv_t *p, const int8_t *x, const int8_t *w, int8_t *y);
void fc_i8(const qfc_t *p, const int8_t *x, const int8_t *w, int8_t *y);
void avgpool_i8(const qpool_t *p, const int8_t *x, int8_t *y);
void maxpool_i8(const qpool_t *p, const int8_t *x, int8_t *y);
void mean_i8(const qmean_t *p, const int8_t *x, int8_t *y);
void add_i8(const qadd_t *p, const int8_t *x1, const int8_t *x2, int8_t *y);
void softmax_i8(const qsoftmax_t *p, const int8_t *x, int8_t *y);

/* Plain references (host tests only): written straight from the definition, raw bias, no hoisting. */
void conv_i8_ref(const qconv_t *p, const int8_t *x, const int8_t *w, int8_t *y);
void dwconv_i8_ref(const qconv_t *p, const int8_t *x, const int8_t *w, int8_t *y);
void fc_i8_ref(const qfc_t *p, const int8_t *x, const int8_t *w, int8_t *y);
void avgpool_i8_ref(const qpool_t *p, const int8_t *x, int8_t *y);
void maxpool_i8_ref(const qpool_t *p, const int8_t *x, int8_t *y);
void mean_i8_ref(const qmean_t *p, const int8_t *x, int8_t *y);
void add_i8_ref(const qadd_t *p, const int8_t *x1, const int8_t *x2, int8_t *y);
void softmax_i8_ref(const qsoftmax_t *p, const int8_t *x, int8_t *y);

#endif
