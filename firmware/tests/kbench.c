/* Kernel benchmark on a QEMU twin (make kernel-bench; `bench bench --kernels` runs it): every optimized int8 kernel
 * of a training step on the shapes of digits-cnn and of a MobileNet block, timed with SysTick under -icount, so the
 * counts are deterministic instructions. Each result is compared with its plain reference kernel on the same
 * inputs; a mismatch is printed as such (and fails the run) rather than timed as if it were right.
 *
 * Output, one line per measurement: "KB <op> <shape> <phase> <macs> <ticks> <exact>", then "KB end <failures>".
 * macs counts multiply-accumulates (update: weights); ticks are SysTick ticks (the host converts them with the
 * board's counter_hz and the -icount shift it ran with). */
#include <stdio.h>
#include <string.h>
#include "harness.h"
#include "ops/qgrad.h"
#include "ops/qop.h"
#include "twin_start.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define KB_N 16384u
#define KB_OC 64u

static int8_t X[KB_N], W[KB_N], WB[KB_N], Y[KB_N], YR[KB_N];
static int16_t H[KB_N];
static uint16_t R[KB_N], RB[KB_N];
static int32_t A[KB_N], AR[KB_N], LIST[KB_N], BIAS[KB_OC], BEFF[KB_OC], RQ[2 * KB_OC];
static int failures;

static int32_t rnd(int32_t lo, int32_t hi)
{
    return lo + (int32_t)(th_rand() % (uint32_t)(hi - lo + 1));
}

/* down-counter ticks elapsed since t0 (one measurement stays far below the 2^24 wrap) */
static uint32_t ticks_since(uint32_t t0)
{
    return (t0 - SYST_CVR) & 0xFFFFFFu;
}

static void emit(const char *op, const char *shape, const char *phase, uint32_t macs, uint32_t ticks, int exact)
{
    char line[160];
    failures += !exact;
    snprintf(line, sizeof line, "KB %s %s %s %lu %lu %d\n", op, shape, phase, (unsigned long)macs,
             (unsigned long)ticks, exact);
    th_out(line);
}

/* int8 values, about a third of them at zp when relu (ReLU outputs feeding the next layer) */
static void fill_x(int8_t *v, uint32_t n, int32_t zp, int relu)
{
    for (uint32_t j = 0; j < n; j++)
        v[j] = (int8_t)(relu && th_rand() % 3u == 0 ? zp : rnd(-127, 127));
}

/* h as qgrad_prep makes it: about a third zero (masked outputs) */
static void fill_h(uint32_t n)
{
    for (uint32_t j = 0; j < n; j++)
        H[j] = (int16_t)(th_rand() % 3u == 0 ? 0 : rnd(-16256, 16256));
}

/* requantisation pairs that land outputs in range, biases, and bias_eff = bias - zp_in * sum(w) */
static void fill_quant(uint32_t out_c, uint32_t row, uint32_t w_stride, int32_t zp_in)
{
    for (uint32_t o = 0; o < out_c; o++) {
        int32_t s = 0;
        for (uint32_t j = 0; j < row; j++)
            s += W[w_stride == 1u ? o * row + j : j * w_stride + o];
        BIAS[o] = rnd(-2000, 2000);
        BEFF[o] = BIAS[o] - zp_in * s;
        RQ[2 * o] = rnd(1 << 30, 0x7FFFFFFF);
        RQ[2 * o + 1] = -rnd(8, 11);
    }
}

static void conv_setup(qconv_t *p, uint32_t hw, uint32_t in_c, uint32_t out_c, uint32_t k, int same, int depthwise)
{
    memset(p, 0, sizeof *p);
    p->in_h = p->in_w = (uint16_t)hw;
    p->in_c = (uint16_t)in_c;
    p->out_c = (uint16_t)out_c;
    p->k_h = p->k_w = (uint8_t)k;
    p->stride_h = p->stride_w = 1;
    p->dm = 1;
    p->out_h = p->out_w = (uint16_t)(same ? hw : hw - k + 1);
    p->pad_top = p->pad_left = (uint16_t)(same ? (k - 1) / 2 : 0);
    p->zp_in = -128;
    p->zp_out = -128;
    p->act_min = -128;
    p->act_max = 127;
    p->rq_per_channel = 1;
    p->bias = BIAS;
    p->bias_eff = BEFF;
    p->rq = RQ;
    fill_x(X, hw * hw * in_c, p->zp_in, 1);
    for (uint32_t j = 0; j < (depthwise ? k * k * out_c : k * k * in_c * out_c); j++)
        W[j] = (int8_t)rnd(-127, 127);
    fill_quant(out_c, depthwise ? k * k : k * k * in_c, depthwise ? out_c : 1u, p->zp_in);
    fill_h((uint32_t)p->out_h * p->out_w * out_c);
}

