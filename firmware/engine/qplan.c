/* TQPL validation. Every field is distrusted: sizes are checked in 64-bit arithmetic before a pointer is formed,
 * activations must lie inside the plan's arena (itself no larger than the device's), constants inside the blob,
 * shapes must agree op by op, every op may only read tensors already produced, and the host-folded zero-point
 * corrections are recomputed and compared. Problems in an op answer FAULT 2 with the op index in arg0. */
#include <stddef.h>
#include <string.h>
#include "qplan.h"
#include "formats.h"
#include "blob.h"
#include "msg.h"
#include "qops.h"
#include "qparse.h"
#include "wire.h"

const uint32_t qplan_tables[4] = {sizeof(qnode_t), sizeof(qtop_t), sizeof(((qplan_t *)0)->pool), QTRAIN_MAX_TENSORS};



static float f32_at(const uint8_t *p)
{
    float v;
    memcpy(&v, p, sizeof v);
    return v;
}

int qp_in_blob(const qparse_t *c, uint32_t off, uint64_t bytes)
{
    return !(off & 3u) && off >= QPLAN_HEADER && off <= c->blob_bytes && bytes <= (uint64_t)(c->blob_bytes - off);
}

int qplan_is_tqpl(const mem_window_t *flash, uint32_t plan_addr)
{
    const uint8_t *h = blob_window_ptr(flash, plan_addr, 4);
    return h && le32(h + TQPL_H_MAGIC) == QPLAN_MAGIC;
}

/* ---- header and tensors ------------------------------------------------------------------------------------ */

static int check_header(qparse_t *c, const mem_window_t *win, uint32_t plan_addr, uint32_t arena_bytes)
{
    const uint8_t *h = blob_window_ptr(win, plan_addr, QPLAN_HEADER);
    qplan_t *p = c->p;
    fault_t *f = c->f;
    if (!h)
        return blob_fail(f, FAULT_PLAN, "qplan: address outside flash", plan_addr, 0);
    if (le32(h + TQPL_H_MAGIC) != QPLAN_MAGIC)
        return blob_fail(f, FAULT_PLAN, "qplan: bad magic", le32(h + TQPL_H_MAGIC), QPLAN_MAGIC);
    if (le16(h + TQPL_H_VERSION) != 1 || le16(h + TQPL_H_HEADER_BYTES) != QPLAN_HEADER)
        return blob_fail(f, FAULT_PLAN, "qplan: unsupported version or header size", le16(h + TQPL_H_VERSION), le16(h + TQPL_H_HEADER_BYTES));
    c->blob_bytes = le32(h + TQPL_H_BLOB_BYTES);
    c->blob = blob_window_ptr(win, plan_addr, c->blob_bytes);
    if (c->blob_bytes < QPLAN_HEADER || !c->blob)
        return blob_fail(f, FAULT_PLAN, "qplan: blob_bytes outside flash", c->blob_bytes, 0);
    if (blob_crc(h, c->blob_bytes) != le32(h + TQPL_H_CRC32))
        return blob_fail(f, FAULT_PLAN, "qplan: CRC mismatch", blob_crc(h, c->blob_bytes), le32(h + TQPL_H_CRC32));
    p->plan_hash = le32(h + TQPL_H_PLAN_HASH);
    p->arena_need = le32(h + TQPL_H_ARENA_BYTES);
    c->n_tensors = le16(h + TQPL_H_N_TENSORS);
    p->n_ops = le16(h + TQPL_H_N_OPS);
    c->tensors_off = le32(h + TQPL_H_TENSORS_OFFSET);
    c->ops_off = le32(h + TQPL_H_OPS_OFFSET);
    if (p->arena_need > arena_bytes)
        return blob_fail(f, FAULT_ARENA, "qplan: arena too small", p->arena_need, arena_bytes);
    if (c->n_tensors < 2 || c->n_tensors > QPLAN_MAX_TENSORS)
        return blob_fail(f, FAULT_PLAN, "qplan: n_tensors not in 2..512", c->n_tensors, 0);
    if (p->n_ops < 1 || p->n_ops > QPLAN_MAX_OPS)
        return blob_fail(f, FAULT_PLAN, "qplan: n_ops not in 1..64", p->n_ops, 0);
    p->node = (qnode_t *)(void *)p->pool;
    if (!qp_in_blob(c, c->tensors_off, (uint64_t)c->n_tensors * QPLAN_TENSOR) ||
        !qp_in_blob(c, c->ops_off, (uint64_t)p->n_ops * QPLAN_OP))
        return blob_fail(f, FAULT_PLAN, "qplan: tensor or op records outside blob", c->tensors_off, c->ops_off);
    c->flags = le16(h + TQPL_H_FLAGS);
    c->train_off = le32(h + TQPL_H_TRAIN_OFFSET);
    if (c->flags > 1u || (c->flags == 0) != (c->train_off == 0) ||
        (c->flags && !qp_in_blob(c, c->train_off, QPLAN_TRAIN_HEADER)))
        return blob_fail(f, FAULT_PLAN, "qplan: unknown header flags or training section outside blob", c->flags,
                    c->train_off);
    for (uint32_t j = TQPL_H_TAIL; j < QPLAN_HEADER; j++)
        if (h[j])
            return blob_fail(f, FAULT_PLAN, "qplan: reserved header bytes not zero", j, h[j]);
    return 0;
}

