/* Int8 training kernels: every optimized backward kernel against its plain reference on random shapes (sparse row
 * lists included), the logits gradient on hand cases, the update step's arithmetic against exact values, the Q16
 * residual carrying sub-LSB steps, QAS-style scaling of the step by the multiplier and exponent, and the sparse
 * forward recompute equal to a full kernel call with the trained rows. */
#include <string.h>
#include "harness.h"
#include "ops/qgrad.h"
#include "ops/qop.h"
#include "ops/requant.h"

#define TBIG 8192

static int8_t G8[TBIG], G8R[TBIG], X8[TBIG], W8[TBIG], WRAM[TBIG], Y8[TBIG];
static int16_t H[TBIG], HR[TBIG];
static uint16_t RES[TBIG], RESR[TBIG];
static int32_t ACC[TBIG], ACCR[TBIG], M[512];
static uint16_t SEL[256];
static int8_t WA[TBIG], WB[TBIG];

static int32_t rnd(int32_t lo, int32_t hi)
{
    return lo + (int32_t)(th_rand() % (uint32_t)(hi - lo + 1));
}

static void fill8(int8_t *v, uint32_t n)
{
    for (uint32_t j = 0; j < n; j++)
        v[j] = (int8_t)rnd(-127, 127);
}

/* h as qgrad_prep makes it: |h| <= 16256, about a third zero (masked outputs) */
static void fill_h(int16_t *h, uint32_t n)
{
    for (uint32_t j = 0; j < n; j++)
        h[j] = (int16_t)(th_rand() % 3u == 0 ? 0 : rnd(-16256, 16256));
}

/* a random ascending channel list of 1..out_c-1 channels, or none */
static uint32_t make_sel(uint32_t out_c)
{
    uint32_t n = 0;
    if (out_c < 2 || th_rand() % 2u)
        return 0;
    for (uint32_t o = 0; o < out_c; o++)
        if (th_rand() % 3u == 0)
            SEL[n++] = (uint16_t)o;
    if (n == 0 || n == out_c)
        return 0;
    return n;
}

static void t_logits(void)
{
    int8_t p[4] = {-128, 127, -128, -128}, g[4];
    /* confident and right: e = [0, 255 - 256, 0, 0] = [0, -1, 0, 0] */
    CHECK(qgrad_logits(p, 4, 1, g) == 0 && g[0] == 0 && g[1] == -1);
    /* confident and wrong: e = [-256, 255, 0, 0]: shift 2 (-64, 64: rounding half away) */
    CHECK(qgrad_logits(p, 4, 0, g) == 2 && g[0] == -64 && g[1] == 64 && g[2] == 0);
    {
        int8_t q[3] = {-1, -65, -65}; /* e = [127, 63 - 256, 63] = [127, -193, 63]: k = 1 */
        CHECK(qgrad_logits(q, 3, 1, g) == 1 && g[0] == 64 && g[1] == -97 && g[2] == 32);
    }
}

static void t_requant(void)
{
    for (int trial = 0; trial < 400; trial++) {
        uint32_t n = 1u + th_rand() % 300u;
        int32_t mag = 1 << (th_rand() % 31u);
        for (uint32_t j = 0; j < n; j++)
            ACC[j] = rnd(-mag + 1, mag - 1);
        if (trial % 7 == 0)
            ACC[n / 2] = 128; /* the boundary: 128 needs k = 1, 127 needs none */
        int32_t k = qgrad_requant(ACC, n, G8), kr = qgrad_requant_ref(ACC, n, G8R);
        CHECK(k == kr && memcmp(G8, G8R, n) == 0);
    }
    ACC[0] = 127;
    ACC[1] = -127;
    CHECK(qgrad_requant(ACC, 2, G8) == 0 && G8[0] == 127 && G8[1] == -127);
    ACC[0] = 255; /* 255 / 2 = 127.5 rounds away to 128: needs k = 2 */
    CHECK(qgrad_requant(ACC, 2, G8) == 2 && G8[0] == 64 && G8[1] == -32);
}

