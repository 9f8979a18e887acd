/* FULLY_CONNECTED: int8 matrix-vector product ([out][in] weights), its input and weight gradients, and sparse
 * update's one-channel forward. */
#include "qops.h"
#include "formats.h"
#include "ops/qgrad.h"
#include "ops/qop.h"

static int parse(qparse_t *c, qoprec_t *o, qnode_t *n)
{
    qfc_t *k = &n->k.fc;
    uint32_t in_c, oc;
    if (qp_tensor(c, o->i, le16(o->r + TQPL_O_IN1), &o->w))
        return -1;
    oc = o->w.d[2];
    in_c = o->w.d[3];
    if (o->w.rank != 2 || o->x.count % in_c || o->y.count != o->x.count / in_c * oc)
        return blob_fail(c->f, FAULT_PLAN, "qplan: fully connected shapes disagree", o->i, 0);
    if (qp_wb(c, o, oc))
        return -1;
    *k = (qfc_t){o->x.count / in_c, (uint16_t)in_c, (uint16_t)oc, o->per_channel, o->x.zp, o->y.zp, 0, 0,
                 NULL, NULL, NULL};
    k->bias = o->b.data ? (const int32_t *)(const void *)o->b.data : NULL;
    if (qp_act(c, o, &k->act_min, &k->act_max) || qp_rq(c, o, o->per_channel ? oc : 1u, &k->rq) ||
        qp_fold(c, o, oc, in_c, in_c, 1, &k->bias_eff))
        return -1;
    n->w = (const int8_t *)(const void *)o->w.data;
    n->macs = k->rows * in_c * oc;
    return 0;
}


static void forward(const qnode_t *n)
{
    fc_i8(&n->k.fc, n->x, n->w, n->y);
}

static int parse_train(qparse_t *c, uint32_t i, const uint8_t *r, qtop_t *t, qnode_t *n)
{
    qfc_t *k = &n->k.fc;
    if (k->rows != 1u)
        return qp_tfail(c, i, "qplan: training needs fully connected ops with one input row");
    t->out_c = k->out_c;
    t->row = t->n_in = k->in_c;
    t->b_flash = k->bias;
    t->eff_flash = k->bias_eff;
    if (qp_acc_bounds(c, i, t, t->out_c, 1))
        return -1;
    return qp_train_weighted(c, i, r, t, n, &k->bias, &k->bias_eff);
}

static void forward_rows(const qnode_t *n, const qtop_t *t, uint32_t j0, uint32_t cnt)
{
    for (uint32_t j = j0; j < j0 + cnt; j++) {
        uint32_t o = t->sel[j];
        qfc_t v = n->k.fc;
        v.out_c = 1;
        v.bias_eff = t->eff + o;
        v.bias = v.bias ? v.bias + o : NULL;
        v.rq = n->k.fc.rq + (n->k.fc.rq_per_channel ? 2u * o : 0u);
        fc_i8(&v, n->x, t->w_ram + j * t->row, n->y + o);
    }
}

static void input_grad(const qnode_t *n, const qtop_t *t)
{
    fc_i8_input_grad(&n->k.fc, t->h, &t->rows, t->acc);
}

/* the input's non-zero columns (x != zp_in: the ReLU zeros of the layer below change nothing), listed once per step
 * in the accumulator scratch, free once the input gradient is requantised */
static void prepare_update(const qnode_t *n, const qtop_t *t)
{
    fc_i8_update_list(n->x, n->k.fc.zp_in, t->row, t->acc);
}

/* arena row j (channel o): gradient h[o]·(x − zp_in) and update in one pass over the listed columns */
static int32_t update_row(const qnode_t *n, const qtop_t *t, uint32_t o, uint32_t j, int32_t mult, int32_t shift_e)
{
    return fc_i8_update_row_listed(t->acc, n->x, n->k.fc.zp_in, t->row, t->h[o], mult, shift_e,
                                   t->w_ram + j * t->row, t->w_res + j * t->row);
}

static int32_t grad_at(const qnode_t *n, const qtop_t *t, uint32_t o, uint32_t j)
{
    return fc_i8_weight_grad_at(&n->k.fc, t->h[o], n->x, j);
}

/* one output position: a channel whose h is 0 (masked) has a zero weight-gradient row */
static void clamp(const qnode_t *n, int32_t *act_min, int32_t *act_max, int32_t *zp_in)
{
    *act_min = n->k.fc.act_min;
    *act_max = n->k.fc.act_max;
    *zp_in = n->k.fc.zp_in;
}

const qop_kind_t qk_fully_connected = {"FULLY_CONNECTED", parse, forward, parse_train, forward_rows, input_grad,
                                       NULL, NULL, clamp, 1, update_row,
                                       prepare_update, grad_at};
