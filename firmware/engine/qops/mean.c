/* MEAN over h and w: forward only (no backward yet: it may only sit below the lowest trained op). */
#include "qops.h"
#include "formats.h"
#include "ops/qop.h"

static int parse(qparse_t *c, qoprec_t *o, qnode_t *n)
{
    const int32_t *rq;
    if (o->x.rank != 4 || o->y.count != o->x.d[3])
        return blob_fail(c->f, FAULT_PLAN, "qplan: mean must reduce h and w of an NHWC tensor", o->i, 0);
    if (qp_rq(c, o, 1, &rq))
        return -1;
    n->k.mean = (qmean_t){o->x.d[1], o->x.d[2], o->x.d[3], o->x.zp, o->y.zp, rq[0], rq[1]};
    return 0;
}


static void forward(const qnode_t *n)
{
    mean_i8(&n->k.mean, n->x, n->y);
}

const qop_kind_t qk_mean = {"MEAN", parse, forward, NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL, NULL};
