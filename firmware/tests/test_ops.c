/* Optimized kernels against the reference kernels, and reference kernels against finite differences. */
#include <math.h>
#include <string.h>
#include "harness.h"
#include "ops/add.h"
#include "ops/conv2d.h"
#include "ops/dense.h"
#include "ops/dwconv2d.h"
#include "ops/gavgpool.h"
#include "ops/fmath.h"
#include "ops/maxpool.h"
#include "ops/mse.h"
#include "ops/relu.h"
#include "ops/softmax_ce.h"

#define BIG 4096

static float A[BIG], B[BIG], C[BIG], D[BIG], E[BIG], F[BIG], G[BIG];

static const uint32_t dense_shapes[][2] = {{1, 1}, {3, 2}, {4, 4}, {7, 5}, {64, 32}, {32, 10}, {13, 9}, {17, 3}};

static void t_dense_forward(void)
{
    for (unsigned s = 0; s < sizeof dense_shapes / sizeof dense_shapes[0]; s++) {
        uint32_t ni = dense_shapes[s][0], no = dense_shapes[s][1];
        th_fill(A, ni, -1, 1);
        th_fill(B, ni * no, -1, 1);
        th_fill(C, no, -1, 1);
        wsplit_t w = wsplit_all(B, ni);
        dense_forward(A, &w, C, D, ni, no);
        dense_forward_ref(A, B, C, E, ni, no);
        CHECK(th_max_rel(D, E, no) < 1e-5);
        dense_forward(A, &w, NULL, D, ni, no);
        dense_forward_ref(A, B, NULL, E, ni, no);
        CHECK(th_max_rel(D, E, no) < 1e-5);
    }
}

static void t_dense_input_grad(void)
{
    for (unsigned s = 0; s < sizeof dense_shapes / sizeof dense_shapes[0]; s++) {
        uint32_t ni = dense_shapes[s][0], no = dense_shapes[s][1];
        th_fill(A, no, -1, 1);
        th_fill(B, ni * no, -1, 1);
        wsplit_t w = wsplit_all(B, ni);
        th_fill(D, ni, 5, 6); /* garbage: must be overwritten */
        dense_input_grad(A, &w, D, ni, no);
        dense_input_grad_ref(A, B, E, ni, no);
        CHECK(th_max_rel(D, E, ni) < 1e-5);
    }
}

static void t_dense_update(void)
{
    for (unsigned s = 0; s < sizeof dense_shapes / sizeof dense_shapes[0]; s++) {
        uint32_t ni = dense_shapes[s][0], no = dense_shapes[s][1];
        th_fill(A, no, -1, 1);
        A[0] = 0.0f; /* a masked unit: the row must stay as it is */
        th_fill(B, ni, -1, 1);
        th_fill(D, ni * no, -1, 1);
        memcpy(E, D, ni * no * sizeof(float));
        memcpy(F, D, ni * no * sizeof(float));
        dense_update_weights(D, A, B, 0.1f, ni, no);
        dense_update_weights_ref(E, A, B, 0.1f, ni, no);
        CHECK(th_max_rel(D, E, ni * no) < 1e-6);
        CHECK(memcmp(D, F, ni * sizeof(float)) == 0);
        th_fill(C, no, -1, 1);
        memcpy(G, C, no * sizeof(float));
        dense_update_bias(C, A, 0.1f, no);
        for (uint32_t o = 0; o < no; o++)
            CHECK_NEAR(C[o], G[o] - 0.1f * A[o], 1e-6);
    }
}

/* loss L = sum r_j y_j, evaluated in double from a float forward */
static double dense_loss(const float *x, const float *w, const float *b, const float *r, uint32_t ni, uint32_t no)
{
    float y[64];
    double l = 0.0;
    dense_forward_ref(x, w, b, y, ni, no);
    for (uint32_t o = 0; o < no; o++)
        l += (double)r[o] * y[o];
    return l;
}

static double fd(float *v, uint32_t j, double (*f)(void), float eps)
{
    float keep = v[j];
    double lp, lm;
    v[j] = keep + eps;
    lp = f();
    v[j] = keep - eps;
    lm = f();
    v[j] = keep;
    return (lp - lm) / (2.0 * eps);
}

static uint32_t g_ni, g_no;
static double dense_f(void)
{
    return dense_loss(A, B, C, D, g_ni, g_no);
}