static void t_prep(void)
{
    for (int trial = 0; trial < 200; trial++) {
        uint32_t out_c = 1u + th_rand() % 40u, n = out_c * (1u + th_rand() % 20u);
        int32_t lo = th_rand() % 2u ? rnd(-128, 20) : -128, hi = th_rand() % 2u ? rnd(21, 127) : 127;
        int use_y = (int)(th_rand() % 2u);
        for (uint32_t o = 0; o < out_c; o++)
            M[o] = o == 0 ? 32768 : rnd(0, 32768);
        fill8(G8, n);
        for (uint32_t j = 0; j < n; j++)
            Y8[j] = (int8_t)(th_rand() % 4u == 0 ? lo : rnd(lo, hi));
        qgrad_prep(G8, use_y ? Y8 : NULL, lo, hi, M, n, out_c, H);
        qgrad_prep_ref(G8, use_y ? Y8 : NULL, lo, hi, M, n, out_c, HR);
        CHECK(memcmp(H, HR, n * sizeof *H) == 0);
    }
    {
        int8_t g[2] = {-127, 127}, y[2] = {5, 4};
        int32_t m[2] = {32768, 32768};
        int16_t h[2];
        qgrad_prep(g, y, 4, 127, m, 2, 2, h); /* y = 4 = zp (ReLU's bound): masked */
        CHECK(h[0] == -16256 && h[1] == 0);
    }
}

static qrows_t rows_of(uint32_t out_c, uint32_t row, uint32_t n_sel)
{
    qrows_t r = {W8, NULL, NULL, 0, row};
    if (n_sel) {
        for (uint32_t j = 0; j < n_sel; j++)
            memcpy(WRAM + j * row, W8 + SEL[j] * row, row);
        for (uint32_t j = 0; j < n_sel * row; j++) /* the trained rows differ from flash */
            WRAM[j] = (int8_t)(WRAM[j] / 2 + 3);
        r = (qrows_t){W8, WRAM, SEL, n_sel, row};
    } else if (th_rand() % 2u) {
        memcpy(WRAM, W8, out_c * row);
        r.ram = WRAM;
    }
    return r;
}

static void t_fc_bwd(void)
{
    for (int trial = 0; trial < 200; trial++) {
        qfc_t p;
        memset(&p, 0, sizeof p);
        p.rows = 1;
        p.in_c = (uint16_t)(1u + th_rand() % 300u);
        p.out_c = (uint16_t)(1u + th_rand() % 25u);
        p.zp_in = rnd(-128, 127);
        fill8(W8, (uint32_t)p.in_c * p.out_c);
        fill8(X8, p.in_c);
        fill_h(H, p.out_c);
        qrows_t r = rows_of(p.out_c, p.in_c, make_sel(p.out_c));
        fc_i8_input_grad(&p, H, &r, ACC);
        fc_i8_input_grad_ref(&p, H, &r, ACCR);
        CHECK(memcmp(ACC, ACCR, p.in_c * sizeof *ACC) == 0);
        for (uint32_t o = 0; o < p.out_c; o++) {
            fc_i8_weight_grad_ref(&p, H[o], X8, ACCR);
            for (uint32_t j = 0; j < p.in_c; j++)
                ACC[j] = fc_i8_weight_grad_at(&p, H[o], X8, j);
            CHECK(memcmp(ACC, ACCR, p.in_c * sizeof *ACC) == 0);
        }
    }
}

static void make_conv(qconv_t *p)
{
    int same = (int)(th_rand() & 1u);
    uint32_t k = 1u + th_rand() % 3u, s = 1u + th_rand() % 2u, kw = th_rand() % 4u == 0 ? 1u : k;
    memset(p, 0, sizeof *p);
    p->in_h = (uint16_t)(k + th_rand() % 6u);
    p->in_w = (uint16_t)(kw + th_rand() % 6u);
    p->in_c = (uint16_t)(1u + th_rand() % 6u);
    p->out_c = (uint16_t)(1u + th_rand() % 9u);
    p->k_h = (uint8_t)k;
    p->k_w = (uint8_t)kw;
    p->stride_h = p->stride_w = (uint8_t)s;
    p->dm = 1;
    p->out_h = (uint16_t)(same ? (p->in_h + s - 1) / s : (p->in_h - k) / s + 1);
    p->out_w = (uint16_t)(same ? (p->in_w + s - 1) / s : (p->in_w - kw) / s + 1);
    if (same) {
        int32_t th = (int32_t)((p->out_h - 1u) * s + k) - p->in_h, tw = (int32_t)((p->out_w - 1u) * s + kw) - p->in_w;
        p->pad_top = (uint16_t)(th > 0 ? th / 2 : 0);
        p->pad_left = (uint16_t)(tw > 0 ? tw / 2 : 0);
    }
    p->zp_in = rnd(-128, 127);
}

