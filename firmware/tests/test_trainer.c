/* Trainer: one step against a double-precision computation, conv step against the reference kernels,
 * loss reduction over a run, STOP, and the session's command handling. */
#include <math.h>
#include <string.h>
#include "harness.h"
#include "blobs.h"
#include "host_port.h"
#include "msg.h"
#include "session.h"
#include "trainer.h"
#include "ops/add.h"
#include "ops/conv2d.h"
#include "ops/dense.h"
#include "ops/dwconv2d.h"
#include "ops/gavgpool.h"
#include "ops/mse.h"
#include "ops/relu.h"
#include "ops/softmax_ce.h"

static plan_t plan;
static built_t b;
static port_info_t info;
static float grads[4][2][4096]; /* [layer][param] values collected from GRAD frames */

static void setup_info(void)
{
    memset(&info, 0, sizeof info);
    info.board = "host";
    info.build_id = "test";
    info.arena = fx_arena;
    info.arena_bytes = FX_ARENA_BYTES;
    info.flash_addr = FX_WIN_ADDR;
    info.flash_size = FX_WIN_BYTES;
    info.flash_host = (uintptr_t)fx_win;
    info.plan_addr = FX_WIN_ADDR;
    hp_reset(&info);
}

static int load_plan(void)
{
    mem_window_t w = fx_window();
    fault_t f;
    return plan_load(&plan, &w, FX_WIN_ADDR, fx_arena, FX_ARENA_BYTES, &f);
}

static float f32(const uint8_t *p)
{
    float v;
    memcpy(&v, p, 4);
    return v;
}

static void collect_grads(uint32_t step)
{
    uint32_t pos = 0;
    frame_t f;
    while (hp_next_frame(&pos, &f))
        if (f.type == MSG_GRAD && le32(f.body) == step && f.body[4] < 4) {
            uint32_t off = le32(f.body + 12), n = le16(f.body + 16);
            for (uint32_t j = 0; j < n && off + j < 4096; j++)
                grads[f.body[4]][f.body[5] & 1][off + j] = f32(f.body + 20 + 4 * j);
        }
}

static int find(uint8_t type, frame_t *out)
{
    uint32_t pos = 0;
    while (hp_next_frame(&pos, out))
        if (out->type == type)
            return 1;
    return 0;
}

static void t_step_double(void)
{
    const uint32_t NI = 6, NH = 5, NC = 3;
    start_t a = {1, 0.1f, 5, 1, 0, 0, 0.0f};
    double x[6], h[5], z[3], dz[3], dh[5], m, sum = 0, loss;
    uint32_t rng = 5, s, y;
    frame_t f;
    fx_mlp(&b, NI, NH, NC, 0, 20);
    setup_info();
    CHECK(load_plan() == 0);
    CHECK(trainer_run(&plan, &a, &info, NULL) == 0);
    s = trainer_xorshift(&rng) % 20;
    y = plan.data.y_train[s];
    for (uint32_t i = 0; i < NI; i++)
        x[i] = (double)((float)plan.data.x_train[s * NI + i] * plan.data.scale + plan.data.offset);
    for (uint32_t o = 0; o < NH; o++) {
        h[o] = fx_b0[o];
        for (uint32_t i = 0; i < NI; i++)
            h[o] += (double)fx_w0[o * NI + i] * x[i];
        h[o] = h[o] > 0 ? h[o] : 0;
    }
    for (uint32_t c = 0; c < NC; c++) {
        z[c] = fx_b2[c];
        for (uint32_t o = 0; o < NH; o++)
            z[c] += (double)fx_w2[c * NH + o] * h[o];
    }
    m = fmax(z[0], fmax(z[1], z[2]));
    for (uint32_t c = 0; c < NC; c++)
        sum += exp(z[c] - m);
    loss = log(sum) - (z[y] - m);
    for (uint32_t c = 0; c < NC; c++)
        dz[c] = exp(z[c] - m) / sum - (c == y);
    for (uint32_t o = 0; o < NH; o++) {
        dh[o] = 0;
        for (uint32_t c = 0; c < NC; c++)
            dh[o] += (double)fx_w2[c * NH + o] * dz[c];
        dh[o] = h[o] > 0 ? dh[o] : 0;
    }
    CHECK(find(MSG_STEP, &f) && le32(f.body + 4) == s && f.body[8] == y);
    CHECK_NEAR(f32(f.body + 12), loss, 1e-5);
    collect_grads(0);
    const float *w0 = (const float *)(const void *)(fx_arena + b.w_ram[0]);
    const float *w2 = (const float *)(const void *)(fx_arena + b.w_ram[2]);
    const float *b0 = (const float *)(const void *)(fx_arena + b.b_ram[0]);
    const float *b2 = (const float *)(const void *)(fx_arena + b.b_ram[2]);
    for (uint32_t c = 0; c < NC; c++) {
        CHECK_NEAR(b2[c], fx_b2[c] - 0.1 * dz[c], 1e-6);
        CHECK_NEAR(grads[2][1][c], dz[c], 1e-6);
        for (uint32_t o = 0; o < NH; o++) {
            CHECK_NEAR(w2[c * NH + o], fx_w2[c * NH + o] - 0.1 * dz[c] * h[o], 1e-6);
            CHECK_NEAR(grads[2][0][c * NH + o], dz[c] * h[o], 1e-6);
        }
    }
    for (uint32_t o = 0; o < NH; o++) {
        CHECK_NEAR(b0[o], fx_b0[o] - 0.1 * dh[o], 1e-6);
        CHECK_NEAR(grads[0][1][o], dh[o], 1e-6);
        for (uint32_t i = 0; i < NI; i++) {
            CHECK_NEAR(w0[o * NI + i], fx_w0[o * NI + i] - 0.1 * dh[o] * x[i], 1e-6);
            CHECK_NEAR(grads[0][0][o * NI + i], dh[o] * x[i], 1e-6);
        }
    }
    /* GSTAT: layer 2 weight then bias, then layer 0; l2 of dz h^T = |dz| |h| */
    double ndz = 0, nh = 0;
    for (uint32_t c = 0; c < NC; c++)
        ndz += dz[c] * dz[c];
    for (uint32_t o = 0; o < NH; o++)
        nh += h[o] * h[o];
    CHECK(find(MSG_GSTAT, &f) && f.body[4] == 4 && f.body[8] == 2 && f.body[9] == 0);
    CHECK_NEAR(f32(f.body + 8 + MSG_GSTAT_ENTRY_L2), sqrt(ndz) * sqrt(nh), 1e-5);
    CHECK(hp_count(MSG_EVAL) == 2 && hp_count(MSG_SUMMARY) == 1);
}

