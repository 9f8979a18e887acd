/* Training loop. Per step: forward, loss, then backward from the last layer down to first_bwd; each layer first
 * computes its input gradient with the weights of the forward pass, then reports its parameter gradients
 * (GSTAT statistics, GRAD values: outside the timed phases) and applies SGD in place. No gradient buffer for a
 * whole model ever exists: dense weight gradients are the outer product dy x^T, recomputed when streamed.
 * Sparse update (a layer with a channel list): the forward pass and input gradient read the listed output channels
 * from the compact arena copy and the others from flash; only the listed channels' gradients exist. */
#include <string.h>
#include "trainer.h"
#include "fops.h"
#include "ftrain.h"
#include "runloop.h"
#include "memmeter.h"
#include "msg.h"
#include "wire.h"
#include "params.h"
#include "ops/add.h"
#include "ops/mse.h"
#include "ops/softmax_ce.h"

static run_t run; /* static: keeps the stack high-water mark about training, not about bookkeeping */

/* ---- memory measurement -------------------------------------------------------------------------------- */






/* ---- setup ------------------------------------------------------------------------------------------------ */

static void copy_or_zero(float *dst, const float *src, uint32_t n)
{
    if (src)
        memcpy(dst, src, n * sizeof(float));
    else
        memset(dst, 0, n * sizeof(float));
}


void trainer_load_params(const plan_t *p)
{
    for (uint32_t i = 0; i < p->n_layers; i++) {
        const layer_t *L = &p->layer[i];
        if (L->ws.idx) /* sparse: the listed output channels' rows, compact */
            for (uint32_t j = 0; j < L->ws.n_sel; j++)
                memcpy(L->w_ram + j * L->ws.row, L->w_init + L->ws.idx[j] * L->ws.row, L->ws.row * sizeof(float));
        else if (L->w_ram)
            copy_or_zero(L->w_ram, L->w_init, L->ws.row * L->s.out_c);
        if (L->b_ram)
            copy_or_zero(L->b_ram, L->b_init, L->s.out_c);
    }
}

/* ---- forward ---------------------------------------------------------------------------------------------- */

static void load_sample(const plan_t *p, const uint8_t *x)
{
    float *in = p->input, scale = p->data.scale, offset = p->data.offset;
    for (uint32_t j = 0; j < p->data.sample_bytes; j++)
        in[j] = (float)x[j] * scale + offset;
}

static void forward(const plan_t *p)
{
    for (uint32_t i = 0; i < p->n_layers; i++)
        fop_forward(&p->layer[i]);
}

/* the training forward pass, timed per layer; returns the sum of the layers' ticks */
static uint32_t forward_timed(run_t *r)
{
    uint32_t total = 0;
    for (uint32_t i = 0; i < r->p->n_layers; i++) {
        uint64_t t = port_ticks();
        fop_forward(&r->p->layer[i]);
        uint32_t d = ft_since(t);
        r->layer_ticks[i][0] += d;
        total += d;
    }
    return total;
}

static const float *logits(const plan_t *p)
{
    return p->layer[p->n_layers - 1u].out;
}

/* the loss at the logits: softmax cross-entropy with its argmax, or (PF_RECON) the autoencoder's MSE against its
 * input, which the plan keeps intact to here (no classes: *pred is 0) */
static float plan_loss(const plan_t *p, uint32_t label, float *dz, uint32_t *pred)
{
    if (p->recon) {
        *pred = 0;
        return mse_recon(logits(p), p->input, p->n_classes, dz);
    }
    return softmax_ce(logits(p), p->n_classes, label, dz, pred);
}

/* ---- gradient reporting (untimed) ------------------------------------------------------------------------- */

gstat_t *ft_gstat_new(run_t *r, uint8_t layer, uint8_t param)
{
    gstat_t *g = &r->gstat[r->n_gstat++];
    *g = (gstat_t){layer, param, 0.0f, 0.0f, 0};
    return g;
}


