/* Plan and dataset validation: a good blob loads, each kind of damage gives its fault. */
#include <string.h>
#include "harness.h"
#include "fops.h"
#include "blobs.h"
#include "msg.h"
#include "wire.h"

static plan_t plan;
static built_t b;

static int load(fault_t *f)
{
    mem_window_t w = fx_window();
    return plan_load(&plan, &w, FX_WIN_ADDR, fx_arena, FX_ARENA_BYTES, f);
}

static uint8_t *rec(uint32_t i)
{
    return fx_win + PLAN_HEADER + i * PLAN_RECORD;
}

static void t_valid(void)
{
    fault_t f;
    fx_mlp(&b, 6, 5, 3, 0, 20);
    CHECK(load(&f) == 0);
    CHECK(plan.n_layers == 3 && plan.n_classes == 3 && plan.plan_hash == 0xC0FFEEu);
    CHECK(plan.layer[0].w_ram == (float *)(void *)(fx_arena + b.w_ram[0]));
    CHECK(plan.layer[1].in == plan.layer[1].out && plan.layer[1].din == plan.layer[1].dout);
    CHECK(plan.data.n_train == 20 && plan.data.sample_bytes == 6);
    fx_mlp(&b, 6, 5, 3, 2, 20); /* last layer only: first layer frozen in flash */
    CHECK(load(&f) == 0);
    CHECK(plan.layer[0].w_ram == NULL && (const uint8_t *)plan.layer[0].w >= fx_win);
}

static void expect(uint32_t code, const char *why)
{
    fault_t f;
    CHECK(load(&f) != 0);
    CHECK(f.code == code);
    if (f.code != code || !f.text)
        return;
    th_check(1, __FILE__, __LINE__, why);
}

static void t_bad_magic(void)
{
    fx_mlp(&b, 6, 5, 3, 0, 20);
    put_le32(fx_win, 0x12345678u);
    blob_fix_crc(fx_win);
    expect(FAULT_PLAN, "magic");
}

static void t_bad_crc(void)
{
    fx_mlp(&b, 6, 5, 3, 0, 20);
    fx_win[b.plan_bytes - 1] ^= 1;
    expect(FAULT_PLAN, "crc");
    fx_mlp(&b, 6, 5, 3, 0, 20);
    fx_win[b.data_off + DATA_HEADER] ^= 1;
    expect(FAULT_DATASET, "dataset crc");
}

static void t_arena(void)
{
    fault_t f;
    fx_mlp(&b, 6, 5, 3, 0, 20);
    put_le32(fx_win + TPLN_H_ARENA_BYTES, FX_ARENA_BYTES + 4u); /* needs more than the device has */
    blob_fix_crc(fx_win);
    CHECK(load(&f) != 0 && f.code == FAULT_ARENA && f.arg0 == FX_ARENA_BYTES + 4u && f.arg1 == FX_ARENA_BYTES);
    fx_mlp(&b, 6, 5, 3, 0, 20);
    put_le32(rec(2) + 36, b.arena_need - 4u); /* logits run past arena_bytes */
    blob_fix_crc(fx_win);
    expect(FAULT_PLAN, "range");
    fx_mlp(&b, 6, 5, 3, 0, 20);
    put_le32(rec(0) + 24, 0xFFFFFFF0u); /* offset near 2^32: no wrap-around */
    blob_fix_crc(fx_win);
    expect(FAULT_PLAN, "wrap");
}

static void t_shape(void)
{
    fx_mlp(&b, 6, 5, 3, 0, 20);
    put_le16(rec(2) + 8, 4); /* dense in_c 4, previous output 5 */
    blob_fix_crc(fx_win);
    expect(FAULT_PLAN, "shape");
    fx_mlp(&b, 6, 5, 3, 0, 20);
    put_le16(rec(2) + 14, 4); /* last layer output differs from n_classes */
    blob_fix_crc(fx_win);
    expect(FAULT_PLAN, "classes");
    fx_mlp(&b, 6, 5, 3, 0, 20);
    rec(1)[0] = 9; /* unknown op */
    blob_fix_crc(fx_win);
    expect(FAULT_PLAN, "op");
    fx_mlp(&b, 6, 5, 3, 0, 20);
    put_le32(rec(2) + 32, 0); /* input is not the previous output */
    blob_fix_crc(fx_win);
    expect(FAULT_PLAN, "chain");
    fx_mlp(&b, 6, 5, 3, 0, 20);
    rec(2)[1] &= (uint8_t)~LF_NEED_DX; /* gradient cannot reach layer 0 */
    blob_fix_crc(fx_win);
    expect(FAULT_PLAN, "need_dx");
}