static void t_dense_fd(void)
{
    g_ni = 7;
    g_no = 5;
    th_fill(A, g_ni, -1, 1);
    th_fill(B, g_ni * g_no, -1, 1);
    th_fill(C, g_no, -1, 1);
    th_fill(D, g_no, -1, 1); /* dL/dy */
    dense_input_grad_ref(D, B, E, g_ni, g_no);
    dense_weight_grad_ref(D, A, F, g_ni, g_no);
    for (uint32_t i = 0; i < g_ni; i++)
        CHECK_NEAR(E[i], fd(A, i, dense_f, 1e-2f), 1e-3);
    for (uint32_t j = 0; j < g_ni * g_no; j++)
        CHECK_NEAR(F[j], fd(B, j, dense_f, 1e-2f), 1e-3);
    for (uint32_t o = 0; o < g_no; o++) /* dL/db = dy */
        CHECK_NEAR(D[o], fd(C, o, dense_f, 1e-2f), 1e-3);
}

/* in_h, in_w, in_c, out_c, k, stride, same */
static const uint16_t conv_cfg[][7] = {
    {5, 6, 3, 5, 3, 1, 0}, {7, 5, 2, 6, 3, 1, 1}, {8, 7, 3, 4, 3, 2, 1}, {9, 9, 2, 7, 2, 2, 0},
    {6, 6, 1, 8, 5, 1, 1}, {4, 4, 4, 1, 1, 1, 0}, {8, 8, 1, 3, 3, 2, 1},
};

static conv_shape_t conv_shape(unsigned c)
{
    conv_shape_t s;
    const uint16_t *g = conv_cfg[c];
    memset(&s, 0, sizeof s);
    s.in_h = g[0];
    s.in_w = g[1];
    s.in_c = g[2];
    s.out_c = g[3];
    s.k = s.kw = g[4];
    s.stride = g[5];
    if (g[6]) {
        s.out_h = (uint16_t)((s.in_h + s.stride - 1) / s.stride);
        s.out_w = (uint16_t)((s.in_w + s.stride - 1) / s.stride);
        int ph = (s.out_h - 1) * s.stride + s.k - s.in_h, pw = (s.out_w - 1) * s.stride + s.k - s.in_w;
        s.pad_top = (uint16_t)(ph > 0 ? ph / 2 : 0);
        s.pad_left = (uint16_t)(pw > 0 ? pw / 2 : 0);
    } else {
        s.out_h = (uint16_t)((s.in_h - s.k) / s.stride + 1);
        s.out_w = (uint16_t)((s.in_w - s.k) / s.stride + 1);
    }
    return s;
}

#define NCFG (sizeof conv_cfg / sizeof conv_cfg[0])
#define NIN(s) ((uint32_t)(s).in_h * (s).in_w * (s).in_c)
#define NOUT(s) ((uint32_t)(s).out_h * (s).out_w * (s).out_c)
#define NW(s) ((uint32_t)(s).out_c * (s).k * (s).k * (s).in_c)

static void t_conv_forward(void)
{
    for (unsigned c = 0; c < NCFG; c++) {
        conv_shape_t s = conv_shape(c);
        th_fill(A, NIN(s), -1, 1);
        th_fill(B, NW(s), -1, 1);
        th_fill(C, s.out_c, -1, 1);
        wsplit_t w = wsplit_all(B, NW(s) / s.out_c);
        conv2d_forward(&s, A, &w, C, D);
        conv2d_forward_ref(&s, A, B, C, E);
        CHECK(th_max_rel(D, E, NOUT(s)) < 1e-5);
        conv2d_forward(&s, A, &w, NULL, D);
        conv2d_forward_ref(&s, A, B, NULL, E);
        CHECK(th_max_rel(D, E, NOUT(s)) < 1e-5);
    }
}

static void t_conv_input_grad(void)
{
    for (unsigned c = 0; c < NCFG; c++) {
        conv_shape_t s = conv_shape(c);
        th_fill(A, NOUT(s), -1, 1);
        th_fill(B, NW(s), -1, 1);
        wsplit_t w = wsplit_all(B, NW(s) / s.out_c);
        th_fill(D, NIN(s), 5, 6); /* garbage: must be overwritten */
        conv2d_input_grad(&s, A, &w, D);
        conv2d_input_grad_ref(&s, A, B, E);
        CHECK(th_max_rel(D, E, NIN(s)) < 1e-5);
    }
}

