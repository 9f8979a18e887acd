/* RESHAPE: an alias (the output is the input's bytes; no kernel), and so is its gradient. */
#include "qops.h"
#include "formats.h"

static int parse(qparse_t *c, qoprec_t *o, qnode_t *n)
{
    (void)n;
    if (o->y.count != o->x.count || o->y.off != o->x.off || o->y.zp != o->x.zp)
        return blob_fail(c->f, FAULT_PLAN, "qplan: reshape must alias its input (same size, offset, zero point)",
                         o->i, 0);
    return 0;
}

static int parse_train(qparse_t *c, uint32_t i, const uint8_t *r, qtop_t *t, qnode_t *n)
{
    if (t->flags & ~QTF_NEED_DX)
        return qp_tfail(c, i, "qplan: only conv and FC ops train or mask");
    t->dout = qp_arena_at(c, le32(r + TQPL_TR_DOUT), n->n_out);
    t->din = (t->flags & QTF_NEED_DX) ? qp_arena_at(c, le32(r + TQPL_TR_DIN), n->n_out) : NULL;
    if (!t->dout || ((t->flags & QTF_NEED_DX) && t->din != t->dout))
        return qp_tfail(c, i, "qplan: reshape gradient must alias (din = dout) inside the arena");
    return 0;
}

const qop_kind_t qk_reshape = {"RESHAPE", parse, NULL, parse_train, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL, NULL};
