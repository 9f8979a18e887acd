/* MAXPOOL2D: k×k windows at a stride, valid padding; no parameters. Its backward reads its kept input. */
#include "fops.h"
#include "ops/maxpool.h"

static const char *check_dims(const layer_t *L)
{
    const conv_shape_t *s = &L->s;
    if (!s->k || !s->stride || s->k > s->in_h || s->k > s->in_w)
        return "plan: maxpool window is zero or larger than its input";
    if ((uint32_t)(s->in_h - s->k) / s->stride + 1u != s->out_h ||
        (uint32_t)(s->in_w - s->k) / s->stride + 1u != s->out_w || s->out_c != s->in_c)
        return "plan: maxpool output shape mismatch";
    if (L->flags & LF_PAD_SAME || s->pad_top || s->pad_left)
        return "plan: maxpool has no padding";
    return NULL;
}

static void forward(const layer_t *L)
{
    maxpool_forward(&L->s, L->in, L->out);
}

static void input_grad(const layer_t *L)
{
    maxpool_input_grad(&L->s, L->in, L->dout, L->din);
}

static void backward(run_t *r, uint8_t i, const layer_t *L)
{
    (void)i;
    fop_input_grad_only(r, L, input_grad);
}

const fop_kind_t fk_maxpool = {"MAXPOOL2D", check_dims, fop_no_params, 0, 0, 0, 1, 0, forward, backward};