static void t_conv_bwd(void)
{
    for (int trial = 0; trial < 300; trial++) {
        qconv_t p;
        uint32_t row, n_in, n_out;
        make_conv(&p);
        row = (uint32_t)p.k_h * p.k_w * p.in_c;
        n_in = (uint32_t)p.in_h * p.in_w * p.in_c;
        n_out = (uint32_t)p.out_h * p.out_w * p.out_c;
        CHECK(row * p.out_c <= TBIG && n_in <= TBIG && n_out <= TBIG);
        fill8(W8, row * p.out_c);
        fill8(X8, n_in);
        fill_h(H, n_out);
        qrows_t r = rows_of(p.out_c, row, make_sel(p.out_c));
        conv_i8_input_grad(&p, H, &r, ACC);
        conv_i8_input_grad_ref(&p, H, &r, ACCR);
        CHECK(memcmp(ACC, ACCR, n_in * sizeof *ACC) == 0);
        for (uint32_t oc = 0; oc < p.out_c; oc++) {
            int32_t s = 0;
            conv_i8_weight_grad(&p, H, X8, oc, ACC);
            conv_i8_weight_grad_ref(&p, H, X8, oc, ACCR);
            CHECK(memcmp(ACC, ACCR, row * sizeof *ACC) == 0);
            for (uint32_t q = 0; q < (uint32_t)p.out_h * p.out_w; q++)
                s += H[q * p.out_c + oc];
            CHECK(qgrad_bias(H, (uint32_t)p.out_h * p.out_w, p.out_c, oc) == s);
        }
    }
}

/* Δ = round(a·mult·2^(shift_e - 31)) half up, from exact double arithmetic (|a·mult| < 2^53 here) */
static int32_t delta_exact(int32_t a, int32_t mult, int32_t shift_e)
{
    double v = (double)a * mult;
    for (int32_t k = 0; k < 31 - shift_e; k++)
        v /= 2.0;
    for (int32_t k = 0; k < shift_e - 31; k++)
        v *= 2.0;
    v = __builtin_floor(v + 0.5);
    return v > (double)QGRAD_DELTA_MAX ? QGRAD_DELTA_MAX : v < -(double)QGRAD_DELTA_MAX ? -QGRAD_DELTA_MAX : (int32_t)v;
}

static void t_update(void)
{
    for (int trial = 0; trial < 2000; trial++) {
        int32_t a = rnd(-(1 << 21), 1 << 21), mult = rnd(1 << 30, 0x7FFFFFFF), se = rnd(-40, 40);
        CHECK(qsgd_delta(a, mult, se) == delta_exact(a, mult, se));
    }
    CHECK(qsgd_delta(3, 1 << 30, -40) == 0 && qsgd_delta(1 << 20, 1 << 30, 40) == QGRAD_DELTA_MAX);
    CHECK(qsgd_delta(-(1 << 20), 1 << 30, 40) == -QGRAD_DELTA_MAX);
    /* the exponent E adds to the shift: one more doubles the step (QAS: the step follows the gradient's scale) */
    CHECK(qsgd_delta(1000, 1 << 30, 10) * 2 == qsgd_delta(1000, 1 << 30, 11));
    for (int trial = 0; trial < 300; trial++) {
        uint32_t n = 1u + th_rand() % 400u;
        int32_t mult = th_rand() % 10u ? rnd(1 << 30, 0x7FFFFFFF) : 0, se = rnd(-45, 25), c1, c2;
        fill8(WA, n);
        for (uint32_t j = 0; j < n; j++) { /* any stored residual is one the update can leave */
            ACC[j] = th_rand() % 4u ? rnd(-(1 << 22), 1 << 22) : 0;
            RES[j] = RESR[j] = (uint16_t)rnd(0, 65535);
        }
        memcpy(WB, WA, n);
        c1 = qsgd_i8(WA, RES, ACC, n, mult, se);
        c2 = qsgd_i8_ref(WB, RESR, ACC, n, mult, se);
        CHECK(c1 == c2 && memcmp(WA, WB, n) == 0 && memcmp(RES, RESR, n * sizeof *RES) == 0);
    }
}