static void t_conv_weight_grad(void)
{
    for (unsigned c = 0; c < NCFG; c++) {
        conv_shape_t s = conv_shape(c);
        uint32_t n = (uint32_t)s.k * s.k * s.in_c;
        th_fill(A, NOUT(s), -1, 1);
        A[0] = 0.0f; /* exercises the skip of zero output gradients */
        th_fill(B, NIN(s), -1, 1);
        for (uint32_t oc = 0; oc < s.out_c; oc++) {
            th_fill(D, n, 5, 6);
            conv2d_weight_grad_channel(&s, A, B, oc, D);
            conv2d_weight_grad_channel_ref(&s, A, B, oc, E);
            CHECK(th_max_rel(D, E, n) < 1e-5);
            CHECK_NEAR(conv2d_bias_grad_channel(&s, A, oc), conv2d_bias_grad_channel_ref(&s, A, oc), 1e-5);
        }
        th_fill(F, n, -1, 1);
        memcpy(G, F, n * sizeof(float));
        conv2d_update_channel(F, E, 0.5f, n);
        for (uint32_t j = 0; j < n; j++)
            CHECK_NEAR(F[j], G[j] - 0.5f * E[j], 1e-6);
    }
}

static conv_shape_t g_cs;
static double conv_f(void)
{
    float y[BIG];
    double l = 0.0;
    conv2d_forward_ref(&g_cs, A, B, C, y);
    for (uint32_t j = 0; j < NOUT(g_cs); j++)
        l += (double)D[j] * y[j];
    return l;
}

static void t_conv_fd(void)
{
    for (unsigned c = 0; c < NCFG; c++) {
        conv_shape_t s = g_cs = conv_shape(c);
        uint32_t n = (uint32_t)s.k * s.k * s.in_c;
        th_fill(A, NIN(s), -1, 1);
        th_fill(B, NW(s), -1, 1);
        th_fill(C, s.out_c, -1, 1);
        th_fill(D, NOUT(s), -1, 1);
        conv2d_input_grad_ref(&s, D, B, E);
        for (uint32_t i = 0; i < NIN(s); i += 3)
            CHECK_NEAR(E[i], fd(A, i, conv_f, 1e-2f), 2e-3);
        for (uint32_t oc = 0; oc < s.out_c; oc += 2) {
            conv2d_weight_grad_channel_ref(&s, D, A, oc, F);
            for (uint32_t j = 0; j < n; j++)
                CHECK_NEAR(F[j], fd(B, oc * n + j, conv_f, 1e-2f), 2e-3);
            CHECK_NEAR(conv2d_bias_grad_channel_ref(&s, D, oc), fd(C, oc, conv_f, 1e-2f), 2e-3);
        }
    }
}

static void t_relu(void)
{
    uint32_t n = 37;
    th_fill(A, n, -1, 1);
    A[3] = 0.0f;
    A[4] = -0.0f;
    relu_forward(A, D, n);
    relu_forward_ref(A, E, n);
    CHECK(memcmp(D, E, n * sizeof(float)) == 0);
    th_fill(B, n, -1, 1);
    relu_backward(D, B, F, n);
    relu_backward_ref(E, B, G, n);
    CHECK(memcmp(F, G, n * sizeof(float)) == 0);
    memcpy(C, A, n * sizeof(float)); /* in place, both directions */
    relu_forward(C, C, n);
    CHECK(memcmp(C, E, n * sizeof(float)) == 0);
    memcpy(C, B, n * sizeof(float));
    relu_backward(E, C, C, n);
    CHECK(memcmp(C, G, n * sizeof(float)) == 0);
}

/* residual ADD: the unrolled loop = the plain one for every tail length, out of place and in place */
static void t_add(void)
{
    for (uint32_t n = 0; n < 12; n++) {
        th_fill(A, n, -1, 1);
        th_fill(B, n, -1, 1);
        add_forward(A, B, D, n);
        add_forward_ref(A, B, E, n);
        CHECK(memcmp(D, E, n * sizeof(float)) == 0);
        memcpy(C, A, n * sizeof(float));
        add_accumulate(C, B, n);
        memcpy(F, A, n * sizeof(float));
        add_accumulate_ref(F, B, n);
        CHECK(memcmp(C, F, n * sizeof(float)) == 0 && memcmp(C, E, n * sizeof(float)) == 0);
    }
}

