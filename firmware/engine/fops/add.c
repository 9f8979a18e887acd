/* ADD: a residual merge, y = x + skip (x the branch, the previous layer's output; skip the input of layer k, where
 * the branch starts), its fused activation applied after. Backward: dx = dy for the branch, and when the branch
 * start is above first_bwd, the skip gradient dy into scratch, which that layer (LF_MERGE) adds to its din after
 * its own backward. The plan loader resolves L->w to the skip and L->scratch to the skip gradient. */
#include <string.h>
#include "fops.h"
#include "ops/add.h"

static const char *check_dims(const layer_t *L)
{
    const conv_shape_t *s = &L->s;
    if (s->in_h != s->out_h || s->in_w != s->out_w || s->in_c != s->out_c)
        return "plan: add output shape differs from input";
    if (L->flags & LF_PAD_SAME || s->pad_top || s->pad_left)
        return "plan: add has no padding";
    return NULL;
}

static void forward(const layer_t *L)
{
    add_forward(L->in, L->w, L->out, L->n_in);
}

static void input_grad(const layer_t *L)
{
    memcpy(L->din, L->dout, L->n_in * sizeof(float));
}

static void backward(run_t *r, uint8_t i, const layer_t *L)
{
    (void)i;
    if (L->scratch) {
        port_marker(PORT_MARK_BACKWARD);
        uint64_t t = port_ticks();
        memcpy(L->scratch, L->dout, L->n_in * sizeof(float));
        r->t_bwd += ft_since(t);
    }
    fop_input_grad_only(r, L, input_grad);
}

const fop_kind_t fk_add = {"ADD", check_dims, fop_no_params, 0, 0, 0, 0, 1, forward, backward};