static int32_t count_i8(const int8_t *v, uint32_t n, int8_t value)
{
    int32_t k = 0;
    for (uint32_t j = 0; j < n; j++)
        k += v[j] == value;
    return k;
}

/* the fused FULLY_CONNECTED row update against its plain reference: random rows, zero points, h, multipliers and
 * exponents (including the s <= 0 path of code-sized steps and rows whose steps all round to zero) */
static void t_fc_update_row(void)
{
    int32_t moved = 0;
    for (int trial = 0; trial < 3000; trial++) {
        uint32_t n = 1u + th_rand() % 300u;
        int32_t zp = rnd(-128, 127), h = th_rand() % 8u ? rnd(-16256, 16256) : 0, se = rnd(-50, 40), c1, c2;
        int32_t mult = th_rand() % 10u ? rnd(1 << 30, 0x7FFFFFFF) : rnd(1, 1 << 20);
        fill8(WA, n);
        fill8(X8, n);
        for (uint32_t j = 0; j < n; j++) {
            if (th_rand() % (trial % 4u == 1u ? 1000u : 3u) == 0)
                X8[j] = (int8_t)zp; /* z = 0 columns (ReLU zeros); some rows with hardly any */
            RES[j] = RESR[j] = (uint16_t)rnd(0, 65535);
        }
        memcpy(WB, WA, n);
        if (trial & 1) { /* the column-list path (ReLU zeros skipped); a dense row makes it fall back */
            fc_i8_update_list(X8, zp, n, ACC);
            CHECK(ACC[0] == (int32_t)n - count_i8(X8, n, (int8_t)zp));
            c1 = fc_i8_update_row_listed(ACC, X8, zp, n, h, mult, se, WA, RES);
        } else {
            c1 = fc_i8_update_row(X8, zp, n, h, mult, se, WA, RES);
        }
        c2 = fc_i8_update_row_ref(X8, zp, n, h, mult, se, WB, RESR);
        CHECK(c1 == c2 && memcmp(WA, WB, n) == 0 && memcmp(RES, RESR, n * sizeof *RES) == 0);
        moved += c1 != 0;
    }
    CHECK(moved > 300); /* the trials reach steps that move codes, not only sub-LSB ones */
    /* one weight: h·mult small enough to need no rounding (k = 0): Δ = round(z·h·mult·2^(shift_e − 31)) exactly */
    {
        int8_t w = 0, x = 10;
        uint16_t r = QGRAD_RES_ZERO;
        CHECK(fc_i8_update_row(&x, 0, 1, 3, 1000, 31 - 4, &w, &r) == 0); /* Δ = 30000 / 16 = 1875 units */
        CHECK(w == 0 && r == QGRAD_RES_ZERO - 1875);
    }
}

/* sub-LSB steps accumulate in the residual: a step of exactly 1/4 code moves the code by 1 every 4 steps */
static void t_residual(void)
{
    int8_t w = 10;
    uint16_t r = QGRAD_RES_ZERO;
    int32_t a = 1, mult = 1 << 30, se = 31 - 16; /* Δ = 1·2^30·2^(15 - 31) = 16384 = 1/4 code */
    int32_t changed = 0;
    CHECK(qsgd_delta(a, mult, se) == 16384);
    for (int k = 0; k < 8; k++)
        changed += qsgd_i8(&w, &r, &a, 1, mult, se);
    CHECK(w == 8 && changed == -2 && r == QGRAD_RES_ZERO);
    /* 1000 steps of 1/1000 code: the code moves by exactly one in total (to within the residual's 2^-16) */
    {
        int8_t v = 0;
        uint16_t rr = QGRAD_RES_ZERO;
        int32_t one = 1, mul = 2147484, s2 = 16; /* Δ = round(2147484·2^-15) = round(65.54) = 66 units of 2^-16 */
        for (int k = 0; k < 1000; k++)
            qsgd_i8(&v, &rr, &one, 1, mul, s2);
        CHECK((int32_t)v * 65536 + (int32_t)rr - 32768 == -66 * 1000);
        CHECK(v == -1);
    }
    /* saturation: codes stay in [-128, 127], the residual at the top of the last code's interval */
    {
        int8_t v = 120;
        uint16_t rr = QGRAD_RES_ZERO;
        int32_t big = -1000;
        qsgd_i8(&v, &rr, &big, 1, 1 << 30, 31);
        CHECK(v == 127 && rr == 65535);
        big = 1000;
        qsgd_i8(&v, &rr, &big, 1, 1 << 30, 31);
        CHECK(v == -128 && rr == 0);
    }
    /* biases: int32 codes with the same residual rule, clamped to +-2^30 */
    {
        int32_t b = 5, a1 = 1;
        int16_t rb = 0;
        CHECK(qsgd_bias(&b, &rb, a1, 1 << 30, 31 - 16 + 2) == -1 && b == 4 && rb == 0); /* Δ = 1 code */
        CHECK(qsgd_bias(&b, &rb, a1, 1 << 30, 31 - 16 - 1) == 0 && b == 4 && rb == -8192);
        b = QGRAD_BIAS_MAX - 1;
        a1 = -(1 << 20);
        qsgd_bias(&b, &rb, a1, 1 << 30, 40);
        CHECK(b == QGRAD_BIAS_MAX && rb == 0);
    }
}