static double relu_f(void)
{
    double l = 0.0;
    relu_forward_ref(A, E, 16);
    for (uint32_t j = 0; j < 16; j++)
        l += (double)B[j] * E[j];
    return l;
}

static void t_relu_fd(void)
{
    th_fill(A, 16, -1, 1);
    for (uint32_t j = 0; j < 16; j++) /* keep away from the kink */
        if (fabsf(A[j]) < 0.05f)
            A[j] = 0.5f;
    th_fill(B, 16, -1, 1);
    relu_forward_ref(A, D, 16);
    relu_backward_ref(D, B, F, 16);
    for (uint32_t j = 0; j < 16; j++)
        CHECK_NEAR(F[j], fd(A, j, relu_f, 1e-3f), 1e-3);
}

static void t_softmax(void)
{
    for (uint32_t n = 2; n <= 12; n += 5) {
        for (uint32_t label = 0; label < n; label += 3) {
            uint32_t p1, p2;
            th_fill(A, n, -8, 8);
            float l1 = softmax_ce(A, n, label, D, &p1), l2 = softmax_ce_ref(A, n, label, E, &p2);
            CHECK_NEAR(l1, l2, 1e-5);
            CHECK(p1 == p2);
            CHECK(th_max_rel(D, E, n) < 1e-6);
            CHECK_NEAR(softmax_ce(A, n, label, NULL, NULL), l2, 1e-5);
        }
    }
}

static uint32_t g_label;
static double softmax_f(void)
{
    return softmax_ce_ref(A, 10, g_label, NULL, NULL);
}

static void t_softmax_fd(void)
{
    g_label = 7;
    th_fill(A, 10, -3, 3);
    softmax_ce_ref(A, 10, g_label, D, NULL);
    for (uint32_t j = 0; j < 10; j++)
        CHECK_NEAR(D[j], fd(A, j, softmax_f, 1e-2f), 1e-3);
}

static void t_fmath(void)
{
    double worst_e = 0.0, worst_l = 0.0;
    for (int j = 0; j < 20000; j++) {
        float x = th_uniform(-87.0f, 88.0f);
        double e = exp((double)x);
        double rel = fabs(fm_exp(x) - e) / e;
        if (rel > worst_e)
            worst_e = rel;
        float y = th_uniform(1e-6f, 1e6f);
        double l = log((double)y), err = fabs(fm_log(y) - l) / (fabs(l) > 1.0 ? fabs(l) : 1.0);
        if (err > worst_l)
            worst_l = err;
    }
    CHECK(worst_e < 5e-7);
    CHECK(worst_l < 5e-7);
    CHECK(fm_exp(0.0f) == 1.0f);
    CHECK(fm_exp(-100.0f) == 0.0f);
    CHECK(isinf(fm_exp(100.0f)));
    CHECK(fm_log(1.0f) == 0.0f);
    CHECK(isinf(fm_log(0.0f)) && fm_log(0.0f) < 0);
    CHECK(isnan(fm_log(-1.0f)));
    CHECK_NEAR(fm_log(1e-40f), log(1e-40), 1e-6);
}

/* ---- split weights (sparse update) ---- */

static uint16_t idx[256];

/* a split of the weights `merged` (out rows of row floats): every third channel (offset by `phase`) is listed and
 * copied to G; F holds every row, with the listed ones poisoned so reading the wrong copy shows */
static wsplit_t make_split(const float *merged, uint32_t out, uint32_t row, uint32_t phase)
{
    wsplit_t w = {F, G, idx, 0, row};
    memcpy(F, merged, out * row * sizeof(float));
    for (uint32_t oc = 0; oc < out; oc++)
        if ((oc + phase) % 3 == 0) {
            memcpy(G + w.n_sel * row, merged + oc * row, row * sizeof(float));
            for (uint32_t j = 0; j < row; j++)
                F[oc * row + j] = 1e6f;
            idx[w.n_sel++] = (uint16_t)oc;
        }
    return w;
}

