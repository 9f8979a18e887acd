/* Int8 training step: int8 forward (the bit-exact inference kernels, reading the arena copies of trained tensors),
 * the loss gradient at the logits from the int8 softmax output (or, training an autoencoder, the reconstruction
 * error's gradient at the graph output), then backward from the top op of the path down to
 * first_bwd in integer arithmetic. Per op: the output gradient masked by the fused activation and scaled per channel
 * (h), the input gradient (int32 accumulators requantised to int8 with a power-of-two scale chosen here), then per
 * channel the bias and weight gradient accumulators, each reported and applied at once through the Q16 residuals
 * (operator reordering: no gradient buffer of a whole tensor ever exists). An op whose weight gradient is an outer
 * product (FULLY_CONNECTED) fuses it into the update: its timed update window computes the gradient too, and the
 * accumulator row the report needs is computed outside the windows. A residual ADD passes its gradient to both
 * inputs; the op where the branch starts adds the skip's to its own input gradient (qgrad_merge). Floats appear only in reporting: the
 * step's loss, GSTAT norms and the evaluation loss, all outside the timed windows except the loss (as in fp32). */
#include <string.h>
#include "qtrain.h"
#include "runloop.h"
#include "qexec.h"
#include "qops.h"
#include "qparams.h"
#include "memmeter.h"
#include "msg.h"
#include "wire.h"

typedef struct { /* one arena slot (QTRAIN_GSTAT_SLOT), word-aligned: the sum of squares as two words */
    uint32_t sumsq_lo, sumsq_hi, max_abs;
    uint8_t layer, param;
    int16_t e;
} qgstat_t;
typedef char qgstat_is_one_slot[sizeof(qgstat_t) == QTRAIN_GSTAT_SLOT ? 1 : -1];

typedef struct {
    const qplan_t *p;
    const port_info_t *info;
    uint32_t step;
    uint8_t stream;
    uint32_t t_fwd, t_bwd, t_upd;
    uint64_t ticks[32][3]; /* LAYERS reports the first 32 ops */
    qgstat_t *gstat; /* the plan's arena slots */
    uint32_t n_gstat;
    /* GRAD stream of the current tensor */
    uint8_t g_layer, g_param;
    int16_t g_e;
    uint32_t g_total, g_offset, g_left;
} qrun_t;

static qrun_t run; /* static: keeps the stack high-water mark about training */

static uint32_t since(uint64_t t0)
{
    return (uint32_t)(port_ticks() - t0);
}

const qtop_t *qtrain_top(const qplan_t *p, uint32_t i)
{
    return p->train && i >= p->first_bwd && i <= p->bwd_top ? &p->top[i - p->first_bwd] : NULL;
}

/* ---- setup and forward ----------------------------------------------------------------------------------- */

void qtrain_load_params(const qplan_t *p)
{
    for (uint32_t i = p->first_bwd; i <= p->bwd_top; i++) {
        const qtop_t *t = qtrain_top(p, i);
        if (!t || !t->eff)
            continue;
        memcpy(t->eff, t->eff_flash, t->out_c * sizeof(int32_t));
        if (t->flags & QTF_TRAIN_B) {
            memcpy(t->b_ram, t->b_flash, t->out_c * sizeof(int32_t));
            memset(t->b_res, 0, t->out_c * sizeof(int16_t));
        }
        if (t->flags & QTF_TRAIN_W) {
            uint32_t rows = t->n_sel ? t->n_sel : t->out_c;
            if (t->w_stride)
                memcpy(t->w_ram, t->w_flash, t->out_c * t->row);
            else
                for (uint32_t j = 0; j < rows; j++)
                    memcpy(t->w_ram + j * t->row, t->w_flash + (t->n_sel ? t->sel[j] : j) * t->row, t->row);
            for (uint32_t j = 0; j < rows * t->row; j++)
                t->w_res[j] = QGRAD_RES_ZERO;
        }
    }
}

/* sparse update: the listed channels' outputs again, from their arena rows, a few channels per kernel call (views
 * of the same kernels, so the integers are those of a full kernel call with the trained weights) */
static void sparse_fix(const qnode_t *n, const qtop_t *t)
{
    for (uint32_t j = 0; j < t->n_sel; j += QSPARSE_GROUP)
        qnode_kind(n)->forward_rows(n, t, j, t->n_sel - j < QSPARSE_GROUP ? t->n_sel - j : QSPARSE_GROUP);
}

