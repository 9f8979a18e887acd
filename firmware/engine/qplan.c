/* TQPL validation. Every field is distrusted: sizes are checked in 64-bit arithmetic before a pointer is formed,
 * activations must lie inside the plan's arena (itself no larger than the device's), constants inside the blob,
 * shapes must agree op by op, every op may only read tensors already produced, and the host-folded zero-point
 * corrections are recomputed and compared. Problems in an op answer FAULT 2 with the op index in arg0. */
#include <stddef.h>
#include <string.h>
#include "qplan.h"
#include "blob.h"
#include "msg.h"
#include "wire.h"

typedef struct {
    qplan_t *p;
    fault_t *f;
    const uint8_t *blob;
    uint32_t blob_bytes, tensors_off, ops_off;
    uint16_t n_tensors;
    uint16_t flags;            /* header flags: bit 0 training section */
    uint32_t train_off;
    uint8_t *arena;
    uint8_t ready[QPLAN_MAX_TENSORS / 8u];
} ctx_t;

typedef struct {
    uint8_t kind, rank;
    uint16_t d[4]; /* n, h, w, c (lower ranks padded with leading 1s) */
    uint32_t count, off, bytes;
    int32_t zp;
    float scale;
    const uint8_t *data; /* constants */
    int8_t *act;         /* activations */
} tinfo_t;

static float f32_at(const uint8_t *p)
{
    float v;
    memcpy(&v, p, sizeof v);
    return v;
}

static int in_blob(const ctx_t *c, uint32_t off, uint64_t bytes)
{
    return !(off & 3u) && off >= QPLAN_HEADER && off <= c->blob_bytes && bytes <= (uint64_t)(c->blob_bytes - off);
}

int qplan_is_tqpl(const mem_window_t *flash, uint32_t plan_addr)
{
    const uint8_t *h = blob_window_ptr(flash, plan_addr, 4);
    return h && le32(h) == QPLAN_MAGIC;
}

/* ---- header and tensors ------------------------------------------------------------------------------------ */

static int check_header(ctx_t *c, const mem_window_t *win, uint32_t plan_addr, uint32_t arena_bytes)
{
    const uint8_t *h = blob_window_ptr(win, plan_addr, QPLAN_HEADER);
    qplan_t *p = c->p;
    fault_t *f = c->f;
    if (!h)
        return blob_fail(f, FAULT_PLAN, "qplan: address outside flash", plan_addr, 0);
    if (le32(h) != QPLAN_MAGIC)
        return blob_fail(f, FAULT_PLAN, "qplan: bad magic", le32(h), QPLAN_MAGIC);
    if (le16(h + 4) != 1 || le16(h + 6) != QPLAN_HEADER)
        return blob_fail(f, FAULT_PLAN, "qplan: unsupported version or header size", le16(h + 4), le16(h + 6));
    c->blob_bytes = le32(h + 8);
    c->blob = blob_window_ptr(win, plan_addr, c->blob_bytes);
    if (c->blob_bytes < QPLAN_HEADER || !c->blob)
        return blob_fail(f, FAULT_PLAN, "qplan: blob_bytes outside flash", c->blob_bytes, 0);
    if (blob_crc(h, c->blob_bytes) != le32(h + 12))
        return blob_fail(f, FAULT_PLAN, "qplan: CRC mismatch", blob_crc(h, c->blob_bytes), le32(h + 12));
    p->plan_hash = le32(h + 16);
    p->arena_need = le32(h + 20);
    c->n_tensors = le16(h + 28);
    p->n_ops = le16(h + 30);
    c->tensors_off = le32(h + 32);
    c->ops_off = le32(h + 36);
    if (p->arena_need > arena_bytes)
        return blob_fail(f, FAULT_ARENA, "qplan: arena too small", p->arena_need, arena_bytes);
    if (c->n_tensors < 2 || c->n_tensors > QPLAN_MAX_TENSORS)
        return blob_fail(f, FAULT_PLAN, "qplan: n_tensors not in 2..512", c->n_tensors, 0);
    if (p->n_ops < 1 || p->n_ops > QPLAN_MAX_OPS)
        return blob_fail(f, FAULT_PLAN, "qplan: n_ops not in 1..64", p->n_ops, 0);
    if (!in_blob(c, c->tensors_off, (uint64_t)c->n_tensors * QPLAN_TENSOR) ||
        !in_blob(c, c->ops_off, (uint64_t)p->n_ops * QPLAN_OP))
        return blob_fail(f, FAULT_PLAN, "qplan: tensor or op records outside blob", c->tensors_off, c->ops_off);
    c->flags = le16(h + 46);
    c->train_off = le32(h + 48);
    if (c->flags > 1u || (c->flags == 0) != (c->train_off == 0) ||
        (c->flags && !in_blob(c, c->train_off, QPLAN_TRAIN_HEADER)))
        return blob_fail(f, FAULT_PLAN, "qplan: unknown header flags or training section outside blob", c->flags,
                    c->train_off);
    for (uint32_t j = 52; j < QPLAN_HEADER; j++)
        if (h[j])
            return blob_fail(f, FAULT_PLAN, "qplan: reserved header bytes not zero", j, h[j]);
    return 0;
}

