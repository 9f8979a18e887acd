/* ADD of two equally shaped tensors: forward only (no backward yet: it may only sit below the lowest trained op). */
#include "qops.h"
#include "formats.h"
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

const qop_kind_t qk_add = {"ADD", parse, forward, NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL, NULL};