void ft_vec_stats(const float *v, uint32_t n, float *sumsq, float *max_abs)
{
    gstat_t g = {0, 0, 0.0f, 0.0f, 0};
    for (uint32_t j = 0; j < n; j++)
        ft_gstat_add(&g, v[j]);
    *sumsq = g.sumsq;
    *max_abs = g.max_abs;
}

void ft_stream_begin(run_t *r, uint8_t layer, uint8_t param, uint32_t total)
{
    r->gs = (gstream_t){layer, param, total, 0, 0};
}

/* appends one gradient value; opens and closes GRAD frames of at most GRAD_CHUNK values */
void ft_stream_push(run_t *r, float v)
{
    gstream_t *s = &r->gs;
    if (s->left == 0) {
        s->left = s->total - s->offset < GRAD_CHUNK ? s->total - s->offset : GRAD_CHUNK;
        msg_begin(MSG_GRAD);
        msg_u32(r->step);
        msg_u8(s->layer);
        msg_u8(s->param);
        msg_u16(0);
        msg_u32(s->total);
        msg_u32(s->offset);
        msg_u16((uint16_t)s->left);
        msg_u16(0);
    }
    msg_f32(v);
    s->offset++;
    if (--s->left == 0)
        msg_send();
}

/* dy of the rows whose weights train: every output, or only the listed channels (sparse) */
void ft_row_stats(const layer_t *L, float *sumsq, float *max_abs)
{
    gstat_t g = {0, 0, 0.0f, 0.0f, 0};
    if (!L->ws.idx) {
        ft_vec_stats(L->dout, L->n_out, sumsq, max_abs);
        return;
    }
    for (uint32_t j = 0; j < L->ws.n_sel; j++)
        ft_gstat_add(&g, L->dout[L->ws.idx[j]]);
    *sumsq = g.sumsq;
    *max_abs = g.max_abs;
}

void ft_report_values(run_t *r, gstat_t *g, const float *v, uint32_t n)
{
    for (uint32_t j = 0; j < n; j++) {
        ft_gstat_add(g, v[j]);
        if (r->stream)
            ft_stream_push(r, v[j]);
    }
}

/* ---- backward ----------------------------------------------------------------------------------------------- */

/* a residual branch starts at layer i (LF_MERGE): its input gradient adds the skip gradient of the one ADD whose
 * skip is its input (the plan loader checked there is exactly one), timed as backward */
static void merge_skip(run_t *r, uint32_t i)
{
    const plan_t *p = r->p;
    for (uint32_t j = i + 1u; j < p->n_layers; j++)
        if (p->layer[j].op == OP_ADD && p->layer[j].s.k == i) {
            port_marker(PORT_MARK_BACKWARD);
            uint64_t t = port_ticks();
            add_accumulate(p->layer[i].din, p->layer[j].scratch, p->layer[i].n_in);
            r->t_bwd += ft_since(t);
            return;
        }
}

/* each layer's share of the backward and update phases is what its own call added to them */
static void backward(run_t *r)
{
    const plan_t *p = r->p;
    for (uint32_t i = p->n_layers; i-- > p->first_bwd;) {
        uint32_t bwd0 = r->t_bwd, upd0 = r->t_upd;
        fop_backward(r, (uint8_t)i, &p->layer[i]);
        if (p->layer[i].flags & LF_MERGE)
            merge_skip(r, i);
        r->layer_ticks[i][1] += r->t_bwd - bwd0;
        r->layer_ticks[i][2] += r->t_upd - upd0;
    }
}

/* ---- step, eval, run -------------------------------------------------------------------------------------- */

static void send_gstat(void *ctx)
{
    const run_t *r = ctx;
    msg_gstat_begin(r->step, r->n_gstat);
    for (uint32_t j = 0; j < r->n_gstat; j++) {
        const gstat_t *g = &r->gstat[j];
        msg_gstat_entry(g->layer, g->param, 0, 0, g->norm_done ? g->sumsq : __builtin_sqrtf(g->sumsq), g->max_abs);
    }
    msg_send();
}