/* reads and checks tensor record idx; where = op index for faults (0xFFFF for the header) */
static int tensor(ctx_t *c, uint32_t where, uint32_t idx, tinfo_t *t)
{
    const uint8_t *r;
    uint64_t count = 1;
    uint32_t esize;
    memset(t, 0, sizeof *t);
    if (idx >= c->n_tensors)
        return blob_fail(c->f, FAULT_PLAN, "qplan: tensor index out of range", where, idx);
    r = c->blob + c->tensors_off + idx * QPLAN_TENSOR;
    t->kind = r[0];
    t->rank = r[2];
    if (t->kind < QT_ACTIVATION || t->kind > QT_CONST_I32 || r[3] || t->rank < 1 || t->rank > 4 ||
        (r[1] && (r[1] != 1u || t->kind == QT_ACTIVATION || !c->flags)))
        return blob_fail(c->f, FAULT_PLAN, "qplan: bad tensor kind, flags or rank", where, idx);
    for (uint32_t j = 0; j < 4; j++) {
        t->d[j] = le16(r + 4 + 2 * j);
        if (!t->d[j] || (j < 4u - t->rank && t->d[j] != 1))
            return blob_fail(c->f, FAULT_PLAN, "qplan: bad tensor dims", where, idx);
        count *= t->d[j];
    }
    esize = t->kind == QT_CONST_I32 ? 4u : 1u;
    t->count = (uint32_t)count;
    t->off = le32(r + 12);
    t->bytes = le32(r + 16);
    t->zp = (int32_t)le32(r + 20);
    t->scale = f32_at(r + 24);
    if (count * esize != t->bytes)
        return blob_fail(c->f, FAULT_PLAN, "qplan: tensor bytes differ from its dims", where, idx);
    if (t->kind == QT_ACTIVATION) {
        if ((t->off & 3u) || t->off > c->p->arena_need || t->bytes > c->p->arena_need - t->off)
            return blob_fail(c->f, FAULT_PLAN, "qplan: activation outside arena", where, idx);
        if (t->zp < -128 || t->zp > 127)
            return blob_fail(c->f, FAULT_PLAN, "qplan: activation zero point outside int8", where, idx);
        t->act = (int8_t *)(void *)(c->arena + t->off);
    } else {
        if (!in_blob(c, t->off, t->bytes))
            return blob_fail(c->f, FAULT_PLAN, "qplan: constant outside blob", where, idx);
        t->data = c->blob + t->off;
    }
    if (le32(r + 28) != 0xFFFFFFFFu) { /* per-channel scales (reserved for QAS): u32 n then n f32 */
        uint32_t so = le32(r + 28);
        if (!in_blob(c, so, 4) || !in_blob(c, so, 4u + 4ull * le32(c->blob + so)) || le32(c->blob + so) > t->count)
            return blob_fail(c->f, FAULT_PLAN, "qplan: channel scales outside blob", where, idx);
    }
    return 0;
}

static int is_ready(const ctx_t *c, uint32_t idx)
{
    return (c->ready[idx >> 3] >> (idx & 7u)) & 1u;
}

static void set_ready(ctx_t *c, uint32_t idx)
{
    c->ready[idx >> 3] = (uint8_t)(c->ready[idx >> 3] | (1u << (idx & 7u)));
}

/* an activation input an earlier op (or the sample load) has produced */
static int input(ctx_t *c, uint32_t op, uint32_t idx, tinfo_t *t)
{
    if (tensor(c, op, idx, t))
        return -1;
    if (t->kind != QT_ACTIVATION || !is_ready(c, idx))
        return blob_fail(c->f, FAULT_PLAN, "qplan: op input is not an activation produced earlier", op, idx);
    return 0;
}

static int output(ctx_t *c, uint32_t op, uint32_t idx, tinfo_t *t)
{
    if (tensor(c, op, idx, t))
        return -1;
    if (t->kind != QT_ACTIVATION || is_ready(c, idx))
        return blob_fail(c->f, FAULT_PLAN, "qplan: op output is not a fresh activation", op, idx);
    return 0;
}

static int disjoint(const tinfo_t *a, const tinfo_t *b)
{
    return a->off + a->bytes <= b->off || b->off + b->bytes <= a->off;
}

