/* RELU: y = max(x, 0), possibly in place; its backward masks by y > 0. No parameters. */
#include "fops.h"
#include "ops/relu.h"

static const char *check_dims(const layer_t *L)
{
    const conv_shape_t *s = &L->s;
    return s->in_h != s->out_h || s->in_w != s->out_w || s->in_c != s->out_c
               ? "plan: relu output shape differs from input" : NULL;
}

static void forward(const layer_t *L)
{
    relu_forward(L->in, L->out, L->n_in);
}

static void input_grad(const layer_t *L)
{
    relu_backward(L->out, L->dout, L->din, L->n_in);
}

static void backward(run_t *r, uint8_t i, const layer_t *L)
{
    (void)i;
    fop_input_grad_only(r, L, input_grad);
}

const fop_kind_t fk_relu = {"RELU", check_dims, fop_no_params, 1, 0, 0, 0, 0, forward, backward};