/* conv 5x5x2 -k3 same-> 5x5x3, relu, dense 75 -> 4; one step compared with the reference kernels */
static void t_conv_step(void)
{
    static float cw[3 * 9 * 2], cb[3], dw[4 * 75], db[4], in[50], c_out[75], logits[4], dl[4], dc[75], g[18];
    static uint8_t xs[4 * 50], ys[4];
    conv_shape_t cs = {5, 5, 2, 5, 5, 3, 3, 1, 1, 1, 3};
    spec_t L[3] = {
        {OP_CONV2D, LF_TRAIN_W | LF_TRAIN_B | LF_PAD_SAME, 3, 1, {5, 5, 2}, {5, 5, 3}, 1, 1, cw, cb, NULL, 0, 0},
        {OP_RELU, LF_NEED_DX, 0, 0, {5, 5, 3}, {5, 5, 3}, 0, 0, NULL, NULL, NULL, 0, 0},
        {OP_DENSE, LF_TRAIN_W | LF_TRAIN_B | LF_NEED_DX, 0, 0, {1, 1, 75}, {1, 1, 4}, 0, 0, dw, db, NULL, 0, 0},
    };
    dspec_t d = {4, 4, 5, 5, 2, 4, 1.0f / 255.0f, -0.5f, xs, ys, xs, ys};
    start_t a = {1, 0.05f, 9, 0, 0, 0, 0.0f};
    uint32_t rng = 9, s;
    th_fill(cw, sizeof cw / 4, -0.5f, 0.5f);
    th_fill(cb, 3, -0.1f, 0.1f);
    th_fill(dw, sizeof dw / 4, -0.3f, 0.3f);
    th_fill(db, 4, -0.1f, 0.1f);
    for (uint32_t j = 0; j < sizeof xs; j++)
        xs[j] = (uint8_t)th_rand();
    for (uint32_t j = 0; j < 4; j++)
        ys[j] = (uint8_t)(j % 4);
    build_blobs(fx_win, FX_WIN_ADDR, L, 3, 4, 0, &d, &b);
    setup_info();
    CHECK(load_plan() == 0);
    CHECK(trainer_run(&plan, &a, &info, NULL) == 0);
    s = trainer_xorshift(&rng) % 4;
    for (uint32_t j = 0; j < 50; j++)
        in[j] = (float)xs[s * 50 + j] * d.scale + d.offset;
    conv2d_forward_ref(&cs, in, cw, cb, c_out);
    relu_forward_ref(c_out, c_out, 75);
    dense_forward_ref(c_out, dw, db, logits, 75, 4);
    softmax_ce_ref(logits, 4, ys[s], dl, NULL);
    dense_input_grad_ref(dl, dw, dc, 75, 4);
    relu_backward_ref(c_out, dc, dc, 75);
    const float *cw_new = (const float *)(const void *)(fx_arena + b.w_ram[0]);
    const float *cb_new = (const float *)(const void *)(fx_arena + b.b_ram[0]);
    for (uint32_t oc = 0; oc < 3; oc++) {
        conv2d_weight_grad_channel_ref(&cs, dc, in, oc, g);
        for (uint32_t j = 0; j < 18; j++)
            CHECK_NEAR(cw_new[oc * 18 + j], cw[oc * 18 + j] - 0.05f * g[j], 1e-5);
        CHECK_NEAR(cb_new[oc], cb[oc] - 0.05f * conv2d_bias_grad_channel_ref(&cs, dc, oc), 1e-5);
    }
}

/* an imported graph's shape (MobileNet-style): depthwise 3x2 stride 2 SAME with a fused ReLU6, global average pool,
 * dense 3 -> 4; one step compared with the reference kernels (inputs wide enough that ReLU6 clips at both ends) */
static void t_dw_step(void)
{
    static float kw_[3 * 6], kb[3], dw[4 * 3], db[4], in[90], a0[27], pooled[3], logits[4], dl[4], dp[3], da[27], g[6];
    static uint8_t xs[4 * 90], ys[4];
    conv_shape_t cs = {6, 5, 3, 3, 3, 3, 3, 2, 0, 0, 2};
    spec_t L[3] = {
        {OP_DWCONV2D, LF_TRAIN_W | LF_TRAIN_B | LF_PAD_SAME | LF_RELU6, 3, 2, {6, 5, 3}, {3, 3, 3}, 0, 0, kw_, kb,
         NULL, 0, 2},
        {OP_GAVGPOOL, LF_NEED_DX, 0, 0, {3, 3, 3}, {1, 1, 3}, 0, 0, NULL, NULL, NULL, 0, 0},
        {OP_DENSE, LF_TRAIN_W | LF_TRAIN_B | LF_NEED_DX, 0, 0, {1, 1, 3}, {1, 1, 4}, 0, 0, dw, db, NULL, 0, 0},
    };
    dspec_t d = {4, 4, 6, 5, 3, 4, 12.0f / 255.0f, -4.0f, xs, ys, xs, ys};
    start_t a = {1, 0.05f, 9, 0, 0, 0, 0.0f};
    uint32_t rng = 9, s, clipped_hi = 0, clipped_lo = 0;
    th_fill(kw_, 18, -2.0f, 2.0f);
    th_fill(kb, 3, -0.5f, 0.5f);
    th_fill(dw, 12, -0.5f, 0.5f);
    th_fill(db, 4, -0.1f, 0.1f);
    for (uint32_t j = 0; j < sizeof xs; j++)
        xs[j] = (uint8_t)th_rand();
    for (uint32_t j = 0; j < 4; j++)
        ys[j] = (uint8_t)j;
    build_blobs(fx_win, FX_WIN_ADDR, L, 3, 4, 0, &d, &b);
    setup_info();
    CHECK(load_plan() == 0);
    CHECK(trainer_run(&plan, &a, &info, NULL) == 0);
    s = trainer_xorshift(&rng) % 4;
    for (uint32_t j = 0; j < 90; j++)
        in[j] = (float)xs[s * 90 + j] * d.scale + d.offset;
    dwconv2d_forward_ref(&cs, in, kw_, kb, a0);
    relu6_forward_ref(a0, a0, 27);
    for (uint32_t j = 0; j < 27; j++) {
        clipped_hi += a0[j] == 6.0f;
        clipped_lo += a0[j] == 0.0f;
    }
    CHECK(clipped_hi > 0 && clipped_lo > 0); /* both edges of the mask are exercised */
    gavgpool_forward_ref(a0, pooled, 9, 3);
    dense_forward_ref(pooled, dw, db, logits, 3, 4);
    softmax_ce_ref(logits, 4, ys[s], dl, NULL);
    dense_input_grad_ref(dl, dw, dp, 3, 4);
    gavgpool_input_grad_ref(dp, da, 9, 3);
    relu6_backward_ref(a0, da, da, 27);
    const float *w_new = (const float *)(const void *)(fx_arena + b.w_ram[0]);
    const float *b_new = (const float *)(const void *)(fx_arena + b.b_ram[0]);
    for (uint32_t c = 0; c < 3; c++) {
        dwconv2d_weight_grad_channel_ref(&cs, da, in, c, g);
        for (uint32_t j = 0; j < 6; j++)
            CHECK_NEAR(w_new[c * 6 + j], kw_[c * 6 + j] - 0.05f * g[j], 1e-5);
        CHECK_NEAR(b_new[c], kb[c] - 0.05f * conv2d_bias_grad_channel_ref(&cs, da, c), 1e-5);
    }
}