/* depthwise backward: random shapes, multipliers 1..3, SAME/VALID, strides 1..2 */
static void t_dwconv_bwd(void)
{
    for (int trial = 0; trial < 300; trial++) {
        qconv_t p;
        uint32_t n_in, n_out, dm = 1u + th_rand() % 3u;
        make_conv(&p);
        p.dm = (uint8_t)dm;
        p.out_c = (uint16_t)(p.in_c * dm);
        n_in = (uint32_t)p.in_h * p.in_w * p.in_c;
        n_out = (uint32_t)p.out_h * p.out_w * p.out_c;
        CHECK((uint32_t)p.k_h * p.k_w * p.out_c <= TBIG && n_in <= TBIG && n_out <= TBIG);
        fill8(W8, (uint32_t)p.k_h * p.k_w * p.out_c);
        fill_h(H, n_out);
        dwconv_i8_input_grad(&p, H, W8, ACC);
        dwconv_i8_input_grad_ref(&p, H, W8, ACCR);
        CHECK(memcmp(ACC, ACCR, n_in * sizeof *ACC) == 0);
        fill8(X8, n_in);
        for (uint32_t q = 0; q < n_out; q++)
            if (th_rand() % 3u == 0)
                H[q] = 0; /* ReLU-masked outputs: the optimized kernel skips them */
        for (uint32_t oc = 0; oc < p.out_c; oc++) {
            dwconv_i8_weight_grad(&p, H, X8, oc, ACC);
            dwconv_i8_weight_grad_ref(&p, H, X8, oc, ACCR);
            CHECK(memcmp(ACC, ACCR, (uint32_t)p.k_h * p.k_w * sizeof *ACC) == 0);
        }
    }
}

/* planes larger than one band of the weight-gradient planes (WG_PLANE_MAX): a depthwise 3x3 SAME layer (dm 2) and a
 * 1-channel VALID first layer whose gradients are summed over several bands of output rows */
static void t_weight_grad_bands(void)
{
    static const uint16_t shapes[3][6] = {{30, 26, 2, 2, 1, 1}, {26, 26, 1, 1, 0, 0}, {23, 41, 3, 1, 1, 1}};
    for (unsigned s = 0; s < 3; s++) {
        const uint16_t *v = shapes[s];
        qconv_t p;
        uint32_t n_out, dw = v[2] != 1u;
        memset(&p, 0, sizeof p);
        p.in_h = v[0];
        p.in_w = v[1];
        p.in_c = v[2];
        p.dm = (uint8_t)v[3];
        p.out_c = (uint16_t)(v[2] * v[3]);
        p.k_h = p.k_w = 3;
        p.stride_h = p.stride_w = 1;
        p.pad_top = v[4];
        p.pad_left = v[5];
        p.out_h = (uint16_t)(v[4] ? v[0] : v[0] - 2u);
        p.out_w = (uint16_t)(v[5] ? v[1] : v[1] - 2u);
        p.zp_in = 17;
        n_out = (uint32_t)p.out_h * p.out_w * p.out_c;
        CHECK((uint32_t)p.in_h * p.in_w * p.in_c <= TBIG && n_out <= TBIG);
        fill8(X8, (uint32_t)p.in_h * p.in_w * p.in_c);
        fill_h(H, n_out);
        for (uint32_t oc = 0; oc < p.out_c; oc++) {
            if (dw) {
                dwconv_i8_weight_grad(&p, H, X8, oc, ACC);
                dwconv_i8_weight_grad_ref(&p, H, X8, oc, ACCR);
            } else {
                conv_i8_weight_grad(&p, H, X8, oc, ACC);
                conv_i8_weight_grad_ref(&p, H, X8, oc, ACCR);
            }
            CHECK(memcmp(ACC, ACCR, 9u * sizeof *ACC) == 0);
        }
    }
}

