/* DENSE: y = W x + b (weights [out][in], input read flat); backward fused with the update (dy x^T never stored). */
#include "fops.h"
#include "ops/dense.h"

static const char *check_dims(const layer_t *L)
{
    const conv_shape_t *s = &L->s;
    return s->in_h != 1 || s->in_w != 1 || s->out_h != 1 || s->out_w != 1 ? "plan: dense needs h = w = 1" : NULL;
}

static uint32_t row(const layer_t *L)
{
    return L->n_in;
}

static void forward(const layer_t *L)
{
    dense_forward(L->in, &L->ws, L->b, L->out, L->n_in, L->n_out);
}

/* dense: dL/dW = dy x^T, so ||g|| = ||dy|| ||x|| and max|g| = max|dy| max|x|; dL/db = dy. Sparse weights: the rows
 * of the listed channels only, in list order. */
static void report(run_t *r, uint8_t i, const layer_t *L)
{
    float dsq, dmax, xsq, xmax;
    ft_vec_stats(L->dout, L->n_out, &dsq, &dmax);
    if (L->flags & LF_TRAIN_W) {
        uint32_t rows = L->ws.idx ? L->ws.n_sel : L->n_out;
        float wsq = dsq, wmax = dmax;
        if (L->ws.idx)
            ft_row_stats(L, &wsq, &wmax);
        ft_vec_stats(L->in, L->n_in, &xsq, &xmax);
        gstat_t *g = ft_gstat_new(r, i, 0);
        g->sumsq = __builtin_sqrtf(wsq) * __builtin_sqrtf(xsq);
        g->max_abs = wmax * xmax;
        g->norm_done = 1;
        if (r->stream) {
            ft_stream_begin(r, i, 0, L->n_in * rows);
            for (uint32_t o = 0; o < rows; o++) {
                float d = L->dout[L->ws.idx ? L->ws.idx[o] : o];
                for (uint32_t j = 0; j < L->n_in; j++)
                    ft_stream_push(r, d * L->in[j]);
            }
        }
    }
    if (L->flags & LF_TRAIN_B) {
        gstat_t *g = ft_gstat_new(r, i, 1);
        g->sumsq = dsq;
        g->max_abs = dmax;
        if (r->stream) {
            ft_stream_begin(r, i, 1, L->n_out);
            for (uint32_t o = 0; o < L->n_out; o++)
                ft_stream_push(r, L->dout[o]);
        }
    }
}

static void backward(run_t *r, uint8_t i, const layer_t *L)
{
    port_marker(PORT_MARK_BACKWARD);
    uint64_t t = port_ticks();
    if (L->flags & LF_NEED_DX)
        dense_input_grad(L->dout, &L->ws, L->din, L->n_in, L->n_out);
    r->t_bwd += ft_since(t);
    report(r, i, L);
    port_marker(PORT_MARK_UPDATE);
    t = port_ticks();
    if ((L->flags & LF_TRAIN_W) && L->ws.idx)
        dense_update_rows(L->w_ram, L->ws.idx, L->ws.n_sel, L->dout, L->in, r->lr, L->n_in);
    else if (L->flags & LF_TRAIN_W)
        dense_update_weights(L->w_ram, L->dout, L->in, r->lr, L->n_in, L->n_out);
    if (L->flags & LF_TRAIN_B)
        dense_update_bias(L->b_ram, L->dout, r->lr, L->n_out);
    r->t_upd += ft_since(t);
}

const fop_kind_t fk_dense = {"DENSE", check_dims, row, 0, 1, 0, 0, 0, forward, backward};