static void t_dense_split(void)
{
    for (unsigned s = 0; s < sizeof dense_shapes / sizeof dense_shapes[0]; s++) {
        uint32_t ni = dense_shapes[s][0], no = dense_shapes[s][1];
        for (uint32_t phase = 0; phase < 3; phase++) {
            wsplit_t w;
            th_fill(A, ni, -1, 1);
            th_fill(B, ni * no, -1, 1);
            th_fill(C, no, -1, 1);
            w = make_split(B, no, ni, phase);
            dense_forward(A, &w, C, D, ni, no);
            dense_forward_ref(A, B, C, E, ni, no);
            CHECK(th_max_rel(D, E, no) < 1e-5);
            th_fill(A, no, -1, 1);
            th_fill(D, ni, 5, 6); /* garbage: must be overwritten */
            dense_input_grad(A, &w, D, ni, no);
            dense_input_grad_ref(A, B, E, ni, no);
            CHECK(th_max_rel(D, E, ni) < 1e-5);
            /* update of the listed rows = the reference update of those rows */
            th_fill(C, ni, -1, 1);
            dense_update_rows(G, idx, w.n_sel, A, C, 0.1f, ni);
            dense_update_weights_ref(B, A, C, 0.1f, ni, no);
            for (uint32_t j = 0; j < w.n_sel; j++)
                CHECK(th_max_rel(G + j * ni, B + idx[j] * ni, ni) < 1e-5);
        }
    }
}

static void t_conv_split(void)
{
    for (unsigned c = 0; c < NCFG; c++) {
        conv_shape_t s = conv_shape(c);
        uint32_t row = NW(s) / s.out_c;
        for (uint32_t phase = 0; phase < 3; phase++) {
            wsplit_t w;
            th_fill(A, NIN(s), -1, 1);
            th_fill(B, NW(s), -1, 1);
            th_fill(C, s.out_c, -1, 1);
            w = make_split(B, s.out_c, row, phase);
            conv2d_forward(&s, A, &w, C, D);
            conv2d_forward_ref(&s, A, B, C, E);
            CHECK(th_max_rel(D, E, NOUT(s)) < 1e-5);
            th_fill(A, NOUT(s), -1, 1);
            th_fill(D, NIN(s), 5, 6);
            conv2d_input_grad(&s, A, &w, D);
            conv2d_input_grad_ref(&s, A, B, E);
            CHECK(th_max_rel(D, E, NIN(s)) < 1e-5);
        }
    }
}

/* maxpool: random shapes, strides 1..3, window 2..3; values on a coarse grid so windows hold ties (the first
 * maximum in (ky, kx) order takes the gradient, in both kernels) */
static void t_maxpool(void)
{
    for (int trial = 0; trial < 200; trial++) {
        conv_shape_t s;
        uint32_t n_in, n_out;
        memset(&s, 0, sizeof s);
        s.k = (uint16_t)(2u + th_rand() % 2u);
        s.stride = (uint16_t)(1u + th_rand() % 3u);
        s.in_h = (uint16_t)(s.k + th_rand() % 9u);
        s.in_w = (uint16_t)(s.k + th_rand() % 9u);
        s.in_c = s.out_c = (uint16_t)(1u + th_rand() % 9u);
        s.out_h = (uint16_t)((s.in_h - s.k) / s.stride + 1u);
        s.out_w = (uint16_t)((s.in_w - s.k) / s.stride + 1u);
        n_in = (uint32_t)s.in_h * s.in_w * s.in_c;
        n_out = (uint32_t)s.out_h * s.out_w * s.out_c;
        CHECK(n_in <= BIG && n_out <= BIG);
        for (uint32_t j = 0; j < n_in; j++)
            A[j] = (float)(th_rand() % 5u) - 2.0f;
        th_fill(B, n_out, -1, 1);
        maxpool_forward(&s, A, D);
        maxpool_forward_ref(&s, A, E);
        CHECK(memcmp(D, E, n_out * sizeof(float)) == 0);
        maxpool_input_grad(&s, A, B, F);
        maxpool_input_grad_ref(&s, A, B, G);
        CHECK(memcmp(F, G, n_in * sizeof(float)) == 0);
    }
}

/* without ties the reference gradient is the derivative: L = sum dy·maxpool(x), one input nudged at a time */
static void t_maxpool_fd(void)
{
    conv_shape_t s = {6, 6, 2, 3, 3, 2, 2, 2, 0, 0, 2};
    th_fill(A, 72, -1, 1);
    th_fill(B, 18, -1, 1);
    maxpool_input_grad_ref(&s, A, B, F);
    for (uint32_t j = 0; j < 72; j++) {
        double lp = 0.0, lm = 0.0, h = 1e-3;
        A[j] += (float)h;
        maxpool_forward_ref(&s, A, E);
        for (uint32_t q = 0; q < 18; q++)
            lp += (double)B[q] * E[q];
        A[j] -= (float)(2 * h);
        maxpool_forward_ref(&s, A, E);
        for (uint32_t q = 0; q < 18; q++)
            lm += (double)B[q] * E[q];
        A[j] += (float)h;
        CHECK_NEAR(F[j], (lp - lm) / (2 * h), 1e-3);
    }
}