/* per-layer ticks summed over the run, sent once before SUMMARY */
static void send_layers(void *ctx)
{
    const run_t *r = ctx;
    msg_layers_begin(r->p->n_layers);
    for (uint32_t i = 0; i < r->p->n_layers; i++)
        msg_layer(i, r->p->layer[i].op, r->layer_ticks[i]);
    msg_send();
}


/* ---- forward-only training: PEPITA and MEMPEPITA (docs/plan-format.md, "Forward-only training") --------- */

/* the layer whose output is parameter layer i's activation h_i: the ReLU right after it, else itself */
static uint32_t act_of(const plan_t *p, uint32_t i)
{
    return i + 1u < p->n_layers && p->layer[i + 1u].op == OP_RELU ? i + 1u : i;
}

/* element idx (= input index * n_classes + class) of the fixed projection F: a murmur3 finaliser of the seed and
 * idx, as a uniform float in [-bound, bound) (exact until the one rounding of the multiply by bound) */
static float projection(uint32_t seed, uint32_t idx, float bound)
{
    uint32_t x = seed + 0x9E3779B9u * (idx + 1u);
    x ^= x >> 16;
    x *= 0x85EBCA6Bu;
    x ^= x >> 13;
    x *= 0xC2B2AE35u;
    x ^= x >> 16;
    return ((float)(x >> 8) * (1.0f / 16777216.0f) * 2.0f - 1.0f) * bound;
}

/* x' = x + F e into out (the sample decoded again into p->input, e the first pass's softmax - onehot) */
static void modulate(const plan_t *p, const uint8_t *x8, float *out)
{
    load_sample(p, x8);
    for (uint32_t j = 0; j < p->layer[0].n_in; j++) {
        float acc = 0.0f;
        for (uint32_t k = 0; k < p->n_classes; k++)
            acc += projection(p->f_seed, j * p->n_classes + k, p->f_bound) * p->dlogits[k];
        out[j] = p->input[j] + acc;
    }
}

/* parameter layer j's update: dout holds h_j - h'_j (the last layer: e'), `in` its modulated input; the kind's
 * backward does it (need_dx is clear), streaming and applying dout x in^T */
static void fwd_update(run_t *r, uint32_t j, const float *mod_in)
{
    const plan_t *p = r->p;
    layer_t m = p->layer[j];
    uint32_t bwd0 = r->t_bwd, upd0 = r->t_upd;
    m.in = (float *)mod_in;
    fop_kinds[m.op]->backward(r, (uint8_t)j, &m);
    r->layer_ticks[j][1] += r->t_bwd - bwd0;
    r->layer_ticks[j][2] += r->t_upd - upd0;
}

/* one layer of the modulated stream through mod_a/mod_b (in place where the op allows); returns its output */
static float *mod_forward(run_t *r, uint32_t i, float *in)
{
    const plan_t *p = r->p;
    layer_t m = p->layer[i];
    uint64_t t = port_ticks();
    m.in = in;
    m.out = fop_kinds[m.op]->aliases ? in : (in == p->mod_a ? p->mod_b : p->mod_a);
    fop_kinds[m.op]->forward(&m);
    uint32_t d = ft_since(t);
    r->layer_ticks[i][1] += d;
    r->t_bwd += d;
    return m.out;
}

/* PEPITA: a clean pass keeping each trained layer's h_j in its dout, then the modulated pass (x' = x + F e) with
 * each layer updated as soon as its h'_j exists. MEMPEPITA keeps nothing: after the clean pass that gives e, the
 * clean and the modulated streams run again side by side, layer by layer. */
