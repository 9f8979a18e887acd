/* ADD of two equally shaped tensors (a residual's join) and its backward: the gradient passes to the chain input
 * (the previous op's output) and, when the skip input's producer is on the backward path, to a skip buffer the op
 * where that branch starts merges (QTF_MERGE, qplan.c). */
#include "qops.h"
#include "formats.h"
#include <string.h>
#include "ops/qgrad.h"
#include "ops/qop.h"

static int parse(qparse_t *c, qoprec_t *o, qnode_t *n)
{
    qadd_t *k = &n->k.add;
    const int32_t *rq;
    int32_t ls = (int32_t)le32(o->r + TQPL_O_PARAM0);
    if (qp_input(c, o->i, le16(o->r + TQPL_O_IN1), &o->x2))
        return -1;
    if (o->x2.count != o->x.count || o->y.count != o->x.count)
        return blob_fail(c->f, FAULT_PLAN, "qplan: add inputs and output differ in size (no broadcasting)", o->i, 0);
    if (!qp_disjoint(&o->x2, &o->y))
        return blob_fail(c->f, FAULT_PLAN, "qplan: output overlaps an input", o->i, 0);
    if (ls < 0 || ls > 20)
        return blob_fail(c->f, FAULT_PLAN, "qplan: add left shift not in 0..20", o->i, (uint32_t)ls);
    if (qp_rq(c, o, 3, &rq))
        return -1;
    *k = (qadd_t){o->x.count, o->x.zp, o->x2.zp, o->y.zp, ls, rq[0], rq[1], rq[2], rq[3], rq[4], rq[5], 0, 0};
    n->x2 = o->x2.act;
    return qp_act(c, o, &k->act_min, &k->act_max);
}


static void forward(const qnode_t *n)
{
    add_i8(&n->k.add, n->x, n->x2, n->y);
}

/* the op j whose input is the skip tensor s, on the chain below the ADD at i (0 when s is made below first_bwd + 1:
 * then nothing below needs its gradient) */
static uint32_t branch_start(const qplan_t *p, uint32_t i, const int8_t *s)
{
    for (uint32_t j = i - 1u; j > p->first_bwd; j--)
        if (p->node[j].x == s && p->node[j - 1u].y == s)
            return j;
    return 0;
}

static int parse_train(qparse_t *c, uint32_t i, const uint8_t *r, qtop_t *t, qnode_t *n)
{
    const qplan_t *p = c->p;
    const qadd_t *k = &n->k.add;
    const int8_t *s = n->x == p->node[i - 1u].y ? n->x2 : n->x; /* train_op checked one input is the chain's */
    uint32_t skip = le32(r + TQPL_TR_SKIP), a;
    t->n_in = k->n;
    if ((t->flags & ~(uint32_t)QTF_MASK) != QTF_NEED_DX || n->x == n->x2)
        return qp_tfail(c, i, "qplan: add backward needs need_dx (mask optional) and two different inputs");
    t->dout = qp_arena_at(c, le32(r + TQPL_TR_DOUT), n->n_out);
    if (!t->dout)
        return qp_tfail(c, i, "qplan: add output gradient outside arena");
    if (qp_din(c, i, r, t))
        return -1;
    a = branch_start(p, i, s);
    if (!a) {
        if (skip)
            return qp_tfail(c, i, "qplan: a skip gradient no op below the path needs");
        return 0;
    }
    t->skip = qp_arena_at(c, skip, 4ull + k->n);
    if (!t->skip || p->top[a - p->first_bwd].skip != t->skip || !(p->top[a - p->first_bwd].flags & QTF_MERGE))
        return qp_tfail(c, i, "qplan: the skip gradient must be what the op where the branch starts merges");
    for (uint32_t j = a + 1u; j < i; j++) /* the branch between must not read the skip tensor again */
        if (p->node[j].x == s || (p->node[j].op == QOP_ADD && p->node[j].x2 == s))
            return qp_tfail(c, i, "qplan: the skip tensor has more than two readers");
    c->claimed++;
    return 0;
}

static int32_t backward(const qnode_t *n, const qtop_t *t, int32_t e)
{
    const qadd_t *k = &n->k.add;
    add_i8_input_grad(t->dout, (t->flags & QTF_MASK) ? n->y : NULL, k->act_min, k->act_max, k->n, t->din,
                      t->skip ? t->skip + 4 : NULL);
    if (t->skip)
        memcpy(t->skip, &e, sizeof e); /* the skip gradient's exponent, for the merge */
    return e;
}

const qop_kind_t qk_add = {"ADD", parse, forward, parse_train, NULL, NULL, NULL, backward, NULL, 0, NULL, NULL, NULL};
