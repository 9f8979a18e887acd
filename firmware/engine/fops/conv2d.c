/* CONV2D: 2-D convolution (HWC activations, OHWI weights, k×kw kernels); per output channel the weight gradient
 * goes through a k*kw*in_c scratch and is applied at once. */
#include "fops.h"
#include "ops/conv2d.h"

static uint32_t conv_out(uint32_t in, uint32_t k, uint32_t stride, int same)
{
    if (same)
        return (in + stride - 1u) / stride;
    return in >= k ? (in - k) / stride + 1u : 0u;
}

static const char *check_dims(const layer_t *L)
{
    const conv_shape_t *s = &L->s;
    int same = (L->flags & LF_PAD_SAME) != 0;
    if (!s->k || !s->kw || !s->stride)
        return "plan: conv kernel or stride is zero";
    if (conv_out(s->in_h, s->k, s->stride, same) != s->out_h || conv_out(s->in_w, s->kw, s->stride, same) != s->out_w)
        return "plan: conv output shape mismatch";
    if (same ? (s->pad_top >= s->k || s->pad_left >= s->kw) : (s->pad_top || s->pad_left))
        return "plan: conv padding inconsistent";
    return NULL;
}

static uint32_t row(const layer_t *L)
{
    return (uint32_t)L->s.k * L->s.kw * L->s.in_c;
}

static void forward(const layer_t *L)
{
    conv2d_forward(&L->s, L->in, &L->ws, L->b, L->out);
}

static void back_conv_bias(run_t *r, uint8_t i, const layer_t *L)
{
    gstat_t *g = ft_gstat_new(r, i, 1);
    if (r->stream)
        ft_stream_begin(r, i, 1, L->s.out_c);
    for (uint32_t oc = 0; oc < L->s.out_c; oc++) {
        port_marker(PORT_MARK_BACKWARD);
        uint64_t t = port_ticks();
        float gb = conv2d_bias_grad_channel(&L->s, L->dout, oc);
        r->t_bwd += ft_since(t);
        ft_report_values(r, g, &gb, 1);
        port_marker(PORT_MARK_UPDATE);
        t = port_ticks();
        L->b_ram[oc] -= r->lr * gb;
        r->t_upd += ft_since(t);
    }
}

/* per trained output channel (all, or the listed ones in list order): gradient into the k*kw*in_c scratch, report
 * it, apply it at once to the channel's row of the arena copy */
static void back_conv_weights(run_t *r, uint8_t i, const layer_t *L)
{
    uint32_t n = row(L), rows = L->ws.idx ? L->ws.n_sel : L->s.out_c;
    gstat_t *g = ft_gstat_new(r, i, 0);
    if (r->stream)
        ft_stream_begin(r, i, 0, n * rows);
    for (uint32_t j = 0; j < rows; j++) {
        uint32_t oc = L->ws.idx ? L->ws.idx[j] : j;
        port_marker(PORT_MARK_BACKWARD);
        uint64_t t = port_ticks();
        conv2d_weight_grad_channel(&L->s, L->dout, L->in, oc, L->scratch);
        r->t_bwd += ft_since(t);
        ft_report_values(r, g, L->scratch, n);
        port_marker(PORT_MARK_UPDATE);
        t = port_ticks();
        conv2d_update_channel(L->w_ram + j * n, L->scratch, r->lr, n);
        r->t_upd += ft_since(t);
    }
}

static void backward(run_t *r, uint8_t i, const layer_t *L)
{
    port_marker(PORT_MARK_BACKWARD);
    uint64_t t = port_ticks();
    if (L->flags & LF_NEED_DX)
        conv2d_input_grad(&L->s, L->dout, &L->ws, L->din);
    r->t_bwd += ft_since(t);
    if (L->flags & LF_TRAIN_B)
        back_conv_bias(r, i, L);
    if (L->flags & LF_TRAIN_W)
        back_conv_weights(r, i, L);
}

const fop_kind_t fk_conv2d = {"CONV2D", check_dims, row, 0, 0, 1, 0, 0, forward, backward};
