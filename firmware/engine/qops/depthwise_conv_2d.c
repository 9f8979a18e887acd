/* DEPTHWISE_CONV_2D: int8 depthwise convolution (1HWC weights), its input and weight gradients. Its trained weights
 * live in the arena as a copy of the whole tensor in its own layout (w_stride = out_c), also when a sparse scheme
 * trains a few channels: the copy is k_h·k_w bytes per channel, so the forward kernel reads it directly and no
 * channel has to be recomputed (no forward_rows); residuals exist for the trained channels only. */
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
    t->row = (uint32_t)k->k_h * k->k_w; /* taps per channel */
    t->n_in = (uint32_t)k->in_h * k->in_w * k->in_c;
    t->w_stride = k->out_c;
    t->b_flash = k->bias;
    t->eff_flash = k->bias_eff;
    if (qp_acc_bounds(c, i, t, (uint64_t)k->k_h * k->k_w * k->dm, (uint64_t)k->out_h * k->out_w))
        return -1;
    return qp_train_weighted(c, i, r, t, n, &k->bias, &k->bias_eff);
}

static void input_grad(const qnode_t *n, const qtop_t *t)
{
    dwconv_i8_input_grad(&n->k.conv, t->h, n->w, t->acc);
}

static void weight_grad(const qnode_t *n, const qtop_t *t, uint32_t o)
{
    dwconv_i8_weight_grad(&n->k.conv, t->h, n->x, o, t->acc);
}

static void clamp(const qnode_t *n, int32_t *act_min, int32_t *act_max, int32_t *zp_in)
{
    *act_min = n->k.conv.act_min;
    *act_max = n->k.conv.act_max;
    *zp_in = n->k.conv.zp_in;
}

const qop_kind_t qk_depthwise_conv_2d = {"DEPTHWISE_CONV_2D", parse, forward, parse_train, NULL, input_grad,
                                         weight_grad, NULL, clamp, 0, NULL, NULL, NULL};