/* a random pool: make_conv's geometry, no fused activation */
/* a random pool (make_conv's window and shapes) and its input and output sizes, which must fit the test buffers */
static void random_pool(qpool_t *p, uint32_t *n_in, uint32_t *n_out)
{
    qconv_t c;
    make_conv(&c);
    *p = (qpool_t){c.in_h, c.in_w, c.in_c, c.out_h, c.out_w, c.k_h, c.k_w, c.stride_h, c.stride_w, c.pad_top,
                   c.pad_left, -128, 127};
    *n_in = (uint32_t)p->in_h * p->in_w * p->c;
    *n_out = (uint32_t)p->out_h * p->out_w * p->c;
    CHECK(*n_in <= TBIG && *n_out <= TBIG);
}

/* average pool backward: random shapes and paddings; a uniform VALID window gives g·round(65536 / (k_h·k_w)) */
static void t_avgpool_bwd(void)
{
    for (int trial = 0; trial < 300; trial++) {
        qpool_t p;
        uint32_t n_in, n_out;
        random_pool(&p, &n_in, &n_out);
        fill8(G8, n_out);
        avgpool_i8_input_grad(&p, G8, ACC);
        avgpool_i8_input_grad_ref(&p, G8, ACCR);
        CHECK(memcmp(ACC, ACCR, n_in * sizeof *ACC) == 0);
    }
    {
        qpool_t p = {3, 3, 2, 1, 1, 3, 3, 2, 2, 0, 0, -128, 127};
        int8_t g[2] = {9, -100};
        avgpool_i8_input_grad(&p, g, ACC);
        for (uint32_t j = 0; j < 9; j++)
            CHECK(ACC[2 * j] == 9 * 7282 && ACC[2 * j + 1] == -100 * 7282);
    }
}

/* MEAN backward: random shapes against the plain reference; 3x3 positions share one reciprocal, 65536 / 9 rounded */
static void t_mean_bwd(void)
{
    for (int trial = 0; trial < 200; trial++) {
        qmean_t p = {(uint16_t)rnd(1, 12), (uint16_t)rnd(1, 12), (uint16_t)rnd(1, 40), 0, 0, 0, 0};
        uint32_t n_in = (uint32_t)p.h * p.w * p.c;
        fill8(G8, p.c);
        mean_i8_input_grad(&p, G8, ACC);
        mean_i8_input_grad_ref(&p, G8, ACCR);
        CHECK(memcmp(ACC, ACCR, n_in * sizeof *ACC) == 0);
    }
    {
        qmean_t p = {3, 3, 2, 0, 0, 0, 0};
        int8_t g[2] = {9, -100};
        mean_i8_input_grad(&p, g, ACC);
        for (uint32_t j = 0; j < 9; j++)
            CHECK(ACC[2 * j] == 9 * 7282 && ACC[2 * j + 1] == -100 * 7282);
    }
}

/* max pool backward: random shapes, paddings and strides (overlapping windows sum), inputs on a few levels so
 * windows hold ties; a hand case routes to the first of two equal maxima */
static void t_maxpool_bwd(void)
{
    for (int trial = 0; trial < 300; trial++) {
        qpool_t p;
        uint32_t n_in, n_out;
        random_pool(&p, &n_in, &n_out);
        for (uint32_t j = 0; j < n_in; j++)
            X8[j] = (int8_t)(rnd(-2, 2) * 40);
        fill8(G8, n_out);
        maxpool_i8_input_grad(&p, X8, G8, ACC);
        maxpool_i8_input_grad_ref(&p, X8, G8, ACCR);
        CHECK(memcmp(ACC, ACCR, n_in * sizeof *ACC) == 0);
    }
    {
        qpool_t p = {2, 2, 1, 1, 1, 2, 2, 2, 2, 0, 0, -128, 127};
        int8_t x[4] = {3, 7, 7, -1}, g = -50;
        maxpool_i8_input_grad(&p, x, &g, ACC);
        CHECK(ACC[0] == 0 && ACC[1] == -50 && ACC[2] == 0 && ACC[3] == 0);
    }
}

