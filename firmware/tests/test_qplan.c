/* TQPL validation: a good int8 plan loads and runs like the reference kernels chained by hand; each kind of damage
 * answers its fault, naming the op index for op-level problems. The blob is built here as bench/qplan.py builds it:
 * input 4x4x2 -> CONV 3x3 SAME (3 channels, per-channel, ReLU) -> FULLY_CONNECTED 48 -> 5 (per-tensor) -> SOFTMAX. */
#include <string.h>
#include "harness.h"
#include "blobs.h"
#include "msg.h"
#include "qexec.h"
#include "qplan.h"
#include "qops.h"
#include "wire.h"

static qplan_t qp;
static uint32_t ops_off, tens_off, data_off;
static int8_t cw[54], fw[240], xin[3 * 32];
static int32_t cb[3], fb[5];

enum { T_IN, T_CW, T_CB, T_COUT, T_FW, T_FB, T_FOUT, T_PROB, N_T };
static const uint32_t ARENA_NEED = 96u;

static uint32_t put(uint8_t *b, uint32_t *end, const void *src, uint32_t n)
{
    uint32_t off = *end;
    memcpy(b + off, src, n);
    *end += (n + 3u) & ~3u;
    return off;
}

static void tensor(uint8_t *b, uint32_t i, uint8_t kind, uint8_t rank, uint16_t n, uint16_t h, uint16_t w,
                   uint16_t c, uint32_t off, int32_t zp, float scale)
{
    uint8_t *r = b + tens_off + i * QPLAN_TENSOR;
    uint32_t count = (uint32_t)n * h * w * c;
    r[TQPL_T_KIND] = kind;
    r[TQPL_T_RANK] = rank;
    put_le16(r + TQPL_T_DIMS0, n);
    put_le16(r + TQPL_T_DIMS1, h);
    put_le16(r + TQPL_T_DIMS2, w);
    put_le16(r + TQPL_T_DIMS3, c);
    put_le32(r + TQPL_T_OFFSET, off);
    put_le32(r + TQPL_T_BYTES, count * (kind == QT_CONST_I32 ? 4u : 1u));
    put_le32(r + TQPL_T_ZERO_POINT, (uint32_t)zp);
    memcpy(r + 24, &scale, 4);
    put_le32(r + TQPL_T_SCALES_OFFSET, 0xFFFFFFFFu);
}

static uint8_t *op(uint8_t *b, uint32_t i, uint8_t code, uint16_t in0, uint16_t in1, uint16_t in2, uint16_t out)
{
    uint8_t *r = b + ops_off + i * QPLAN_OP;
    r[TQPL_O_OP] = code;
    put_le16(r + TQPL_O_IN0, in0);
    put_le16(r + TQPL_O_IN1, in1);
    put_le16(r + TQPL_O_IN2, in2);
    put_le16(r + TQPL_O_OUT, out);
    put_le16(r + TQPL_O_ACT_MIN, (uint16_t)-128);
    put_le16(r + TQPL_O_ACT_MAX, 127);
    return r;
}

static void fix_crc(uint8_t *blob)
{
    blob_fix_crc(blob);
}