uint32_t qtrain_forward(const qplan_t *p, uint64_t (*ticks)[3])
{
    uint32_t total = 0;
    for (uint32_t i = 0; i < p->n_ops; i++) {
        const qtop_t *t = qtrain_top(p, i);
        uint64_t t0 = port_ticks();
        uint32_t d;
        qexec_op(&p->node[i]);
        if (t && t->n_sel && !t->w_stride) /* a whole depthwise copy computes with its trained channels already */
            sparse_fix(&p->node[i], t);
        d = since(t0);
        total += d;
        if (ticks && i < 32u)
            ticks[i][0] += d;
    }
    return total;
}

/* ---- gradient reporting (untimed) ------------------------------------------------------------------------- */

static qgstat_t *gstat_new(qrun_t *r, uint8_t layer, uint8_t param, int32_t e)
{
    qgstat_t *g = &r->gstat[r->n_gstat++]; /* one per trained tensor per step: qplan_load counted n_trained */
    *g = (qgstat_t){0, 0, 0, layer, param, (int16_t)e};
    return g;
}

static void stream_begin(qrun_t *r, uint8_t layer, uint8_t param, int32_t e, uint32_t total)
{
    r->g_layer = layer;
    r->g_param = param;
    r->g_e = (int16_t)e;
    r->g_total = total;
    r->g_offset = r->g_left = 0;
}

static void report(qrun_t *r, qgstat_t *g, const int32_t *a, uint32_t n)
{
    uint64_t sumsq = (uint64_t)g->sumsq_hi << 32 | g->sumsq_lo;
    for (uint32_t j = 0; j < n; j++) {
        int32_t v = a[j];
        uint32_t m = (uint32_t)(v < 0 ? -v : v);
        sumsq += (uint64_t)((int64_t)v * v);
        g->max_abs = m > g->max_abs ? m : g->max_abs;
        if (!r->stream)
            continue;
        if (r->g_left == 0) {
            r->g_left = r->g_total - r->g_offset < GRAD_CHUNK ? r->g_total - r->g_offset : GRAD_CHUNK;
            msg_begin(MSG_GRAD);
            msg_u32(r->step);
            msg_u8(r->g_layer);
            msg_u8(r->g_param);
            msg_u8(QTRAIN_GRAD_INT);
            msg_u8(0);
            msg_u32(r->g_total);
            msg_u32(r->g_offset);
            msg_u16((uint16_t)r->g_left);
            msg_u16((uint16_t)r->g_e); /* the exponent, int16 */
        }
        msg_u32((uint32_t)v);
        r->g_offset++;
        if (--r->g_left == 0)
            msg_send();
    }
    g->sumsq_lo = (uint32_t)sumsq;
    g->sumsq_hi = (uint32_t)(sumsq >> 32);
}

/* a fused kind's gradient row, reported in chunks from grad_at (its accumulator scratch holds the update's state) */
static void report_fused(qrun_t *r, qgstat_t *g, const qop_kind_t *k, const qnode_t *n, const qtop_t *t, uint32_t o)
{
    int32_t chunk[16];
    for (uint32_t j0 = 0; j0 < t->row; j0 += 16u) {
        uint32_t cnt = t->row - j0 < 16u ? t->row - j0 : 16u;
        for (uint32_t q = 0; q < cnt; q++)
            chunk[q] = k->grad_at(n, t, o, j0 + q);
        report(r, g, chunk, cnt);
    }
}

/* ---- backward ----------------------------------------------------------------------------------------------- */

/* depthwise: channel o's codes sit every w_stride bytes of the arena copy; gathered into a run, stepped by the same
 * update loop as every other row (residuals are compact per trained channel j), scattered back */
static int32_t sgd_strided(const qtop_t *t, uint32_t j, uint32_t o, int32_t mult, int32_t shift_e)
{
    int8_t run_w[64];
    int32_t changed = 0;
    for (uint32_t k0 = 0; k0 < t->row; k0 += 64u) {
        uint32_t cnt = t->row - k0 < 64u ? t->row - k0 : 64u;
        int8_t *w = t->w_ram + k0 * t->w_stride + o;
        for (uint32_t q = 0; q < cnt; q++)
            run_w[q] = w[q * t->w_stride];
        changed += qsgd_i8(run_w, t->w_res + j * t->row + k0, t->acc + k0, cnt, mult, shift_e);
        for (uint32_t q = 0; q < cnt; q++)
            w[q * t->w_stride] = run_w[q];
    }
    return changed;
}

