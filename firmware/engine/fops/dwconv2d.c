/* DWCONV2D: depthwise convolution, depth multiplier 1 (HWC activations, channel-major [c][k][kw] weights: channel c
 * is row c). Per trained channel the weight gradient goes through a k*kw scratch and is applied at once. */
#include "fops.h"
#include "ops/dwconv2d.h"

static uint32_t out_len(uint32_t in, uint32_t k, uint32_t stride, int same)
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
        return "plan: depthwise kernel or stride is zero";
    if (s->in_c != s->out_c)
        return "plan: depthwise in_c differs from out_c (depth multiplier 1)";
    if (out_len(s->in_h, s->k, s->stride, same) != s->out_h || out_len(s->in_w, s->kw, s->stride, same) != s->out_w)
        return "plan: depthwise output shape mismatch";
    if (same ? (s->pad_top >= s->k || s->pad_left >= s->kw) : (s->pad_top || s->pad_left))
        return "plan: depthwise padding inconsistent";
    return NULL;
}

static uint32_t row(const layer_t *L)
{
    return (uint32_t)L->s.k * L->s.kw;
}

static void forward(const layer_t *L)
{
    dwconv2d_forward(&L->s, L->in, &L->ws, L->b, L->out);
}

static void back_bias(run_t *r, uint8_t i, const layer_t *L)
{
    gstat_t *g = ft_gstat_new(r, i, 1);
    if (r->stream)
        ft_stream_begin(r, i, 1, L->s.out_c);
    for (uint32_t c = 0; c < L->s.out_c; c++) {
        port_marker(PORT_MARK_BACKWARD);
        uint64_t t = port_ticks();
        float gb = conv2d_bias_grad_channel(&L->s, L->dout, c);
        r->t_bwd += ft_since(t);
        ft_report_values(r, g, &gb, 1);
        port_marker(PORT_MARK_UPDATE);
        t = port_ticks();
        L->b_ram[c] -= r->lr * gb;
        r->t_upd += ft_since(t);
    }
}

static void back_weights(run_t *r, uint8_t i, const layer_t *L)
{
    uint32_t n = row(L), rows = L->ws.idx ? L->ws.n_sel : L->s.out_c;
    gstat_t *g = ft_gstat_new(r, i, 0);
    if (r->stream)
        ft_stream_begin(r, i, 0, n * rows);
    for (uint32_t j = 0; j < rows; j++) {
        uint32_t c = L->ws.idx ? L->ws.idx[j] : j;
        port_marker(PORT_MARK_BACKWARD);
        uint64_t t = port_ticks();
        dwconv2d_weight_grad_channel(&L->s, L->dout, L->in, c, L->scratch);
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
        dwconv2d_input_grad(&L->s, L->dout, &L->ws, L->din);
    r->t_bwd += ft_since(t);
    if (L->flags & LF_TRAIN_B)
        back_bias(r, i, L);
    if (L->flags & LF_TRAIN_W)
        back_weights(r, i, L);
}

const fop_kind_t fk_dwconv2d = {"DWCONV2D", check_dims, row, 0, 0, 1, 0, 0, forward, backward};