/* the loader's rules for the imported-graph fields: a fused activation only on a layer with parameters and one at
 * a time, a kernel width only on CONV2D / DWCONV2D, depthwise in_c = out_c */
static void t_dw_plan_rules(void)
{
    static float kw_[4 * 9], kb[4], dw[4 * 4], db[4];
    static uint8_t xs[4 * 90], ys[4];
    dspec_t d = {4, 4, 6, 5, 3, 4, 1.0f / 255.0f, 0.0f, xs, ys, xs, ys};
    spec_t L[3] = {
        {OP_DWCONV2D, LF_TRAIN_W | LF_PAD_SAME | LF_RELU, 3, 2, {6, 5, 3}, {3, 3, 3}, 1, 1, kw_, kb, NULL, 0, 0},
        {OP_GAVGPOOL, LF_NEED_DX, 0, 0, {3, 3, 3}, {1, 1, 3}, 0, 0, NULL, NULL, NULL, 0, 0},
        {OP_DENSE, LF_TRAIN_W | LF_NEED_DX, 0, 0, {1, 1, 3}, {1, 1, 4}, 0, 0, dw, db, NULL, 0, 0},
    };
    build_blobs(fx_win, FX_WIN_ADDR, L, 3, 4, 0, &d, &b);
    setup_info();
    CHECK(load_plan() == 0);
    L[0].flags |= LF_RELU6; /* both activations */
    build_blobs(fx_win, FX_WIN_ADDR, L, 3, 4, 0, &d, &b);
    CHECK(load_plan() != 0);
    L[0].flags &= (uint8_t)~LF_RELU6;
    L[1].flags |= LF_RELU; /* an activation on the pool */
    build_blobs(fx_win, FX_WIN_ADDR, L, 3, 4, 0, &d, &b);
    CHECK(load_plan() != 0);
    L[1].flags &= (uint8_t)~LF_RELU;
    L[1].out[2] = 2; /* pool changes the channel count */
    L[2].in[2] = 2;
    build_blobs(fx_win, FX_WIN_ADDR, L, 3, 4, 0, &d, &b);
    CHECK(load_plan() != 0);
    L[1].out[2] = L[2].in[2] = 3;
    L[0].out[2] = 4; /* depthwise with a depth multiplier */
    L[1].in[2] = 4;
    build_blobs(fx_win, FX_WIN_ADDR, L, 3, 4, 0, &d, &b);
    CHECK(load_plan() != 0);
}

/* an fp32 autoencoder (PF_RECON): dense 6 -> 4 (fused ReLU) -> 6, the loss the MSE of its output against its input;
 * one step compared with the reference kernels; the loader refuses an output size other than the input's */
static void t_recon_step(void)
{
    static float w1[24], b1[4], w2[24], b2[6], in[6], h[4], y[6], dy[6], dh[4], g1[24], g2[24];
    static uint8_t xs[4 * 6], ys[4];
    spec_t L[2] = {
        {OP_DENSE, LF_TRAIN_W | LF_TRAIN_B | LF_RELU, 0, 0, {1, 1, 6}, {1, 1, 4}, 0, 0, w1, b1, NULL, 0, 0},
        {OP_DENSE, LF_TRAIN_W | LF_TRAIN_B | LF_NEED_DX, 0, 0, {1, 1, 4}, {1, 1, 6}, 0, 0, w2, b2, NULL, 0, 0},
    };
    dspec_t d = {4, 4, 1, 1, 6, 6, 4.0f / 255.0f, -2.0f, xs, ys, xs, ys};
    start_t a = {1, 0.05f, 9, 0, 0, 0, 0.0f};
    uint32_t rng = 9, s;
    th_fill(w1, 24, -1, 1);
    th_fill(b1, 4, -0.2f, 0.2f);
    th_fill(w2, 24, -1, 1);
    th_fill(b2, 6, -0.2f, 0.2f);
    for (uint32_t j = 0; j < sizeof xs; j++)
        xs[j] = (uint8_t)th_rand();
    memset(ys, 0, sizeof ys);
    build_blobs(fx_win, FX_WIN_ADDR, L, 2, 6, 0, &d, &b);
    put_le16(fx_win + TPLN_H_FLAGS, (uint16_t)(le16(fx_win + TPLN_H_FLAGS) | PF_RECON));
    blob_fix_crc(fx_win);
    setup_info();
    CHECK(load_plan() == 0 && plan.recon);
    CHECK(trainer_run(&plan, &a, &info, NULL) == 0);
    s = trainer_xorshift(&rng) % 4;
    for (uint32_t j = 0; j < 6; j++)
        in[j] = (float)xs[s * 6 + j] * d.scale + d.offset;
    dense_forward_ref(in, w1, b1, h, 6, 4);
    relu_forward_ref(h, h, 4);
    dense_forward_ref(h, w2, b2, y, 4, 6);
    mse_recon_ref(y, in, 6, dy);
    dense_input_grad_ref(dy, w2, dh, 4, 6);
    relu_backward_ref(h, dh, dh, 4);
    dense_weight_grad_ref(dy, h, g2, 4, 6);
    dense_weight_grad_ref(dh, in, g1, 6, 4);
    const float *w1n = (const float *)(const void *)(fx_arena + b.w_ram[0]);
    const float *w2n = (const float *)(const void *)(fx_arena + b.w_ram[1]);
    for (uint32_t j = 0; j < 24; j++) {
        CHECK_NEAR(w1n[j], w1[j] - 0.05f * g1[j], 1e-5);
        CHECK_NEAR(w2n[j], w2[j] - 0.05f * g2[j], 1e-5);
    }
    spec_t bad[2] = {L[0], L[1]}; /* 6 -> 4 -> 5: a reconstruction needs as many outputs as inputs */
    bad[1].out[2] = 5;
    d.n_classes = 5;
    build_blobs(fx_win, FX_WIN_ADDR, bad, 2, 5, 0, &d, &b);
    put_le16(fx_win + TPLN_H_FLAGS, (uint16_t)(le16(fx_win + TPLN_H_FLAGS) | PF_RECON));
    blob_fix_crc(fx_win);
    CHECK(load_plan() != 0);
}

