#include <string.h>
#include "blobs.h"
#include "crc32.h"
#include "wire.h"

static uint32_t arena_cur;
static uint16_t plan_flags;

static uint32_t alloc(uint32_t floats)
{
    uint32_t off = arena_cur;
    arena_cur += floats * 4u;
    return off;
}

static uint32_t numel(const uint16_t *d)
{
    return (uint32_t)d[0] * d[1] * d[2];
}

static uint32_t put_floats(uint8_t *blob, uint32_t *len, const float *v, uint32_t n)
{
    uint32_t off = *len;
    memcpy(blob + off, v, n * 4u);
    *len += n * 4u;
    return off;
}

void blob_fix_crc(uint8_t *blob)
{
    put_le32(blob + TPLN_H_CRC32, 0);
    put_le32(blob + TPLN_H_CRC32, crc32(blob, le32(blob + TPLN_H_BLOB_BYTES)));
}

static uint32_t weight_numel(const spec_t *s)
{
    uint32_t kw = s->kw ? s->kw : s->k;
    if (s->op == OP_DENSE)
        return numel(s->in) * numel(s->out);
    if (s->op == OP_DWCONV2D)
        return (uint32_t)s->out[2] * s->k * kw;
    return (uint32_t)s->out[2] * s->k * kw * s->in[2];
}

/* forward activations, parameters and conv scratch */
static void place_layers(uint8_t *blob, uint32_t *len, const spec_t *L, uint32_t n, uint8_t *rec, built_t *out)
{
    uint32_t prev = 0;
    for (uint32_t i = 0; i < n; i++) {
        const spec_t *s = &L[i];
        uint8_t *r = rec + i * PLAN_RECORD;
        uint32_t in_off = i == 0 ? alloc(numel(s->in)) : prev, out_off = s->op == OP_RELU ? in_off : alloc(numel(s->out));
        r[TPLN_L_OP] = s->op;
        r[TPLN_L_FLAGS] = s->flags;
        r[TPLN_L_STRIDE] = s->stride;
        r[TPLN_L_K] = s->k;
        put_le16(r + TPLN_L_KW, s->kw);
        for (int j = 0; j < 3; j++) {
            put_le16(r + TPLN_L_IN_H + 2 * j, s->in[j]);
            put_le16(r + TPLN_L_OUT_H + 2 * j, s->out[j]);
        }
        put_le32(r + TPLN_L_W_SRC, s->w ? put_floats(blob, len, s->w, weight_numel(s)) : PLAN_NONE);
        put_le32(r + TPLN_L_B_SRC, s->b ? put_floats(blob, len, s->b, s->out[2]) : PLAN_NONE);
        out->w_ram[i] = (s->flags & LF_TRAIN_W) ? alloc(s->n_ch ? weight_numel(s) / s->out[2] * s->n_ch : weight_numel(s))
                                                : PLAN_NONE;
        if (s->n_ch) { /* channel list after the parameters, 4-byte aligned */
            put_le32(r + TPLN_L_CH_OFF, *len);
            put_le16(r + TPLN_L_CH_COUNT, s->n_ch);
            for (uint32_t j = 0; j < s->n_ch; j++)
                put_le16(blob + *len + 2u * j, s->ch[j]);
            *len += (2u * s->n_ch + 3u) & ~3u;
            plan_flags |= PF_CHANNEL_LISTS;
        }
        out->b_ram[i] = (s->flags & LF_TRAIN_B) ? alloc(s->out[2]) : PLAN_NONE;
        put_le32(r + TPLN_L_W_RAM, out->w_ram[i]);
        put_le32(r + TPLN_L_B_RAM, out->b_ram[i]);
        put_le32(r + TPLN_L_IN_OFF, in_off);
        put_le32(r + TPLN_L_OUT_OFF, out_off);
        put_le32(r + TPLN_L_DOUT_OFF, PLAN_NONE);
        put_le32(r + TPLN_L_DIN_OFF, PLAN_NONE);
        put_le32(r + TPLN_L_SCRATCH_OFF, ((s->op == OP_CONV2D || s->op == OP_DWCONV2D) && (s->flags & LF_TRAIN_W)) ? alloc(weight_numel(s) / s->out[2]) : PLAN_NONE);
        put_le16(r + TPLN_L_PAD_TOP, s->pad_top);
        put_le16(r + TPLN_L_PAD_LEFT, s->pad_left);
        prev = out_off;
    }
}