__attribute__((noinline)) /* its frame (modulated inputs, layer views) only on forward-only runs */
static void fwd_only_step(run_t *r, const uint8_t *x8, uint32_t label, msg_step_t *m, uint32_t *pred)
{
    const plan_t *p = r->p;
    const uint32_t last = p->n_layers - 1u;
    const float *mod_in[PLAN_MAX_LAYERS];
    uint32_t pred2 = 0;
    uint64_t t = port_ticks();
    int mem = p->fwd_mode == FWD_MEMPEPITA;
    load_sample(p, x8);
    r->t_fwd = ft_since(t);
    for (uint32_t i = 0; i < p->n_layers; i++) {
        t = port_ticks();
        fop_forward(&p->layer[i]);
        for (uint32_t j = i - (i > 0u); !mem && j <= i; j++) /* keep h_j: the layer itself or the ReLU after it */
            if (j < last && act_of(p, j) == i && (p->layer[j].flags & LF_TRAIN_W))
                memcpy(p->layer[j].dout, p->layer[i].out, p->layer[i].n_out * sizeof(float));
        uint32_t d = ft_since(t);
        r->layer_ticks[i][0] += d;
        r->t_fwd += d;
    }
    t = port_ticks();
    m->loss = softmax_ce(logits(p), p->n_classes, label, p->dlogits, pred);
    r->t_fwd += ft_since(t);
    r->t_bwd = r->t_upd = 0;
    r->n_gstat = 0;
    port_marker(PORT_MARK_BACKWARD);
    t = port_ticks();
    modulate(p, x8, p->mod_a);
    r->t_bwd += ft_since(t);
    float *cur = p->mod_a;
    for (uint32_t i = 0; i < p->n_layers; i++) {
        if (mem) { /* the clean stream again, from the sample (p->input holds it: modulate decoded it) */
            t = port_ticks();
            fop_forward(&p->layer[i]);
            uint32_t d = ft_since(t);
            r->layer_ticks[i][1] += d;
            r->t_bwd += d;
        }
        mod_in[i] = cur;
        cur = mod_forward(r, i, cur);
        for (uint32_t j = i - (i > 0u); j <= i; j++) {
            const layer_t *L = &p->layer[j];
            if (j >= last || act_of(p, j) != i || !(L->flags & (LF_TRAIN_W | LF_TRAIN_B)))
                continue;
            t = port_ticks(); /* dout = h_j - h'_j: h_j kept (PEPITA) or just recomputed (MEMPEPITA) */
            for (uint32_t k = 0; k < p->layer[i].n_out; k++)
                L->dout[k] = (mem ? p->layer[i].out[k] : L->dout[k]) - cur[k];
            r->t_bwd += ft_since(t);
            fwd_update(r, j, mod_in[j]);
        }
    }
    t = port_ticks();
    softmax_ce(cur, p->n_classes, label, p->dlogits, &pred2); /* e' of the modulated pass */
    r->t_bwd += ft_since(t);
    if (p->layer[last].flags & (LF_TRAIN_W | LF_TRAIN_B))
        fwd_update(r, last, mod_in[last]);
}

/* backprop: forward, loss, then backward from the last layer down to first_bwd */
static void backprop_step(run_t *r, const uint8_t *x8, uint32_t label, msg_step_t *m, uint32_t *pred)
{
    const plan_t *p = r->p;
    uint64_t t = port_ticks();
    load_sample(p, x8);
    r->t_fwd = ft_since(t);
    r->t_fwd += forward_timed(r);
    t = port_ticks();
    m->loss = plan_loss(p, label, p->first_bwd < p->n_layers ? p->dlogits : NULL, pred);
    r->t_fwd += ft_since(t);
    r->t_bwd = r->t_upd = 0;
    r->n_gstat = 0;
    backward(r);
}

/* ---- FedProx: the proximal term of a federated client's local SGD ---------------------------------------- */

/* the anchor's floats: every trainable tensor */
static uint32_t prox_values(const plan_t *p)
{
    uint32_t total = 0;
    for (uint32_t i = 0; i < p->n_layers; i++)
        for (uint32_t k = 0; k < 2u; k++) {
            uint32_t n = 0;
            if (params_tensor(p, i, k, &n))
                total += n;
        }
    return total;
}

/* the anchor's arena offset: after the plan's arena, 8-byte aligned */
static uint32_t anchor_offset(const plan_t *p)
{
    return (p->arena_need + 7u) & ~7u;
}

uint32_t trainer_arena_need(const plan_t *p, const start_t *a)
{
    return a->prox_mu != 0.0f ? anchor_offset(p) + 4u * prox_values(p) : p->arena_need;
}

