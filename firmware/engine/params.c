/* Trainable fp32 parameters over the wire: see params.h. */
#include <string.h>
#include "params.h"
#include "formats.h"
#include "msg.h"

float *params_tensor(const plan_t *p, uint32_t layer, uint32_t param, uint32_t *n)
{
    const layer_t *L;
    if (layer >= p->n_layers)
        return NULL;
    L = &p->layer[layer];
    if (param == 0 && (L->flags & LF_TRAIN_W)) {
        *n = (L->ws.idx ? L->ws.n_sel : L->s.out_c) * L->ws.row;
        return L->w_ram;
    }
    if (param == 1 && (L->flags & LF_TRAIN_B)) {
        *n = L->s.out_c;
        return L->b_ram;
    }
    return NULL;
}

int params_keep(const void *plan, const uint8_t *w)
{
    const plan_t *p = plan;
    for (uint32_t i = 0; i < p->n_layers; i++)
        for (uint32_t k = 0; k < 2u; k++) {
            uint32_t n = 0;
            const uint8_t *t = (const uint8_t *)params_tensor(p, i, k, &n);
            if (t && w + 4 > t && w < t + n * sizeof(float))
                return 1;
        }
    return 0;
}

int params_slice(const frame_t *f, wslice_t *s, const char **why)
{
    const uint8_t *b = f->body;
    if (f->len < MSG_WPARAM_HEAD_SIZE) {
        *why = "WSET body shorter than its 16-byte head";
        return -1;
    }
    *s = (wslice_t){b[MSG_WPARAM_HEAD_LAYER], b[MSG_WPARAM_HEAD_PARAM], b[MSG_WPARAM_HEAD_KIND],
                    le32(b + MSG_WPARAM_HEAD_TOTAL), le32(b + MSG_WPARAM_HEAD_OFFSET), le16(b + MSG_WPARAM_HEAD_COUNT),
                    b + MSG_WPARAM_HEAD_SIZE};
    return 0;
}

int params_slice_ok(const frame_t *f, const wslice_t *s, uint8_t kind, uint32_t n, const char **why)
{
    if (s->kind != kind)
        *why = kind ? "WSET: an int8 plan takes kind 1 frames (int32 words)"
                    : "WSET: an fp32 plan takes kind 0 frames (f32 values)";
    else if (s->count > PARAMS_CHUNK || f->len != MSG_WPARAM_HEAD_SIZE + 4u * s->count)
        *why = "WSET: count disagrees with the body length (at most 240 values)";
    else if (!n)
        *why = "WSET: no such trainable tensor in this plan";
    else if (s->total != n || s->offset > n || s->count > n - s->offset)
        *why = "WSET: total, offset or count outside the tensor";
    else
        return 1;
    return 0;
}

int params_set(const plan_t *p, const frame_t *f, const char **why)
{
    wslice_t s;
    uint32_t n = 0;
    float *t;
    if (params_slice(f, &s, why))
        return -1;
    t = params_tensor(p, s.layer, s.param, &n);
    if (!params_slice_ok(f, &s, 0, t ? n : 0, why))
        return -1;
    for (uint32_t j = 0; j < s.count; j++) {
        uint32_t u = le32(s.values + 4u * j);
        memcpy(t + s.offset + j, &u, sizeof u);
    }
    return 0;
}

uint32_t params_wdata_begin(uint8_t layer, uint8_t param, uint8_t kind, uint32_t total, uint32_t off)
{
    uint32_t count = total - off < PARAMS_CHUNK ? total - off : PARAMS_CHUNK;
    msg_begin(MSG_WDATA);
    msg_u8(layer);
    msg_u8(param);
    msg_u8(kind);
    msg_u8(0);
    msg_u32(total);
    msg_u32(off);
    msg_u16((uint16_t)count);
    msg_u16(0);
    return count;
}

static void send_tensor(uint8_t layer, uint8_t param, const float *t, uint32_t n)
{
    for (uint32_t off = 0; off < n; off += PARAMS_CHUNK) {
        uint32_t count = params_wdata_begin(layer, param, 0, n, off); /* kind 0: f32 values */
        for (uint32_t j = 0; j < count; j++)
            msg_f32(t[off + j]);
        msg_send();
    }
}

void params_send(const plan_t *p)
{
    for (uint32_t i = 0; i < p->n_layers; i++)
        for (uint32_t k = 0; k < 2u; k++) {
            uint32_t n = 0;
            const float *t = params_tensor(p, i, k, &n);
            if (t)
                send_tensor((uint8_t)i, (uint8_t)k, t, n);
        }
}