/* rectangular kernels (KWS's 10x4 first conv): in_h, in_w, c_in, c_out, k (height), kw, stride, same; depthwise
 * uses c_in as its channels */
static const uint16_t rect_cfg[][8] = {
    {9, 6, 1, 4, 5, 2, 2, 1}, {10, 5, 2, 3, 4, 2, 1, 0}, {7, 7, 3, 5, 1, 3, 1, 1}, {6, 5, 3, 3, 3, 3, 1, 1},
    {7, 8, 4, 4, 3, 3, 2, 1}, {5, 9, 2, 2, 2, 3, 1, 0}, {8, 4, 5, 5, 3, 1, 2, 1}, {6, 6, 1, 1, 3, 3, 2, 0},
};
#define NRECT (sizeof rect_cfg / sizeof rect_cfg[0])

static conv_shape_t rect_shape(unsigned c, int depthwise)
{
    conv_shape_t s;
    const uint16_t *g = rect_cfg[c];
    memset(&s, 0, sizeof s);
    s.in_h = g[0];
    s.in_w = g[1];
    s.in_c = g[2];
    s.out_c = depthwise ? g[2] : g[3];
    s.k = g[4];
    s.kw = g[5];
    s.stride = g[6];
    if (g[7]) {
        s.out_h = (uint16_t)((s.in_h + s.stride - 1) / s.stride);
        s.out_w = (uint16_t)((s.in_w + s.stride - 1) / s.stride);
        int ph = (s.out_h - 1) * s.stride + s.k - s.in_h, pw = (s.out_w - 1) * s.stride + s.kw - s.in_w;
        s.pad_top = (uint16_t)(ph > 0 ? ph / 2 : 0);
        s.pad_left = (uint16_t)(pw > 0 ? pw / 2 : 0);
    } else {
        s.out_h = (uint16_t)((s.in_h - s.k) / s.stride + 1);
        s.out_w = (uint16_t)((s.in_w - s.kw) / s.stride + 1);
    }
    return s;
}

static void t_conv_rect(void)
{
    for (unsigned c = 0; c < NRECT; c++) {
        conv_shape_t s = rect_shape(c, 0);
        uint32_t row = (uint32_t)s.k * s.kw * s.in_c;
        th_fill(A, NIN(s), -1, 1);
        th_fill(B, row * s.out_c, -1, 1);
        th_fill(C, s.out_c, -1, 1);
        wsplit_t w = wsplit_all(B, row);
        conv2d_forward(&s, A, &w, C, D);
        conv2d_forward_ref(&s, A, B, C, E);
        CHECK(th_max_rel(D, E, NOUT(s)) < 1e-5);
        th_fill(C, NOUT(s), -1, 1);
        th_fill(D, NIN(s), 5, 6);
        conv2d_input_grad(&s, C, &w, D);
        conv2d_input_grad_ref(&s, C, B, E);
        CHECK(th_max_rel(D, E, NIN(s)) < 1e-5);
        for (uint32_t oc = 0; oc < s.out_c; oc++) {
            th_fill(D, row, 5, 6);
            conv2d_weight_grad_channel(&s, C, A, oc, D);
            conv2d_weight_grad_channel_ref(&s, C, A, oc, E);
            CHECK(th_max_rel(D, E, row) < 1e-5);
        }
    }
}

static void t_dwconv(void)
{
    for (unsigned c = 0; c < NRECT; c++) {
        conv_shape_t s = rect_shape(c, 1);
        uint32_t row = (uint32_t)s.k * s.kw;
        th_fill(A, NIN(s), -1, 1);
        th_fill(B, row * s.in_c, -1, 1);
        th_fill(C, s.in_c, -1, 1);
        wsplit_t w = wsplit_all(B, row);
        dwconv2d_forward(&s, A, &w, C, D);
        dwconv2d_forward_ref(&s, A, B, C, E);
        CHECK(th_max_rel(D, E, NOUT(s)) < 1e-5);
        dwconv2d_forward(&s, A, &w, NULL, D);
        dwconv2d_forward_ref(&s, A, B, NULL, E);
        CHECK(th_max_rel(D, E, NOUT(s)) < 1e-5);
        th_fill(C, NOUT(s), -1, 1);
        C[1] = 0.0f; /* the skip of zero (masked) output gradients */
        th_fill(D, NIN(s), 5, 6);
        dwconv2d_input_grad(&s, C, &w, D);
        dwconv2d_input_grad_ref(&s, C, B, E);
        CHECK(th_max_rel(D, E, NIN(s)) < 1e-5);
        for (uint32_t ch = 0; ch < s.in_c; ch++) {
            th_fill(D, row, 5, 6);
            dwconv2d_weight_grad_channel(&s, C, A, ch, D);
            dwconv2d_weight_grad_channel_ref(&s, C, A, ch, E);
            CHECK(th_max_rel(D, E, row) < 1e-5);
        }
    }
}

