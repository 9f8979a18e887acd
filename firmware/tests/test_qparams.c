/* An int8 plan's trainable state over the wire (qparams.c) on a hand-built plan: WSET words land as codes and Q16
 * residuals (dense, sparse-row and channel-interleaved depthwise layouts), bias_eff follows every code change, WGET
 * sends back exactly what was set, out-of-range words and bad slices are refused with nothing written, and a resumed
 * run's repaint keeps every word of the trainable state. */
#include <string.h>
#include "harness.h"
#include "host_port.h"
#include "formats.h"
#include "qparams.h"
#include "qtrain.h"

#define OUT_C 3u
#define ROW 4u
#define ZP (-3)

static qplan_t P;
static int8_t W[OUT_C * ROW];
static uint16_t WRES[OUT_C * ROW], SEL[2] = {0, 2};
static int32_t B[OUT_C], EFF[OUT_C];
static int16_t BRES[OUT_C];
static port_info_t info;

/* one FULLY_CONNECTED op (input zero point ZP) training weights and biases, then SOFTMAX; w_stride > 0 lays the
 * weights out channel-interleaved as a depthwise copy; n_sel > 0 trains rows SEL only */
static qtop_t *make_plan(uint32_t w_stride, uint16_t n_sel)
{
    qtop_t *t;
    memset(&P, 0, sizeof P);
    P.n_ops = 2;
    P.train = 1;
    P.node = (qnode_t *)P.pool;
    P.top = (qtop_t *)((uint8_t *)P.pool + QPLAN_NODES_BYTES(2));
    P.node[0].op = QOP_FULLY_CONNECTED;
    P.node[0].k.fc.zp_in = ZP;
    P.node[1].op = QOP_SOFTMAX;
    t = &P.top[0];
    *t = (qtop_t){.flags = QTF_TRAIN_W | QTF_TRAIN_B, .n_sel = n_sel, .sel = n_sel ? SEL : NULL, .out_c = OUT_C,
                  .row = ROW, .w_ram = W, .w_stride = w_stride, .w_res = WRES, .b_ram = B, .eff = EFF,
                  .b_res = BRES};
    for (uint32_t j = 0; j < OUT_C * ROW; j++) {
        W[j] = (int8_t)(j * 7 % 23 - 11);
        WRES[j] = QGRAD_RES_ZERO;
    }
    for (uint32_t o = 0; o < OUT_C; o++) {
        B[o] = (int32_t)(o * 1000) - 700;
        BRES[o] = 0;
    }
    return t;
}

/* channel o's weight k, or -1000 when channel o does not train in a compact sparse layout (its codes are in flash) */
static int32_t code(const qtop_t *t, uint32_t o, uint32_t k)
{
    uint32_t j = o;
    if (t->w_stride)
        return W[k * t->w_stride + o];
    if (t->n_sel) {
        for (j = 0; j < t->n_sel && t->sel[j] != o; j++)
            ;
        if (j == t->n_sel)
            return -1000;
    }
    return W[j * ROW + k];
}

/* bias_eff as the host computes it, b - zp * sum of channel o's codes, for every channel whose codes are here */
static int eff_consistent(const qtop_t *t)
{
    for (uint32_t o = 0; o < OUT_C; o++) {
        int32_t s = 0;
        for (uint32_t k = 0; k < ROW; k++)
            s += code(t, o, k);
        if (code(t, o, 0) != -1000 && EFF[o] != B[o] - ZP * s)
            return 0;
    }
    return 1;
}

static void init_eff(const qtop_t *t)
{
    for (uint32_t o = 0; o < OUT_C; o++) {
        int32_t s = 0;
        for (uint32_t k = 0; k < ROW; k++)
            s += code(t, o, k);
        EFF[o] = B[o] - ZP * s;
    }
}

static uint8_t body[16 + 4 * 16];

static int wset(uint8_t param, uint8_t kind, uint32_t total, uint32_t off, const int32_t *v, uint16_t count,
                const char **why)
{
    frame_t f = {MSG_WSET, 0, (uint16_t)(16u + 4u * count), body};
    memset(body, 0, 16);
    body[MSG_WPARAM_HEAD_PARAM] = param;
    body[MSG_WPARAM_HEAD_KIND] = kind;
    put_le32(body + MSG_WPARAM_HEAD_TOTAL, total);
    put_le32(body + MSG_WPARAM_HEAD_OFFSET, off);
    put_le16(body + MSG_WPARAM_HEAD_COUNT, count);
    for (uint32_t j = 0; j < count; j++)
        put_le32(body + 16 + 4 * j, (uint32_t)v[j]);
    return qparams_set(&P, &f, why);
}

/* the words of every kind 1 WDATA frame of (op 0, param) since hp_reset, into v; returns how many */
static uint32_t wdata(uint8_t param, int32_t *v, uint32_t max)
{
    uint32_t pos = 0, n = 0;
    frame_t f;
    while (hp_next_frame(&pos, &f))
        if (f.type == MSG_WDATA && f.body[0] == 0 && f.body[1] == param && f.body[2] == QPARAMS_KIND)
            for (uint32_t j = 0; j < le16(f.body + 12) && n < max; j++)
                v[n++] = (int32_t)le32(f.body + 16 + 4 * j);
    return n;
}

