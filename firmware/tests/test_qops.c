/* int8 kernels: optimized against plain references on random shapes (per-channel and per-tensor requantisation,
 * stride 1/2, SAME/VALID, depth multipliers, ReLU6 clamps, odd channel counts), and the fixed-point primitives on
 * values checked against bench/quant.py. */
#include <string.h>
#include "harness.h"
#include "ops/qgrad.h"
#include "ops/qop.h"
#include "ops/requant.h"

#define QBIG 32768

static int8_t X[QBIG], W[QBIG], Y[QBIG], R[QBIG];
static int32_t BIAS[256], EFF[256], RQ[512];

static int32_t rnd(int32_t lo, int32_t hi)
{
    return lo + (int32_t)(th_rand() % (uint32_t)(hi - lo + 1));
}

static void fill_i8(int8_t *v, uint32_t n)
{
    for (uint32_t j = 0; j < n; j++)
        v[j] = (int8_t)rnd(-128, 127);
}

/* multipliers as quantize_multiplier gives them for reals around 2^-8..2^-4 (plus the odd M >= 1) */
static void fill_rq(uint32_t n)
{
    for (uint32_t j = 0; j < n; j++) {
        RQ[2 * j] = rnd(1 << 30, 0x7FFFFFFF);
        RQ[2 * j + 1] = j == 3 ? 1 : rnd(-12, -4);
    }
}

static uint32_t out_size(uint32_t in, uint32_t k, uint32_t s, int same)
{
    return same ? (in + s - 1) / s : (in - k) / s + 1;
}

static uint16_t pad_before(uint32_t in, uint32_t out, uint32_t k, uint32_t s, int same)
{
    int32_t total = (int32_t)((out - 1) * s + k) - (int32_t)in;
    return (uint16_t)(same && total > 0 ? total / 2 : 0);
}

static void make_conv(qconv_t *p, int depthwise)
{
    int same = (int)(th_rand() & 1u);
    uint32_t k = 1u + th_rand() % 3u, s = 1u + th_rand() % 2u;
    memset(p, 0, sizeof *p);
    p->in_h = (uint16_t)(k + th_rand() % 7u);
    p->in_w = (uint16_t)(k + th_rand() % 7u);
    p->in_c = (uint16_t)(1u + th_rand() % (depthwise ? 12u : 20u));
    p->dm = (uint8_t)(depthwise ? 1u + (th_rand() % 3u == 0 ? th_rand() % 8u : 0u) : 1u); /* 4, 8: dm4 path */
    p->out_c = (uint16_t)(depthwise ? p->in_c * p->dm : 1u + th_rand() % 11u);
    p->k_h = (uint8_t)k;
    p->k_w = (uint8_t)(th_rand() % 4u == 0 ? 1u : k);
    p->stride_h = p->stride_w = (uint8_t)s;
    p->out_h = (uint16_t)out_size(p->in_h, p->k_h, s, same);
    p->out_w = (uint16_t)out_size(p->in_w, p->k_w, s, same);
    p->pad_top = pad_before(p->in_h, p->out_h, p->k_h, s, same);
    p->pad_left = pad_before(p->in_w, p->out_w, p->k_w, s, same);
    p->zp_in = rnd(-128, 127);
    p->zp_out = rnd(-128, 127);
    p->act_min = th_rand() & 1u ? p->zp_out : -128;        /* ReLU */
    p->act_max = th_rand() & 1u ? p->zp_out + 40 : 127;     /* ReLU6-like clamp */
    if (p->act_max > 127)
        p->act_max = 127;
    p->rq_per_channel = (uint8_t)(th_rand() % 3u != 0);
    p->bias = th_rand() % 5u ? BIAS : NULL;
    p->bias_eff = EFF;
    p->rq = RQ;
}

/* bias - zp_in * sum(w), as bench/qplan.py folds it */
static void fold(const qconv_t *p, int depthwise)
{
    uint32_t taps = (uint32_t)p->k_h * p->k_w, wsz = taps * p->in_c;
    for (uint32_t oc = 0; oc < p->out_c; oc++) {
        int32_t s = 0;
        for (uint32_t j = 0; j < (depthwise ? taps : wsz); j++)
            s += depthwise ? W[j * p->out_c + oc] : W[oc * wsz + j];
        EFF[oc] = (p->bias ? p->bias[oc] : 0) - p->zp_in * s;
    }
}