/* builds the plan at fx_win and the int8 dataset (3 eval samples) after it */
static void build(void)
{
    uint8_t *b = fx_win;
    uint32_t end, conv_rq, conv_eff, fc_rq, fc_eff, sm_rq;
    int32_t rq3[6] = {1500000000, -9, 1300000000, -8, 1100000000, -9}, rq1[2] = {1200000000, -10};
    int32_t eff3[3], eff5[5], smrq[2] = {1518500250, 21};
    memset(fx_win, 0, 64u * 1024u);
    for (uint32_t j = 0; j < 54; j++)
        cw[j] = (int8_t)(th_rand() % 255u - 127u);
    for (uint32_t j = 0; j < 240; j++)
        fw[j] = (int8_t)(th_rand() % 255u - 127u);
    for (uint32_t j = 0; j < 3; j++)
        cb[j] = (int32_t)(th_rand() % 4000u) - 2000;
    for (uint32_t j = 0; j < 5; j++)
        fb[j] = (int32_t)(th_rand() % 4000u) - 2000;
    for (uint32_t o = 0; o < 3; o++) { /* zp_in 5 */
        int32_t s = 0;
        for (uint32_t j = 0; j < 18; j++)
            s += cw[o * 18 + j];
        eff3[o] = cb[o] - 5 * s;
    }
    for (uint32_t o = 0; o < 5; o++) { /* zp_in of the conv output: -128 */
        int32_t s = 0;
        for (uint32_t j = 0; j < 48; j++)
            s += fw[o * 48 + j];
        eff5[o] = fb[o] + 128 * s;
    }
    tens_off = QPLAN_HEADER;
    ops_off = tens_off + N_T * QPLAN_TENSOR;
    end = ops_off + 3 * QPLAN_OP;
    tensor(b, T_IN, QT_ACTIVATION, 4, 1, 4, 4, 2, 0, 5, 0.02f);
    tensor(b, T_CW, QT_CONST_I8, 4, 3, 3, 3, 2, put(b, &end, cw, 54), 0, 0.01f);
    tensor(b, T_CB, QT_CONST_I32, 1, 1, 1, 1, 3, put(b, &end, cb, 12), 0, 0.0002f);
    tensor(b, T_COUT, QT_ACTIVATION, 4, 1, 4, 4, 3, 32, -128, 0.05f);
    tensor(b, T_FW, QT_CONST_I8, 2, 1, 1, 5, 48, put(b, &end, fw, 240), 0, 0.01f);
    tensor(b, T_FB, QT_CONST_I32, 1, 1, 1, 1, 5, put(b, &end, fb, 20), 0, 0.0005f);
    tensor(b, T_FOUT, QT_ACTIVATION, 2, 1, 1, 1, 5, 0, 3, 0.1f);
    tensor(b, T_PROB, QT_ACTIVATION, 2, 1, 1, 1, 5, 8, -128, 1.0f / 256.0f);
    conv_rq = put(b, &end, rq3, 24);
    conv_eff = put(b, &end, eff3, 12);
    fc_rq = put(b, &end, rq1, 8);
    fc_eff = put(b, &end, eff5, 20);
    sm_rq = put(b, &end, smrq, 8);
    {
        uint8_t *r = op(b, 0, QOP_CONV_2D, T_IN, T_CW, T_CB, T_COUT);
        r[TQPL_O_FLAGS] = 1;
        r[TQPL_O_STRIDE_H] = r[TQPL_O_STRIDE_W] = 1;
        r[TQPL_O_K_H] = r[TQPL_O_K_W] = 3;
        r[TQPL_O_DM] = 1;
        r[TQPL_O_PADDING] = 1;
        put_le16(r + TQPL_O_PAD_TOP, 1);
        put_le16(r + TQPL_O_PAD_LEFT, 1);
        put_le16(r + TQPL_O_ACT_MIN, (uint16_t)-128); /* ReLU: zp_out */
        put_le32(r + TQPL_O_RQ_OFFSET, conv_rq);
        put_le32(r + TQPL_O_BIAS_EFF_OFFSET, conv_eff);
        r = op(b, 1, QOP_FULLY_CONNECTED, T_COUT, T_FW, T_FB, T_FOUT);
        put_le32(r + TQPL_O_RQ_OFFSET, fc_rq);
        put_le32(r + TQPL_O_BIAS_EFF_OFFSET, fc_eff);
        r = op(b, 2, QOP_SOFTMAX, T_FOUT, QPLAN_NONE16, QPLAN_NONE16, T_PROB);
        put_le32(r + TQPL_O_RQ_OFFSET, sm_rq);
        put_le32(r + TQPL_O_PARAM0, (uint32_t)-3968);
    }
    data_off = (end + 4095u) & ~4095u;
    put_le32(b, QPLAN_MAGIC);
    put_le16(b + TQPL_H_VERSION, 1);
    put_le16(b + TQPL_H_HEADER_BYTES, QPLAN_HEADER);
    put_le32(b + TQPL_H_BLOB_BYTES, end);
    put_le32(b + TQPL_H_PLAN_HASH, 0xBEEFu);
    put_le32(b + TQPL_H_ARENA_BYTES, ARENA_NEED);
    put_le32(b + TQPL_H_DATASET_ADDR, FX_WIN_ADDR + data_off);
    put_le16(b + TQPL_H_N_TENSORS, N_T);
    put_le16(b + TQPL_H_N_OPS, 3);
    put_le32(b + TQPL_H_TENSORS_OFFSET, tens_off);
    put_le32(b + TQPL_H_OPS_OFFSET, ops_off);
    put_le16(b + TQPL_H_INPUT, T_IN);
    put_le16(b + TQPL_H_OUTPUT, T_PROB);
    put_le16(b + TQPL_H_N_CLASSES, 5);
    fix_crc(b);
    { /* dataset: int8 samples, no training split */
        uint8_t *d = fx_win + data_off;
        for (uint32_t j = 0; j < sizeof xin; j++)
            xin[j] = (int8_t)(th_rand() % 256u);
        put_le32(d, DATA_MAGIC);
        put_le16(d + TDST_H_VERSION, 1);
        put_le16(d + TDST_H_HEADER_BYTES, DATA_HEADER);
        put_le32(d + TDST_H_BLOB_BYTES, DATA_HEADER + 4 + sizeof xin + 4);
        put_le32(d + TDST_H_N_TRAIN, 0);
        put_le32(d + TDST_H_N_EVAL, 3);
        put_le16(d + TDST_H_H, 4);
        put_le16(d + TDST_H_W, 4);
        put_le16(d + TDST_H_C, 2);
        put_le16(d + TDST_H_N_CLASSES, 5);
        put_le32(d + TDST_H_X_TRAIN_OFF, DATA_HEADER);
        d[TDST_H_DTYPE] = QDS_I8;
        memcpy(d + DATA_HEADER, xin, sizeof xin); /* x_train empty, y_train empty: x_eval at 48 */
        d[DATA_HEADER + sizeof xin] = 1;
        d[DATA_HEADER + sizeof xin + 1] = 4;
        d[DATA_HEADER + sizeof xin + 2] = 0;
        fix_crc(d);
    }
}