/* ---- ops -------------------------------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *r;
    uint32_t i;
    uint8_t per_channel, same;
    tinfo_t x, x2, w, b, y;
} oprec_t;

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
static int check_geometry(ctx_t *c, const oprec_t *o, uint32_t kh, uint32_t kw)
{
    const uint8_t *r = o->r;
    const tinfo_t *x = &o->x, *y = &o->y;
    if (x->rank != 4 || y->rank != 4 || !r[2] || !r[3] || !kh || !kw || r[4] != kh || r[5] != kw || r[7] > 1)
        return blob_fail(c->f, FAULT_PLAN, "qplan: bad kernel, stride or padding", o->i, 0);
    if (out_size(x->d[1], kh, r[2], o->same) != y->d[1] || out_size(x->d[2], kw, r[3], o->same) != y->d[2])
        return blob_fail(c->f, FAULT_PLAN, "qplan: output shape differs from kernel/stride/padding", o->i, 0);
    if (le16(r + 16) != (o->same ? same_pad(x->d[1], y->d[1], kh, r[2]) : 0u) ||
        le16(r + 18) != (o->same ? same_pad(x->d[2], y->d[2], kw, r[3]) : 0u))
        return blob_fail(c->f, FAULT_PLAN, "qplan: padding inconsistent", o->i, le16(r + 16));
    return 0;
}

static int check_act(ctx_t *c, const oprec_t *o, int32_t *lo, int32_t *hi)
{
    *lo = (int16_t)le16(o->r + 20);
    *hi = (int16_t)le16(o->r + 22);
    if (*lo < -128 || *hi > 127 || *lo > *hi)
        return blob_fail(c->f, FAULT_PLAN, "qplan: activation range outside int8", o->i, 0);
    return 0;
}

/* n (multiplier, shift) pairs at rq_off */
static int check_rq(ctx_t *c, const oprec_t *o, uint32_t n, const int32_t **rq)
{
    uint32_t off = le32(o->r + 24);
    if (!in_blob(c, off, 8ull * n))
        return blob_fail(c->f, FAULT_PLAN, "qplan: requantisation table outside blob", o->i, off);
    *rq = (const int32_t *)(const void *)(c->blob + off);
    for (uint32_t j = 0; j < n; j++)
        if ((*rq)[2 * j] < 0 || (*rq)[2 * j + 1] < -31 || (*rq)[2 * j + 1] > 30)
            return blob_fail(c->f, FAULT_PLAN, "qplan: multiplier or shift out of range", o->i, j);
    return 0;
}

/* weights (const int8) and optional bias (const int32, out_c values) */
static int check_wb(ctx_t *c, oprec_t *o, uint32_t out_c)
{
    uint16_t bi = le16(o->r + 12);
    if (tensor(c, o->i, le16(o->r + 10), &o->w))
        return -1;
    if (o->w.kind != QT_CONST_I8)
        return blob_fail(c->f, FAULT_PLAN, "qplan: weights are not a constant int8 tensor", o->i, 0);
    if (bi == QPLAN_NONE16)
        return 0;
    if (tensor(c, o->i, bi, &o->b))
        return -1;
    if (o->b.kind != QT_CONST_I32 || o->b.count != out_c)
        return blob_fail(c->f, FAULT_PLAN, "qplan: bias is not out_c constant int32 values", o->i, 0);
    return 0;
}