/* reads and checks tensor record idx; where = op index for faults (0xFFFF for the header) */
int qp_tensor(qparse_t *c, uint32_t where, uint32_t idx, qtinfo_t *t)
{
    const uint8_t *r;
    uint64_t count = 1;
    uint32_t esize;
    memset(t, 0, sizeof *t);
    if (idx >= c->n_tensors)
        return blob_fail(c->f, FAULT_PLAN, "qplan: tensor index out of range", where, idx);
    r = c->blob + c->tensors_off + idx * QPLAN_TENSOR;
    t->kind = r[TQPL_T_KIND];
    t->rank = r[TQPL_T_RANK];
    if (t->kind < QT_ACTIVATION || t->kind > QT_CONST_I32 || r[TQPL_T_RESERVED] || t->rank < 1 || t->rank > 4 ||
        (r[TQPL_T_FLAGS] && (r[TQPL_T_FLAGS] != 1u || t->kind == QT_ACTIVATION || !c->flags)))
        return blob_fail(c->f, FAULT_PLAN, "qplan: bad tensor kind, flags or rank", where, idx);
    for (uint32_t j = 0; j < 4; j++) {
        t->d[j] = le16(r + TQPL_T_DIMS0 + 2 * j);
        if (!t->d[j] || (j < 4u - t->rank && t->d[j] != 1))
            return blob_fail(c->f, FAULT_PLAN, "qplan: bad tensor dims", where, idx);
        count *= t->d[j];
    }
    esize = t->kind == QT_CONST_I32 ? 4u : 1u;
    t->count = (uint32_t)count;
    t->off = le32(r + TQPL_T_OFFSET);
    t->bytes = le32(r + TQPL_T_BYTES);
    t->zp = (int32_t)le32(r + TQPL_T_ZERO_POINT);
    t->scale = f32_at(r + TQPL_T_SCALE);
    if (count * esize != t->bytes)
        return blob_fail(c->f, FAULT_PLAN, "qplan: tensor bytes differ from its dims", where, idx);
    if (t->kind == QT_ACTIVATION) {
        if ((t->off & 3u) || t->off > c->p->arena_need || t->bytes > c->p->arena_need - t->off)
            return blob_fail(c->f, FAULT_PLAN, "qplan: activation outside arena", where, idx);
        if (t->zp < -128 || t->zp > 127)
            return blob_fail(c->f, FAULT_PLAN, "qplan: activation zero point outside int8", where, idx);
        t->act = (int8_t *)(void *)(c->arena + t->off);
    } else {
        if (!qp_in_blob(c, t->off, t->bytes))
            return blob_fail(c->f, FAULT_PLAN, "qplan: constant outside blob", where, idx);
        t->data = c->blob + t->off;
    }
    if (le32(r + TQPL_T_SCALES_OFFSET) != 0xFFFFFFFFu) { /* per-channel scales (reserved for QAS): u32 n then n f32 */
        uint32_t so = le32(r + TQPL_T_SCALES_OFFSET);
        if (!qp_in_blob(c, so, 4) || !qp_in_blob(c, so, 4u + 4ull * le32(c->blob + so)) || le32(c->blob + so) > t->count)
            return blob_fail(c->f, FAULT_PLAN, "qplan: channel scales outside blob", where, idx);
    }
    return 0;
}

static int is_ready(const qparse_t *c, uint32_t idx)
{
    return (c->ready[idx >> 3] >> (idx & 7u)) & 1u;
}

static void set_ready(qparse_t *c, uint32_t idx)
{
    c->ready[idx >> 3] = (uint8_t)(c->ready[idx >> 3] | (1u << (idx & 7u)));
}

/* an activation input an earlier op (or the sample load) has produced */
int qp_input(qparse_t *c, uint32_t op, uint32_t idx, qtinfo_t *t)
{
    if (qp_tensor(c, op, idx, t))
        return -1;
    if (t->kind != QT_ACTIVATION || !is_ready(c, idx))
        return blob_fail(c->f, FAULT_PLAN, "qplan: op input is not an activation produced earlier", op, idx);
    return 0;
}

static int output(qparse_t *c, uint32_t op, uint32_t idx, qtinfo_t *t)
{
    if (qp_tensor(c, op, idx, t))
        return -1;
    if (t->kind != QT_ACTIVATION || is_ready(c, idx))
        return blob_fail(c->f, FAULT_PLAN, "qplan: op output is not a fresh activation", op, idx);
    return 0;
}

