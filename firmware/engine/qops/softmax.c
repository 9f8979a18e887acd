/* SOFTMAX (output scale 1/256, zero point -128); training starts below it from the loss gradient at the logits. */
#include "qops.h"
#include "formats.h"
#include "ops/qop.h"

static int parse(qparse_t *c, qoprec_t *o, qnode_t *n)
{
    const int32_t *rq;
    int32_t diff_min = (int32_t)le32(o->r + TQPL_O_PARAM0);
    uint32_t depth = o->x.d[3];
    if (o->y.count != o->x.count || o->y.zp != -128 || depth > 4095u || diff_min > 0)
        return blob_fail(c->f, FAULT_PLAN, "qplan: softmax needs equal sizes, zp_out -128, depth < 4096", o->i, 0);
    if (qp_rq(c, o, 1, &rq))
        return -1;
    n->k.softmax = (qsoftmax_t){o->x.count / depth, (uint16_t)depth, rq[0], rq[1], diff_min};
    return 0;
}


static void forward(const qnode_t *n)
{
    softmax_i8(&n->k.softmax, n->x, n->y);
}

const qop_kind_t qk_softmax = {"SOFTMAX", parse, forward, NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL, NULL};
