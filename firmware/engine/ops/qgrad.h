/* Integer backward pass and update of int8 training with Quantization-Aware Scaling (docs/qplan-format.md,
 * "Training"). Gradients w.r.t. activations are int8 codes g with a real value c·2^E·g: c is a per-tensor constant
 * the host knows, E an integer exponent the device chooses per step from max |g| (qgrad_requant). Output gradients
 * are first scaled per output channel into int16 h = (g·m[o] + 128) >> 8 (m = s_W[o] / max s_W in Q15), so
 * dL/dW̄ = h·(x − zp_x), dL/db̄ = Σ h and dL/dx = Σ h·W̄ share one per-tensor scale. Weight codes update through a
 * Q16 residual per weight, stored offset by 2^15 (qsgd_i8): U = 65536·W̄ + r, U −= Δ, U saturated to 24 bits (one
 * SSAT), W̄ = U >> 16, r = U mod 65536; r = 32768 is a zero residual. */
#ifndef OPS_QGRAD_H
#define OPS_QGRAD_H

#include <stdint.h>
#include "qop.h"

#define QGRAD_H_SHIFT 7       /* h carries 2^7 times g·s_W[o]/max s_W */
#define QGRAD_RES_BITS 16     /* residual fraction bits */
#define QGRAD_DELTA_MAX (1 << 30)
#define QGRAD_BIAS_MAX (1 << 30)
#define QGRAD_RES_ZERO 0x8000u /* a weight residual of zero (stored offset by 2^15) */
#define QGRAD_POOL_SHIFT 16   /* average pool backward: Q16 reciprocal of each window's tap count */

/* Weight rows of a layer: sel NULL = every row from ram (or from flash when ram is NULL); else rows sel[0..n_sel)
 * (ascending) from ram, compact, and every other row from flash. row = values per output channel. */
typedef struct {
    const int8_t *flash, *ram;
    const uint16_t *sel;
    uint32_t n_sel, row;
} qrows_t;

/* the row of output channel o, advancing a cursor into sel (call with o ascending, *cur starting at 0) */
static inline const int8_t *qrows_get(const qrows_t *r, uint32_t o, uint32_t *cur)
{
    if (!r->sel)
        return (r->ram ? r->ram : r->flash) + o * r->row;
    if (*cur < r->n_sel && r->sel[*cur] == o)
        return r->ram + (*cur)++ * r->row;
    return r->flash + o * r->row;
}

/* dL/dlogits from the int8 softmax output p (scale 1/256, zp -128): e = p + 128 - 256·[c == label], written as int8
 * with the smallest shift k >= 0 that fits [-127, 127]; returns k (E = k, c = 1/256). */
int32_t qgrad_logits(const int8_t *p, uint32_t n, uint32_t label, int8_t *g);
int32_t qgrad_logits_ref(const int8_t *p, uint32_t n, uint32_t label, int8_t *g);

/* An autoencoder's loss, the mean squared error of its output y against its input x (in real terms dL/dy =
 * 2·(y − x)/N): d = (y − zp_y) − rq_mul(x − zp_x, mult, shift), with mult/shift the multiplier of s_x/s_y, written
 * as int8 with the smallest shift k >= 0 that fits [-127, 127]; returns k (E = k, c = 2·s_y/N). */
typedef struct {
    int32_t zp_y, zp_x, mult, shift;
} qrecon_t;
enum { QLOSS_CROSS_ENTROPY = 0, QLOSS_RECONSTRUCTION = 1 };
int32_t qgrad_recon(const qrecon_t *r, const int8_t *y, const int8_t *x, uint32_t n, int8_t *g);
int32_t qgrad_recon_ref(const qrecon_t *r, const int8_t *y, const int8_t *x, uint32_t n, int8_t *g);

/* int32 accumulators to int8 codes rounding by 2^k (half away from zero), the smallest k >= 0 that fits
 * [-127, 127]; returns k. */
int32_t qgrad_requant(const int32_t *acc, uint32_t n, int8_t *g);
int32_t qgrad_requant_ref(const int32_t *acc, uint32_t n, int8_t *g);

/* h[i] = (g'[i]·m[i % out_c] + 128) >> 8 for n values, g' = 0 where the op's int8 output y is at a bound of its
 * fused activation (y <= lo or y >= hi: a ReLU's lo is its zero, which is code -128 when zp_out is); y NULL = no
 * mask (an op without a fused activation). */
void qgrad_prep(const int8_t *g, const int8_t *y, int32_t lo, int32_t hi, const int32_t *m, uint32_t n,
                uint32_t out_c, int16_t *h);