static void t_conv_i8(void)
{
    for (int depthwise = 0; depthwise < 2; depthwise++)
        for (int trial = 0; trial < 300; trial++) {
            qconv_t p;
            uint32_t n_in, n_w, n_out;
            make_conv(&p, depthwise);
            n_in = (uint32_t)p.in_h * p.in_w * p.in_c;
            n_w = (uint32_t)p.k_h * p.k_w * (depthwise ? p.out_c : (uint32_t)p.in_c * p.out_c);
            n_out = (uint32_t)p.out_h * p.out_w * p.out_c;
            CHECK(n_in <= QBIG && n_w <= QBIG && n_out <= QBIG);
            fill_i8(X, n_in);
            fill_i8(W, n_w);
            for (uint32_t j = 0; j < p.out_c; j++) /* every 8th trial: biases beyond ±2^29 take the checked paths */
                BIAS[j] = trial % 8 == 7 ? (th_rand() & 1u ? 1 : -1) * rnd(1 << 29, 0x7FF00000)
                                         : rnd(-20000, 20000);
            fill_rq(p.out_c);
            fold(&p, depthwise);
            memset(Y, 0x55, n_out);
            memset(R, 0x66, n_out);
            if (depthwise) {
                dwconv_i8(&p, X, W, Y);
                dwconv_i8_ref(&p, X, W, R);
            } else {
                conv_i8(&p, X, W, Y);
                conv_i8_ref(&p, X, W, R);
            }
            CHECK(memcmp(Y, R, n_out) == 0);
        }
}

static void t_conv_i8_person_shapes(void)
{
    /* the shapes person_detect runs: 1x1 convs with 8..128 channels, 3x3 depthwise stride 2 with dm 8 on 1 channel */
    static const uint16_t convs[][3] = {{6, 8, 16}, {3, 32, 32}, {2, 64, 64}, {2, 128, 128}, {2, 256, 4}};
    for (unsigned s = 0; s < sizeof convs / sizeof convs[0]; s++) {
        qconv_t p = {convs[s][0], convs[s][0], convs[s][1], convs[s][0], convs[s][0], convs[s][2], 1, 1, 1, 1, 1, 1,
                     0, 0, -128, -128, -128, 127, BIAS, EFF, RQ};
        fill_i8(X, (uint32_t)p.in_h * p.in_w * p.in_c);
        fill_i8(W, (uint32_t)p.in_c * p.out_c);
        fill_rq(p.out_c);
        fold(&p, 0);
        conv_i8(&p, X, W, Y);
        conv_i8_ref(&p, X, W, R);
        CHECK(memcmp(Y, R, (uint32_t)p.out_h * p.out_w * p.out_c) == 0);
    }
    {
        /* KWS's first layer (10x4 taps on one channel, stride 2, SAME): rows of whole words widened straight from the
         * input, border rows gathered; and a 3x3x1 SAME conv whose last windows end at the input's last byte */
        static const uint16_t shapes[2][10] = {{49, 10, 25, 5, 64, 10, 4, 2, 4, 1}, {7, 9, 7, 9, 8, 3, 3, 1, 1, 1}};
        for (unsigned s = 0; s < 2; s++) {
            const uint16_t *v = shapes[s];
            qconv_t p = {v[0], v[1], 1, v[2], v[3], v[4], (uint8_t)v[5], (uint8_t)v[6], (uint8_t)v[7], (uint8_t)v[7],
                         1, 1, v[8], v[9], 5, -3, -3, 127, BIAS, EFF, RQ};
            uint32_t n_out = (uint32_t)p.out_h * p.out_w * p.out_c;
            CHECK((uint32_t)p.k_h * p.k_w * p.out_c <= QBIG && n_out <= QBIG);
            fill_i8(X, (uint32_t)p.in_h * p.in_w);
            fill_i8(W, (uint32_t)p.k_h * p.k_w * p.out_c);
            fill_rq(p.out_c);
            fold(&p, 0);
            conv_i8(&p, X, W, Y);
            conv_i8_ref(&p, X, W, R);
            CHECK(memcmp(Y, R, n_out) == 0);
        }
    }
    {
        qconv_t p = {12, 12, 1, 6, 6, 8, 3, 3, 2, 2, 8, 1, 0, 0, -128, -128, -128, 0, BIAS, EFF, RQ};
        fill_i8(X, 144);
        fill_i8(W, 72);
        fill_rq(8);
        fold(&p, 1);
        dwconv_i8(&p, X, W, Y);
        dwconv_i8_ref(&p, X, W, R);
        CHECK(memcmp(Y, R, 288) == 0);
    }
}

