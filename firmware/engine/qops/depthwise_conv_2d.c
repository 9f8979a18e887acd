/* DEPTHWISE_CONV_2D: int8 depthwise convolution (1HWC weights) and its input gradient; its bias trains, its weights
 * do not yet (their gradient kernel is still to be written). */
#include "qops.h"
#include "formats.h"
#include "ops/qgrad.h"
#include "ops/qop.h"

static int parse(qparse_t *c, qoprec_t *o, qnode_t *n)
{
    return qconv_parse(c, o, n, 1);
}

static void forward(const qnode_t *n)
{
    dwconv_i8(&n->k.conv, n->x, n->w, n->y);
}

static int parse_train(qparse_t *c, uint32_t i, const uint8_t *r, qtop_t *t, qnode_t *n)
{
    qconv_t *k = &n->k.conv;
    t->out_c = k->out_c;
    t->row = (uint32_t)k->k_h * k->k_w; /* taps per channel; depthwise weights do not train */
    t->n_in = (uint32_t)k->in_h * k->in_w * k->in_c;
    t->b_flash = k->bias;
    t->eff_flash = k->bias_eff;
    if (t->flags & QTF_TRAIN_W)
        return qp_tfail(c, i, "qplan: depthwise weights do not train (bias and input gradient only)");
    if ((uint64_t)k->k_h * k->k_w * k->dm * 16256u * 127u > 0x7FFFFFFFu ||
        (uint64_t)k->out_h * k->out_w * 16256u > 0x7FFFFFFFu)
        return qp_tfail(c, i, "qplan: depthwise conv too large for int32 gradient accumulators");
    return qp_train_weighted(c, i, r, t, n, &k->bias, &k->bias_eff);
}

static void input_grad(const qnode_t *n, const qtop_t *t)
{
    dwconv_i8_input_grad(&n->k.conv, t->h, n->w, t->acc);
}

static void clamp(const qnode_t *n, int32_t *act_min, int32_t *act_max, int32_t *zp_in)
{
    *act_min = n->k.conv.act_min;
    *act_max = n->k.conv.act_max;
    *zp_in = n->k.conv.zp_in;
}

const qop_kind_t qk_depthwise_conv_2d = {"DEPTHWISE_CONV_2D", parse, forward, parse_train, NULL, input_grad, NULL,
                                         NULL, clamp, 0, NULL, NULL, NULL};
