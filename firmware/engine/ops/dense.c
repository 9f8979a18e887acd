/* Optimized dense kernels: what the device runs.
 *
 * Four rows (or columns) are processed together so each loaded x (or dy) feeds four independent accumulators:
 * no dependency chain between consecutive multiply-adds, and a quarter of the loads. Inner loops step pointers by
 * constants so the compiler can use immediate-offset loads (VLDR has no register-offset form). */
#include "dense.h"
#include "vfp.h"

/* always inlined: called per row, where a call would cost as much as a short row */
static inline __attribute__((always_inline)) float dot1(const float *w, const float *x, uint32_t n)
{
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    uint32_t i = 0;
    for (; i + 4 <= n; i += 4, w += 4, x += 4) {
        a0 += w[0] * x[0];
        a1 += w[1] * x[1];
        a2 += w[2] * x[2];
        a3 += w[3] * x[3];
    }
    for (; i < n; i++)
        a0 += *w++ * *x++;
    return (a0 + a1) + (a2 + a3);
}

/* w[i] -= g * x[i] over one row, unrolled by four */
static inline __attribute__((always_inline)) void axpy_neg(float *w, float g, const float *x, uint32_t n)
{
    uint32_t i = 0;
#ifdef VFP_BLOCKS
    for (; i + 8 <= n; i += 8)
        vfp_axpy_neg8(&w, g, &x);
#endif
    for (; i + 4 <= n; i += 4, w += 4, x += 4) {
        float x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3];
        w[0] -= g * x0;
        w[1] -= g * x1;
        w[2] -= g * x2;
        w[3] -= g * x3;
    }
    for (; i < n; i++)
        *w++ -= g * *x++;
}

/* row o of the view: split views through the ascending cursor, whole ones by arithmetic (so the compiler keeps the
 * whole-tensor path as cheap as a plain pointer) */
static inline __attribute__((always_inline)) const float *row_of(const wsplit_t *w, int split, uint32_t o,
                                                                 uint32_t *cur)
{
    return split ? wsplit_row(w, o, cur) : w->full + o * w->row;
}

static inline __attribute__((always_inline)) void forward_rows(const float *x, const wsplit_t *w, int split,
                                                               const float *b, float *y, uint32_t n_in,
                                                               uint32_t n_out)
{
    uint32_t o = 0, cur = 0;
    for (; o + 4 <= n_out; o += 4) {
        const float *w0 = row_of(w, split, o, &cur), *w1 = row_of(w, split, o + 1, &cur);
        const float *w2 = row_of(w, split, o + 2, &cur), *w3 = row_of(w, split, o + 3, &cur);
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
        uint32_t i = 0;
#ifdef VFP_BLOCKS
        const float *xp = x;
        for (; i + 8 <= n_in; i += 8)
            vfp_dot4x8(&xp, &w0, &w1, &w2, &w3, &a0, &a1, &a2, &a3);
        w0 -= i;
        w1 -= i;
        w2 -= i;
        w3 -= i;
#endif
        for (; i < n_in; i++) {
            float xi = x[i];
            a0 += w0[i] * xi;
            a1 += w1[i] * xi;
            a2 += w2[i] * xi;
            a3 += w3[i] * xi;
        }
        if (b) {
            a0 += b[o];
            a1 += b[o + 1];
            a2 += b[o + 2];
            a3 += b[o + 3];
        }
        y[o] = a0;
        y[o + 1] = a1;
        y[o + 2] = a2;
        y[o + 3] = a3;
    }
    for (; o < n_out; o++)
        y[o] = dot1(row_of(w, split, o, &cur), x, n_in) + (b ? b[o] : 0.0f);
}

void dense_forward(const float *x, const wsplit_t *w, const float *b, float *y, uint32_t n_in, uint32_t n_out)
{
    if (w->idx)
        forward_rows(x, w, 1, b, y, n_in, n_out);
    else
        forward_rows(x, w, 0, b, y, n_in, n_out);
}