/* gradient buffers from the logits down: dout of layer i-1 is din of layer i */
static void place_gradients(const spec_t *L, uint32_t n, uint16_t first_bwd, uint8_t *rec, uint32_t dlogits)
{
    uint32_t dout = dlogits;
    for (uint32_t i = n; i-- > first_bwd;) {
        uint8_t *r = rec + i * PLAN_RECORD;
        put_le32(r + TPLN_L_DOUT_OFF, dout);
        if (L[i].flags & LF_NEED_DX) {
            uint32_t din = L[i].op == OP_RELU ? dout : alloc(numel(L[i].in));
            put_le32(r + TPLN_L_DIN_OFF, din);
            dout = din;
        }
        if (L[i].op == OP_ADD && L[i].k > first_bwd) /* the skip gradient, for the layer where the branch starts */
            put_le32(r + TPLN_L_SCRATCH_OFF, alloc(numel(L[i].in)));
    }
}

static uint32_t build_dataset(uint8_t *d, const dspec_t *s)
{
    uint32_t sb = (uint32_t)s->h * s->w * s->c, off = DATA_HEADER;
    memset(d, 0, DATA_HEADER);
    put_le32(d, DATA_MAGIC);
    put_le16(d + TDST_H_VERSION, 1);
    put_le16(d + TDST_H_HEADER_BYTES, DATA_HEADER);
    put_le32(d + TDST_H_N_TRAIN, s->n_train);
    put_le32(d + TDST_H_N_EVAL, s->n_eval);
    put_le16(d + TDST_H_H, s->h);
    put_le16(d + TDST_H_W, s->w);
    put_le16(d + TDST_H_C, s->c);
    put_le16(d + TDST_H_N_CLASSES, s->n_classes);
    memcpy(d + 32, &s->scale, 4);
    memcpy(d + 36, &s->offset, 4);
    put_le32(d + TDST_H_X_TRAIN_OFF, DATA_HEADER);
    memcpy(d + off, s->xt, s->n_train * sb);
    off = (off + s->n_train * sb + 3u) & ~3u;
    memcpy(d + off, s->yt, s->n_train);
    off = (off + s->n_train + 3u) & ~3u;
    memcpy(d + off, s->xe, s->n_eval * sb);
    off = (off + s->n_eval * sb + 3u) & ~3u;
    memcpy(d + off, s->ye, s->n_eval);
    off += s->n_eval;
    put_le32(d + TDST_H_BLOB_BYTES, off);
    blob_fix_crc(d);
    return off;
}

void build_blobs(uint8_t *win, uint32_t win_addr, const spec_t *L, uint32_t n, uint16_t n_classes,
                 uint16_t first_bwd, const dspec_t *d, built_t *out)
{
    uint32_t len = PLAN_HEADER + n * PLAN_RECORD, input, dlogits;
    memset(win, 0, len);
    arena_cur = 0;
    plan_flags = 0;
    place_layers(win, &len, L, n, win + PLAN_HEADER, out);
    input = 0; /* the first allocation */
    dlogits = alloc(n_classes);
    place_gradients(L, n, first_bwd, win + PLAN_HEADER, dlogits);
    out->plan_bytes = len;
    out->data_off = (len + 15u) & ~15u;
    out->arena_need = arena_cur;
    put_le32(win, PLAN_MAGIC);
    put_le16(win + TPLN_H_VERSION, 1);
    put_le16(win + TPLN_H_HEADER_BYTES, PLAN_HEADER);
    put_le32(win + TPLN_H_BLOB_BYTES, len);
    put_le32(win + TPLN_H_PLAN_HASH, 0xC0FFEEu);
    put_le32(win + TPLN_H_ARENA_BYTES, arena_cur);
    put_le32(win + TPLN_H_DATASET_ADDR, win_addr + out->data_off);
    put_le16(win + TPLN_H_N_LAYERS, (uint16_t)n);
    put_le16(win + TPLN_H_N_CLASSES, n_classes);
    put_le32(win + TPLN_H_LAYERS_OFFSET, PLAN_HEADER);
    put_le32(win + TPLN_H_INPUT_OFF, input);
    put_le32(win + TPLN_H_DLOGITS_OFF, dlogits);
    put_le16(win + TPLN_H_FIRST_BWD, first_bwd);
    put_le16(win + TPLN_H_FLAGS, plan_flags);
    blob_fix_crc(win);
    out->data_bytes = build_dataset(win + out->data_off, d);
}
