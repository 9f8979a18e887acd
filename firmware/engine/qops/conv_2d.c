/* CONV_2D: int8 convolution (OHWI weights), its input and weight gradients, and sparse update's one-channel forward.
 * The record parsing is shared with DEPTHWISE_CONV_2D (qconv_parse). */
#include "qops.h"
#include "formats.h"
#include "ops/qgrad.h"
#include "ops/qop.h"

int qconv_parse(qparse_t *c, qoprec_t *o, qnode_t *n, int depthwise)
{
    qconv_t *k = &n->k.conv;
    uint32_t oc, kh, kw, dm = depthwise ? o->r[TQPL_O_DM] : 1u;
    if (qp_wb(c, o, o->y.d[3]))
        return -1;
    oc = depthwise ? o->w.d[3] : o->w.d[0];
    kh = o->w.d[1];
    kw = o->w.d[2];
    if (qp_geometry(c, o, kh, kw))
        return -1;
    if (depthwise ? (o->w.d[0] != 1 || !dm || oc != (uint32_t)o->x.d[3] * dm || kh * kw > 64u)
                  : (o->w.d[3] != o->x.d[3] || o->r[TQPL_O_DM] != 1))
        return blob_fail(c->f, FAULT_PLAN, "qplan: weight shape differs from input channels", o->i, 0);
    if (oc != o->y.d[3])
        return blob_fail(c->f, FAULT_PLAN, "qplan: output channels differ from weights", o->i, oc);
    *k = (qconv_t){o->x.d[1], o->x.d[2], o->x.d[3], o->y.d[1], o->y.d[2], o->y.d[3], (uint8_t)kh, (uint8_t)kw,
                   o->r[TQPL_O_STRIDE_H], o->r[TQPL_O_STRIDE_W], (uint8_t)dm, o->per_channel, le16(o->r + TQPL_O_PAD_TOP), le16(o->r + TQPL_O_PAD_LEFT), o->x.zp, o->y.zp,
                   0, 0, NULL, NULL, NULL};
    k->bias = o->b.data ? (const int32_t *)(const void *)o->b.data : NULL;
    if (qp_act(c, o, &k->act_min, &k->act_max) || qp_rq(c, o, o->per_channel ? oc : 1u, &k->rq))
        return -1;
    if (depthwise ? qp_fold(c, o, oc, 1, kh * kw, oc, &k->bias_eff)
                  : qp_fold(c, o, oc, kh * kw * o->x.d[3], kh * kw * o->x.d[3], 1, &k->bias_eff))
        return -1;
    n->w = (const int8_t *)(const void *)o->w.data;
    n->macs = (uint32_t)o->y.d[1] * o->y.d[2] * oc * kh * kw * (depthwise ? 1u : o->x.d[3]);
    return 0;
}


static int parse(qparse_t *c, qoprec_t *o, qnode_t *n)
{
    return qconv_parse(c, o, n, 0);
}

static void forward(const qnode_t *n)
{
    conv_i8(&n->k.conv, n->x, n->w, n->y);
}

static int parse_train(qparse_t *c, uint32_t i, const uint8_t *r, qtop_t *t, qnode_t *n)
{
    qconv_t *k = &n->k.conv;
    t->out_c = k->out_c;
    t->row = (uint32_t)k->k_h * k->k_w * k->in_c;
    t->n_in = (uint32_t)k->in_h * k->in_w * k->in_c;
    t->b_flash = k->bias;
    t->eff_flash = k->bias_eff;
    if (qp_acc_bounds(c, i, t, (uint64_t)t->out_c * k->k_h * k->k_w, (uint64_t)k->out_h * k->out_w) ||
        qp_train_weighted(c, i, r, t, n, &k->bias, &k->bias_eff))
        return -1;
    if (t->n_sel) { /* sparse: up to QSPARSE_GROUP channels' output planes are recomputed from their arena rows */
        t->fwd_tmp = qp_arena_at(c, le32(r + TQPL_TR_FWD_TMP), (uint64_t)k->out_h * k->out_w *
                                                                  (t->n_sel < QSPARSE_GROUP ? t->n_sel : QSPARSE_GROUP));
        if (!t->fwd_tmp)
            return qp_tfail(c, i, "qplan: sparse forward scratch outside arena");
    }
    return 0;
}

/* listed channels j0 .. j0 + cnt - 1 as one conv of cnt output channels: their rows are consecutive in w_ram, their
 * bias_eff, bias and requantisation pairs gathered beside it; the planes are then scattered into the output */
static void forward_rows(const qnode_t *n, const qtop_t *t, uint32_t j0, uint32_t cnt)
{
    const qconv_t *k = &n->k.conv;
    qconv_t v = *k;
    int32_t eff[QSPARSE_GROUP], bias[QSPARSE_GROUP], rq[2 * QSPARSE_GROUP];
    uint32_t plane = (uint32_t)v.out_h * v.out_w;
    for (uint32_t g = 0; g < cnt; g++) {
        uint32_t o = t->sel[j0 + g], r = k->rq_per_channel ? 2u * o : 0u;
        eff[g] = t->eff[o];
        bias[g] = k->bias ? k->bias[o] : 0;
        rq[2 * g] = k->rq[r];
        rq[2 * g + 1] = k->rq[r + 1];
    }
    v.out_c = (uint16_t)cnt;
    v.bias_eff = eff;
    v.bias = k->bias ? bias : NULL;
    v.rq = rq;
    v.rq_per_channel = 1;
    conv_i8(&v, n->x, t->w_ram + j0 * t->row, t->fwd_tmp);
    for (uint32_t q = 0; q < plane; q++)
        for (uint32_t g = 0; g < cnt; g++)
            n->y[q * k->out_c + t->sel[j0 + g]] = t->fwd_tmp[q * cnt + g];
}

static void input_grad(const qnode_t *n, const qtop_t *t)
{
    conv_i8_input_grad(&n->k.conv, t->h, &t->rows, t->acc);
}

static void weight_grad(const qnode_t *n, const qtop_t *t, uint32_t o)
{
    conv_i8_weight_grad(&n->k.conv, t->h, n->x, o, t->acc);
}

static void clamp(const qnode_t *n, int32_t *act_min, int32_t *act_max, int32_t *zp_in)
{
    *act_min = n->k.conv.act_min;
    *act_max = n->k.conv.act_max;
    *zp_in = n->k.conv.zp_in;
}

const qop_kind_t qk_conv_2d = {"CONV_2D", parse, forward, parse_train, forward_rows, input_grad, weight_grad, NULL,
                                 clamp, 0, NULL, NULL, NULL};