/* a residual block: dense 6 -> 6 = r (ReLU) -> [dense 6 -> 6] + r -> ADD (fused ReLU) -> dense 6 -> 4; one step
 * compared with the reference kernels: layer 0's weights see the gradient of both the branch and the skip, which
 * layer 2 (LF_MERGE) adds to its input gradient */
static void t_add_step(void)
{
    static float w0[36], b0[6], w2[36], b2[6], w4[24], b4[4], in[6], r[6], h[6], s_[6], lg[4], dl[4], ds[6], dh[6],
        dr[6], g0[36];
    static uint8_t xs[4 * 6], ys[4];
    spec_t L[5] = {
        {OP_DENSE, LF_TRAIN_W | LF_TRAIN_B, 0, 0, {1, 1, 6}, {1, 1, 6}, 0, 0, w0, b0, NULL, 0, 0},
        {OP_RELU, LF_NEED_DX, 0, 0, {1, 1, 6}, {1, 1, 6}, 0, 0, NULL, NULL, NULL, 0, 0},
        {OP_DENSE, LF_NEED_DX | LF_MERGE, 0, 0, {1, 1, 6}, {1, 1, 6}, 0, 0, w2, b2, NULL, 0, 0},
        {OP_ADD, LF_NEED_DX | LF_RELU, 2, 0, {1, 1, 6}, {1, 1, 6}, 0, 0, NULL, NULL, NULL, 0, 0},
        {OP_DENSE, LF_TRAIN_W | LF_NEED_DX, 0, 0, {1, 1, 6}, {1, 1, 4}, 0, 0, w4, b4, NULL, 0, 0},
    };
    dspec_t d = {4, 4, 1, 1, 6, 4, 4.0f / 255.0f, -2.0f, xs, ys, xs, ys};
    start_t a = {1, 0.05f, 9, 0, 0, 0, 0.0f};
    uint32_t rng = 9, n;
    th_fill(w0, 36, -1, 1);
    th_fill(b0, 6, -0.2f, 0.2f);
    th_fill(w2, 36, -1, 1);
    th_fill(b2, 6, -0.2f, 0.2f);
    th_fill(w4, 24, -1, 1);
    th_fill(b4, 4, -0.2f, 0.2f);
    for (uint32_t j = 0; j < sizeof xs; j++)
        xs[j] = (uint8_t)th_rand();
    for (uint32_t j = 0; j < 4; j++)
        ys[j] = (uint8_t)j;
    build_blobs(fx_win, FX_WIN_ADDR, L, 5, 4, 0, &d, &b);
    setup_info();
    CHECK(load_plan() == 0);
    CHECK(trainer_run(&plan, &a, &info, NULL) == 0);
    n = trainer_xorshift(&rng) % 4;
    for (uint32_t j = 0; j < 6; j++)
        in[j] = (float)xs[n * 6 + j] * d.scale + d.offset;
    dense_forward_ref(in, w0, b0, r, 6, 6);
    relu_forward_ref(r, r, 6);
    dense_forward_ref(r, w2, b2, h, 6, 6);
    add_forward_ref(h, r, s_, 6);
    relu_forward_ref(s_, s_, 6);
    dense_forward_ref(s_, w4, b4, lg, 6, 4);
    softmax_ce_ref(lg, 4, ys[n], dl, NULL);
    dense_input_grad_ref(dl, w4, ds, 6, 4);
    relu_backward_ref(s_, ds, ds, 6);
    dense_input_grad_ref(ds, w2, dh, 6, 6); /* the branch's gradient at r, */
    memcpy(dr, dh, sizeof dr);
    add_accumulate_ref(dr, ds, 6); /* plus the skip's */
    relu_backward_ref(r, dr, dr, 6);
    dense_weight_grad_ref(dr, in, g0, 6, 6);
    const float *w0n = (const float *)(const void *)(fx_arena + b.w_ram[0]);
    float skip_part = 0.0f;
    for (uint32_t j = 0; j < 36; j++)
        CHECK_NEAR(w0n[j], w0[j] - 0.05f * g0[j], 1e-5);
    relu_backward_ref(r, dh, dh, 6); /* the gradient at r without the skip's */
    for (uint32_t j = 0; j < 6; j++)
        skip_part = fmaxf(skip_part, fabsf(dr[j] - dh[j]));
    CHECK(skip_part > 1e-2f); /* the skip's share is large enough that a missing merge fails the check above */
}

/* the loader's residual rules: the skip an earlier layer's input of the ADD's shape, not overwritten inside the
 * branch; a merge flag exactly where an ADD's skip gradient is needed; a skip gradient only there */