/* n values of t pulled toward the anchor a: t -= lm * (t - a); four at a time (the loop costs as much as the
 * arithmetic otherwise) */
static void prox_pull(float *t, const float *a, uint32_t n, float lm)
{
    uint32_t j = 0;
    for (; j + 4u <= n; j += 4u) {
        float t0 = t[j], t1 = t[j + 1u], t2 = t[j + 2u], t3 = t[j + 3u];
        t[j] = t0 - lm * (t0 - a[j]);
        t[j + 1u] = t1 - lm * (t1 - a[j + 1u]);
        t[j + 2u] = t2 - lm * (t2 - a[j + 2u]);
        t[j + 3u] = t3 - lm * (t3 - a[j + 3u]);
    }
    for (; j < n; j++)
        t[j] -= lm * (t[j] - a[j]);
}

/* copy (to_anchor) the trainable tensors into the anchor, or pull each value toward it */
static void prox_pass(run_t *r, int to_anchor)
{
    const plan_t *p = r->p;
    float *a = r->anchor;
    for (uint32_t i = 0; i < p->n_layers; i++)
        for (uint32_t k = 0; k < 2u; k++) {
            uint32_t n = 0;
            float *t = params_tensor(p, i, k, &n);
            if (!t)
                continue;
            if (to_anchor)
                memcpy(a, t, n * sizeof(float));
            else
                prox_pull(t, a, n, r->prox_lm);
            a += n;
        }
}

/* one SGD step on one training sample; fills the STEP message */
static void train_step(void *ctx, uint32_t step, uint32_t sample, int stream, msg_step_t *m)
{
    run_t *r = ctx;
    r->step = step;
    r->stream = (uint8_t)stream;
    const plan_t *p = r->p;
    const uint8_t *x8 = p->data.x_train + sample * p->data.sample_bytes;
    uint32_t label = p->data.y_train[sample], pred = 0;
    if (r->anchor && step == 0) /* the values the run starts from (after EVAL phase 0, which changes nothing) */
        prox_pass(r, 1);
    port_marker(PORT_MARK_FORWARD); /* markers sit outside the timed windows: the counts do not include them */
    if (p->fwd_mode)
        fwd_only_step(r, x8, label, m, &pred);
    else
        backprop_step(r, x8, label, m, &pred);
    if (r->anchor) {
        uint64_t t;
        port_marker(PORT_MARK_UPDATE);
        t = port_ticks();
        prox_pass(r, 0);
        r->t_upd += ft_since(t);
    }
    port_marker(PORT_MARK_STEP_END);
    m->step = r->step;
    m->sample = sample;
    m->label = (uint8_t)label;
    m->pred = (uint8_t)pred;
    m->t_fwd = r->t_fwd;
    m->t_bwd = r->t_bwd;
    m->t_upd = r->t_upd;
}

/* ---- the operations the shared run loop (runloop.c) calls ------------------------------------------------- */

static void op_load_params(void *ctx)
{
    trainer_load_params(((run_t *)ctx)->p);
}

static int op_eval_sample(void *ctx, uint32_t s, float *loss)
{
    const plan_t *p = ((run_t *)ctx)->p;
    uint32_t pred = 0, label = p->data.y_eval[s];
    load_sample(p, p->data.x_eval + s * p->data.sample_bytes);
    forward(p);
    *loss = plan_loss(p, label, NULL, &pred);
    return pred == label;
}

int trainer_run(const plan_t *p, const start_t *a, const port_info_t *info, stop_poll_fn poll)
{
    train_ops_t o = {&run, trainer_arena_need(p, a), p->data.n_train, p->data.n_eval, op_load_params, train_step,
                     send_gstat, op_eval_sample, send_layers, params_keep, p};
    memset(&run, 0, sizeof run);
    run.p = p;
    run.info = info;
    run.lr = a->lr;
    if (a->prox_mu != 0.0f) { /* the caller checked that the anchor fits the arena */
        run.prox_lm = a->lr * a->prox_mu;
        run.anchor = (float *)(void *)(info->arena + anchor_offset(p));
    }
    return runloop_train(&o, a, info, poll);
}