/* one weighted op; e is the exponent of its output gradient; returns the exponent of its input gradient */
static int32_t back_weighted(qrun_t *r, uint32_t i, const qnode_t *n, const qtop_t *t, int32_t e)
{
    const qop_kind_t *k = qnode_kind(n);
    int32_t lo, hi, zp, e_in = 0;
    uint32_t n_pos = n->n_out / t->out_c;
    uint64_t t0;
    k->clamp(n, &lo, &hi, &zp);
    t0 = port_ticks();
    qgrad_prep(t->dout, (t->flags & QTF_MASK) ? n->y : NULL, lo, hi, t->m, n->n_out, t->out_c, t->h);
    if (t->flags & QTF_NEED_DX) {
        k->input_grad(n, t);
        e_in = e - QGRAD_H_SHIFT + (int32_t)t->h_down + qgrad_requant(t->acc, t->n_in, t->din);
    }
    r->t_bwd += since(t0);
    if (t->flags & QTF_TRAIN_B) {
        qgstat_t *g = gstat_new(r, (uint8_t)i, 1, e);
        const int32_t *u = t->upd + 2u * t->out_c;
        if (r->stream)
            stream_begin(r, (uint8_t)i, 1, e, t->out_c);
        for (uint32_t o = 0; o < t->out_c; o++) {
            int32_t a;
            port_marker(PORT_MARK_BACKWARD);
            t0 = port_ticks();
            a = qgrad_bias(t->h, n_pos, t->out_c, o);
            r->t_bwd += since(t0);
            report(r, g, &a, 1);
            port_marker(PORT_MARK_UPDATE);
            t0 = port_ticks();
            t->eff[o] += qsgd_bias(t->b_ram + o, t->b_res + o, a, u[2 * o], u[2 * o + 1] + e);
            r->t_upd += since(t0);
        }
    }
    if (t->flags & QTF_TRAIN_W) {
        uint32_t rows = t->n_sel ? t->n_sel : t->out_c;
        qgstat_t *g = gstat_new(r, (uint8_t)i, 0, e);
        if (r->stream)
            stream_begin(r, (uint8_t)i, 0, e, rows * t->row);
        if (k->prepare_update) {
            port_marker(PORT_MARK_UPDATE);
            t0 = port_ticks();
            k->prepare_update(n, t);
            r->t_upd += since(t0);
        }
        for (uint32_t j = 0; j < rows; j++) {
            uint32_t o = t->n_sel ? t->sel[j] : j;
            int32_t mult = t->upd[2 * o], shift_e = t->upd[2 * o + 1] + e, dw;
            port_marker(PORT_MARK_BACKWARD);
            if (k->update_row) { /* fused: the gradient is computed for the report only, outside the windows */
                report_fused(r, g, k, n, t, o);
                if (k->zero_row_when_h_zero && t->h[o] == 0)
                    continue;
                port_marker(PORT_MARK_UPDATE);
                t0 = port_ticks();
                dw = k->update_row(n, t, o, j, mult, shift_e);
            } else {
                t0 = port_ticks();
                k->weight_grad(n, t, o);
                r->t_bwd += since(t0);
                report(r, g, t->acc, t->row);
                if (k->zero_row_when_h_zero && t->h[o] == 0)
                    continue; /* a masked output: its row's gradient is zero, nothing to apply */
                port_marker(PORT_MARK_UPDATE);
                t0 = port_ticks();
                dw = t->w_stride ? sgd_strided(t, j, o, mult, shift_e)
                                 : qsgd_i8(t->w_ram + j * t->row, t->w_res + j * t->row, t->acc, t->row, mult, shift_e);
            }
            t->eff[o] -= zp * dw;
            r->t_upd += since(t0);
        }
    }
    return e_in;
}

static void backward(qrun_t *r, int32_t e)
{
    const qplan_t *p = r->p;
    for (uint32_t i = p->bwd_top + 1u; i-- > p->first_bwd;) {
        const qtop_t *t = qtrain_top(p, i);
        uint32_t b0 = r->t_bwd, u0 = r->t_upd;
        const qnode_t *n = &p->node[i];
        if (qnode_kind(n)->input_grad) {
            e = back_weighted(r, i, n, t, e);
        } else if (qnode_kind(n)->backward) {
            uint64_t t0;
            port_marker(PORT_MARK_BACKWARD);
            t0 = port_ticks();
            e = qnode_kind(n)->backward(n, t, e);
            r->t_bwd += since(t0);
        } /* else an alias (RESHAPE): din is dout, the exponent passes unchanged */
        if (t->flags & QTF_MERGE) { /* a residual branch starts here: add the skip gradient the ADD above left */
            int32_t e_s;
            uint64_t t0 = port_ticks();
            memcpy(&e_s, t->skip, sizeof e_s);
            e = qgrad_merge(t->din, t->skip + 4, t->n_in, e, e_s, t->merge[0], t->merge[1], t->acc);
            r->t_bwd += since(t0);
        }
        if (i < 32u) {
            r->ticks[i][1] += r->t_bwd - b0;
            r->ticks[i][2] += r->t_upd - u0;
        }
    }
}