static int load(fault_t *f)
{
    mem_window_t w = fx_window();
    return qplan_load(&qp, &w, FX_WIN_ADDR, fx_arena, FX_ARENA_BYTES, f);
}

static void expect_fault(uint32_t code, uint32_t arg0)
{
    fault_t f;
    CHECK(load(&f) != 0);
    CHECK(f.code == code);
    CHECK(f.arg0 == arg0);
    CHECK(f.text != NULL);
}

static void t_qplan_valid_runs_like_reference(void)
{
    fault_t f;
    mem_window_t w;
    build();
    w = fx_window();
    CHECK(qplan_is_tqpl(&w, FX_WIN_ADDR));
    CHECK(load(&f) == 0);
    CHECK(qp.n_ops == 3 && qp.n_classes == 5 && qp.plan_hash == 0xBEEFu && qp.data.n_eval == 3);
    for (uint32_t s = 0; s < 3; s++) {
        int8_t c[48], h[5], p[5];
        qexec_load_sample(&qp, qp.data.x_eval + s * 32u);
        qexec_forward(&qp, NULL, NULL, NULL);
        conv_i8_ref(&qp.node[0].k.conv, xin + s * 32u, cw, c);
        fc_i8_ref(&qp.node[1].k.fc, c, fw, h);
        softmax_i8(&qp.node[2].k.softmax, h, p);
        CHECK(memcmp(qp.node[0].y, c, 48) == 0);
        CHECK(memcmp(qp.output, p, 5) == 0);
        CHECK(qexec_argmax(&qp) < 5);
    }
}

static void t_qplan_rejects_damage(void)
{
    uint8_t *o;
    build();
    put_le32(fx_win, 0x12345678u);
    fix_crc(fx_win);
    expect_fault(FAULT_PLAN, 0x12345678u);
    build();
    fx_win[QPLAN_HEADER + 3] ^= 1; /* any byte: CRC */
    {
        fault_t f;
        CHECK(load(&f) != 0 && f.code == FAULT_PLAN);
    }
    build();
    put_le32(fx_win + TQPL_H_ARENA_BYTES, FX_ARENA_BYTES + 4u);
    fix_crc(fx_win);
    expect_fault(FAULT_ARENA, FX_ARENA_BYTES + 4u);
    build();
    fx_win[ops_off + QPLAN_OP] = 42; /* op 1: unknown code */
    fix_crc(fx_win);
    expect_fault(FAULT_PLAN, 1);
    build();
    put_le32(fx_win + tens_off + T_COUT * QPLAN_TENSOR + 12, ARENA_NEED); /* conv output beyond the arena */
    fix_crc(fx_win);
    expect_fault(FAULT_PLAN, 0);
    build();
    put_le16(fx_win + tens_off + T_COUT * QPLAN_TENSOR + 6, 3); /* conv output 3x4: shape mismatch */
    put_le32(fx_win + tens_off + T_COUT * QPLAN_TENSOR + 16, 36);
    fix_crc(fx_win);
    expect_fault(FAULT_PLAN, 0);
    build();
    o = fx_win + le32(fx_win + ops_off + TQPL_O_BIAS_EFF_OFFSET); /* folded bias of the conv off by one */
    put_le32(o + 4, le32(o + 4) + 1u);
    fix_crc(fx_win);
    expect_fault(FAULT_PLAN, 0);
    build();
    fx_win[ops_off + 2 * QPLAN_OP + 50] = 1; /* op 2: reserved byte */
    fix_crc(fx_win);
    expect_fault(FAULT_PLAN, 2);
    build();
    put_le16(fx_win + ops_off + QPLAN_OP + TQPL_O_IN0, T_PROB); /* op 1 reads a tensor nobody produced yet */
    fix_crc(fx_win);
    expect_fault(FAULT_PLAN, 1);
    build();
    o = fx_win + le32(fx_win + ops_off + QPLAN_OP + TQPL_O_RQ_OFFSET); /* fc shift out of range */
    put_le32(o + 4, 40u);
    fix_crc(fx_win);
    expect_fault(FAULT_PLAN, 1);
    build();
    fx_win[ops_off + TQPL_O_FLAGS] = 0x10; /* training flags: not yet */
    fix_crc(fx_win);
    expect_fault(FAULT_PLAN, 0);
    build();
    put_le16(fx_win + TQPL_H_N_OPS, 0); /* no ops */
    fix_crc(fx_win);
    expect_fault(FAULT_PLAN, 0);
}