static void t_fc_i8(void)
{
    for (int trial = 0; trial < 200; trial++) {
        qfc_t p;
        memset(&p, 0, sizeof p);
        p.rows = 1u + th_rand() % 3u;
        p.in_c = (uint16_t)(1u + th_rand() % 70u);
        p.out_c = (uint16_t)(1u + th_rand() % 13u);
        p.rq_per_channel = (uint8_t)(th_rand() & 1u);
        p.zp_in = rnd(-128, 127);
        p.zp_out = rnd(-128, 127);
        p.act_min = th_rand() & 1u ? p.zp_out : -128;
        p.act_max = 127;
        p.bias = th_rand() % 4u ? BIAS : NULL;
        p.bias_eff = EFF;
        p.rq = RQ;
        fill_i8(X, p.rows * p.in_c);
        fill_i8(W, (uint32_t)p.in_c * p.out_c);
        for (uint32_t o = 0; o < p.out_c; o++) {
            int32_t s = 0;
            BIAS[o] = rnd(-30000, 30000);
            for (uint32_t j = 0; j < p.in_c; j++)
                s += W[o * p.in_c + j];
            EFF[o] = (p.bias ? BIAS[o] : 0) - p.zp_in * s;
        }
        fill_rq(p.out_c);
        fc_i8(&p, X, W, Y);
        fc_i8_ref(&p, X, W, R);
        CHECK(memcmp(Y, R, p.rows * p.out_c) == 0);
    }
}