int qp_disjoint(const qtinfo_t *a, const qtinfo_t *b)
{
    return a->off + a->bytes <= b->off || b->off + b->bytes <= a->off;
}

/* ---- checks the op kinds (qops/) share --------------------------------------------------------------------- */


static uint32_t out_size(uint32_t in, uint32_t k, uint32_t stride, int same)
{
    if (same)
        return (in + stride - 1) / stride;
    return in >= k ? (in - k) / stride + 1 : 0;
}

static uint32_t same_pad(uint32_t in, uint32_t out, uint32_t k, uint32_t stride)
{
    int64_t total = ((int64_t)out - 1) * stride + k - in;
    return total > 0 ? (uint32_t)(total / 2) : 0;
}

/* spatial geometry shared by conv, depthwise and pooling: kernel, stride, padding and output size */
int qp_geometry(qparse_t *c, const qoprec_t *o, uint32_t kh, uint32_t kw)
{
    const uint8_t *r = o->r;
    const qtinfo_t *x = &o->x, *y = &o->y;
    if (x->rank != 4 || y->rank != 4 || !r[TQPL_O_STRIDE_H] || !r[TQPL_O_STRIDE_W] || !kh || !kw || r[TQPL_O_K_H] != kh || r[TQPL_O_K_W] != kw || r[TQPL_O_PADDING] > 1)
        return blob_fail(c->f, FAULT_PLAN, "qplan: bad kernel, stride or padding", o->i, 0);
    if (out_size(x->d[1], kh, r[TQPL_O_STRIDE_H], o->same) != y->d[1] || out_size(x->d[2], kw, r[TQPL_O_STRIDE_W], o->same) != y->d[2])
        return blob_fail(c->f, FAULT_PLAN, "qplan: output shape differs from kernel/stride/padding", o->i, 0);
    if (le16(r + TQPL_O_PAD_TOP) != (o->same ? same_pad(x->d[1], y->d[1], kh, r[TQPL_O_STRIDE_H]) : 0u) ||
        le16(r + TQPL_O_PAD_LEFT) != (o->same ? same_pad(x->d[2], y->d[2], kw, r[TQPL_O_STRIDE_W]) : 0u))
        return blob_fail(c->f, FAULT_PLAN, "qplan: padding inconsistent", o->i, le16(r + TQPL_O_PAD_TOP));
    return 0;
}

int qp_act(qparse_t *c, const qoprec_t *o, int32_t *lo, int32_t *hi)
{
    *lo = (int16_t)le16(o->r + TQPL_O_ACT_MIN);
    *hi = (int16_t)le16(o->r + TQPL_O_ACT_MAX);
    if (*lo < -128 || *hi > 127 || *lo > *hi)
        return blob_fail(c->f, FAULT_PLAN, "qplan: activation range outside int8", o->i, 0);
    return 0;
}

/* n (multiplier, shift) pairs at rq_off */
int qp_rq(qparse_t *c, const qoprec_t *o, uint32_t n, const int32_t **rq)
{
    uint32_t off = le32(o->r + TQPL_O_RQ_OFFSET);
    if (!qp_in_blob(c, off, 8ull * n))
        return blob_fail(c->f, FAULT_PLAN, "qplan: requantisation table outside blob", o->i, off);
    *rq = (const int32_t *)(const void *)(c->blob + off);
    for (uint32_t j = 0; j < n; j++)
        if ((*rq)[2 * j] < 0 || (*rq)[2 * j + 1] < -31 || (*rq)[2 * j + 1] > 30)
            return blob_fail(c->f, FAULT_PLAN, "qplan: multiplier or shift out of range", o->i, j);
    return 0;
}

/* weights (const int8) and optional bias (const int32, out_c values) */
int qp_wb(qparse_t *c, qoprec_t *o, uint32_t out_c)
{
    uint16_t bi = le16(o->r + TQPL_O_IN2);
    if (qp_tensor(c, o->i, le16(o->r + TQPL_O_IN1), &o->w))
        return -1;
    if (o->w.kind != QT_CONST_I8)
        return blob_fail(c->f, FAULT_PLAN, "qplan: weights are not a constant int8 tensor", o->i, 0);
    if (bi == QPLAN_NONE16)
        return 0;
    if (qp_tensor(c, o->i, bi, &o->b))
        return -1;
    if (o->b.kind != QT_CONST_I32 || o->b.count != out_c)
        return blob_fail(c->f, FAULT_PLAN, "qplan: bias is not out_c constant int32 values", o->i, 0);
    return 0;
}