void qgrad_prep_ref(const int8_t *g, const int8_t *y, int32_t lo, int32_t hi, const int32_t *m, uint32_t n,
                    uint32_t out_c, int16_t *h);

/* FULLY_CONNECTED (one input row): acc[j] = sum_o h[o]·W̄[o][j] (j < in_c) */
void fc_i8_input_grad(const qfc_t *p, const int16_t *h, const qrows_t *w, int32_t *acc);
void fc_i8_input_grad_ref(const qfc_t *p, const int16_t *h, const qrows_t *w, int32_t *acc);
/* a[j] = h_o·(x[j] - zp_in): one output channel's weight-gradient accumulators (training fuses them into the
 * update; fc_i8_weight_grad_at is one of them, for the report) */
int32_t fc_i8_weight_grad_at(const qfc_t *p, int32_t h_o, const int8_t *x, uint32_t j);
void fc_i8_weight_grad_ref(const qfc_t *p, int32_t h_o, const int8_t *x, int32_t *a);

/* CONV_2D: acc[iy][ix][ic] = sum over outputs and in-bounds taps of h·W̄ (the transposed convolution) */
void conv_i8_input_grad(const qconv_t *p, const int16_t *h, const qrows_t *w, int32_t *acc);
void conv_i8_input_grad_ref(const qconv_t *p, const int16_t *h, const qrows_t *w, int32_t *acc);
/* output channel oc: a[ky][kx][ic] = sum over output pixels of h[.., oc]·(x - zp_in) at in-bounds taps */
void conv_i8_weight_grad(const qconv_t *p, const int16_t *h, const int8_t *x, uint32_t oc, int32_t *a);
void conv_i8_weight_grad_ref(const qconv_t *p, const int16_t *h, const int8_t *x, uint32_t oc, int32_t *a);
/* the references' one weight-gradient sum: Σ over output pixels of h[·, o]·(x[tap (ky, kx)'s input pixel, ic] − zp_in),
 * padding taps skipped (conv: input channel ic of output channel o's kernel; depthwise: ic = o / dm) */
int32_t qgrad_tap_sum_ref(const qconv_t *p, const int16_t *h, const int8_t *x, uint32_t o, int32_t ky, int32_t kx,
                          int32_t ic);
/* DEPTHWISE_CONV_2D (weights 1HWC, out_c = in_c·dm): acc[iy][ix][ic] = sum over outputs, in-bounds taps and the
 * dm channels oc = ic·dm + d of h[.., oc]·W̄[tap][oc] */
void dwconv_i8_input_grad(const qconv_t *p, const int16_t *h, const int8_t *w, int32_t *acc);
void dwconv_i8_input_grad_ref(const qconv_t *p, const int16_t *h, const int8_t *w, int32_t *acc);
/* a[tap] = Σ over output pixels of h[·, o]·(x[tap's input pixel, o / dm] − zp_in), taps row-major (padding adds 0) */
void dwconv_i8_weight_grad(const qconv_t *p, const int16_t *h, const int8_t *x, uint32_t o, int32_t *a);
void dwconv_i8_weight_grad_ref(const qconv_t *p, const int16_t *h, const int8_t *x, uint32_t o, int32_t *a);
/* AVERAGE_POOL_2D: acc[iy][ix][c] = sum over the windows covering it of g·round(2^16 / count) (count: the window's
 * in-bounds taps); the input gradient's exponent is E - QGRAD_POOL_SHIFT + k after qgrad_requant */
void avgpool_i8_input_grad(const qpool_t *p, const int8_t *g, int32_t *acc);
void avgpool_i8_input_grad_ref(const qpool_t *p, const int8_t *g, int32_t *acc);
/* MEAN over h and w: every input position gets g[ch]·round(65536 / (h·w)) (exponent drops by QGRAD_POOL_SHIFT) */
void mean_i8_input_grad(const qmean_t *p, const int8_t *g, int32_t *acc);
void mean_i8_input_grad_ref(const qmean_t *p, const int8_t *g, int32_t *acc);
/* MAX_POOL_2D: acc[iy][ix][c] = sum of the g of the windows whose first in-bounds maximum (row-major taps, from the
 * input x) it is; the input gradient's exponent is E + k after qgrad_requant */
void maxpool_i8_input_grad(const qpool_t *p, const int8_t *x, const int8_t *g, int32_t *acc);
void maxpool_i8_input_grad_ref(const qpool_t *p, const int8_t *x, const int8_t *g, int32_t *acc);
/* ADD (y = x1 + x2 in real terms): both inputs' gradients are the output gradient g, zeroed where the output y is at
 * a bound of the fused activation (y <= lo or y >= hi; y NULL: no mask); skip NULL: only the chain input's (din) */
