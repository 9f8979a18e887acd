/* GAVGPOOL: global average pool, h×w×c -> 1×1×c; no parameters. */
#include "fops.h"
#include "ops/gavgpool.h"

static const char *check_dims(const layer_t *L)
{
    const conv_shape_t *s = &L->s;
    if (s->out_h != 1 || s->out_w != 1 || s->out_c != s->in_c)
        return "plan: global average pool output is not 1x1 x in_c";
    if (L->flags & LF_PAD_SAME || s->pad_top || s->pad_left)
        return "plan: global average pool has no padding";
    return NULL;
}

static void forward(const layer_t *L)
{
    gavgpool_forward(L->in, L->out, (uint32_t)L->s.in_h * L->s.in_w, L->s.in_c);
}

static void input_grad(const layer_t *L)
{
    gavgpool_input_grad(L->dout, L->din, (uint32_t)L->s.in_h * L->s.in_w, L->s.in_c);
}

static void backward(run_t *r, uint8_t i, const layer_t *L)
{
    (void)i;
    fop_input_grad_only(r, L, input_grad);
}

const fop_kind_t fk_gavgpool = {"GAVGPOOL", check_dims, fop_no_params, 0, 0, 0, 0, 0, forward, backward};