/* bias_eff[oc] must be bias[oc] - zp_in * sum(w[oc]); w[oc] is n values spaced by step starting at oc * first */
int qp_fold(qparse_t *c, const qoprec_t *o, uint32_t out_c, uint32_t first, uint32_t n, uint32_t step,
                      const int32_t **eff)
{
    uint32_t off = le32(o->r + TQPL_O_BIAS_EFF_OFFSET);
    const int8_t *w = (const int8_t *)(const void *)o->w.data;
    const int32_t *b = o->b.data ? (const int32_t *)(const void *)o->b.data : NULL;
    if (!qp_in_blob(c, off, 4ull * out_c))
        return blob_fail(c->f, FAULT_PLAN, "qplan: folded bias outside blob", o->i, off);
    *eff = (const int32_t *)(const void *)(c->blob + off);
    for (uint32_t oc = 0; oc < out_c; oc++) {
        int32_t s = 0;
        for (uint32_t j = 0; j < n; j++)
            s += w[oc * first + j * step];
        if ((*eff)[oc] != (b ? b[oc] : 0) - o->x.zp * s)
            return blob_fail(c->f, FAULT_PLAN, "qplan: folded bias differs from bias - zp_in * sum(w)", o->i, oc);
    }
    return 0;
}

static int parse_op(qparse_t *c, uint32_t i, qnode_t *n)
{
    qoprec_t o;
    memset(&o, 0, sizeof o);
    memset(n, 0, sizeof *n);
    o.r = c->blob + c->ops_off + i * QPLAN_OP;
    o.i = i;
    n->op = o.r[TQPL_O_OP];
    o.per_channel = o.r[TQPL_O_FLAGS] & 1u;
    o.same = o.r[TQPL_O_PADDING] == 1;
    if (!qop_kind(n->op))
        return blob_fail(c->f, FAULT_PLAN, "qplan: unknown op code", i, n->op);
    if ((o.r[TQPL_O_FLAGS] & ~0x31u) || ((o.r[TQPL_O_FLAGS] & 0x30u) && !c->flags))
        return blob_fail(c->f, FAULT_PLAN, "qplan: unknown op flags", i, o.r[TQPL_O_FLAGS]);
    for (uint32_t j = TQPL_O_TAIL; j < QPLAN_OP; j++)
        if (o.r[j])
            return blob_fail(c->f, FAULT_PLAN, "qplan: reserved op bytes not zero", i, j);
    if (qp_input(c, i, le16(o.r + TQPL_O_IN0), &o.x) || output(c, i, le16(o.r + TQPL_O_OUT), &o.y))
        return -1;
    n->x = o.x.act;
    n->y = o.y.act;
    n->n_out = o.y.count;
    if (qnode_kind(n)->forward && !qp_disjoint(&o.x, &o.y)) /* only an alias (no kernel) may share its input's bytes */
        return blob_fail(c->f, FAULT_PLAN, "qplan: output overlaps an input", i, 0);
    if (qnode_kind(n)->parse(c, &o, n))
        return -1;
    set_ready(c, le16(o.r + TQPL_O_OUT));
    return 0;
}

static int parse_graph(qparse_t *c)
{
    qplan_t *p = c->p;
    const uint8_t *h = c->blob;
    qtinfo_t in, out;
    uint16_t ii = le16(h + TQPL_H_INPUT), oi = le16(h + TQPL_H_OUTPUT);
    if (qp_tensor(c, 0xFFFFu, ii, &in) || in.kind != QT_ACTIVATION)
        return blob_fail(c->f, FAULT_PLAN, "qplan: graph input is not an activation", ii, 0);
    set_ready(c, ii);
    p->input = in.act;
    p->n_input = in.count;
    p->in_zp = in.zp;
    p->in_scale = in.scale;
    for (uint32_t i = 0; i < p->n_ops; i++)
        if (parse_op(c, i, &p->node[i]))
            return -1;
    if (qp_tensor(c, 0xFFFFu, oi, &out))
        return -1;
    if (out.act != p->node[p->n_ops - 1u].y || out.count != p->node[p->n_ops - 1u].n_out)
        return blob_fail(c->f, FAULT_PLAN, "qplan: graph output is not the last op's output", oi, 0);
    p->n_classes = le16(h + TQPL_H_N_CLASSES);
    if (p->n_classes < 1 || p->n_classes != out.count) /* any output size evaluates; training needs a classifier */
        return blob_fail(c->f, FAULT_PLAN, "qplan: n_classes not the output size", p->n_classes, out.count);
    p->output = out.act;
    p->out_zp = out.zp;
    p->out_scale = out.scale;
    return 0;
}

/* ---- training section ------------------------------------------------------------------------------------ */

/* an arena range of the plan, 4-byte aligned; NULL when out of range */
void *qp_arena_at(const qparse_t *c, uint32_t off, uint64_t bytes)
{
    if ((off & 3u) || off > c->p->arena_need || bytes > (uint64_t)(c->p->arena_need - off))
        return NULL;
    return c->arena + off;
}

int qp_tfail(qparse_t *c, uint32_t op, const char *text)
{
    return blob_fail(c->f, FAULT_PLAN, text, op, 0);
}

