/* An int8 plan's trainable state over the wire: see qparams.h. */
#include "qparams.h"
#include "formats.h"
#include "msg.h"
#include "params.h"
#include "qops.h"
#include "qtrain.h"

#define Q16 65536
#define W_LO (-128 * Q16 - Q16 / 2)    /* the smallest V whose code rounds to -128 */
#define W_HI (127 * Q16 + Q16 / 2 - 1) /* the largest whose code rounds to 127 */
#define BIAS_MAX (1 << 30)

static uint32_t rows_of(const qtop_t *t)
{
    return t->n_sel ? t->n_sel : t->out_c;
}

static uint32_t total_of(const qtop_t *t, uint32_t param)
{
    if (param == 0 && (t->flags & QTF_TRAIN_W))
        return rows_of(t) * t->row;
    if (param == 1 && (t->flags & QTF_TRAIN_B))
        return 2u * t->out_c;
    return 0;
}

uint32_t qparams_total(const qplan_t *p, uint32_t op, uint32_t param)
{
    const qtop_t *t = op < p->n_ops ? qtrain_top(p, op) : 0;
    return t ? total_of(t, param) : 0;
}

/* trained weight q in GRAD order (row j = q / row of the trained rows, tap q % row); its residual is w_res[q] */
static int8_t *code_at(const qtop_t *t, uint32_t q)
{
    uint32_t j = q / t->row;
    if (t->w_stride) /* depthwise: the whole tensor, channel-interleaved */
        return t->w_ram + (q % t->row) * t->w_stride + (t->n_sel ? t->sel[j] : j);
    return t->w_ram + q;
}

static uint32_t word_at(const qtop_t *t, uint32_t param, uint32_t q)
{
    if (param == 0)
        return (uint32_t)(*code_at(t, q) * Q16 + (int32_t)t->w_res[q] - (int32_t)QGRAD_RES_ZERO);
    return q & 1u ? (uint32_t)(int32_t)t->b_res[q / 2u] : (uint32_t)t->b_ram[q / 2u];
}

static int overlaps(const uint8_t *w, const void *p, uint32_t bytes)
{
    const uint8_t *a = p;
    return a && w + 4 > a && w < a + bytes;
}

int qparams_keep(const void *plan, const uint8_t *w)
{
    const qplan_t *p = plan;
    for (uint32_t i = p->first_bwd; i <= p->bwd_top; i++) {
        const qtop_t *t = qtrain_top(p, i);
        if (!t || !t->eff)
            continue;
        if (overlaps(w, t->eff, 4u * t->out_c))
            return 1;
        if ((t->flags & QTF_TRAIN_W) && (overlaps(w, t->w_ram, (t->w_stride ? t->out_c : rows_of(t)) * t->row) ||
                                         overlaps(w, t->w_res, 2u * rows_of(t) * t->row)))
            return 1;
        if ((t->flags & QTF_TRAIN_B) && (overlaps(w, t->b_ram, 4u * t->out_c) || overlaps(w, t->b_res, 2u * t->out_c)))
            return 1;
    }
    return 0;
}

/* 1 when every word of a body is inside its range: weights V in [W_LO, W_HI], bias pairs (code, residual) */
static int words_ok(uint32_t param, const uint8_t *v, uint32_t count)
{
    for (uint32_t j = 0; j < count; j++) {
        int32_t x = (int32_t)le32(v + 4u * j);
        if (param == 0 ? x < W_LO || x > W_HI
                       : j & 1u ? x < -Q16 / 2 || x >= Q16 / 2 : x < -BIAS_MAX || x > BIAS_MAX)
            return 0;
    }
    return 1;
}

/* writes checked words; bias_eff follows each change of a code, as an update does */
static void write_words(const qplan_t *p, uint32_t op, const qtop_t *t, uint32_t param, uint32_t offset,
                        const uint8_t *v, uint32_t count)
{
    const qnode_t *n = &p->node[op];
    int32_t lo, hi, zp;
    qnode_kind(n)->clamp(n, &lo, &hi, &zp);
    for (uint32_t j = 0; j < count; j++) {
        uint32_t q = offset + j;
        int32_t x = (int32_t)le32(v + 4u * j);
        if (param == 0) {
            int8_t *c = code_at(t, q);
            int32_t code = (int32_t)((uint32_t)(x - W_LO) >> 16) - 128; /* floor((x + 2^15) / 2^16) */
            t->eff[t->n_sel ? t->sel[q / t->row] : q / t->row] -= zp * (code - *c);
            *c = (int8_t)code;
            t->w_res[q] = (uint16_t)(x - code * Q16 + (int32_t)QGRAD_RES_ZERO);
        } else if (q & 1u) {
            t->b_res[q / 2u] = (int16_t)x;
        } else {
            t->eff[q / 2u] += x - t->b_ram[q / 2u];
            t->b_ram[q / 2u] = x;
        }
    }
}

int qparams_set(const qplan_t *p, const frame_t *f, const char **why)
{
    wslice_t s;
    if (params_slice(f, &s, why) || !params_slice_ok(f, &s, QPARAMS_KIND, qparams_total(p, s.layer, s.param), why))
        return -1;
    if (s.param == 1 && ((s.offset | s.count) & 1u))
        *why = "WSET: bias words come in (code, residual) pairs: offset and count must be even";
    else if (!words_ok(s.param, s.values, s.count))
        *why = "WSET: a word outside its range (weight beyond the int8 codes, bias code beyond 2^30, residual "
               "beyond int16)";
    else {
        write_words(p, s.layer, qtrain_top(p, s.layer), s.param, s.offset, s.values, s.count);
        return 0;
    }
    return -1;
}

static void send_tensor(uint8_t op, uint8_t param, const qtop_t *t, uint32_t n)
{
    for (uint32_t off = 0; off < n; off += PARAMS_CHUNK) {
        uint32_t count = params_wdata_begin(op, param, QPARAMS_KIND, n, off);
        for (uint32_t j = 0; j < count; j++)
            msg_u32(word_at(t, param, off + j));
        msg_send();
    }
}

void qparams_send(const qplan_t *p)
{
    for (uint32_t i = p->first_bwd; i <= p->bwd_top; i++) {
        const qtop_t *t = qtrain_top(p, i);
        for (uint32_t k = 0; t && k < 2u; k++) {
            uint32_t n = total_of(t, k);
            if (n)
                send_tensor((uint8_t)i, (uint8_t)k, t, n);
        }
    }
}