static void t_dwconv_split(void)
{
    for (unsigned c = 0; c < NRECT; c++) {
        conv_shape_t s = rect_shape(c, 1);
        uint32_t row = (uint32_t)s.k * s.kw;
        for (uint32_t phase = 0; phase < 3; phase++) {
            th_fill(A, NIN(s), -1, 1);
            th_fill(B, row * s.in_c, -1, 1);
            th_fill(C, s.in_c, -1, 1);
            wsplit_t w = make_split(B, s.in_c, row, phase);
            dwconv2d_forward(&s, A, &w, C, D);
            dwconv2d_forward_ref(&s, A, B, C, E);
            CHECK(th_max_rel(D, E, NOUT(s)) < 1e-5);
            th_fill(A, NOUT(s), -1, 1);
            th_fill(D, NIN(s), 5, 6);
            dwconv2d_input_grad(&s, A, &w, D);
            dwconv2d_input_grad_ref(&s, A, B, E);
            CHECK(th_max_rel(D, E, NIN(s)) < 1e-5);
        }
    }
}

static conv_shape_t g_dw;
static double dwconv_f(void)
{
    static float y[BIG];
    double l = 0.0;
    dwconv2d_forward_ref(&g_dw, A, B, C, y);
    for (uint32_t j = 0; j < NOUT(g_dw); j++)
        l += (double)D[j] * y[j];
    return l;
}

static void t_dwconv_fd(void)
{
    for (unsigned c = 0; c < NRECT; c++) {
        conv_shape_t s = g_dw = rect_shape(c, 1);
        uint32_t row = (uint32_t)s.k * s.kw;
        th_fill(A, NIN(s), -1, 1);
        th_fill(B, row * s.in_c, -1, 1);
        th_fill(C, s.in_c, -1, 1);
        th_fill(D, NOUT(s), -1, 1);
        dwconv2d_input_grad_ref(&s, D, B, E);
        for (uint32_t i = 0; i < NIN(s); i += 2)
            CHECK_NEAR(E[i], fd(A, i, dwconv_f, 1e-2f), 2e-3);
        for (uint32_t ch = 0; ch < s.in_c; ch++) {
            dwconv2d_weight_grad_channel_ref(&s, D, A, ch, F);
            for (uint32_t j = 0; j < row; j++)
                CHECK_NEAR(F[j], fd(B, ch * row + j, dwconv_f, 1e-2f), 2e-3);
            CHECK_NEAR(conv2d_bias_grad_channel_ref(&s, D, ch), fd(C, ch, dwconv_f, 1e-2f), 2e-3);
        }
    }
}

static void t_gavgpool(void)
{
    static const uint32_t shapes[][2] = {{1, 1}, {9, 3}, {60, 64}, {4, 7}};
    for (unsigned q = 0; q < 4; q++) {
        uint32_t n = shapes[q][0], c = shapes[q][1];
        th_fill(A, n * c, -1, 1);
        gavgpool_forward(A, D, n, c);
        gavgpool_forward_ref(A, E, n, c);
        CHECK(th_max_rel(D, E, c) < 1e-5);
        th_fill(B, c, -1, 1);
        th_fill(F, n * c, 5, 6);
        gavgpool_input_grad(B, F, n, c);
        gavgpool_input_grad_ref(B, G, n, c);
        CHECK(th_max_rel(F, G, n * c) < 1e-6);
        double l0 = 0.0, l1 = 0.0; /* the gradient of sum dy·mean(x) at one input, by a nudge */
        for (uint32_t ch = 0; ch < c; ch++)
            l0 += (double)B[ch] * E[ch];
        A[c - 1] += 0.01f;
        gavgpool_forward_ref(A, E, n, c);
        for (uint32_t ch = 0; ch < c; ch++)
            l1 += (double)B[ch] * E[ch];
        CHECK_NEAR(G[c - 1], (l1 - l0) / 0.01, 1e-3);
    }
}