/* values computed with bench/quant.py */
static void t_requant_primitives(void)
{
    CHECK(rq_srdhm(INT32_MIN, INT32_MIN) == INT32_MAX);
    CHECK(rq_rdbp(3, 1) == 2 && rq_rdbp(-3, 1) == -2 && rq_rdbp(5, 1) == 3 && rq_rdbp(-5, 1) == -3);
    CHECK(rq_rdbp(-6, 1) == -3 && rq_rdbp(-5, 2) == -1);
    CHECK(rq_mul(1000, 1 << 30, 0) == 500);     /* x * 0.5 */
    CHECK(rq_mul(1000, 1 << 30, 1) == 1000);    /* x * 1.0 */
    CHECK(rq_mul(-1001, 1 << 30, 0) == -500);   /* the doubling high multiply's nudge: -500.5 -> -500 */
    CHECK(rq_out(1001, 1 << 30, 0, -128, -128, 127) == 127);
    /* rq_out's branch-free form equals the two-rounding composition (rq_mul: gemmlowp's SRDHM then RDBP) on random
     * and extreme accumulators, multipliers and shifts, exact halves and values near INT32_MAX included */
    for (int trial = 0; trial < 200000; trial++) {
        int32_t shift = rnd(-31, 8), mult = trial % 5 ? rnd(1 << 30, 0x7FFFFFFE) : rnd(0, 0x7FFFFFFE);
        int32_t acc = trial % 7 == 0 ? (trial & 1 ? INT32_MAX - rnd(0, 1 << 20) : INT32_MIN + rnd(0, 1 << 20))
                      : trial % 3 ? rnd(-(1 << 20), 1 << 20) : (int32_t)th_rand();
        int32_t zp = rnd(-128, 127), lo = rnd(-128, 0), hi = rnd(0, 127), want;
        if (shift > 0 && (acc > (INT32_MAX >> shift) || acc < (INT32_MIN >> shift)))
            acc >>= shift; /* TFLite's left shift never overflows a valid accumulator */
        if (trial % 11 == 0 && shift < 0)
            acc = (int32_t)((int64_t)rnd(-1000, 1000) * 2147483648LL / (mult ? mult : 1)); /* lands near exact halves */
        want = rq_mul(acc, mult, shift) + zp;
        want = want < lo ? lo : want > hi ? hi : want;
        CHECK(rq_out(acc, mult, shift, zp, lo, hi) == want);
        CHECK(rq_out_fast(acc, mult, shift, zp, lo, hi) == want); /* the SMMULR form: equal, fallback included */
        if (rq_neg_ok(shift, zp)) /* and with the rounding constant and zero point folded */
            CHECK(rq_out_neg(acc, mult, -shift, rq_neg_add(shift, zp), zp, lo, hi) == want);
    }
    for (int32_t acc = -(1 << 12); acc <= (1 << 12); acc++) /* every small accumulator, ties at each shift */
        for (int32_t shift = -12; shift <= 2; shift++)
            CHECK(rq_out_fast(acc, 1 << 30, shift, 3, -128, 127) == rq_out(acc, 1 << 30, shift, 3, -128, 127));
    {
        static const int32_t edge[5] = {(1 << 30) - 1, 1 << 30, -(1 << 30), -(1 << 30) - 1, INT32_MIN};
        for (int j = 0; j < 5; j++) /* either side of the fast path's range */
            for (int32_t shift = -31; shift <= 0; shift += 31)
                CHECK(rq_out_fast(edge[j], 0x7FFFFFFF, shift, 0, -128, 127) ==
                      rq_out(edge[j], 0x7FFFFFFF, shift, 0, -128, 127));
    }
    {
        static const int32_t a[8] = {-1, -67108864, -100675641, -335545319, -738197504, -1140850695, -16777213,
                                     -1234567890};
        static const int32_t e[8] = {2147483124, 790015308, 479080124, 14469412, 35867, 89, 1672462494, 22};
        for (int j = 0; j < 8; j++)
            CHECK(rq_exp_on_negative_values(a[j]) == e[j]);
        CHECK(rq_exp_on_negative_values(0) == INT32_MAX);
    }
    {
        static const int32_t x[4] = {524288, 1572864, 524288000, 777777}, r[4] = {2147483647, 1431655762,
                                                                                   1099511630, 1447587042};
        static const int32_t bits[4] = {0, 1, 9, 0};
        for (int j = 0; j < 4; j++) {
            int32_t b, v = rq_reciprocal(x[j], &b);
            CHECK(v == r[j] && b == bits[j]);
        }
    }
}

static void t_small_ops(void)
{
    /* average pool 3x3 VALID stride 2 over 3x3: the mean of all 9, rounded half away from zero */
    qpool_t pool = {3, 3, 2, 1, 1, 3, 3, 2, 2, 0, 0, -128, 127};
    int8_t px[18], py[2];
    for (int j = 0; j < 9; j++) {
        px[2 * j] = (int8_t)(j - 4 + (j == 8)); /* sum 1: mean 1/9 -> 0 */
        px[2 * j + 1] = (int8_t)(-10 - (j == 0) * 4); /* sum -94: -10.44 -> -10 */
    }
    avgpool_i8(&pool, px, py);
    CHECK(py[0] == 0 && py[1] == -10);
    {
        qmean_t m = {2, 2, 1, 0, 0, 1 << 30, 0}; /* multiplier 0.5: sum 4 / 2 */
        int8_t mx[4] = {1, 1, 1, 1}, my;
        mean_i8(&m, mx, &my);
        CHECK(my == 2);
    }
    {
        qadd_t a = {3, 0, 0, 0, 20, 1 << 30, 0, 1 << 30, 0, 1 << 30, -19, -128, 127}; /* (x1 + x2) / 2 * 2^20 / 2^20 */
        int8_t a1[3] = {10, -10, 100}, a2[3] = {20, -20, 100}, ay[3];
        add_i8(&a, a1, a2, ay);
        CHECK(ay[0] == 15 && ay[1] == -15 && ay[2] == 100);
    }
    {
        qsoftmax_t s = {1, 4, 1 << 30, 20, -3968}; /* scaled diff: x * 2^19 in Q5.26 = x / 128 */
        int8_t sx[4] = {0, 0, 0, 0}, sy[4];
        softmax_i8(&s, sx, sy);
        CHECK(sy[0] == -64 && sy[1] == -64 && sy[2] == -64 && sy[3] == -64); /* 1/4 each: 64/256 - 128 */
    }
}