static void t_qplan_dataset(void)
{
    fault_t f;
    built_t b;
    build();
    fx_win[data_off + TDST_H_DTYPE] = 7; /* unknown sample dtype */
    fix_crc(fx_win + data_off);
    expect_fault(FAULT_DATASET, 7);
    build();
    put_le16(fx_win + data_off + 28, 3); /* 4x4x3 samples for a 4x4x2 input */
    fix_crc(fx_win + data_off);
    expect_fault(FAULT_DATASET, 48);
    /* an fp32 plan refuses int8 samples */
    fx_mlp(&b, 6, 5, 3, 0, 20);
    fx_win[b.data_off + TDST_H_DTYPE] = QDS_I8;
    fix_crc(fx_win + b.data_off);
    {
        plan_t *p = (plan_t *)(void *)&qp; /* qplan_t is larger: reuse its storage */
        mem_window_t w = fx_window();
        CHECK(sizeof(qplan_t) >= sizeof(plan_t));
        CHECK(plan_load(p, &w, FX_WIN_ADDR, fx_arena, FX_ARENA_BYTES, &f) != 0 && f.code == FAULT_DATASET);
    }
}

/* every op code the host compiles (bench.plan.int8.OP_CODES) has exactly one kind, complete for what it claims */
static void t_qop_registry(void)
{
    static const char *const names[QOP_COUNT] = {NULL, "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED",
                                                 "AVERAGE_POOL_2D", "MEAN", "ADD", "RESHAPE", "SOFTMAX",
                                                 "MAX_POOL_2D"};
    CHECK(qop_kind(0) == NULL && qop_kind(QOP_COUNT) == NULL && qop_kind(0xFF) == NULL);
    for (uint8_t op = 1; op < QOP_COUNT; op++) {
        const qop_kind_t *k = qop_kind(op);
        CHECK(k != NULL && strcmp(k->name, names[op]) == 0 && k->parse != NULL);
        if (!k)
            continue;
        CHECK((k->forward == NULL) == (op == QOP_RESHAPE)); /* only the alias has no kernel */
        /* a weighted op brings its gradient kernels and clamp; an unweighted one on the backward path its own step */
        if (k->input_grad)
            CHECK(k->clamp != NULL && k->backward == NULL && k->parse_train != NULL);
        /* a weight gradient to apply, or one fused into the update; a sparse forward per channel unless the arena
         * holds the whole trained tensor (DEPTHWISE_CONV_2D) */
        if (k->weight_grad || k->forward_rows)
            CHECK((k->weight_grad != NULL) != (k->update_row != NULL && k->grad_at != NULL) &&
                  (k->forward_rows != NULL || op == QOP_DEPTHWISE_CONV_2D) && k->input_grad != NULL);
        if (k->backward)
            CHECK(k->parse_train != NULL && k->input_grad == NULL);
    }
    CHECK(qop_kind(QOP_MEAN)->backward != NULL && qop_kind(QOP_ADD)->backward != NULL); /* residual graphs train */
}

const test_case_t qplan_tests[] = {
    {"qplan: every op code has one complete kind in the registry", t_qop_registry},
    {"qplan: a valid int8 plan loads and runs like the reference kernels", t_qplan_valid_runs_like_reference},
    {"qplan: damage gives FAULT 2 naming the op, 3 for the arena", t_qplan_rejects_damage},
    {"qplan: dataset dtype and shape checks; fp32 plans refuse int8 samples", t_qplan_dataset},
    {NULL, NULL},
};