static void t_add_plan_rules(void)
{
    static float w[36], bb[6], w4[24];
    static uint8_t xs[4 * 6], ys[4];
    dspec_t d = {4, 4, 1, 1, 6, 4, 1.0f / 255.0f, 0.0f, xs, ys, xs, ys};
    spec_t L[5] = {
        {OP_DENSE, LF_TRAIN_W, 0, 0, {1, 1, 6}, {1, 1, 6}, 0, 0, w, bb, NULL, 0, 0},
        {OP_RELU, LF_NEED_DX, 0, 0, {1, 1, 6}, {1, 1, 6}, 0, 0, NULL, NULL, NULL, 0, 0},
        {OP_DENSE, LF_NEED_DX | LF_MERGE, 0, 0, {1, 1, 6}, {1, 1, 6}, 0, 0, w, bb, NULL, 0, 0},
        {OP_ADD, LF_NEED_DX, 2, 0, {1, 1, 6}, {1, 1, 6}, 0, 0, NULL, NULL, NULL, 0, 0},
        {OP_DENSE, LF_TRAIN_W | LF_NEED_DX, 0, 0, {1, 1, 6}, {1, 1, 4}, 0, 0, w4, bb, NULL, 0, 0},
    };
    setup_info();
    build_blobs(fx_win, FX_WIN_ADDR, L, 5, 4, 0, &d, &b);
    CHECK(load_plan() == 0 && plan.layer[3].w == plan.layer[2].in && plan.layer[3].scratch);
    L[2].flags &= (uint8_t)~LF_MERGE; /* the skip gradient has nowhere to go */
    build_blobs(fx_win, FX_WIN_ADDR, L, 5, 4, 0, &d, &b);
    CHECK(load_plan() != 0);
    L[2].flags |= LF_MERGE;
    L[1].flags |= LF_MERGE; /* a merge no ADD feeds */
    build_blobs(fx_win, FX_WIN_ADDR, L, 5, 4, 0, &d, &b);
    CHECK(load_plan() != 0);
    L[1].flags &= (uint8_t)~LF_MERGE;
    L[3].k = 3; /* the skip is not an earlier layer's input */
    build_blobs(fx_win, FX_WIN_ADDR, L, 5, 4, 0, &d, &b);
    CHECK(load_plan() != 0);
    L[3].k = 1; /* the in-place ReLU 1 writes over its own input, the skip */
    L[2].flags &= (uint8_t)~LF_MERGE;
    L[1].flags |= LF_MERGE;
    build_blobs(fx_win, FX_WIN_ADDR, L, 5, 4, 0, &d, &b);
    CHECK(load_plan() != 0);
    L[3].k = 2;
    L[1].flags &= (uint8_t)~LF_MERGE;
    L[2].flags |= LF_MERGE;
    build_blobs(fx_win, FX_WIN_ADDR, L, 5, 4, 0, &d, &b); /* the skip gradient over the ADD's own dout */
    put_le32(fx_win + PLAN_HEADER + 3u * PLAN_RECORD + TPLN_L_SCRATCH_OFF,
             le32(fx_win + PLAN_HEADER + 3u * PLAN_RECORD + TPLN_L_DOUT_OFF));
    blob_fix_crc(fx_win);
    CHECK(load_plan() != 0);
    L[0].flags = 0; /* nothing below the branch trains: no merge, and a skip gradient would be an error */
    L[1].flags = L[2].flags = 0;
    build_blobs(fx_win, FX_WIN_ADDR, L, 5, 4, 4, &d, &b);
    CHECK(load_plan() == 0 && !plan.layer[3].scratch);
    put_le32(fx_win + PLAN_HEADER + 3u * PLAN_RECORD + TPLN_L_SCRATCH_OFF, 0);
    blob_fix_crc(fx_win);
    CHECK(load_plan() != 0);
}

/* the conv step with sparse weights: conv channels {0, 2}, dense rows {1, 3}; the listed rows update exactly as in a
 * full step, GRAD streams them in list order, the dense input gradient reads listed rows from the arena copy */
static void t_sparse_step(void)
{
    static float cw[3 * 9 * 2], cb[3], dw[4 * 75], db[4], in[50], c_out[75], logits[4], dl[4], dc[75], g[18];
    static uint8_t xs[4 * 50], ys[4];
    static const uint16_t cch[2] = {0, 2}, dch[2] = {1, 3};
    conv_shape_t cs = {5, 5, 2, 5, 5, 3, 3, 1, 1, 1, 3};
    spec_t L[3] = {
        {OP_CONV2D, LF_TRAIN_W | LF_TRAIN_B | LF_PAD_SAME, 3, 1, {5, 5, 2}, {5, 5, 3}, 1, 1, cw, cb, cch, 2, 0},
        {OP_RELU, LF_NEED_DX, 0, 0, {5, 5, 3}, {5, 5, 3}, 0, 0, NULL, NULL, NULL, 0, 0},
        {OP_DENSE, LF_TRAIN_W | LF_TRAIN_B | LF_NEED_DX, 0, 0, {1, 1, 75}, {1, 1, 4}, 0, 0, dw, db, dch, 2, 0},
    };
    dspec_t d = {4, 4, 5, 5, 2, 4, 1.0f / 255.0f, -0.5f, xs, ys, xs, ys};
    start_t a = {1, 0.05f, 9, 1, 0, 0, 0.0f};
    uint32_t rng = 9, s;
    frame_t f;
    th_fill(cw, sizeof cw / 4, -0.5f, 0.5f);
    th_fill(cb, 3, -0.1f, 0.1f);
    th_fill(dw, sizeof dw / 4, -0.3f, 0.3f);
    th_fill(db, 4, -0.1f, 0.1f);
    for (uint32_t j = 0; j < sizeof xs; j++)
        xs[j] = (uint8_t)th_rand();
    for (uint32_t j = 0; j < 4; j++)
        ys[j] = (uint8_t)(j % 4);
    build_blobs(fx_win, FX_WIN_ADDR, L, 3, 4, 0, &d, &b);
    setup_info();
    CHECK(load_plan() == 0);
    CHECK(trainer_run(&plan, &a, &info, NULL) == 0);
    collect_grads(0);
    s = trainer_xorshift(&rng) % 4;
    for (uint32_t j = 0; j < 50; j++)
        in[j] = (float)xs[s * 50 + j] * d.scale + d.offset;
    conv2d_forward_ref(&cs, in, cw, cb, c_out);
    relu_forward_ref(c_out, c_out, 75);
    dense_forward_ref(c_out, dw, db, logits, 75, 4);
    softmax_ce_ref(logits, 4, ys[s], dl, NULL);
    dense_input_grad_ref(dl, dw, dc, 75, 4);
    relu_backward_ref(c_out, dc, dc, 75);
    const float *cw_new = (const float *)(const void *)(fx_arena + b.w_ram[0]);
    const float *dw_new = (const float *)(const void *)(fx_arena + b.w_ram[2]);
    for (uint32_t j = 0; j < 2; j++) {
        conv2d_weight_grad_channel_ref(&cs, dc, in, cch[j], g);
        for (uint32_t k = 0; k < 18; k++) {
            CHECK_NEAR(cw_new[j * 18 + k], cw[cch[j] * 18 + k] - 0.05f * g[k], 1e-5);
            CHECK_NEAR(grads[0][0][j * 18 + k], g[k], 1e-5);
        }
        for (uint32_t k = 0; k < 75; k++) {
            CHECK_NEAR(dw_new[j * 75 + k], dw[dch[j] * 75 + k] - 0.05f * dl[dch[j]] * c_out[k], 1e-5);
            CHECK_NEAR(grads[2][0][j * 75 + k], dl[dch[j]] * c_out[k], 1e-5);
        }
    }
    /* GRAD totals: 2 channels x 18 and 2 rows x 75 */
    {
        uint32_t pos = 0, seen = 0;
        while (hp_next_frame(&pos, &f))
            if (f.type == MSG_GRAD && f.body[5] == 0)
                seen |= (f.body[4] == 0 && le32(f.body + 8) == 36) ? 1u : (f.body[4] == 2 && le32(f.body + 8) == 150) ? 2u : 4u;
        CHECK(seen == 3u);
    }
}

