/* AVERAGE_POOL_2D: int8 average pool and its input gradient (Q16 reciprocals of the window sizes). The record
 * parsing is shared with MAX_POOL_2D (qpool_parse, qpool_parse_train). */
#include "qops.h"
#include "formats.h"
#include "ops/qgrad.h"
#include "ops/qop.h"

int qpool_parse(qparse_t *c, qoprec_t *o, qnode_t *n)
{
    qpool_t *k = &n->k.pool;
    if (qp_geometry(c, o, o->r[TQPL_O_K_H], o->r[TQPL_O_K_W]))
        return -1;
    if (o->x.d[3] != o->y.d[3] || o->x.zp != o->y.zp)
        return blob_fail(c->f, FAULT_PLAN, "qplan: pool changes channels or zero point", o->i, 0);
    *k = (qpool_t){o->x.d[1], o->x.d[2], o->x.d[3], o->y.d[1], o->y.d[2], o->r[TQPL_O_K_H], o->r[TQPL_O_K_W], o->r[TQPL_O_STRIDE_H], o->r[TQPL_O_STRIDE_W],
                   le16(o->r + TQPL_O_PAD_TOP), le16(o->r + TQPL_O_PAD_LEFT), 0, 0};
    return qp_act(c, o, &k->act_min, &k->act_max);
}


static void forward(const qnode_t *n)
{
    avgpool_i8(&n->k.pool, n->x, n->y);
}

int qpool_parse_train(qparse_t *c, uint32_t i, const uint8_t *r, qtop_t *t, qnode_t *n)
{
    const qpool_t *k = &n->k.pool;
    t->n_in = (uint32_t)k->in_h * k->in_w * k->c;
    if (t->flags != QTF_NEED_DX || k->act_min > -128 || k->act_max < 127 ||
        (uint64_t)k->k_h * k->k_w * 127u * 65536u > 0x7FFFFFFFu)
        return qp_tfail(c, i, "qplan: pool backward needs need_dx only, no fused activation, <= 258 taps");
    return qp_paramless_train(c, i, r, t, n);
}

int qp_paramless_train(qparse_t *c, uint32_t i, const uint8_t *r, qtop_t *t, const qnode_t *n)
{
    t->dout = qp_arena_at(c, le32(r + TQPL_TR_DOUT), n->n_out);
    t->acc = qp_arena_at(c, le32(r + TQPL_TR_SCRATCH) + ((2u * n->n_out + 3u) & ~3u), 4ull * t->n_in);
    if (!t->dout || !t->acc || le32(r + TQPL_TR_SCRATCH_BYTES) < ((2u * n->n_out + 3u) & ~3u) + 4u * t->n_in)
        return qp_tfail(c, i, "qplan: gradient or scratch buffers outside arena");
    return qp_din(c, i, r, t);
}

static int32_t backward(const qnode_t *n, const qtop_t *t, int32_t e)
{
    avgpool_i8_input_grad(&n->k.pool, t->dout, t->acc);
    return e - QGRAD_POOL_SHIFT + qgrad_requant(t->acc, t->n_in, t->din);
}

const qop_kind_t qk_average_pool_2d = {"AVERAGE_POOL_2D", qpool_parse, forward, qpool_parse_train, NULL, NULL, NULL, backward, NULL, 0, NULL, NULL, NULL};
