/* MEAN over h and w, and its input gradient (Keras' GlobalAveragePooling2D: MobileNetV2- and MCUNet-style heads). */
#include "qops.h"
#include "formats.h"
#include "ops/qgrad.h"
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

/* on the backward path a MEAN is never the lowest op (it has nothing to train), so it always passes a gradient down */
static int parse_train(qparse_t *c, uint32_t i, const uint8_t *r, qtop_t *t, qnode_t *n)
{
    const qmean_t *k = &n->k.mean;
    t->n_in = (uint32_t)k->h * k->w * k->c;
    if (t->flags != QTF_NEED_DX)
        return qp_tfail(c, i, "qplan: mean backward needs need_dx only");
    return qp_paramless_train(c, i, r, t, n);
}

static int32_t backward(const qnode_t *n, const qtop_t *t, int32_t e)
{
    mean_i8_input_grad(&n->k.mean, t->dout, t->acc);
    return e - QGRAD_POOL_SHIFT + qgrad_requant(t->acc, t->n_in, t->din);
}

const qop_kind_t qk_mean = {"MEAN", parse, forward, parse_train, NULL, NULL, NULL, backward, NULL, 0, NULL, NULL,
                            NULL};