static float eval_loss(uint8_t phase, uint32_t *correct)
{
    uint32_t pos = 0;
    frame_t f;
    while (hp_next_frame(&pos, &f))
        if (f.type == MSG_EVAL && f.body[0] == phase) {
            *correct = le32(f.body + 8);
            return f32(f.body + 12) / (float)le32(f.body + 4);
        }
    return -1.0f;
}

static void t_loss_falls(void)
{
    start_t a = {600, 0.05f, 3, 100, 0, 0, 0.0f};
    uint32_t c0 = 0, c1 = 0;
    frame_t f;
    fx_mlp(&b, 16, 12, 4, 0, 400);
    setup_info();
    CHECK(load_plan() == 0);
    CHECK(trainer_run(&plan, &a, &info, NULL) == 0);
    float l0 = eval_loss(0, &c0), l1 = eval_loss(1, &c1);
    CHECK(l0 > 0 && l1 > 0 && l1 < 0.5f * l0);
    CHECK(c1 > c0 && c1 >= 80);
    CHECK(hp_count(MSG_STEP) == 600 && hp_count(MSG_GSTAT) == 600);
    CHECK(find(MSG_SUMMARY, &f) && le32(f.body) == 600 && f.body[4] == 0);
    /* GRAD on steps 0, 100, ..., 500: 6 x (16*12 + 12 + 12*4 + 4 floats -> 1 + 1 + 1 + 1 frames) */
    CHECK(hp_count(MSG_GRAD) == 24);
}

static int polls;
static int stop_on_third(void)
{
    return ++polls >= 3;
}

static void t_stop(void)
{
    start_t a = {50, 0.05f, 3, 0, 0, 0, 0.0f};
    frame_t f;
    fx_mlp(&b, 6, 5, 3, 2, 20);
    setup_info();
    CHECK(load_plan() == 0);
    polls = 0;
    CHECK(trainer_run(&plan, &a, &info, stop_on_third) == 1);
    CHECK(find(MSG_SUMMARY, &f) && le32(f.body) == 2 && f.body[4] == 1);
    CHECK(hp_count(MSG_EVAL) == 1 && hp_count(MSG_STEP) == 2);
    /* last layer only: GSTAT has the two tensors of layer 2 */
    CHECK(find(MSG_GSTAT, &f) && f.body[4] == 2 && f.body[8] == 2);
}

static void t_session(void)
{
    static uint8_t script[512];
    uint8_t body[20] = {0};
    uint32_t n = 0;
    frame_t f;
    fx_mlp(&b, 6, 5, 3, 0, 20);
    setup_info();
    put_le32(body, 0xABCD);
    n += hp_encode(script + n, MSG_PING, 0, body, 4);
    n += hp_encode(script + n, MSG_START, 1, body, 3); /* bad length */
    n += hp_encode(script + n, 0x99, 2, body, 0);      /* unknown */
    n += hp_encode(script + n, MSG_STOP, 3, body, 0); /* idle STOP: ignored */
    put_le32(body, 3);                                  /* steps */
    float lr = 0.1f;
    memcpy(body + 4, &lr, 4);
    script[n++] = 0x42; /* line noise before the next frame */
    script[n++] = 0;
    n += hp_encode(script + n, MSG_START, 4, body, 20);
    hp_set_input(script, n);
    while (session_poll())
        ;
    CHECK(find(MSG_HELLO, &f) && le16(f.body) == WIRE_VERSION && le32(f.body + 24) == FX_ARENA_BYTES);
    CHECK(find(MSG_PONG, &f) && le32(f.body) == 0xABCD);
    CHECK(hp_count(MSG_FAULT) == 2 && find(MSG_FAULT, &f) && le32(f.body) == FAULT_COMMAND);
    CHECK(find(MSG_ACK, &f) && f.body[0] == MSG_START && f.body[1] == 0 && le32(f.body + 4) == 0xC0FFEEu);
    CHECK(hp_count(MSG_STEP) == 3 && hp_count(MSG_SUMMARY) == 1);
    /* STOP queued behind START arrives between steps: the run ends early with status 1 */
    hp_reset(&info);
    n = hp_encode(script, MSG_START, 5, body, 20);
    n += hp_encode(script + n, MSG_STOP, 6, body, 0);
    hp_set_input(script, n);
    while (session_poll())
        ;
    CHECK(find(MSG_SUMMARY, &f) && f.body[4] == 1 && le32(f.body) == 0);
    /* a damaged plan answers FAULT 2 and no ACK */
    fx_win[PLAN_HEADER] = 9;
    hp_reset(&info);
    n = hp_encode(script, MSG_START, 5, body, 20);
    hp_set_input(script, n);
    while (session_poll())
        ;
    CHECK(find(MSG_FAULT, &f) && le32(f.body) == FAULT_PLAN && hp_count(MSG_ACK) == 0);
}

/* the WDATA frames captured since the last reset, into vals[layer][param][]; returns the frame count */
static uint32_t collect_wdata(float vals[3][2][32])
{
    uint32_t pos = 0, n = 0;
    frame_t f;
    while (hp_next_frame(&pos, &f))
        if (f.type == MSG_WDATA && f.body[0] < 3 && f.body[1] < 2) {
            uint32_t off = le32(f.body + 8), cnt = le16(f.body + 12);
            for (uint32_t j = 0; j < cnt && off + j < 32; j++)
                vals[f.body[0]][f.body[1]][off + j] = f32(f.body + 16 + 4 * j);
            n++;
        }
    return n;
}

/* runs one command script through the session */
static void script_run(const uint8_t *script, uint32_t n)
{
    hp_reset(&info);
    hp_set_input(script, n);
    while (session_poll())
        ;
}

static uint32_t wset_frame(uint8_t *dst, uint16_t seq, uint8_t layer, uint8_t param, uint32_t total, uint32_t off,
                           const float *v, uint16_t count)
{
    uint8_t body[16 + 4 * 8] = {layer, param};
    put_le32(body + 4, total);
    put_le32(body + 8, off);
    put_le16(body + 12, count);
    memcpy(body + 16, v, 4u * count);
    return hp_encode(dst, MSG_WSET, seq, body, (uint16_t)(16u + 4u * count));
}