/* one SGD step per row from accumulators a (rows x row), timed; checked against qsgd_i8_ref */
static void bench_update(const char *op, const char *shape, uint32_t rows, uint32_t row, const int32_t *a)
{
    uint32_t t0, ticks = 0;
    int same = 1;
    for (uint32_t j = 0; j < rows * row; j++)
        R[j] = RB[j] = (uint16_t)rnd(0, 65535);
    memcpy(WB, W, rows * row);
    for (uint32_t o = 0; o < rows; o++) {
        int32_t c1, c2;
        t0 = SYST_CVR;
        c1 = qsgd_i8(W + o * row, R + o * row, a + o * row, row, 0x50000000, -8);
        ticks += ticks_since(t0);
        c2 = qsgd_i8_ref(WB + o * row, RB + o * row, a + o * row, row, 0x50000000, -8);
        same &= c1 == c2;
    }
    same &= memcmp(W, WB, rows * row) == 0 && memcmp(R, RB, rows * row * sizeof *R) == 0;
    emit(op, shape, "update", rows * row, ticks, same);
}

typedef void (*conv_fwd_fn)(const qconv_t *, const int8_t *, const int8_t *, int8_t *);
typedef void (*conv_wgrad_fn)(const qconv_t *, const int16_t *, const int8_t *, uint32_t, int32_t *);

/* a conv-like forward, timed, against its reference */
static void bench_forward(const char *op, const char *shape, const qconv_t *p, uint32_t macs, uint32_t n_out,
                          conv_fwd_fn opt, conv_fwd_fn ref)
{
    uint32_t t0 = SYST_CVR, ticks;
    opt(p, X, W, Y);
    ticks = ticks_since(t0);
    ref(p, X, W, YR);
    emit(op, shape, "forward", macs, ticks, memcmp(Y, YR, n_out) == 0);
}

/* every channel's weight gradient (rows of row accumulators into A), timed, each against its reference */
static void bench_weight_grad(const char *op, const char *shape, const qconv_t *p, uint32_t macs, uint32_t n_ch,
                              uint32_t row, conv_wgrad_fn opt, conv_wgrad_fn ref)
{
    uint32_t t0, ticks = 0;
    int ok = 1;
    for (uint32_t o = 0; o < n_ch; o++) {
        t0 = SYST_CVR;
        opt(p, H, X, o, A + o * row);
        ticks += ticks_since(t0);
        ref(p, H, X, o, AR);
        ok &= memcmp(A + o * row, AR, row * sizeof *A) == 0;
    }
    emit(op, shape, "weight-grad", macs, ticks, ok);
}

static void bench_conv(const char *shape, uint32_t hw, uint32_t in_c, uint32_t out_c, uint32_t k, int same)
{
    qconv_t p;
    uint32_t t0, ticks, row = k * k * in_c, n_out, n_in = hw * hw * in_c, macs;
    qrows_t rows = {W, NULL, NULL, 0, 0};
    conv_setup(&p, hw, in_c, out_c, k, same, 0);
    rows.row = row;
    n_out = (uint32_t)p.out_h * p.out_w * out_c;
    macs = n_out * row;
    bench_forward("CONV_2D", shape, &p, macs, n_out, conv_i8, conv_i8_ref);
    t0 = SYST_CVR;
    conv_i8_input_grad(&p, H, &rows, A);
    ticks = ticks_since(t0);
    conv_i8_input_grad_ref(&p, H, &rows, AR);
    emit("CONV_2D", shape, "input-grad", macs, ticks, memcmp(A, AR, n_in * sizeof *A) == 0);
    bench_weight_grad("CONV_2D", shape, &p, macs, out_c, row, conv_i8_weight_grad, conv_i8_weight_grad_ref);
    bench_update("CONV_2D", shape, out_c, row, A);
}