static void t_dataset(void)
{
    uint8_t *d;
    fx_mlp(&b, 6, 5, 3, 0, 20);
    d = fx_win + b.data_off;
    put_le32(d, 0);
    blob_fix_crc(d);
    expect(FAULT_DATASET, "magic");
    fx_mlp(&b, 6, 5, 3, 0, 20);
    d = fx_win + b.data_off;
    d[b.data_bytes - 1] = 7; /* last eval label >= n_classes */
    blob_fix_crc(d);
    expect(FAULT_DATASET, "label");
    fx_mlp(&b, 6, 5, 3, 0, 20);
    d = fx_win + b.data_off;
    put_le16(d + TDST_H_C, 7); /* sample shape */
    blob_fix_crc(d);
    expect(FAULT_DATASET, "shape");
    fx_mlp(&b, 6, 5, 3, 0, 20);
    put_le32(fx_win + TPLN_H_DATASET_ADDR, FX_WIN_ADDR + FX_WIN_BYTES - 8u); /* header outside the window */
    blob_fix_crc(fx_win);
    expect(FAULT_DATASET, "address");
}

static void t_channels(void)
{
    static const uint16_t ch[2] = {1, 3}, bad[2] = {3, 1};
    fault_t f;
    fx_mlp_sparse(&b, 6, 5, 3, 20, ch, 2);
    CHECK(load(&f) == 0);
    CHECK(plan.layer[0].ws.idx && plan.layer[0].ws.n_sel == 2 && plan.layer[0].ws.row == 6);
    CHECK(plan.layer[0].ws.idx[0] == 1 && plan.layer[0].ws.idx[1] == 3);
    CHECK(plan.layer[0].ws.sel == plan.layer[0].w_ram && plan.layer[0].ws.full == plan.layer[0].w_init);
    CHECK(plan.layer[0].w == plan.layer[0].w_init && !plan.layer[2].ws.idx);
    CHECK(b.w_ram[1] == PLAN_NONE && b.b_ram[0] == b.w_ram[0] + 2u * 6u * 4u); /* compact copy: 2 rows */
    fx_mlp_sparse(&b, 6, 5, 3, 20, bad, 2); /* not ascending */
    expect(FAULT_PLAN, "order");
    fx_mlp_sparse(&b, 6, 5, 3, 20, ch, 2);
    put_le16(fx_win + le32(rec(0) + 56) + 2, 5); /* channel 5 of 5 */
    blob_fix_crc(fx_win);
    expect(FAULT_PLAN, "range");
    fx_mlp_sparse(&b, 6, 5, 3, 20, ch, 2);
    put_le16(fx_win + TPLN_H_FLAGS, 0); /* a list without the header flag (an old reader would ignore it) */
    blob_fix_crc(fx_win);
    expect(FAULT_PLAN, "flag");
    fx_mlp_sparse(&b, 6, 5, 3, 20, ch, 2);
    rec(0)[1] &= (uint8_t)~LF_TRAIN_W; /* a list on frozen weights */
    blob_fix_crc(fx_win);
    expect(FAULT_PLAN, "frozen");
    fx_mlp_sparse(&b, 6, 5, 3, 20, ch, 2);
    put_le16(rec(0) + 60, 6); /* more channels than out_c */
    blob_fix_crc(fx_win);
    expect(FAULT_PLAN, "count");
    fx_mlp_sparse(&b, 6, 5, 3, 20, ch, 2);
    put_le32(rec(0) + 56, b.plan_bytes - 2u); /* list runs past the blob */
    blob_fix_crc(fx_win);
    expect(FAULT_PLAN, "outside");
    fx_mlp_sparse(&b, 6, 5, 3, 20, ch, 2);
    put_le32(rec(0) + 24, b.arena_need - 8u); /* the compact copy runs past the arena */
    blob_fix_crc(fx_win);
    expect(FAULT_PLAN, "copy");
}

/* every fp32 op code has one complete kind in the registry */
static void t_fop_registry(void)
{
    static const char *const names[OP_COUNT] = {NULL, "DENSE", "CONV2D", "RELU", "MAXPOOL2D", "DWCONV2D", "GAVGPOOL", "ADD"};
    CHECK(fop_kinds[0] == NULL);
    for (uint8_t op = 1; op < OP_COUNT; op++) {
        const fop_kind_t *k = fop_kinds[op];
        CHECK(k != NULL && strcmp(k->name, names[op]) == 0);
        if (k)
            CHECK(k->check_dims && k->row && k->forward && k->backward);
    }
}

const test_case_t plan_tests[] = {
    {"plan: every fp32 op code has one complete kind in the registry", t_fop_registry},
    {"plan: valid blobs load (full and last-layer-only)", t_valid},
    {"plan: bad magic rejected", t_bad_magic},
    {"plan/dataset: bad CRC rejected", t_bad_crc},
    {"plan: arena too small / range overflow rejected", t_arena},
    {"plan: shape and chain mismatches rejected", t_shape},
    {"dataset: magic, labels, shape, address rejected", t_dataset},
    {"plan: channel lists (sparse update) load; order, range, flag, frozen, size rejected", t_channels},
    {NULL, NULL},
};