/* WGET, WSET and START's resume flag: parameters survive a resumed run's repaint, a fresh START reloads the plan's,
 * WSET writes exactly its slice, bad slices are refused by a FAULT that names them */
static void t_params_over_wire(void)
{
    static uint8_t script[512];
    static float got[3][2][32], after[3][2][32];
    uint8_t start[20] = {0};
    float lr = 0.1f, v[2] = {1.5f, -2.25f};
    frame_t f;
    uint32_t n;
    fx_mlp(&b, 6, 5, 3, 0, 20);
    setup_info();
    put_le32(start, 3); /* steps */
    memcpy(start + 4, &lr, 4);
    put_le32(start + 8, 5); /* seed */
    n = hp_encode(script, MSG_WGET, 0, NULL, 0);
    script_run(script, n); /* before any run: the plan's initial values */
    CHECK(collect_wdata(got) == 4 && find(MSG_ACK, &f) && f.body[0] == MSG_WGET);
    CHECK(memcmp(got[0][0], fx_w0, 30 * 4) == 0 && memcmp(got[2][1], fx_b2, 3 * 4) == 0);
    /* a fresh run of 3 steps moves the weights (a command queued behind START would arrive mid-run: one each) */
    script_run(script, hp_encode(script, MSG_START, 1, start, 20));
    script_run(script, hp_encode(script, MSG_WGET, 2, NULL, 0));
    CHECK(collect_wdata(got) == 4 && memcmp(got[0][0], fx_w0, 30 * 4) != 0);
    put_le32(start, 0);
    put_le16(start + 18, 2); /* resume, 0 steps: evaluation of what the arena holds, which stays */
    script_run(script, hp_encode(script, MSG_START, 3, start, 20));
    CHECK(find(MSG_SUMMARY, &f) && hp_count(MSG_FAULT) == 0);
    script_run(script, hp_encode(script, MSG_WGET, 4, NULL, 0));
    CHECK(collect_wdata(after) == 4 && memcmp(after, got, sizeof got) == 0);
    n = wset_frame(script, 5, 2, 0, 15, 13, v, 2); /* the last two weights of layer 2 */
    n += hp_encode(script + n, MSG_WGET, 6, NULL, 0);
    script_run(script, n);
    CHECK(find(MSG_ACK, &f) && f.body[0] == MSG_WSET && collect_wdata(after) == 4);
    CHECK(after[2][0][13] == 1.5f && after[2][0][14] == -2.25f && memcmp(after[2][0], got[2][0], 13 * 4) == 0);
    n = wset_frame(script, 7, 1, 0, 15, 0, v, 1);       /* layer 1 is a ReLU: nothing trains */
    n += wset_frame(script + n, 8, 2, 0, 16, 0, v, 1);  /* wrong total */
    n += wset_frame(script + n, 9, 2, 0, 15, 14, v, 2); /* past the end */
    n += hp_encode(script + n, MSG_WGET, 11, start, 4);  /* WGET with a body */
    script_run(script, n);
    CHECK(hp_count(MSG_FAULT) == 4 && hp_count(MSG_ACK) == 0);
    put_le16(start + 18, 0); /* a fresh START reloads the plan's values */
    script_run(script, hp_encode(script, MSG_START, 12, start, 20));
    script_run(script, hp_encode(script, MSG_WGET, 13, NULL, 0));
    CHECK(collect_wdata(after) == 4 && memcmp(after[0][0], fx_w0, 30 * 4) == 0);
    CHECK(memcmp(after[2][0], fx_w2, 15 * 4) == 0);
}

/* fx_mlp(6, 5, 3) made a forward-only plan of `flag`: weights of layers 0 and 2 train, no bias, no input gradient;
 * layer 0 keeps h_0 in its own dout, the modulated pass runs through two new buffers of the widest activation */
static void forward_only_plan(uint16_t flag, uint8_t extra_layer_flags)
{
    uint8_t *rec = fx_win + PLAN_HEADER;
    uint32_t need = (b.arena_need + 7u) & ~7u;
    float bound = 0.05f;
    for (uint32_t i = 0; i < 3; i++)
        rec[i * PLAN_RECORD + TPLN_L_FLAGS] &= (uint8_t)~(LF_NEED_DX | LF_TRAIN_B);
    rec[TPLN_L_FLAGS] |= extra_layer_flags;
    put_le32(rec + TPLN_L_DOUT_OFF, need);
    put_le32(fx_win + TPLN_H_MOD_A_OFF, need + 32u);
    put_le32(fx_win + TPLN_H_MOD_B_OFF, need + 64u);
    put_le32(fx_win + TPLN_H_ARENA_BYTES, need + 96u);
    put_le32(fx_win + TPLN_H_F_SEED, 0x0E717Au);
    memcpy(fx_win + TPLN_H_F_BOUND, &bound, 4);
    put_le16(fx_win + TPLN_H_FLAGS, flag);
    blob_fix_crc(fx_win);
}

/* PEPITA and MEMPEPITA compute the same numbers (one keeps h_j, the other recomputes it), both move the weights and
 * stream the directions; a forward-only plan with need_dx is refused */
static void t_forward_only(void)
{
    static float after[2][30 + 15];
    start_t a = {5, 0.1f, 3, 1, 0, 0, 0.0f};
    frame_t f;
    fx_mlp(&b, 6, 5, 3, 0, 20);
    for (uint32_t m = 0; m < 2; m++) {
        setup_info();
        forward_only_plan(m ? PF_MEMPEPITA : PF_PEPITA, 0);
        CHECK(load_plan() == 0 && plan.fwd_mode == (m ? FWD_MEMPEPITA : FWD_PEPITA) && plan.mod_n == 6);
        CHECK(trainer_run(&plan, &a, &info, NULL) == 0);
        memcpy(after[m], plan.layer[0].w_ram, 30 * sizeof(float));
        memcpy(after[m] + 30, plan.layer[2].w_ram, 15 * sizeof(float));
        CHECK(hp_count(MSG_GRAD) >= 10 && find(MSG_SUMMARY, &f) && le32(f.body) == 5);
    }
    CHECK(memcmp(after[0], after[1], sizeof after[0]) == 0);
    CHECK(memcmp(after[0], fx_w0, 30 * sizeof(float)) != 0 && memcmp(after[0] + 30, fx_w2, 15 * sizeof(float)) != 0);
    setup_info();
    forward_only_plan(PF_PEPITA, LF_NEED_DX);
    {
        mem_window_t w = fx_window();
        fault_t fl;
        CHECK(plan_load(&plan, &w, FX_WIN_ADDR, fx_arena, FX_ARENA_BYTES, &fl) == -1 && fl.code == FAULT_PLAN);
    }
    forward_only_plan(PF_PEPITA | PF_MEMPEPITA, 0);
    CHECK(load_plan() == -1);
}