/* ---- step, eval, run -------------------------------------------------------------------------------------- */

static void send_gstat(void *ctx)
{
    const qrun_t *r = ctx;
    msg_gstat_begin(r->step, r->n_gstat);
    for (uint32_t j = 0; j < r->n_gstat; j++) {
        const qgstat_t *g = &r->gstat[j];
        msg_gstat_entry(g->layer, g->param, QTRAIN_GRAD_INT, g->e, __builtin_sqrtf((float)((uint64_t)g->sumsq_hi << 32 | g->sumsq_lo)),
                        (float)g->max_abs);
    }
    msg_send();
}

/* per-op ticks summed over the run (the first 32 ops; int8 op codes marked 0x80), sent once before SUMMARY */
static void send_layers(void *ctx)
{
    const qrun_t *r = ctx;
    uint32_t n = r->p->n_ops < 32u ? r->p->n_ops : 32u;
    msg_layers_begin(n);
    for (uint32_t i = 0; i < n; i++)
        msg_layer(i, (uint8_t)(0x80u | r->p->node[i].op), r->ticks[i]);
    msg_send();
}

static void train_step(void *ctx, uint32_t step, uint32_t sample, int stream, msg_step_t *m)
{
    qrun_t *r = ctx;
    r->step = step;
    r->stream = (uint8_t)stream;
    const qplan_t *p = r->p;
    uint32_t label = p->data.y_train[sample];
    uint64_t t0;
    int32_t e;
    port_marker(PORT_MARK_FORWARD); /* markers sit outside the timed windows */
    t0 = port_ticks();
    qexec_load_sample(p, p->data.x_train + sample * p->data.sample_bytes);
    r->t_fwd = since(t0);
    r->t_fwd += qtrain_forward(p, r->ticks);
    t0 = port_ticks();
    if (p->loss == QLOSS_RECONSTRUCTION)
        e = qgrad_recon(&p->recon, p->output, p->input, p->n_classes, p->dlogits);
    else
        e = qgrad_logits(p->output, p->n_classes, label, p->dlogits);
    m->loss = qexec_sample_loss(p, label);
    r->t_fwd += since(t0);
    r->t_bwd = r->t_upd = 0;
    r->n_gstat = 0;
    backward(r, e);
    port_marker(PORT_MARK_STEP_END);
    m->step = r->step;
    m->sample = sample;
    m->label = (uint8_t)label;
    m->pred = p->loss == QLOSS_RECONSTRUCTION ? 0u : (uint8_t)qexec_argmax(p);
    m->t_fwd = r->t_fwd;
    m->t_bwd = r->t_bwd;
    m->t_upd = r->t_upd;
}

/* ---- the operations the shared run loop (runloop.c) calls ------------------------------------------------- */

static void op_load_params(void *ctx)
{
    qtrain_load_params(((qrun_t *)ctx)->p);
}

static int op_eval_sample(void *ctx, uint32_t s, float *loss)
{
    const qplan_t *p = ((qrun_t *)ctx)->p;
    uint32_t label = p->data.y_eval[s];
    qexec_load_sample(p, p->data.x_eval + s * p->data.sample_bytes);
    qtrain_forward(p, NULL);
    *loss = qexec_sample_loss(p, label);
    return p->loss != QLOSS_RECONSTRUCTION && qexec_argmax(p) == label; /* a reconstruction has no classes */
}

int qtrain_run(const qplan_t *p, const start_t *a, const port_info_t *info, stop_poll_fn poll)
{
    train_ops_t o = {&run, p->arena_need, p->data.n_train, p->data.n_eval, op_load_params, train_step, send_gstat,
                     op_eval_sample, send_layers, qparams_keep, p};
    memset(&run, 0, sizeof run);
    run.p = p;
    run.gstat = (qgstat_t *)p->gstat;
    run.info = info;
    return runloop_train(&o, a, info, poll);
}