static void t_relu6(void)
{
    uint32_t n = 41;
    th_fill(A, n, -9, 9);
    A[0] = 0.0f;
    A[1] = 6.0f;
    A[2] = -0.0f;
    relu6_forward(A, D, n);
    relu6_forward_ref(A, E, n);
    CHECK(memcmp(D, E, n * sizeof(float)) == 0);
    th_fill(B, n, -1, 1);
    relu6_backward(D, B, F, n);
    relu6_backward_ref(E, B, G, n);
    CHECK(memcmp(F, G, n * sizeof(float)) == 0);
    CHECK(F[0] == 0.0f && F[1] == 0.0f); /* no gradient at either edge */
    memcpy(C, B, n * sizeof(float)); /* in place */
    relu6_backward(E, C, C, n);
    CHECK(memcmp(C, G, n * sizeof(float)) == 0);
    for (uint32_t j = 0; j < n; j++)
        CHECK(E[j] >= 0.0f && E[j] <= 6.0f && (A[j] <= 0.0f || A[j] >= 6.0f || E[j] == A[j]));
}

/* the reconstruction MSE: optimized = reference, and its gradient is the derivative of the reference loss */
static void t_mse(void)
{
    for (uint32_t n = 1; n <= 641; n += 160) {
        th_fill(A, n, -2, 2);
        th_fill(B, n, -2, 2);
        float l1 = mse_recon(A, B, n, D), l2 = mse_recon_ref(A, B, n, E);
        CHECK_NEAR(l1, l2, 1e-5 * (l2 > 1.0f ? l2 : 1.0f));
        CHECK(th_max_rel(D, E, n) < 1e-5);
        CHECK_NEAR(mse_recon(A, B, n, NULL), l1, 1e-7);
        for (uint32_t j = 0; j < n; j += 37) {
            float keep = A[j];
            A[j] = keep + 1e-2f;
            double lp = mse_recon_ref(A, B, n, NULL);
            A[j] = keep - 1e-2f;
            double lm = mse_recon_ref(A, B, n, NULL);
            A[j] = keep;
            CHECK_NEAR(E[j], (lp - lm) / 2e-2, 1e-3);
        }
    }
}

const test_case_t ops_tests[] = {
    {"residual add forward and accumulate: optimized = reference (every tail length, in place)", t_add},
    {"maxpool forward and input gradient: optimized = reference (ties included)", t_maxpool},
    {"maxpool reference: finite differences", t_maxpool_fd},
    {"dense forward: optimized = reference", t_dense_forward},
    {"dense input gradient: optimized = reference", t_dense_input_grad},
    {"dense fused update: optimized = reference", t_dense_update},
    {"dense reference: finite differences", t_dense_fd},
    {"conv2d forward valid/same/stride 2: optimized = reference", t_conv_forward},
    {"conv2d input gradient: optimized = reference", t_conv_input_grad},
    {"conv2d weight/bias gradient and update: optimized = reference", t_conv_weight_grad},
    {"conv2d reference: finite differences", t_conv_fd},
    {"relu forward/backward incl. in place: optimized = reference", t_relu},
    {"relu reference: finite differences", t_relu_fd},
    {"softmax CE: optimized = reference", t_softmax},
    {"softmax CE reference: finite differences", t_softmax_fd},
    {"fm_exp / fm_log accuracy", t_fmath},
    {"dense split weights (sparse): forward, input gradient, row update = reference", t_dense_split},
    {"conv2d split weights (sparse): forward, input gradient = reference", t_conv_split},
    {"conv2d k x kw kernels: forward, input and weight gradient = reference", t_conv_rect},
    {"depthwise conv forward, input and weight gradient: optimized = reference", t_dwconv},
    {"depthwise conv split weights (sparse): forward, input gradient = reference", t_dwconv_split},
    {"depthwise conv reference: finite differences", t_dwconv_fd},
    {"global average pool: optimized = reference, derivative", t_gavgpool},
    {"relu6 forward/backward incl. edges and in place: optimized = reference", t_relu6},
    {"reconstruction MSE: optimized = reference, gradient = derivative", t_mse},
    {NULL, NULL},
};