/* ADD backward: random masks (fused clamp bounds), with and without the skip output, against the reference */
static void t_add_bwd(void)
{
    static int8_t S[TBIG], SR[TBIG];
    for (int trial = 0; trial < 200; trial++) {
        uint32_t n = (uint32_t)rnd(1, 600);
        int32_t lo = rnd(-128, -60), hi = rnd(40, 127);
        int masked = trial % 3 != 0, skip = trial % 2 == 0;
        fill8(G8, n);
        fill8(Y8, n);
        for (uint32_t j = 0; j < n; j += 5)
            Y8[j] = (int8_t)(j % 2 ? lo : hi); /* outputs at the bounds get no gradient */
        add_i8_input_grad(G8, masked ? Y8 : NULL, lo, hi, n, X8, skip ? S : NULL);
        add_i8_input_grad_ref(G8, masked ? Y8 : NULL, lo, hi, n, G8R, skip ? SR : NULL);
        CHECK(memcmp(X8, G8R, n) == 0 && (!skip || memcmp(S, SR, n) == 0) && (!skip || memcmp(S, X8, n) == 0));
    }
    {
        int8_t g[3] = {5, -7, 9}, y[3] = {-128, 0, 127}, d[3], s[3];
        add_i8_input_grad(g, y, -128, 127, 3, d, s);
        CHECK(d[0] == 0 && d[1] == -7 && d[2] == 0 && s[1] == -7);
    }
}

/* residual merge: random exponents and multipliers, far apart or close, against the reference; a hand case where
 * both terms are exact sums */
static void t_merge(void)
{
    static int8_t S[TBIG];
    for (int trial = 0; trial < 400; trial++) {
        uint32_t n = (uint32_t)rnd(1, 500);
        int32_t e_b = rnd(-60, 10), e_s = e_b + rnd(-40, 40), mult = (int32_t)(0x40000000u + th_rand() % 0x40000000u);
        int32_t shift = rnd(-30, 30), ea, eb;
        fill8(G8, n);
        fill8(S, n);
        memcpy(G8R, G8, n);
        ea = qgrad_merge(G8, S, n, e_b, e_s, mult, shift, ACC);
        eb = qgrad_merge_ref(G8R, S, n, e_b, e_s, mult, shift, ACCR);
        CHECK(ea == eb && memcmp(G8, G8R, n) == 0 && memcmp(ACC, ACCR, n * sizeof *ACC) == 0);
    }
    {
        /* g_b·2^0 + g_s·(2^30·2^(1−31))·2^0 = g_b + g_s: 100 + 100 = 200 → k 1 (100), 3 + (−5) = −2 → −1 */
        int8_t g[2] = {100, 3}, s[2] = {100, -5};
        int32_t e = qgrad_merge(g, s, 2, 0, 0, 0x40000000, 1, ACC);
        CHECK(e == 1 && g[0] == 100 && g[1] == -1);
    }
}

const test_case_t qtrain_tests[] = {
    {"int8 train: ADD backward optimized == reference (masks, skip output)", t_add_bwd},
    {"int8 train: residual gradient merge optimized == reference (exponents far apart)", t_merge},
    {"int8 train: max pool backward optimized == reference (ties, overlaps)", t_maxpool_bwd},
    {"int8 train: logits gradient from the softmax output", t_logits},
    {"int8 train: gradient requantisation optimized == reference", t_requant},
    {"int8 train: masking and channel scaling optimized == reference", t_prep},
    {"int8 train: fully connected backward optimized == reference (sparse rows)", t_fc_bwd},
    {"int8 train: conv backward optimized == reference (sparse rows)", t_conv_bwd},
    {"int8 train: depthwise input and weight gradients optimized == reference", t_dwconv_bwd},
    {"int8 train: weight gradients of planes larger than one band == reference", t_weight_grad_bands},
    {"int8 train: average pool backward optimized == reference", t_avgpool_bwd},
    {"int8 train: mean backward optimized == reference", t_mean_bwd},
    {"int8 train: update step exact, optimized == reference", t_update},
    {"int8 train: Q16 residual carries sub-LSB steps; saturation", t_residual},
    {"int8 train: fused fully-connected row update optimized == reference", t_fc_update_row},
    {NULL, NULL},
};