/* the small int8 ops and the training helpers against their plain references, on random shapes and constants */
static void t_small_ops_vs_reference(void)
{
    for (int trial = 0; trial < 300; trial++) {
        uint32_t k = 1u + th_rand() % 4u, s = 1u + th_rand() % 3u, c = 1u + th_rand() % 9u, n;
        qpool_t pool = {(uint16_t)(k + th_rand() % 8u), (uint16_t)(k + th_rand() % 8u), (uint16_t)c, 0, 0,
                        (uint8_t)k, (uint8_t)(1u + th_rand() % k), (uint8_t)s, (uint8_t)(1u + th_rand() % 3u),
                        (uint16_t)(th_rand() % k), (uint16_t)(th_rand() % 2u), rnd(-128, 0), rnd(0, 127)};
        qmean_t m = {(uint16_t)(1u + th_rand() % 9u), (uint16_t)(1u + th_rand() % 9u), (uint16_t)c, rnd(-128, 127),
                     rnd(-128, 127), rnd(1 << 30, 0x7FFFFFFF), rnd(-12, 2)};
        qadd_t a = {1u + th_rand() % 300u, rnd(-128, 127), rnd(-128, 127), rnd(-128, 127), 20,
                    rnd(1 << 30, 0x7FFFFFFF), rnd(-8, 0), rnd(1 << 30, 0x7FFFFFFF), rnd(-8, 0),
                    rnd(1 << 30, 0x7FFFFFFF), rnd(-28, -14), rnd(-128, 0), rnd(0, 127)};
        qsoftmax_t sm = {1u + th_rand() % 3u, (uint16_t)(1u + th_rand() % 60u), rnd(1 << 30, 0x7FFFFFFF),
                         rnd(10, 20), -rnd(100, 4000)};
        pool.out_h = (uint16_t)((pool.in_h + 2u * pool.pad_top - k) / s + 1u);
        pool.out_w = (uint16_t)((pool.in_w + 2u * pool.pad_left - pool.k_w) / pool.stride_w + 1u);
        n = (uint32_t)pool.in_h * pool.in_w * c;
        fill_i8(X, n);
        avgpool_i8(&pool, X, Y);
        avgpool_i8_ref(&pool, X, R);
        CHECK(memcmp(Y, R, (uint32_t)pool.out_h * pool.out_w * c) == 0);
        maxpool_i8(&pool, X, Y);
        maxpool_i8_ref(&pool, X, R);
        CHECK(memcmp(Y, R, (uint32_t)pool.out_h * pool.out_w * c) == 0);
        fill_i8(X, (uint32_t)m.h * m.w * c);
        mean_i8(&m, X, Y);
        mean_i8_ref(&m, X, R);
        CHECK(memcmp(Y, R, c) == 0);
        fill_i8(X, a.n);
        fill_i8(W, a.n);
        add_i8(&a, X, W, Y);
        add_i8_ref(&a, X, W, R);
        CHECK(memcmp(Y, R, a.n) == 0);
        fill_i8(X, sm.rows * sm.depth);
        softmax_i8(&sm, X, Y);
        softmax_i8_ref(&sm, X, R);
        CHECK(memcmp(Y, R, sm.rows * sm.depth) == 0);
    }
}

/* ADD with the output multiplier about 1, so that each input's own rescale rounding (ties away from zero, shifts
 * -26..0 after the left shift of 20; exact ties included) reaches the output: optimized == reference */
static void t_add_rounding_vs_reference(void)
{
    for (int trial = 0; trial < 400; trial++) {
        qadd_t a = {1u + th_rand() % 64u, rnd(-128, 127), rnd(-128, 127), rnd(-20, 20), 20,
                    rnd(1 << 30, 0x7FFFFFFF), rnd(-26, -18), rnd(1, 0x7FFFFFFF), rnd(-26, -18), 0x7FFFFFFF, 0,
                    -128, 127};
        if (trial % 8 == 0) /* a shift of 0: no rounding at all */
            a.s2 = 0, a.m2 = rnd(0, 1 << 8);
        if (trial % 4 == 1) /* multiplier 1/2: code·2^19 over 2^20..2^22, exact ties for both signs */
            a.m1 = a.m2 = 1 << 30, a.s1 = rnd(-22, -20), a.s2 = rnd(-22, -20);
        fill_i8(X, a.n);
        fill_i8(W, a.n);
        add_i8(&a, X, W, Y);
        add_i8_ref(&a, X, W, R);
        CHECK(memcmp(Y, R, a.n) == 0);
    }
}