static void round_trip(uint32_t w_stride, uint16_t n_sel)
{
    const char *why = "";
    qtop_t *t = make_plan(w_stride, n_sel);
    uint32_t rows = n_sel ? n_sel : OUT_C, nw = rows * ROW;
    int32_t v[16], got[16], bias[6] = {-5, 1234, 1 << 30, 0, -77, -32768};
    init_eff(t);
    for (uint32_t q = 0; q < nw; q++) /* codes -128..127 with residuals at both ends of their range */
        v[q] = (int32_t)((q * 37u) % 256u) * 65536 - 128 * 65536 + (q & 1u ? 32767 : -32768);
    CHECK(qparams_total(&P, 0, 0) == nw && qparams_total(&P, 0, 1) == 6 && qparams_total(&P, 1, 0) == 0);
    CHECK(wset(0, QPARAMS_KIND, nw, 0, v, (uint16_t)nw, &why) == 0);
    CHECK(wset(1, QPARAMS_KIND, 6, 0, bias, 6, &why) == 0);
    CHECK(eff_consistent(t));
    hp_reset(&info);
    qparams_send(&P);
    CHECK(wdata(0, got, 16) == nw && memcmp(got, v, 4 * nw) == 0);
    CHECK(wdata(1, got, 16) == 6 && memcmp(got, bias, sizeof bias) == 0);
    CHECK(B[1] == 1 << 30 && B[2] == -77 && BRES[2] == -32768);
}

static void t_qparams_round_trip(void)
{
    round_trip(0, 0);
    round_trip(0, 2);       /* sparse: rows 0 and 2 only, compact */
    round_trip(OUT_C, 0);   /* depthwise copy: tap k of channel o at W[k * OUT_C + o] */
    round_trip(OUT_C, 2);
    CHECK(W[1 * OUT_C + 2] == (int8_t)(((1 + 4) * 37 % 256) - 128)); /* trained row 1 is channel 2, tap 1 */
}

static void t_qparams_refuse(void)
{
    const char *why = "";
    int32_t ok[4] = {0, 0, 0, 0}, hi[1] = {127 * 65536 + 32768}, lo[1] = {-128 * 65536 - 32769};
    int32_t big_bias[2] = {(1 << 30) + 1, 0}, bad_res[2] = {5, 32768};
    int8_t before[OUT_C * ROW];
    qtop_t *t = make_plan(0, 0);
    init_eff(t);
    memcpy(before, W, sizeof W);
    CHECK(wset(0, 0, 12, 0, ok, 4, &why) == -1 && strstr(why, "kind 1"));
    CHECK(wset(0, QPARAMS_KIND, 12, 0, hi, 1, &why) == -1 && strstr(why, "outside its range"));
    CHECK(wset(0, QPARAMS_KIND, 12, 0, lo, 1, &why) == -1 && strstr(why, "outside its range"));
    CHECK(wset(1, QPARAMS_KIND, 6, 0, big_bias, 2, &why) == -1 && strstr(why, "outside its range"));
    CHECK(wset(1, QPARAMS_KIND, 6, 0, bad_res, 2, &why) == -1 && strstr(why, "outside its range"));
    CHECK(wset(1, QPARAMS_KIND, 6, 1, ok, 2, &why) == -1 && strstr(why, "pairs"));
    CHECK(wset(0, QPARAMS_KIND, 13, 0, ok, 1, &why) == -1 && strstr(why, "outside the tensor"));
    CHECK(wset(0, QPARAMS_KIND, 12, 10, ok, 4, &why) == -1 && strstr(why, "outside the tensor"));
    CHECK(wset(2, QPARAMS_KIND, 12, 0, ok, 1, &why) == -1 && strstr(why, "no such trainable tensor"));
    t->flags = QTF_TRAIN_B;
    CHECK(wset(0, QPARAMS_KIND, 12, 0, ok, 1, &why) == -1 && strstr(why, "no such trainable tensor"));
    CHECK(memcmp(before, W, sizeof W) == 0 && eff_consistent(t));
}

static void t_qparams_keep(void)
{
    static uint8_t arena[256] __attribute__((aligned(4)));
    qtop_t *t = make_plan(0, 2);
    t->w_ram = (int8_t *)arena;            /* 8 codes: 2 rows of 4 */
    t->w_res = (uint16_t *)(arena + 16);   /* 8 residuals */
    t->b_ram = (int32_t *)(arena + 64);    /* 3 biases */
    t->b_res = (int16_t *)(arena + 80);    /* 3 residuals (8 bytes with padding) */
    t->eff = (int32_t *)(arena + 96);      /* 3 */
    for (uint32_t w = 0; w < 256; w += 4) {
        int want = w < 8 || (w >= 16 && w < 32) || (w >= 64 && w < 76) || (w >= 80 && w < 88) || (w >= 96 && w < 108);
        CHECK(qparams_keep(&P, arena + w) == want);
    }
    P.train = 0;
    CHECK(qparams_keep(&P, arena) == 0);
}

const test_case_t qparams_tests[] = {
    {"int8 params: WSET words become codes and residuals, bias_eff follows, WGET returns them", t_qparams_round_trip},
    {"int8 params: bad kind, ranges and slices refused, nothing written", t_qparams_refuse},
    {"int8 params: a resumed run keeps exactly the trainable state's words", t_qparams_keep},
    {NULL, NULL},
};