/* bias_eff[oc] must be bias[oc] - zp_in * sum(w[oc]); w[oc] is n values spaced by step starting at oc * first */
static int check_fold(ctx_t *c, const oprec_t *o, uint32_t out_c, uint32_t first, uint32_t n, uint32_t step,
                      const int32_t **eff)
{
    uint32_t off = le32(o->r + 28);
    const int8_t *w = (const int8_t *)(const void *)o->w.data;
    const int32_t *b = o->b.data ? (const int32_t *)(const void *)o->b.data : NULL;
    if (!in_blob(c, off, 4ull * out_c))
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

static int op_conv(ctx_t *c, oprec_t *o, qnode_t *n, int depthwise)
{
    qconv_t *k = &n->k.conv;
    uint32_t oc, kh, kw, dm = depthwise ? o->r[6] : 1u;
    if (check_wb(c, o, o->y.d[3]))
        return -1;
    oc = depthwise ? o->w.d[3] : o->w.d[0];
    kh = o->w.d[1];
    kw = o->w.d[2];
    if (check_geometry(c, o, kh, kw))
        return -1;
    if (depthwise ? (o->w.d[0] != 1 || !dm || oc != (uint32_t)o->x.d[3] * dm || kh * kw > 64u)
                  : (o->w.d[3] != o->x.d[3] || o->r[6] != 1))
        return blob_fail(c->f, FAULT_PLAN, "qplan: weight shape differs from input channels", o->i, 0);
    if (oc != o->y.d[3])
        return blob_fail(c->f, FAULT_PLAN, "qplan: output channels differ from weights", o->i, oc);
    *k = (qconv_t){o->x.d[1], o->x.d[2], o->x.d[3], o->y.d[1], o->y.d[2], o->y.d[3], (uint8_t)kh, (uint8_t)kw,
                   o->r[2], o->r[3], (uint8_t)dm, o->per_channel, le16(o->r + 16), le16(o->r + 18), o->x.zp, o->y.zp,
                   0, 0, NULL, NULL, NULL};
    k->bias = o->b.data ? (const int32_t *)(const void *)o->b.data : NULL;
    if (check_act(c, o, &k->act_min, &k->act_max) || check_rq(c, o, o->per_channel ? oc : 1u, &k->rq))
        return -1;
    if (depthwise ? check_fold(c, o, oc, 1, kh * kw, oc, &k->bias_eff)
                  : check_fold(c, o, oc, kh * kw * o->x.d[3], kh * kw * o->x.d[3], 1, &k->bias_eff))
        return -1;
    n->w = (const int8_t *)(const void *)o->w.data;
    n->macs = (uint32_t)o->y.d[1] * o->y.d[2] * oc * kh * kw * (depthwise ? 1u : o->x.d[3]);
    return 0;
}

static int op_fc(ctx_t *c, oprec_t *o, qnode_t *n)
{
    qfc_t *k = &n->k.fc;
    uint32_t in_c, oc;
    if (tensor(c, o->i, le16(o->r + 10), &o->w))
        return -1;
    oc = o->w.d[2];
    in_c = o->w.d[3];
    if (o->w.rank != 2 || o->x.count % in_c || o->y.count != o->x.count / in_c * oc)
        return blob_fail(c->f, FAULT_PLAN, "qplan: fully connected shapes disagree", o->i, 0);
    if (check_wb(c, o, oc))
        return -1;
    *k = (qfc_t){o->x.count / in_c, (uint16_t)in_c, (uint16_t)oc, o->per_channel, o->x.zp, o->y.zp, 0, 0,
                 NULL, NULL, NULL};
    k->bias = o->b.data ? (const int32_t *)(const void *)o->b.data : NULL;
    if (check_act(c, o, &k->act_min, &k->act_max) || check_rq(c, o, o->per_channel ? oc : 1u, &k->rq) ||
        check_fold(c, o, oc, in_c, in_c, 1, &k->bias_eff))
        return -1;
    n->w = (const int8_t *)(const void *)o->w.data;
    n->macs = k->rows * in_c * oc;
    return 0;
}

static int op_pool(ctx_t *c, oprec_t *o, qnode_t *n)
{
    qpool_t *k = &n->k.pool;
    if (check_geometry(c, o, o->r[4], o->r[5]))
        return -1;
    if (o->x.d[3] != o->y.d[3] || o->x.zp != o->y.zp)
        return blob_fail(c->f, FAULT_PLAN, "qplan: pool changes channels or zero point", o->i, 0);
    *k = (qpool_t){o->x.d[1], o->x.d[2], o->x.d[3], o->y.d[1], o->y.d[2], o->r[4], o->r[5], o->r[2], o->r[3],
                   le16(o->r + 16), le16(o->r + 18), 0, 0};
    return check_act(c, o, &k->act_min, &k->act_max);
}

static int op_mean(ctx_t *c, oprec_t *o, qnode_t *n)
{
    const int32_t *rq;
    if (o->x.rank != 4 || o->y.count != o->x.d[3])
        return blob_fail(c->f, FAULT_PLAN, "qplan: mean must reduce h and w of an NHWC tensor", o->i, 0);
    if (check_rq(c, o, 1, &rq))
        return -1;
    n->k.mean = (qmean_t){o->x.d[1], o->x.d[2], o->x.d[3], o->x.zp, o->y.zp, rq[0], rq[1]};
    return 0;
}

static int op_add(ctx_t *c, oprec_t *o, qnode_t *n)
{
    qadd_t *k = &n->k.add;
    const int32_t *rq;
    int32_t ls = (int32_t)le32(o->r + 32);
    if (input(c, o->i, le16(o->r + 10), &o->x2))
        return -1;
    if (o->x2.count != o->x.count || o->y.count != o->x.count)
        return blob_fail(c->f, FAULT_PLAN, "qplan: add inputs and output differ in size (no broadcasting)", o->i, 0);
    if (!disjoint(&o->x2, &o->y))
        return blob_fail(c->f, FAULT_PLAN, "qplan: output overlaps an input", o->i, 0);
    if (ls < 0 || ls > 20)
        return blob_fail(c->f, FAULT_PLAN, "qplan: add left shift not in 0..20", o->i, (uint32_t)ls);
    if (check_rq(c, o, 3, &rq))
        return -1;
    *k = (qadd_t){o->x.count, o->x.zp, o->x2.zp, o->y.zp, ls, rq[0], rq[1], rq[2], rq[3], rq[4], rq[5], 0, 0};
    n->x2 = o->x2.act;
    return check_act(c, o, &k->act_min, &k->act_max);
}

static int op_softmax(ctx_t *c, oprec_t *o, qnode_t *n)
{
    const int32_t *rq;
    int32_t diff_min = (int32_t)le32(o->r + 32);
    uint32_t depth = o->x.d[3];
    if (o->y.count != o->x.count || o->y.zp != -128 || depth > 4095u || diff_min > 0)
        return blob_fail(c->f, FAULT_PLAN, "qplan: softmax needs equal sizes, zp_out -128, depth < 4096", o->i, 0);
    if (check_rq(c, o, 1, &rq))
        return -1;
    n->k.softmax = (qsoftmax_t){o->x.count / depth, (uint16_t)depth, rq[0], rq[1], diff_min};
    return 0;
}

static int parse_op(ctx_t *c, uint32_t i, qnode_t *n)
{
    oprec_t o;
    int rc = 0;
    memset(&o, 0, sizeof o);
    memset(n, 0, sizeof *n);
    o.r = c->blob + c->ops_off + i * QPLAN_OP;
    o.i = i;
    n->op = o.r[0];
    o.per_channel = o.r[1] & 1u;
    o.same = o.r[7] == 1;
    if (n->op < QOP_CONV_2D || n->op > QOP_SOFTMAX)
        return blob_fail(c->f, FAULT_PLAN, "qplan: unknown op code", i, n->op);
    if ((o.r[1] & ~0x31u) || ((o.r[1] & 0x30u) && !c->flags))
        return blob_fail(c->f, FAULT_PLAN, "qplan: unknown op flags", i, o.r[1]);
    for (uint32_t j = 40; j < QPLAN_OP; j++)
        if (o.r[j])
            return blob_fail(c->f, FAULT_PLAN, "qplan: reserved op bytes not zero", i, j);
    if (input(c, i, le16(o.r + 8), &o.x) || output(c, i, le16(o.r + 14), &o.y))
        return -1;
    n->x = o.x.act;
    n->y = o.y.act;
    n->n_out = o.y.count;
    if (n->op == QOP_RESHAPE) {
        if (o.y.count != o.x.count || o.y.off != o.x.off || o.y.zp != o.x.zp)
            return blob_fail(c->f, FAULT_PLAN, "qplan: reshape must alias its input (same size, offset, zero point)",
                             i, 0);
    } else if (!disjoint(&o.x, &o.y)) {
        return blob_fail(c->f, FAULT_PLAN, "qplan: output overlaps an input", i, 0);
    }
    switch (n->op) {
    case QOP_CONV_2D: rc = op_conv(c, &o, n, 0); break;
    case QOP_DEPTHWISE_CONV_2D: rc = op_conv(c, &o, n, 1); break;
    case QOP_FULLY_CONNECTED: rc = op_fc(c, &o, n); break;
    case QOP_AVERAGE_POOL_2D: rc = op_pool(c, &o, n); break;
    case QOP_MEAN: rc = op_mean(c, &o, n); break;
    case QOP_ADD: rc = op_add(c, &o, n); break;
    case QOP_SOFTMAX: rc = op_softmax(c, &o, n); break;
    default: break;
    }
    if (rc)
        return -1;
    set_ready(c, le16(o.r + 14));
    return 0;
}

static int parse_graph(ctx_t *c)
{
    qplan_t *p = c->p;
    const uint8_t *h = c->blob;
    tinfo_t in, out;
    uint16_t ii = le16(h + 40), oi = le16(h + 42);
    if (tensor(c, 0xFFFFu, ii, &in) || in.kind != QT_ACTIVATION)
        return blob_fail(c->f, FAULT_PLAN, "qplan: graph input is not an activation", ii, 0);
    set_ready(c, ii);
    p->input = in.act;
    p->n_input = in.count;
    for (uint32_t i = 0; i < p->n_ops; i++)
        if (parse_op(c, i, &p->node[i]))
            return -1;
    if (tensor(c, 0xFFFFu, oi, &out))
        return -1;
    if (out.act != p->node[p->n_ops - 1u].y || out.count != p->node[p->n_ops - 1u].n_out)
        return blob_fail(c->f, FAULT_PLAN, "qplan: graph output is not the last op's output", oi, 0);
    p->n_classes = le16(h + 44);
    if (p->n_classes < 2 || p->n_classes > 256 || p->n_classes != out.count)
        return blob_fail(c->f, FAULT_PLAN, "qplan: n_classes not the output size in 2..256", p->n_classes, out.count);
    p->output = out.act;
    p->out_zp = out.zp;
    p->out_scale = out.scale;
    return 0;
}

/* ---- training section ------------------------------------------------------------------------------------ */

/* an arena range of the plan, 4-byte aligned; NULL when out of range */
static void *arena_at(const ctx_t *c, uint32_t off, uint64_t bytes)
{
    if ((off & 3u) || off > c->p->arena_need || bytes > (uint64_t)(c->p->arena_need - off))
        return NULL;
    return c->arena + off;
}

static int tfail(ctx_t *c, uint32_t op, const char *text)
{
    return blob_fail(c->f, FAULT_PLAN, text, op, 0);
}

/* trained weights and bias of a conv or FC op: arena copies, residuals, bias_eff copy, tables, channel list */
static int train_params(ctx_t *c, uint32_t i, const uint8_t *r, qtop_t *t, qnode_t *n)
{
    uint32_t rows, ch_off = le32(r + 4), oc = t->out_c, ti = le16(c->blob + c->ops_off + i * QPLAN_OP + 10);
    const uint8_t *op_flags = c->blob + c->ops_off + i * QPLAN_OP + 1;
    const int32_t *upd;
    t->n_sel = le16(r + 2);
    if (((*op_flags >> 4) & 3u) != (t->flags & 3u))
        return tfail(c, i, "qplan: op train flags differ from its training record");
    if ((t->flags & QTF_TRAIN_W) && c->blob[c->tensors_off + ti * QPLAN_TENSOR + 1] != 1u)
        return tfail(c, i, "qplan: trained weights not flagged trainable");
    if (t->n_sel) {
        if (!(t->flags & QTF_TRAIN_W) || t->n_sel > oc || !in_blob(c, ch_off, 2ull * t->n_sel))
            return tfail(c, i, "qplan: bad channel list");
        t->sel = (const uint16_t *)(const void *)(c->blob + ch_off);
        for (uint32_t j = 0; j < t->n_sel; j++)
            if (t->sel[j] >= oc || (j && t->sel[j] <= t->sel[j - 1]))
                return tfail(c, i, "qplan: channel list not ascending below out_c");
    } else if (ch_off) {
        return tfail(c, i, "qplan: channel list offset without channels");
    }
    rows = t->n_sel ? t->n_sel : oc;
    if (t->flags & QTF_TRAIN_W) {
        t->w_ram = arena_at(c, le32(r + 8), (uint64_t)rows * t->row);
        t->w_res = arena_at(c, le32(r + 12), 2ull * rows * t->row);
        if (!t->w_ram || !t->w_res)
            return tfail(c, i, "qplan: trained weights outside arena");
    }
    if (t->flags & QTF_TRAIN_B) {
        t->b_ram = arena_at(c, le32(r + 16), 4ull * oc);
        t->b_res = arena_at(c, le32(r + 20), 2ull * oc);
        if (!t->b_ram || !t->b_res)
            return tfail(c, i, "qplan: trained bias outside arena");
        if (!t->b_flash || c->blob[c->tensors_off + le16(c->blob + c->ops_off + i * QPLAN_OP + 12) * QPLAN_TENSOR +
                                   1] != 1u)
            return tfail(c, i, "qplan: trained bias missing or not flagged trainable");
    }
    if (!in_blob(c, le32(r + 44), 4ull * oc))
        return tfail(c, i, "qplan: channel factors outside blob");
    t->m = (const int32_t *)(const void *)(c->blob + le32(r + 44));
    for (uint32_t j = 0; j < oc; j++)
        if (t->m[j] < 0 || t->m[j] > 32768)
            return tfail(c, i, "qplan: channel factor outside 0..32768");
    if (t->flags & (QTF_TRAIN_W | QTF_TRAIN_B)) {
        t->eff = arena_at(c, le32(r + 24), 4ull * oc);
        if (!t->eff || !in_blob(c, le32(r + 48), 16ull * oc))
            return tfail(c, i, "qplan: bias_eff copy or update tables outside arena/blob");
        upd = t->upd = (const int32_t *)(const void *)(c->blob + le32(r + 48));
        for (uint32_t j = 0; j < 2u * oc; j++)
            if (upd[2 * j] < 0 || upd[2 * j + 1] < -160 || upd[2 * j + 1] > 60)
                return tfail(c, i, "qplan: update multiplier or shift out of range");
    }
    if (t->n_sel && n->op == QOP_CONV_2D) {
        t->fwd_tmp = arena_at(c, le32(r + 52), (uint64_t)n->k.conv.out_h * n->k.conv.out_w);
        if (!t->fwd_tmp)
            return tfail(c, i, "qplan: sparse forward scratch outside arena");
    }
    t->rows = (qrows_t){t->w_flash, (t->flags & QTF_TRAIN_W) ? t->w_ram : NULL, t->sel, t->n_sel, t->row};
    /* the kernels read the arena copies: whole weights (not sparse), bias, bias_eff */
    if ((t->flags & QTF_TRAIN_W) && !t->n_sel)
        n->w = t->w_ram;
    if (!t->eff)
        return 0;
    if (n->op == QOP_FULLY_CONNECTED) {
        n->k.fc.bias_eff = t->eff;
        if (t->b_ram)
            n->k.fc.bias = t->b_ram;
    } else {
        n->k.conv.bias_eff = t->eff;
        if (t->b_ram)
            n->k.conv.bias = t->b_ram;
    }
    return 0;
}

/* one op of the backward path */
static int train_op(ctx_t *c, uint32_t i, const uint8_t *r, qtop_t *t)
{
    qplan_t *p = c->p;
    qnode_t *n = &p->node[i];
    uint32_t need = 0;
    int dw = n->op == QOP_DEPTHWISE_CONV_2D;
    int weighted = n->op == QOP_CONV_2D || n->op == QOP_FULLY_CONNECTED || dw;
    memset(t, 0, sizeof *t);
    t->flags = r[0];
    if ((t->flags & ~0x0Fu) || r[1] || le32(r + 56) || le32(r + 60))
        return tfail(c, i, "qplan: unknown training flags or reserved bytes");
    if (!weighted && n->op != QOP_RESHAPE && n->op != QOP_AVERAGE_POOL_2D)
        return tfail(c, i, "qplan: backward of this op is not supported (CONV_2D, DEPTHWISE_CONV_2D, "
                           "FULLY_CONNECTED, AVERAGE_POOL_2D, RESHAPE)");
    if ((t->flags & QTF_NEED_DX) != (i > p->first_bwd ? QTF_NEED_DX : 0u))
        return tfail(c, i, "qplan: need_dx must be set exactly above first_bwd");
    if (i > p->first_bwd && n->x != p->node[i - 1u].y)
        return tfail(c, i, "qplan: the backward path must be a chain (input = previous op's output)");
    if (n->op == QOP_AVERAGE_POOL_2D) {
        const qpool_t *k = &n->k.pool;
        t->n_in = (uint32_t)k->in_h * k->in_w * k->c;
        if (t->flags != QTF_NEED_DX || k->act_min > -128 || k->act_max < 127 ||
            (uint64_t)k->k_h * k->k_w * 127u * 65536u > 0x7FFFFFFFu)
            return tfail(c, i, "qplan: average pool backward needs need_dx only, no fused activation, <= 258 taps");
        t->dout = arena_at(c, le32(r + 28), n->n_out);
        t->din = arena_at(c, le32(r + 32), t->n_in);
        t->acc = arena_at(c, le32(r + 36) + ((2u * n->n_out + 3u) & ~3u), 4ull * t->n_in);
        if (!t->dout || !t->acc || le32(r + 40) < ((2u * n->n_out + 3u) & ~3u) + 4u * t->n_in)
            return tfail(c, i, "qplan: gradient or scratch buffers outside arena");
        if (!t->din || t->din != p->top[i - 1u - p->first_bwd].dout)
            return tfail(c, i, "qplan: din must be the previous op's dout");
        return 0;
    }
    if (!weighted) {
        if (t->flags & ~QTF_NEED_DX)
            return tfail(c, i, "qplan: only conv and FC ops train or mask");
        t->dout = arena_at(c, le32(r + 28), n->n_out);
        t->din = (t->flags & QTF_NEED_DX) ? arena_at(c, le32(r + 32), n->n_out) : NULL;
        if (!t->dout || ((t->flags & QTF_NEED_DX) && t->din != t->dout))
            return tfail(c, i, "qplan: reshape gradient must alias (din = dout) inside the arena");
        return 0;
    }
    if (n->op == QOP_FULLY_CONNECTED) {
        if (n->k.fc.rows != 1u)
            return tfail(c, i, "qplan: training needs fully connected ops with one input row");
        t->out_c = n->k.fc.out_c;
        t->row = t->n_in = n->k.fc.in_c;
        t->b_flash = n->k.fc.bias;
        t->eff_flash = n->k.fc.bias_eff;
        if ((uint64_t)t->out_c * 16256u * 127u > 0x7FFFFFFFu)
            return tfail(c, i, "qplan: too many outputs for int32 input-gradient accumulators");
    } else if (dw) {
        const qconv_t *k = &n->k.conv;
        t->out_c = k->out_c;
        t->row = (uint32_t)k->k_h * k->k_w; /* taps per channel; depthwise weights do not train */
        t->n_in = (uint32_t)k->in_h * k->in_w * k->in_c;
        t->b_flash = k->bias;
        t->eff_flash = k->bias_eff;
        if (t->flags & QTF_TRAIN_W)
            return tfail(c, i, "qplan: depthwise weights do not train (bias and input gradient only)");
        if ((uint64_t)k->k_h * k->k_w * k->dm * 16256u * 127u > 0x7FFFFFFFu ||
            (uint64_t)k->out_h * k->out_w * 16256u > 0x7FFFFFFFu)
            return tfail(c, i, "qplan: depthwise conv too large for int32 gradient accumulators");
    } else {
        const qconv_t *k = &n->k.conv;
        t->out_c = k->out_c;
        t->row = (uint32_t)k->k_h * k->k_w * k->in_c;
        t->n_in = (uint32_t)k->in_h * k->in_w * k->in_c;
        t->b_flash = k->bias;
        t->eff_flash = k->bias_eff;
        if ((uint64_t)t->out_c * k->k_h * k->k_w * 16256u * 127u > 0x7FFFFFFFu ||
            (uint64_t)k->out_h * k->out_w * 16256u * 255u > 0x7FFFFFFFu)
            return tfail(c, i, "qplan: conv too large for int32 gradient accumulators");
    }
    t->w_flash = n->w;
    if (train_params(c, i, r, t, n))
        return -1;
    t->dout = arena_at(c, le32(r + 28), n->n_out);
    t->h = arena_at(c, le32(r + 36), 2ull * n->n_out);
    if (t->flags & QTF_NEED_DX)
        need = t->n_in;
    if ((t->flags & QTF_TRAIN_W) && t->row > need)
        need = t->row;
    t->acc = arena_at(c, le32(r + 36) + ((2u * n->n_out + 3u) & ~3u), 4ull * need);
    if (!t->dout || !t->h || !t->acc || le32(r + 40) < ((2u * n->n_out + 3u) & ~3u) + 4u * need)
        return tfail(c, i, "qplan: gradient or scratch buffers outside arena");
    if (t->flags & QTF_NEED_DX) {
        t->din = arena_at(c, le32(r + 32), t->n_in);
        if (!t->din || t->din != p->top[i - 1u - p->first_bwd].dout)
            return tfail(c, i, "qplan: din must be the previous op's dout");
    }
    return 0;
}

static int parse_training(ctx_t *c)
{
    qplan_t *p = c->p;
    const uint8_t *h = c->blob + c->train_off;
    uint32_t recs = le32(h + 12), last = p->n_ops - 1u;
    float lr;
    p->train = 0;
    if (!c->flags)
        return 0;
    p->train = 1;
    p->first_bwd = le16(h);
    memcpy(&lr, h + 4, sizeof lr);
    p->lr = lr;
    for (uint32_t j = 16; j < QPLAN_TRAIN_HEADER; j++)
        if (h[j] || h[3] || h[2] > 1u)
            return blob_fail(c->f, FAULT_PLAN, "qplan: reserved training header bytes not zero", j, 0);
    if (p->node[last].op != QOP_SOFTMAX || p->n_ops < 2u || p->first_bwd >= last ||
        last - p->first_bwd > QTRAIN_MAX_OPS)
        return blob_fail(c->f, FAULT_PLAN, "qplan: training needs a graph ending in SOFTMAX and <= 16 backward ops",
                    p->first_bwd, p->n_ops);
    if (!in_blob(c, recs, (uint64_t)p->n_ops * QPLAN_TRAIN_RECORD))
        return blob_fail(c->f, FAULT_PLAN, "qplan: training records outside blob", recs, 0);
    p->dlogits = arena_at(c, le32(h + 8), p->n_classes);
    if (!p->dlogits || p->node[last].x != p->node[last - 1u].y)
        return blob_fail(c->f, FAULT_PLAN,
                         "qplan: logits gradient outside arena or softmax input not the previous op's", le32(h + 8), 0);
    for (uint32_t i = 0; i < p->n_ops; i++) {
        const uint8_t *r = c->blob + recs + i * QPLAN_TRAIN_RECORD;
        if (i < p->first_bwd || i == last) {
            for (uint32_t j = 0; j < QPLAN_TRAIN_RECORD; j++)
                if (r[j])
                    return tfail(c, i, "qplan: training record of an op outside the backward path not zero");
            continue;
        }
        if (train_op(c, i, r, &p->top[i - p->first_bwd]))
            return -1;
    }
    if (p->top[last - 1u - p->first_bwd].dout != p->dlogits)
        return tfail(c, last - 1u, "qplan: the logits op's dout must be the logits gradient");
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

static int parse_dataset(ctx_t *c, const mem_window_t *win)
{
    qplan_t *p = c->p;
    qdataset_t *d = &p->data;
    uint32_t addr = le32(c->blob + 24), bytes;
    uint64_t xt, yt, xe, ye;
    const uint8_t *b = blob_dataset(win, addr, &bytes, c->f), *h = b;
    if (!b)
        return -1;
    d->n_train = le32(h + 16);
    d->n_eval = le32(h + 20);
    d->sample_bytes = (uint32_t)le16(h + 24) * le16(h + 26) * le16(h + 28);
    d->dtype = h[44];
    d->shift = (int16_t)le16(h + 46);
    if (d->dtype > QDS_I8 || h[45] || (d->dtype == QDS_I8 && d->shift))
        return blob_fail(c->f, FAULT_DATASET, "dataset: unknown sample dtype", d->dtype, h[45]);
    if (d->n_eval == 0)
        return blob_fail(c->f, FAULT_DATASET, "dataset: no evaluation samples", 0, 0);
    if (le16(h + 30) != p->n_classes)
        return blob_fail(c->f, FAULT_DATASET, "dataset: n_classes differs from plan", le16(h + 30), p->n_classes);
    if (d->sample_bytes != p->n_input)
        return blob_fail(c->f, FAULT_DATASET, "dataset: sample shape differs from plan input",
                         d->sample_bytes, p->n_input);
    xt = le32(h + 40);
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
    static ctx_t c; /* static: the ready bitmap and records stay off the stack */
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