/* trained weights and bias of a weighted op: arena copies, residuals, bias_eff copy, tables, channel list */
static int train_params(qparse_t *c, uint32_t i, const uint8_t *r, qtop_t *t)
{
    uint32_t rows, ch_off = le32(r + TQPL_TR_CH_OFF), oc = t->out_c, ti = le16(c->blob + c->ops_off + i * QPLAN_OP + TQPL_O_IN1);
    const uint8_t *op_flags = c->blob + c->ops_off + i * QPLAN_OP + TQPL_O_FLAGS;
    const int32_t *upd;
    t->n_sel = le16(r + TQPL_TR_CH_COUNT);
    if (((*op_flags >> 4) & 3u) != (t->flags & 3u))
        return qp_tfail(c, i, "qplan: op train flags differ from its training record");
    if ((t->flags & QTF_TRAIN_W) && c->blob[c->tensors_off + ti * QPLAN_TENSOR + TQPL_T_FLAGS] != 1u)
        return qp_tfail(c, i, "qplan: trained weights not flagged trainable");
    if (t->n_sel) {
        if (!(t->flags & QTF_TRAIN_W) || t->n_sel > oc || !qp_in_blob(c, ch_off, 2ull * t->n_sel))
            return qp_tfail(c, i, "qplan: bad channel list");
        t->sel = (const uint16_t *)(const void *)(c->blob + ch_off);
        for (uint32_t j = 0; j < t->n_sel; j++)
            if (t->sel[j] >= oc || (j && t->sel[j] <= t->sel[j - 1]))
                return qp_tfail(c, i, "qplan: channel list not ascending below out_c");
    } else if (ch_off) {
        return qp_tfail(c, i, "qplan: channel list offset without channels");
    }
    rows = t->n_sel ? t->n_sel : oc;
    if (t->flags & QTF_TRAIN_W) {
        t->w_ram = qp_arena_at(c, le32(r + TQPL_TR_W_RAM), (uint64_t)(t->w_stride ? oc : rows) * t->row);
        t->w_res = qp_arena_at(c, le32(r + TQPL_TR_WRES_RAM), 2ull * rows * t->row);
        if (!t->w_ram || !t->w_res)
            return qp_tfail(c, i, "qplan: trained weights outside arena");
    }
    if (t->flags & QTF_TRAIN_B) {
        t->b_ram = qp_arena_at(c, le32(r + TQPL_TR_B_RAM), 4ull * oc);
        t->b_res = qp_arena_at(c, le32(r + TQPL_TR_BRES_RAM), 2ull * oc);
        if (!t->b_ram || !t->b_res)
            return qp_tfail(c, i, "qplan: trained bias outside arena");
        uint32_t bi = le16(c->blob + c->ops_off + i * QPLAN_OP + TQPL_O_IN2);
        if (!t->b_flash || c->blob[c->tensors_off + bi * QPLAN_TENSOR + TQPL_T_FLAGS] != 1u)
            return qp_tfail(c, i, "qplan: trained bias missing or not flagged trainable");
    }
    if (!qp_in_blob(c, le32(r + TQPL_TR_M_OFF), 4ull * oc))
        return qp_tfail(c, i, "qplan: channel factors outside blob");
    t->m = (const int32_t *)(const void *)(c->blob + le32(r + TQPL_TR_M_OFF));
    for (uint32_t j = 0; j < oc; j++)
        if (t->m[j] < 0 || t->m[j] > (32768 >> t->h_down))
            return qp_tfail(c, i, "qplan: channel factor outside 0..32768 >> h_down");
    if (t->flags & (QTF_TRAIN_W | QTF_TRAIN_B)) {
        t->eff = qp_arena_at(c, le32(r + TQPL_TR_EFF_RAM), 4ull * oc);
        if (!t->eff || !qp_in_blob(c, le32(r + TQPL_TR_UPD_OFF), 16ull * oc))
            return qp_tfail(c, i, "qplan: bias_eff copy or update tables outside arena/blob");
        upd = t->upd = (const int32_t *)(const void *)(c->blob + le32(r + TQPL_TR_UPD_OFF));
        for (uint32_t j = 0; j < 2u * oc; j++)
            if (upd[2 * j] < 0 || upd[2 * j + 1] < -160 || upd[2 * j + 1] > 60)
                return qp_tfail(c, i, "qplan: update multiplier or shift out of range");
    }
    t->rows = (qrows_t){t->w_flash, (t->flags & QTF_TRAIN_W) ? t->w_ram : NULL, t->sel, t->n_sel, t->row};
    return 0;
}

int qp_din(qparse_t *c, uint32_t i, const uint8_t *r, qtop_t *t)
{
    const qplan_t *p = c->p;
    t->din = qp_arena_at(c, le32(r + TQPL_TR_DIN), t->n_in);
    if (!t->din || t->din != p->top[i - 1u - p->first_bwd].dout)
        return qp_tfail(c, i, "qplan: din must be the previous op's dout");
    return 0;
}