/* whole weights: four columns of dx at a time in registers, every row's pointer by arithmetic */
static void input_grad_columns(const float *dy, const float *w, float *dx, uint32_t n_in, uint32_t n_out)
{
    uint32_t i = 0;
#ifdef VFP_BLOCKS
    for (; i + 8 <= n_in; i += 8) {
        const float *row = w + i;
        vfp_acc8_t a = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        for (uint32_t o = 0; o < n_out; o++, row += n_in)
            VFP_COL8(row, dy[o], a);
        dx[i] = a.a0;
        dx[i + 1] = a.a1;
        dx[i + 2] = a.a2;
        dx[i + 3] = a.a3;
        dx[i + 4] = a.a4;
        dx[i + 5] = a.a5;
        dx[i + 6] = a.a6;
        dx[i + 7] = a.a7;
    }
#endif
    for (; i + 4 <= n_in; i += 4) {
        const float *row = w + i;
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
        for (uint32_t o = 0; o < n_out; o++, row += n_in) {
            float d = dy[o];
            a0 += row[0] * d;
            a1 += row[1] * d;
            a2 += row[2] * d;
            a3 += row[3] * d;
        }
        dx[i] = a0;
        dx[i + 1] = a1;
        dx[i + 2] = a2;
        dx[i + 3] = a3;
    }
    for (; i < n_in; i++) {
        const float *row = w + i;
        float a = 0.0f;
        for (uint32_t o = 0; o < n_out; o++, row += n_in)
            a += *row * dy[o];
        dx[i] = a;
    }
}

void dense_update_weights(float *w, const float *dy, const float *x, float lr, uint32_t n_in, uint32_t n_out)
{
    for (uint32_t o = 0; o < n_out; o++, w += n_in) {
        float g = lr * dy[o];
        /* a zero output gradient (ReLU-masked unit) changes nothing: skip the row */
        if (g != 0.0f)
            axpy_neg(w, g, x, n_in);
    }
}

void dense_update_bias(float *b, const float *dy, float lr, uint32_t n_out)
{
    for (uint32_t o = 0; o < n_out; o++)
        b[o] -= lr * dy[o];
}

/* split weights: dx = sum over rows of dy[o] * row_o, four rows per pass over dx (the column order would look every
 * row up again for each group of columns) */
static void input_grad_rows(const float *dy, const wsplit_t *w, float *dx, uint32_t n_in, uint32_t n_out)
{
    uint32_t o = 0, cur = 0;
    for (uint32_t i = 0; i < n_in; i++)
        dx[i] = 0.0f;
    for (; o + 4 <= n_out; o += 4) {
        const float *w0 = wsplit_row(w, o, &cur), *w1 = wsplit_row(w, o + 1, &cur);
        const float *w2 = wsplit_row(w, o + 2, &cur), *w3 = wsplit_row(w, o + 3, &cur);
        float g0 = dy[o], g1 = dy[o + 1], g2 = dy[o + 2], g3 = dy[o + 3];
        for (uint32_t i = 0; i < n_in; i++)
            dx[i] += (g0 * w0[i] + g1 * w1[i]) + (g2 * w2[i] + g3 * w3[i]);
    }
    for (; o < n_out; o++)
        axpy_neg(dx, -dy[o], wsplit_row(w, o, &cur), n_in);
}

void dense_input_grad(const float *dy, const wsplit_t *w, float *dx, uint32_t n_in, uint32_t n_out)
{
    if (w->idx)
        input_grad_rows(dy, w, dx, n_in, n_out);
    else
        input_grad_columns(dy, w->full, dx, n_in, n_out);
}

void dense_update_rows(float *sel, const uint16_t *idx, uint32_t n_sel, const float *dy, const float *x, float lr,
                       uint32_t n_in)
{
    for (uint32_t j = 0; j < n_sel; j++, sel += n_in) {
        float g = lr * dy[idx[j]];
        if (g != 0.0f)
            axpy_neg(sel, g, x, n_in);
    }
}