/* an autoencoder's loss gradient: random codes, zero points and input/output scale ratios (shift -31..16), and a
 * perfect reconstruction (every d = 0, k = 0) */
static void t_recon_grad_vs_reference(void)
{
    for (int trial = 0; trial < 400; trial++) {
        uint32_t n = 1u + th_rand() % 700u;
        qrecon_t r = {rnd(-128, 127), rnd(-128, 127), rnd(1 << 30, 0x7FFFFFFF), rnd(-31, 16)};
        fill_i8(X, n);
        fill_i8(W, n);
        if (trial % 9 == 0) { /* y = x with equal scales and zero points: no gradient */
            r = (qrecon_t){5, 5, 1 << 30, 1};
            memcpy(W, X, n);
        }
        CHECK(qgrad_recon(&r, W, X, n, Y) == qgrad_recon_ref(&r, W, X, n, R) && memcmp(Y, R, n) == 0);
        if (trial % 9 == 0)
            for (uint32_t j = 0; j < n; j++)
                CHECK(Y[j] == 0);
    }
}

static void t_training_helpers_vs_reference(void)
{
    static int16_t H[4096];
    for (int trial = 0; trial < 500; trial++) {
        uint32_t n = 2u + th_rand() % 255u, label = th_rand() % n, n_pos = 1u + th_rand() % 60u;
        uint32_t out_c = 1u + th_rand() % 60u, oc = th_rand() % out_c;
        int32_t b1 = rnd(-(1 << 20), 1 << 20), b2 = b1, a = rnd(-(1 << 22), 1 << 22), mult = rnd(0, 0x7FFFFFFE);
        int32_t shift_e = rnd(-20, 45);
        int16_t r1 = (int16_t)rnd(-32768, 32767), r2 = r1;
        int32_t d1, d2;
        fill_i8(X, n);
        if (trial % 7 == 0)
            X[label] = 127; /* a confident, correct output: small gradients, k = 0 */
        CHECK(qgrad_logits(X, n, label, Y) == qgrad_logits_ref(X, n, label, R) && memcmp(Y, R, n) == 0);
        for (uint32_t j = 0; j < n_pos * out_c; j++)
            H[j] = (int16_t)rnd(-16256, 16256);
        CHECK(qgrad_bias(H, n_pos, out_c, oc) == qgrad_bias_ref(H, n_pos, out_c, oc));
        if (trial % 11 == 0)
            b1 = b2 = (trial & 1) ? (1 << 30) - 3 : -(1 << 30) + 3; /* near the clamp */
        d1 = qsgd_bias(&b1, &r1, a, mult, shift_e);
        d2 = qsgd_bias_ref(&b2, &r2, a, mult, shift_e);
        CHECK(d1 == d2 && b1 == b2 && r1 == r2);
    }
}

const test_case_t qops_tests[] = {
    {"int8: requantisation and gemmlowp primitives", t_requant_primitives},
    {"int8: conv and depthwise optimized == reference on random shapes", t_conv_i8},
    {"int8: person_detect shapes optimized == reference", t_conv_i8_person_shapes},
    {"int8: fully connected optimized == reference", t_fc_i8},
    {"int8: average pool, mean, add, softmax", t_small_ops},
    {"int8: average pool, mean, add, softmax optimized == reference on random shapes", t_small_ops_vs_reference},
    {"int8: add optimized == reference where the inputs' rescale rounding reaches the output", t_add_rounding_vs_reference},
    {"int8: logits gradient, bias gradient, bias update == reference", t_training_helpers_vs_reference},
    {"int8: reconstruction loss gradient == reference", t_recon_grad_vs_reference},
    {NULL, NULL},
};