int qp_acc_bounds(qparse_t *c, uint32_t i, const qtop_t *t, uint64_t fan, uint64_t pixels)
{
    uint64_t h_max = 16256u >> t->h_down; /* |h| with m <= 32768 >> h_down */
    if ((t->flags & QTF_NEED_DX) && fan * h_max * 127u > 0x7FFFFFFFu)
        return qp_tfail(c, i, "qplan: too large for int32 input-gradient accumulators");
    if (pixels * h_max * ((t->flags & QTF_TRAIN_W) ? 255u : 1u) > 0x7FFFFFFFu)
        return qp_tfail(c, i, "qplan: too many output pixels for int32 parameter-gradient accumulators");
    return 0;
}

int qp_train_weighted(qparse_t *c, uint32_t i, const uint8_t *r, qtop_t *t, qnode_t *n, const int32_t **bias,
                      const int32_t **bias_eff)
{
    uint32_t need = 0;
    t->w_flash = n->w;
    if (train_params(c, i, r, t))
        return -1;
    /* the kernels read the arena copies: whole weights (not sparse, or a whole depthwise copy), bias, bias_eff */
    if ((t->flags & QTF_TRAIN_W) && (!t->n_sel || t->w_stride))
        n->w = t->w_ram;
    if (t->eff) {
        *bias_eff = t->eff;
        if (t->b_ram)
            *bias = t->b_ram;
    }
    t->dout = qp_arena_at(c, le32(r + TQPL_TR_DOUT), n->n_out);
    t->h = qp_arena_at(c, le32(r + TQPL_TR_SCRATCH), 2ull * n->n_out);
    if (t->flags & QTF_NEED_DX)
        need = t->n_in;
    if ((t->flags & QTF_TRAIN_W) && t->row > need)
        need = t->row;
    t->acc = qp_arena_at(c, le32(r + TQPL_TR_SCRATCH) + ((2u * n->n_out + 3u) & ~3u), 4ull * need);
    if (!t->dout || !t->h || !t->acc || le32(r + TQPL_TR_SCRATCH_BYTES) < ((2u * n->n_out + 3u) & ~3u) + 4u * need)
        return qp_tfail(c, i, "qplan: gradient or scratch buffers outside arena");
    return (t->flags & QTF_NEED_DX) ? qp_din(c, i, r, t) : 0;
}

/* a residual branch starting at op i (QTF_MERGE): its input gradient adds the skip gradient an ADD above leaves at
 * skip (int32 exponent, then n_in codes), with the blob's (mult > 0, shift) of the two constants' ratio; the op's
 * int32 scratch (n_in values after its input gradient) holds the sum. Other ops (ADD aside: qops/add.c) have no skip
 * and no merge. */
static int train_merge(qparse_t *c, uint32_t i, const uint8_t *r, qtop_t *t)
{
    uint32_t skip = le32(r + TQPL_TR_SKIP), merge = le32(r + TQPL_TR_MERGE);
    if (!(t->flags & QTF_MERGE)) {
        if (merge || (skip && c->p->node[i].op != QOP_ADD))
            return qp_tfail(c, i, "qplan: skip or merge set without the merge flag");
        return 0;
    }
    if (!(t->flags & QTF_NEED_DX) || !t->acc || !t->n_in || !qp_in_blob(c, merge, 8u))
        return qp_tfail(c, i, "qplan: a merge needs an op with an input gradient and scratch, and its multiplier");
    t->skip = qp_arena_at(c, skip, 4ull + t->n_in);
    t->merge = (const int32_t *)(const void *)(c->blob + merge);
    if (!t->skip || t->merge[0] <= 0 || t->merge[1] < -60 || t->merge[1] > 60)
        return qp_tfail(c, i, "qplan: merge skip buffer outside arena, or multiplier not positive / shift not in -60..60");
    c->merges++;
    return 0;
}

/* one op of the backward path: the checks every op shares, then its kind's */
static int train_op(qparse_t *c, uint32_t i, const uint8_t *r, qtop_t *t)
{
    qplan_t *p = c->p;
    qnode_t *n = &p->node[i];
    memset(t, 0, sizeof *t);
    t->flags = r[TQPL_TR_FLAGS];
    t->h_down = r[TQPL_TR_H_DOWN];
    if ((t->flags & ~0x1Fu) || t->h_down > 7u)
        return qp_tfail(c, i, "qplan: unknown training flags or h_down above 7");
    if (!qnode_kind(n)->parse_train)
        return qp_tfail(c, i, "qplan: backward of this op is not supported (CONV_2D, DEPTHWISE_CONV_2D, "
                           "FULLY_CONNECTED, AVERAGE_POOL_2D, MAX_POOL_2D, MEAN, ADD, RESHAPE)");
    if ((t->flags & QTF_NEED_DX) != (i > p->first_bwd ? QTF_NEED_DX : 0u))
        return qp_tfail(c, i, "qplan: need_dx must be set exactly above first_bwd");
    if (i > p->first_bwd && n->x != p->node[i - 1u].y && !(n->op == QOP_ADD && n->x2 == p->node[i - 1u].y))
        return qp_tfail(c, i, "qplan: the backward path must be a chain (input = previous op's output)");
    if (qnode_kind(n)->parse_train(c, i, r, t, n))
        return -1;
    return train_merge(c, i, r, t);
}