void add_i8_input_grad(const int8_t *g, const int8_t *y, int32_t lo, int32_t hi, uint32_t n, int8_t *din,
                       int8_t *skip);
void add_i8_input_grad_ref(const int8_t *g, const int8_t *y, int32_t lo, int32_t hi, uint32_t n, int8_t *din,
                           int8_t *skip);
/* Residual merge where a branch starts: g (the branch's input gradient, exponent e_b) plus gs (the skip gradient,
 * exponent e_s, its constant c_s = c·mult·2^(shift − 31) with mult > 0) at E0 = max(e_b, e_s + shift) −
 * QGRAD_MERGE_BITS, requantised into g; returns the merged exponent E0 + k. acc: n int32 of scratch. */
#define QGRAD_MERGE_BITS 22
int32_t qgrad_merge(int8_t *g, const int8_t *gs, uint32_t n, int32_t e_b, int32_t e_s, int32_t mult, int32_t shift,
                    int32_t *acc);
int32_t qgrad_merge_ref(int8_t *g, const int8_t *gs, uint32_t n, int32_t e_b, int32_t e_s, int32_t mult,
                        int32_t shift, int32_t *acc);
/* sum over positions of h[pos][oc] (n_pos positions of out_c channels) */
int32_t qgrad_bias(const int16_t *h, uint32_t n_pos, uint32_t out_c, uint32_t oc);
int32_t qgrad_bias_ref(const int16_t *h, uint32_t n_pos, uint32_t out_c, uint32_t oc);

/* Δ = round(a·mult·2^(shift + e - 31)) (half up, one rounding, 64-bit product), clamped to ±2^30 */
int32_t qsgd_delta(int32_t a, int32_t mult, int32_t shift_e);
/* n weight codes and their offset Q16 residuals: U = 65536·w + r − Δ(a[j]), saturated to [−2^23, 2^23 − 1],
 * w = U >> 16 (so codes stay in [−128, 127]), r = U mod 65536. Returns the sum of the code changes (for bias_eff). */
int32_t qsgd_i8(int8_t *w, uint16_t *r, const int32_t *a, uint32_t n, int32_t mult, int32_t shift_e);
int32_t qsgd_i8_ref(int8_t *w, uint16_t *r, const int32_t *a, uint32_t n, int32_t mult, int32_t shift_e);
int32_t qsgd_step_ref(int8_t *w, uint16_t *r, int64_t d); /* one weight, the rule above from the definition */
/* FULLY_CONNECTED row o, gradient and update fused (the gradient a[j] = h_o·(x[j] − zp) is never stored): the row
 * step P = h_o·mult (64-bit) is rounded once to M = round(P / 2^k) with |M| <= 2^22 (k >= 0 the fewest bits that
 * allow it) and s = 31 − shift_e − k; per weight Δ = (z·M + 2^(s−1)) >> s for s >= 1 (z = x[j] − zp, |z·M| < 2^30:
 * one multiply-accumulate), Δ = z·M·2^−s clamped to ±2^30 for s <= 0; then the qsgd_i8 rule. Returns the row's code
 * change. */
int32_t fc_i8_update_row(const int8_t *x, int32_t zp, uint32_t n, int32_t h_o, int32_t mult, int32_t shift_e,
                         int8_t *w, uint16_t *r);
/* the same from a column list (fc_i8_update_list): list[0] = the count of columns with x != zp, then one
 * (j << 16 | (x[j] − zp) & 0xFFFF) per such column while they fit n − 1 entries; a full list (count >= n − 1) falls
 * back to fc_i8_update_row. Columns with x = zp have Δ = 0: the result is fc_i8_update_row's exactly. */
void fc_i8_update_list(const int8_t *x, int32_t zp, uint32_t n, int32_t *list);
int32_t fc_i8_update_row_listed(const int32_t *list, const int8_t *x, int32_t zp, uint32_t n, int32_t h_o,
                                int32_t mult, int32_t shift_e, int8_t *w, uint16_t *r);
int32_t fc_i8_update_row_ref(const int8_t *x, int32_t zp, uint32_t n, int32_t h_o, int32_t mult, int32_t shift_e,
                             int8_t *w, uint16_t *r);
/* one int32 bias code and its residual (64-bit V, code clamped to ±2^30, residual 0 when clamped); returns the code
 * change */
int32_t qsgd_bias(int32_t *b, int16_t *r, int32_t a, int32_t mult, int32_t shift_e);
int32_t qsgd_bias_ref(int32_t *b, int16_t *r, int32_t a, int32_t mult, int32_t shift_e);

#endif