static double dist(const float *a, const float *b, uint32_t n)
{
    double d = 0.0;
    for (uint32_t j = 0; j < n; j++)
        d += ((double)a[j] - b[j]) * ((double)a[j] - b[j]);
    return d;
}

/* FedProx: lr * mu = 1 pulls every trained value back to where the run started after each step; a small mu keeps
 * the weights nearer their start than plain SGD on the same samples; the anchor after the plan's arena is measured
 * as arena; a START whose anchor does not fit the arena, or a negative mu, is refused */
static void t_prox(void)
{
    static float w[3][30];
    start_t a = {6, 0.1f, 3, 0, 0, 0, 0.0f};
    const float mus[3] = {0.0f, 0.5f, 10.0f};
    frame_t f;
    fx_mlp(&b, 6, 5, 3, 0, 20);
    for (uint32_t m = 0; m < 3; m++) {
        setup_info();
        a.prox_mu = mus[m];
        CHECK(load_plan() == 0 && trainer_run(&plan, &a, &info, NULL) == 0);
        memcpy(w[m], plan.layer[0].w_ram, sizeof w[m]);
        CHECK(find(MSG_SUMMARY, &f));
        if (m) /* arena_peak covers the anchor: 30 + 5 + 15 + 3 trainable floats after the plan's arena */
            CHECK(le32(f.body + MSG_SUMMARY_ARENA_PEAK) == trainer_arena_need(&plan, &a) &&
                  trainer_arena_need(&plan, &a) == ((plan.arena_need + 7u) & ~7u) + 4u * 53u);
    }
    CHECK(dist(w[2], fx_w0, 30) < 1e-10 && dist(w[0], fx_w0, 30) > 1e-6);
    CHECK(dist(w[1], fx_w0, 30) < dist(w[0], fx_w0, 30) && dist(w[1], fx_w0, 30) > 1e-8);
    {
        static uint8_t script[128];
        uint8_t start[24] = {0};
        float mu = 0.5f, lr = 0.1f, neg = -1.0f;
        put_le32(start, 2);
        memcpy(start + 4, &lr, 4);
        memcpy(start + 20, &mu, 4);
        setup_info();
        info.arena_bytes = plan.arena_need + 16u; /* room for the plan, not for its anchor */
        hp_set_input(script, hp_encode(script, MSG_START, 1, start, 24));
        while (session_poll())
            ;
        CHECK(find(MSG_FAULT, &f) && le32(f.body) == FAULT_ARENA && hp_count(MSG_ACK) == 0);
        memcpy(start + 20, &neg, 4);
        setup_info();
        hp_set_input(script, hp_encode(script, MSG_START, 2, start, 24));
        while (session_poll())
            ;
        CHECK(find(MSG_FAULT, &f) && le32(f.body) == FAULT_COMMAND && hp_count(MSG_ACK) == 0);
    }
}

/* n steps of the same marker sequence: forward, then backward/update per layer from the top, then step end */
static int markers_repeat(const uint8_t *seq, uint32_t len, uint32_t steps)
{
    if (hp_n_markers != len * steps)
        return 0;
    for (uint32_t j = 0; j < hp_n_markers; j++)
        if (hp_markers[j] != seq[j % len])
            return 0;
    return 1;
}

static void t_markers(void)
{
    static const uint8_t full[] = {PORT_MARK_FORWARD, PORT_MARK_BACKWARD, PORT_MARK_UPDATE, PORT_MARK_BACKWARD,
                                   PORT_MARK_BACKWARD, PORT_MARK_UPDATE, PORT_MARK_STEP_END};
    static const uint8_t last[] = {PORT_MARK_FORWARD, PORT_MARK_BACKWARD, PORT_MARK_UPDATE, PORT_MARK_STEP_END};
    start_t a = {3, 0.1f, 5, 0, 2, 0, 0.0f};
    fx_mlp(&b, 6, 5, 3, 0, 20); /* dense, relu, dense: all trained */
    setup_info();
    CHECK(load_plan() == 0);
    CHECK(trainer_run(&plan, &a, &info, NULL) == 0);
    CHECK(markers_repeat(full, sizeof full, 3)); /* evaluation passes leave the marker alone */
    fx_mlp(&b, 6, 5, 3, 2, 20); /* last layer only */
    setup_info();
    CHECK(load_plan() == 0);
    CHECK(trainer_run(&plan, &a, &info, NULL) == 0);
    CHECK(markers_repeat(last, sizeof last, 3));
}

const test_case_t trainer_tests[] = {
    {"trainer: one MLP step matches double precision (weights, GRAD, GSTAT, loss)", t_step_double},
    {"trainer: one conv step matches the reference kernels", t_conv_step},
    {"trainer: depthwise + fused ReLU6 + global average pool + dense step matches the reference kernels", t_dw_step},
    {"plan: fused activations, kernel widths and depthwise shapes checked", t_dw_plan_rules},
    {"trainer: fp32 autoencoder step with the reconstruction loss matches the reference kernels", t_recon_step},
    {"trainer: residual ADD step: the skip gradient merges where the branch starts (reference kernels)", t_add_step},
    {"plan: residual ADD rules (skip, merge flag, skip gradient) checked", t_add_plan_rules},
    {"trainer: sparse conv + dense step: listed channels update as in a full step, GRAD in list order", t_sparse_step},
    {"trainer: 600 steps reduce the eval loss", t_loss_falls},
    {"trainer: STOP ends the run with status 1; last-layer-only GSTAT", t_stop},
    {"session: PING/HELLO/PONG, bad commands, START/ACK, bad plan", t_session},
    {"session: WGET/WSET and START resume keep, replace and refuse parameters", t_params_over_wire},
    {"trainer: FedProx pulls toward the run's start, its anchor is measured, a bad mu or no room refused", t_prox},
    {"trainer: PEPITA and MEMPEPITA agree, train, stream; bad forward-only plans refused", t_forward_only},
    {"trainer: phase markers per step (forward, backward/update per layer, step end)", t_markers},
    {NULL, NULL},
};