/* the loss: cross-entropy at the input of a final SOFTMAX (the backward path ends at op n_ops − 2), or the
 * reconstruction error of an autoencoder's output against its input (the path includes the last op) */
static int parse_loss(qparse_t *c, const uint8_t *h, uint32_t last)
{
    qplan_t *p = c->p;
    p->loss = h[TQPL_TH_LOSS];
    p->recon.mult = (int32_t)le32(h + TQPL_TH_RECON_MULT);
    p->recon.shift = (int16_t)le16(h + TQPL_TH_RECON_SHIFT);
    p->recon.zp_x = p->in_zp;
    p->recon.zp_y = p->out_zp;
    if (p->loss == QLOSS_CROSS_ENTROPY) {
        p->bwd_top = (uint16_t)(last - 1u);
        if (p->node[last].op != QOP_SOFTMAX || p->n_ops < 2u || p->first_bwd >= last)
            return blob_fail(c->f, FAULT_PLAN, "qplan: training needs a graph ending in SOFTMAX", p->first_bwd, p->n_ops);
        if (p->n_classes < 2 || p->n_classes > 256)
            return blob_fail(c->f, FAULT_PLAN, "qplan: training needs 2..256 classes", p->n_classes, 0);
        if (p->recon.mult || p->recon.shift)
            return blob_fail(c->f, FAULT_PLAN, "qplan: reconstruction multiplier set with the cross-entropy loss", 0, 0);
        return 0;
    }
    p->bwd_top = (uint16_t)last;
    if (p->loss != QLOSS_RECONSTRUCTION || p->node[last].op == QOP_SOFTMAX || p->first_bwd > last)
        return blob_fail(c->f, FAULT_PLAN, "qplan: unknown loss, or a reconstruction loss after SOFTMAX", p->loss, 0);
    if (p->n_classes != p->n_input || p->recon.mult <= 0 || p->recon.shift < -31 || p->recon.shift > 16)
        return blob_fail(c->f, FAULT_PLAN, "qplan: reconstruction needs an output the size of the input and a "
                                           "multiplier of shift -31..16", p->n_classes, p->n_input);
    return 0;
}

static int parse_training(qparse_t *c)
{
    qplan_t *p = c->p;
    const uint8_t *h = c->blob + c->train_off;
    uint32_t recs = le32(h + TQPL_TH_RECORDS), last = p->n_ops - 1u, tensors = 0, top;
    float lr;
    p->train = 0;
    p->loss = QLOSS_CROSS_ENTROPY;
    p->first_bwd = p->bwd_top = 0;
    if (!c->flags)
        return 0;
    p->train = 1;
    p->first_bwd = le16(h + TQPL_TH_FIRST_BWD);
    memcpy(&lr, h + 4, sizeof lr);
    p->lr = lr;
    for (uint32_t j = TQPL_TH_TAIL; j < QPLAN_TRAIN_HEADER; j++)
        if (h[j] || h[TQPL_TH_QAS] > 1u)
            return blob_fail(c->f, FAULT_PLAN, "qplan: reserved training header bytes not zero", j, 0);
    if (parse_loss(c, h, last))
        return -1;
    top = p->bwd_top;
    if (QPLAN_NODES_BYTES(p->n_ops) + (uint64_t)(top + 1u - p->first_bwd) * sizeof(qtop_t) > sizeof p->pool)
        return blob_fail(c->f, FAULT_PLAN, "qplan: op tables larger than the pool (too many backward ops)",
                         top + 1u - p->first_bwd, p->n_ops);
    p->top = (qtop_t *)(void *)((uint8_t *)p->pool + QPLAN_NODES_BYTES(p->n_ops));
    if (!qp_in_blob(c, recs, (uint64_t)p->n_ops * QPLAN_TRAIN_RECORD))
        return blob_fail(c->f, FAULT_PLAN, "qplan: training records outside blob", recs, 0);
    p->dlogits = qp_arena_at(c, le32(h + TQPL_TH_DLOGITS), p->n_classes);
    if (!p->dlogits || (p->loss == QLOSS_CROSS_ENTROPY && p->node[last].x != p->node[last - 1u].y))
        return blob_fail(c->f, FAULT_PLAN,
                         "qplan: loss gradient outside arena or softmax input not the previous op's", le32(h + TQPL_TH_DLOGITS), 0);
    for (uint32_t i = 0; i < p->n_ops; i++) {
        const uint8_t *r = c->blob + recs + i * QPLAN_TRAIN_RECORD;
        if (i < p->first_bwd || i > top) {
            for (uint32_t j = 0; j < QPLAN_TRAIN_RECORD; j++)
                if (r[j])
                    return qp_tfail(c, i, "qplan: training record of an op outside the backward path not zero");
            continue;
        }
        qtop_t *t = &p->top[i - p->first_bwd];
        if (train_op(c, i, r, t))
            return -1;
        tensors += ((t->flags & QTF_TRAIN_W) != 0) + ((t->flags & QTF_TRAIN_B) != 0);
        if (tensors > QTRAIN_MAX_TENSORS)
            return qp_tfail(c, i, "qplan: more trained tensors than one GSTAT message carries (78)");
    }
    if (c->claimed != c->merges)
        return blob_fail(c->f, FAULT_PLAN, "qplan: a merge no ADD's skip gradient feeds", c->merges, c->claimed);
    p->n_trained = tensors;
    p->gstat = qp_arena_at(c, le32(h + TQPL_TH_GSTAT), (uint64_t)tensors * QTRAIN_GSTAT_SLOT);
    if (!p->gstat)
        return blob_fail(c->f, FAULT_PLAN, "qplan: gradient statistics outside arena", le32(h + TQPL_TH_GSTAT),
                         tensors);
    if (p->top[top - p->first_bwd].dout != p->dlogits)
        return qp_tfail(c, top, "qplan: the top backward op's dout must be the loss gradient");
    return 0;
}