static void bench_dwconv(const char *shape, uint32_t hw, uint32_t c, uint32_t k)
{
    qconv_t p;
    uint32_t t0, ticks, taps = k * k, n = hw * hw * c, macs = n * taps;
    conv_setup(&p, hw, c, c, k, 1, 1);
    bench_forward("DEPTHWISE_CONV_2D", shape, &p, macs, n, dwconv_i8, dwconv_i8_ref);
    t0 = SYST_CVR;
    dwconv_i8_input_grad(&p, H, W, A);
    ticks = ticks_since(t0);
    dwconv_i8_input_grad_ref(&p, H, W, AR);
    emit("DEPTHWISE_CONV_2D", shape, "input-grad", macs, ticks, memcmp(A, AR, n * sizeof *A) == 0);
    bench_weight_grad("DEPTHWISE_CONV_2D", shape, &p, macs, c, taps, dwconv_i8_weight_grad, dwconv_i8_weight_grad_ref);
    bench_update("DEPTHWISE_CONV_2D", shape, c, taps, A);
}

static void bench_fc(const char *shape, uint32_t n_in, uint32_t n_out)
{
    qfc_t p;
    uint32_t t0, ticks, macs = n_in * n_out;
    qrows_t rows = {W, NULL, NULL, 0, n_in};
    int ok = 1;
    memset(&p, 0, sizeof p);
    p.rows = 1;
    p.in_c = (uint16_t)n_in;
    p.out_c = (uint16_t)n_out;
    p.zp_in = p.zp_out = p.act_min = -128;
    p.act_max = 127;
    p.rq_per_channel = 1;
    p.bias = BIAS;
    p.bias_eff = BEFF;
    p.rq = RQ;
    fill_x(X, n_in, p.zp_in, 1);
    for (uint32_t j = 0; j < macs; j++)
        W[j] = (int8_t)rnd(-127, 127);
    fill_quant(n_out, n_in, 1u, p.zp_in);
    fill_h(n_out);
    t0 = SYST_CVR;
    fc_i8(&p, X, W, Y);
    ticks = ticks_since(t0);
    fc_i8_ref(&p, X, W, YR);
    emit("FULLY_CONNECTED", shape, "forward", macs, ticks, memcmp(Y, YR, n_out) == 0);
    t0 = SYST_CVR;
    fc_i8_input_grad(&p, H, &rows, A);
    ticks = ticks_since(t0);
    fc_i8_input_grad_ref(&p, H, &rows, AR);
    emit("FULLY_CONNECTED", shape, "input-grad", macs, ticks, memcmp(A, AR, n_in * sizeof *A) == 0);
    /* weight gradient and update are one fused pass per row (the gradient is never stored): timed as the update */
    for (uint32_t j = 0; j < macs; j++)
        R[j] = RB[j] = (uint16_t)rnd(0, 65535);
    memcpy(WB, W, macs);
    t0 = SYST_CVR;
    fc_i8_update_list(X, p.zp_in, n_in, LIST);
    ticks = ticks_since(t0);
    for (uint32_t o = 0; o < n_out; o++) {
        int32_t c1, c2;
        if (H[o] == 0)
            continue; /* a masked output's row does not move (the trainer skips it the same way) */
        t0 = SYST_CVR;
        c1 = fc_i8_update_row_listed(LIST, X, p.zp_in, n_in, H[o], 0x50000000, -12, W + o * n_in, R + o * n_in);
        ticks += ticks_since(t0);
        c2 = fc_i8_update_row_ref(X, p.zp_in, n_in, H[o], 0x50000000, -12, WB + o * n_in, RB + o * n_in);
        ok &= c1 == c2;
    }
    ok &= memcmp(W, WB, macs) == 0 && memcmp(R, RB, macs * sizeof *R) == 0;
    emit("FULLY_CONNECTED", shape, "update", macs, ticks, ok);
}

int main(void)
{
    uint32_t t0;
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 5; /* core clock, no interrupt, enabled */
    t0 = SYST_CVR;
    emit("none", "-", "overhead", 0, ticks_since(t0), 1);
    bench_conv("8x8x1>8,3x3,valid", 8, 1, 8, 3, 0);          /* digits-cnn op 0 */
    bench_fc("288>32", 288, 32);                              /* digits-cnn op 1 */
    bench_fc("32>10", 32, 10);                                /* digits-cnn op 2 */
    bench_conv("10x10x32>32,1x1", 10, 32, 32, 1, 1);          /* a MobileNet pointwise conv */
    bench_dwconv("10x10x32,3x3,same", 10, 32, 3);             /* and its depthwise conv */
    bench_conv("10x10x8>16,3x3,same", 10, 8, 16, 3, 1);       /* a small-channel 3x3 conv */
    {
        char line[32];
        snprintf(line, sizeof line, "KB end %d\n", failures);
        th_out(line);
    }
    return failures != 0;
}