/* ---- dataset ---------------------------------------------------------------------------------------------- */

static uint64_t align4(uint64_t v)
{
    return (v + 3u) & ~(uint64_t)3u;
}

static int labels_ok(const uint8_t *y, uint32_t n, uint32_t n_classes)
{
    for (uint32_t j = 0; j < n; j++)
        if (y[j] >= n_classes)
            return 0;
    return 1;
}

static int parse_dataset(qparse_t *c, const mem_window_t *win)
{
    qplan_t *p = c->p;
    qdataset_t *d = &p->data;
    uint32_t addr = le32(c->blob + TQPL_H_DATASET_ADDR), bytes;
    uint64_t xt, yt, xe, ye;
    const uint8_t *b = blob_dataset(win, addr, &bytes, c->f), *h = b;
    if (!b)
        return -1;
    d->n_train = le32(h + TDST_H_N_TRAIN);
    d->n_eval = le32(h + TDST_H_N_EVAL);
    d->sample_bytes = (uint32_t)le16(h + TDST_H_H) * le16(h + TDST_H_W) * le16(h + TDST_H_C);
    d->dtype = h[TDST_H_DTYPE];
    d->shift = (int16_t)le16(h + TDST_H_SHIFT);
    if (d->dtype > QDS_I8 || h[TDST_H_RESERVED] || (d->dtype == QDS_I8 && d->shift))
        return blob_fail(c->f, FAULT_DATASET, "dataset: unknown sample dtype", d->dtype, h[TDST_H_RESERVED]);
    if (d->n_eval == 0)
        return blob_fail(c->f, FAULT_DATASET, "dataset: no evaluation samples", 0, 0);
    if (le16(h + TDST_H_N_CLASSES) != p->n_classes)
        return blob_fail(c->f, FAULT_DATASET, "dataset: n_classes differs from plan", le16(h + TDST_H_N_CLASSES), p->n_classes);
    if (d->sample_bytes != p->n_input)
        return blob_fail(c->f, FAULT_DATASET, "dataset: sample shape differs from plan input",
                         d->sample_bytes, p->n_input);
    xt = le32(h + TDST_H_X_TRAIN_OFF);
    yt = align4(xt + (uint64_t)d->n_train * d->sample_bytes);
    xe = align4(yt + d->n_train);
    ye = align4(xe + (uint64_t)d->n_eval * d->sample_bytes);
    if (xt < DATA_HEADER || (xt & 3u) || ye + d->n_eval > bytes)
        return blob_fail(c->f, FAULT_DATASET, "dataset: sections outside blob", (uint32_t)xt, bytes);
    d->x_train = b + xt;
    d->y_train = b + yt;
    d->x_eval = b + xe;
    d->y_eval = b + ye;
    if (!labels_ok(d->y_train, d->n_train, p->n_classes) || !labels_ok(d->y_eval, d->n_eval, p->n_classes))
        return blob_fail(c->f, FAULT_DATASET, "dataset: label >= n_classes", 0, 0);
    return 0;
}

int qplan_load(qplan_t *p, const mem_window_t *flash, uint32_t plan_addr, uint8_t *arena, uint32_t arena_bytes,
               fault_t *f)
{
    static qparse_t c; /* static: the ready bitmap and records stay off the stack */
    memset(&c, 0, sizeof c);
    c.p = p;
    c.f = f;
    c.arena = arena;
    *f = (fault_t){0};
    if (check_header(&c, flash, plan_addr, arena_bytes) || parse_graph(&c) || parse_training(&c) ||
        parse_dataset(&c, flash))
        return -1;
    return 0;
}
