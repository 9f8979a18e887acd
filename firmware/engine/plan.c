/* Blob validation. Every field is distrusted: sizes are checked in 64-bit arithmetic before any pointer is formed,
 * and every arena range must lie inside the plan's arena_bytes, itself no larger than the device's arena. */
#include <stddef.h>
#include <string.h>
#include "plan.h"
#include "formats.h"
#include "fops.h"
#include "blob.h"
#include "msg.h"
#include "wire.h"

typedef struct {
    plan_t *p;
    fault_t *f;
    const uint8_t *blob;
    uint32_t blob_bytes;
    uint8_t *arena;
    uint16_t flags; /* header flags */
} ctx_t;

static float *arena_floats(const ctx_t *c, uint32_t off, uint64_t count)
{
    if ((off & 3u) || off > c->p->arena_need || count * 4u > (uint64_t)(c->p->arena_need - off))
        return NULL;
    return (float *)(void *)(c->arena + off);
}

static const float *blob_floats(const ctx_t *c, uint32_t off, uint64_t count)
{
    if ((off & 3u) || off < PLAN_HEADER || off > c->blob_bytes || count * 4u > (uint64_t)(c->blob_bytes - off))
        return NULL;
    return (const float *)(const void *)(c->blob + off);
}

static int disjoint(const float *a, uint32_t an, const float *b, uint32_t bn)
{
    return a + an <= b || b + bn <= a;
}

static int check_header(ctx_t *c, const mem_window_t *win, uint32_t plan_addr, uint32_t arena_bytes)
{
    const uint8_t *h = blob_window_ptr(win, plan_addr, PLAN_HEADER);
    fault_t *f = c->f;
    if (!h)
        return blob_fail(f, FAULT_PLAN, "plan: address outside flash", plan_addr, 0);
    if (le32(h + TPLN_H_MAGIC) != PLAN_MAGIC)
        return blob_fail(f, FAULT_PLAN, "plan: bad magic", le32(h + TPLN_H_MAGIC), PLAN_MAGIC);
    if (le16(h + TPLN_H_VERSION) != 1 || le16(h + TPLN_H_HEADER_BYTES) != PLAN_HEADER)
        return blob_fail(f, FAULT_PLAN, "plan: unsupported version or header size", le16(h + TPLN_H_VERSION), le16(h + TPLN_H_HEADER_BYTES));
    c->blob_bytes = le32(h + TPLN_H_BLOB_BYTES);
    c->blob = blob_window_ptr(win, plan_addr, c->blob_bytes);
    if (c->blob_bytes < PLAN_HEADER || !c->blob)
        return blob_fail(f, FAULT_PLAN, "plan: blob_bytes outside flash", c->blob_bytes, 0);
    if (blob_crc(h, c->blob_bytes) != le32(h + TPLN_H_CRC32))
        return blob_fail(f, FAULT_PLAN, "plan: CRC mismatch", blob_crc(h, c->blob_bytes), le32(h + TPLN_H_CRC32));
    c->p->plan_hash = le32(h + TPLN_H_PLAN_HASH);
    c->p->arena_need = le32(h + TPLN_H_ARENA_BYTES);
    c->p->n_layers = le16(h + TPLN_H_N_LAYERS);
    c->p->n_classes = le16(h + TPLN_H_N_CLASSES);
    c->p->first_bwd = le16(h + TPLN_H_FIRST_BWD);
    if (c->p->arena_need > arena_bytes)
        return blob_fail(f, FAULT_ARENA, "plan: arena too small", c->p->arena_need, arena_bytes);
    if (c->p->n_layers < 1 || c->p->n_layers > PLAN_MAX_LAYERS)
        return blob_fail(f, FAULT_PLAN, "plan: n_layers not in 1..32", c->p->n_layers, 0);
    c->flags = le16(h + TPLN_H_FLAGS);
    c->p->recon = (c->flags & PF_RECON) != 0;
    if (!c->p->recon && (c->p->n_classes < 2 || c->p->n_classes > 256))
        return blob_fail(f, FAULT_PLAN, "plan: n_classes not in 2..256", c->p->n_classes, 0);
    if (c->p->first_bwd > c->p->n_layers)
        return blob_fail(f, FAULT_PLAN, "plan: first_bwd > n_layers", c->p->first_bwd, 0);
    if ((c->flags & ~(uint16_t)(PF_CHANNEL_LISTS | PF_PEPITA | PF_MEMPEPITA | PF_RECON)) ||
        (c->flags & (PF_PEPITA | PF_MEMPEPITA)) == (PF_PEPITA | PF_MEMPEPITA) ||
        ((c->flags & PF_RECON) && (c->flags & (PF_PEPITA | PF_MEMPEPITA))))
        return blob_fail(f, FAULT_PLAN, "plan: unknown flags", c->flags, 0);
    c->p->fwd_mode = (c->flags & PF_PEPITA) ? FWD_PEPITA : (c->flags & PF_MEMPEPITA) ? FWD_MEMPEPITA : FWD_NONE;
    if (!c->p->fwd_mode && (le32(h + TPLN_H_F_SEED) || le32(h + TPLN_H_F_BOUND) || le32(h + TPLN_H_MOD_A_OFF) ||
                            le32(h + TPLN_H_MOD_B_OFF)))
        return blob_fail(f, FAULT_PLAN, "plan: forward-only fields set without a forward-only flag", c->flags, 0);
    if ((le32(h + TPLN_H_LAYERS_OFFSET) & 3u) || le32(h + TPLN_H_LAYERS_OFFSET) < PLAN_HEADER ||
        (uint64_t)le32(h + TPLN_H_LAYERS_OFFSET) + (uint64_t)c->p->n_layers * PLAN_RECORD > c->blob_bytes)
        return blob_fail(f, FAULT_PLAN, "plan: layer records outside blob", le32(h + TPLN_H_LAYERS_OFFSET), 0);
    return 0;
}

/* output size of a convolution along one axis, 0 when impossible */

static int check_dims(ctx_t *c, uint32_t i, layer_t *L, const uint8_t *r)
{
    const conv_shape_t *s = &L->s;
    const char *why;
    if (!s->in_h || !s->in_w || !s->in_c || !s->out_h || !s->out_w || !s->out_c)
        return blob_fail(c->f, FAULT_PLAN, "plan: zero dimension", i, 0);
    why = fop_kinds[L->op]->check_dims(L);
    return why ? blob_fail(c->f, FAULT_PLAN, why, i, le16(r + TPLN_L_PAD_TOP)) : 0;
}

static int check_activations(ctx_t *c, uint32_t i, layer_t *L, const uint8_t *r)
{
    /* forward-only plans: a trained layer's dout holds its activation difference; nothing computes input gradients */
    int fwd = c->p->fwd_mode != FWD_NONE;
    int back = fwd ? (L->flags & (LF_TRAIN_W | LF_TRAIN_B)) != 0 : i >= c->p->first_bwd;
    if (fwd && (L->flags & LF_NEED_DX))
        return blob_fail(c->f, FAULT_PLAN, "plan: forward-only training computes no input gradients (need_dx)", i, 0);
    if (fwd && (L->flags & LF_ACT))
        return blob_fail(c->f, FAULT_PLAN, "plan: forward-only training takes separate RELU layers, not fused", i, 0);
    L->in = arena_floats(c, le32(r + TPLN_L_IN_OFF), L->n_in);
    L->out = arena_floats(c, le32(r + TPLN_L_OUT_OFF), L->n_out);
    if (!L->in || !L->out)
        return blob_fail(c->f, FAULT_PLAN, "plan: activation outside arena", i, 0);
    if (fop_kinds[L->op]->aliases ? (L->in != L->out && !disjoint(L->in, L->n_in, L->out, L->n_out))
                         : !disjoint(L->in, L->n_in, L->out, L->n_out))
        return blob_fail(c->f, FAULT_PLAN, "plan: input overlaps output", i, 0);
    if (back) {
        L->dout = arena_floats(c, le32(r + TPLN_L_DOUT_OFF), L->n_out);
        if (!L->dout)
            return blob_fail(c->f, FAULT_PLAN, "plan: dout outside arena", i, 0);
        /* a fused activation's backward masks dout by the kept output */
        if ((L->flags & LF_ACT) && !disjoint(L->dout, L->n_out, L->out, L->n_out))
            return blob_fail(c->f, FAULT_PLAN, "plan: dout overlaps the output its activation's backward reads", i,
                             0);
    }
    if (!back)
        L->flags &= (uint8_t)~LF_NEED_DX;
    if (L->flags & LF_NEED_DX) {
        L->din = arena_floats(c, le32(r + TPLN_L_DIN_OFF), L->n_in);
        if (!L->din)
            return blob_fail(c->f, FAULT_PLAN, "plan: din outside arena", i, 0);
        if (!(fop_kinds[L->op]->aliases && L->din == L->dout) && !disjoint(L->din, L->n_in, L->dout, L->n_out))
            return blob_fail(c->f, FAULT_PLAN, "plan: din overlaps dout", i, 0);
        if ((L->flags & LF_TRAIN_W) && !disjoint(L->din, L->n_in, L->in, L->n_in))
            return blob_fail(c->f, FAULT_PLAN, "plan: din overlaps the input a weight update needs", i, 0);
        if (fop_kinds[L->op]->bwd_reads_input && !disjoint(L->din, L->n_in, L->in, L->n_in))
            return blob_fail(c->f, FAULT_PLAN, "plan: din overlaps the input its backward reads", i, 0);
    }
    return 0;
}

/* one parameter tensor: src (n floats) in the blob, optional arena copy of n_copy floats */
static int check_tensor(ctx_t *c, uint32_t i, const uint8_t *r, uint32_t n, uint32_t n_copy, int is_bias, int train)
{
    layer_t *L = &c->p->layer[i];
    uint32_t src = le32(r + (is_bias ? 20 : 16)), ram = le32(r + (is_bias ? 28 : 24));
    const float *init = src == PLAN_NONE ? NULL : blob_floats(c, src, n);
    float *copy = ram == PLAN_NONE ? NULL : arena_floats(c, ram, n_copy);
    if (src != PLAN_NONE && !init)
        return blob_fail(c->f, FAULT_PLAN, "plan: parameter source outside blob", i, is_bias);
    if (ram != PLAN_NONE && !copy)
        return blob_fail(c->f, FAULT_PLAN, "plan: parameter copy outside arena", i, is_bias);
    if (train && !copy)
        return blob_fail(c->f, FAULT_PLAN, "plan: trained parameter has no arena copy", i, is_bias);
    if (!is_bias && !init)
        return blob_fail(c->f, FAULT_PLAN, "plan: weights have no source", i, 0);
    if (is_bias) {
        L->b_init = init;
        L->b_ram = copy;
        L->b = copy ? copy : init;
    } else {
        L->w_init = init;
        L->w_ram = copy;
        L->w = copy ? copy : init;
    }
    return 0;
}

/* bytes 56..63: u32 channel list offset, u16 count, u16 reserved; count 0 = no list (every channel in w_ram) */
static int check_channels(ctx_t *c, uint32_t i, layer_t *L, const uint8_t *r, uint32_t row)
{
    uint32_t off = le32(r + TPLN_L_CH_OFF), n = le16(r + TPLN_L_CH_COUNT);
    if (!(c->flags & PF_CHANNEL_LISTS) && (off || n))
        return blob_fail(c->f, FAULT_PLAN, "plan: channel list without the CHANNEL_LISTS flag", i, 0);
    if (!n)
        return off ? blob_fail(c->f, FAULT_PLAN, "plan: channel list offset without count", i, off) : 0;
    if (!row || !(L->flags & LF_TRAIN_W))
        return blob_fail(c->f, FAULT_PLAN, "plan: channel list on a layer whose weights do not train", i, n);
    if (n > L->s.out_c)
        return blob_fail(c->f, FAULT_PLAN, "plan: channel list longer than out_c", i, n);
    if ((off & 3u) || off < PLAN_HEADER || off > c->blob_bytes || 2u * n > c->blob_bytes - off)
        return blob_fail(c->f, FAULT_PLAN, "plan: channel list outside blob", i, off);
    for (uint32_t j = 0, prev = 0; j < n; j++) {
        uint32_t ch = le16(c->blob + off + 2u * j);
        if (ch >= L->s.out_c || (j && ch <= prev))
            return blob_fail(c->f, FAULT_PLAN, "plan: channel list not ascending below out_c", i, j);
        prev = ch;
    }
    L->ws.idx = (const uint16_t *)(const void *)(c->blob + off);
    L->ws.n_sel = n;
    L->ws.row = row;
    return 0;
}

static int check_params(ctx_t *c, uint32_t i, layer_t *L, const uint8_t *r)
{
    uint32_t nw, row = fop_kinds[L->op]->row(L);
    if (!row) {
        if (check_channels(c, i, L, r, 0))
            return -1;
        if ((L->flags & LF_ACT) && !fop_kinds[L->op]->fused_act)
            return blob_fail(c->f, FAULT_PLAN, "plan: fused activation on a layer without parameters", i, 0);
        if (L->flags & (LF_TRAIN_W | LF_TRAIN_B))
            return blob_fail(c->f, FAULT_PLAN, "plan: layer has no parameters to train", i, 0);
        return 0;
    }
    if ((L->flags & (LF_TRAIN_W | LF_TRAIN_B)) && i < c->p->first_bwd)
        return blob_fail(c->f, FAULT_PLAN, "plan: trained layer below first_bwd", i, c->p->first_bwd);
    nw = row * L->s.out_c;
    if (check_channels(c, i, L, r, row))
        return -1;
    if (check_tensor(c, i, r, nw, L->ws.idx ? L->ws.n_sel * row : nw, 0, L->flags & LF_TRAIN_W) ||
        check_tensor(c, i, r, L->s.out_c, L->s.out_c, 1, L->flags & LF_TRAIN_B))
        return -1;
    if (L->ws.idx) { /* kernels read the listed rows from the arena copy, the others from flash */
        L->ws.full = L->w_init;
        L->ws.sel = L->w_ram;
        L->w = L->w_init;
    } else { /* every row from where the weights live (arena copy or flash) */
        L->ws = wsplit_all(L->w, row);
    }
    if (fop_kinds[L->op]->weight_scratch && (L->flags & LF_TRAIN_W)) {
        L->scratch = arena_floats(c, le32(r + TPLN_L_SCRATCH_OFF), row);
        if (!L->scratch)
            return blob_fail(c->f, FAULT_PLAN, "plan: conv scratch outside arena", i, 0);
    }
    return 0;
}

static int parse_layer(ctx_t *c, uint32_t i, const uint8_t *r)
{
    layer_t *L = &c->p->layer[i];
    conv_shape_t *s = &L->s;
    memset(L, 0, sizeof *L);
    L->op = r[TPLN_L_OP];
    L->flags = r[TPLN_L_FLAGS];
    if (L->op >= OP_COUNT || !fop_kinds[L->op])
        return blob_fail(c->f, FAULT_PLAN, "plan: unknown op", i, r[TPLN_L_OP]);
    if ((L->flags & 0x80u) || (L->flags & LF_ACT) == LF_ACT)
        return blob_fail(c->f, FAULT_PLAN, "plan: unknown layer flags", i, r[TPLN_L_FLAGS]);
    s->stride = r[TPLN_L_STRIDE];
    s->k = r[TPLN_L_K];
    s->kw = le16(r + TPLN_L_KW) ? le16(r + TPLN_L_KW) : s->k; /* 0: square (every record before kw existed) */
    if (s->kw > 255u || (L->op != OP_CONV2D && L->op != OP_DWCONV2D && s->kw != s->k))
        return blob_fail(c->f, FAULT_PLAN, "plan: kernel width not 1..255 or on an op with square windows", i,
                         le16(r + TPLN_L_KW));
    s->in_h = le16(r + TPLN_L_IN_H);
    s->in_w = le16(r + TPLN_L_IN_W);
    s->in_c = le16(r + TPLN_L_IN_C);
    s->out_h = le16(r + TPLN_L_OUT_H);
    s->out_w = le16(r + TPLN_L_OUT_W);
    s->out_c = le16(r + TPLN_L_OUT_C);
    s->pad_top = le16(r + TPLN_L_PAD_TOP);
    s->pad_left = le16(r + TPLN_L_PAD_LEFT);
    L->n_in = (uint32_t)s->in_h * s->in_w * s->in_c;
    L->n_out = (uint32_t)s->out_h * s->out_w * s->out_c;
    if (check_dims(c, i, L, r) || check_activations(c, i, L, r) || check_params(c, i, L, r))
        return -1;
    return 0;
}

/* consecutive layers must agree on shapes and on where activations and gradients live */
static int check_chain(ctx_t *c, uint32_t i)
{
    plan_t *p = c->p;
    layer_t *L = &p->layer[i], *P = &p->layer[i - 1];
    int exact = !fop_kinds[L->op]->flat_input;
    if (L->n_in != P->n_out ||
        (exact && (L->s.in_h != P->s.out_h || L->s.in_w != P->s.out_w || L->s.in_c != P->s.out_c)))
        return blob_fail(c->f, FAULT_PLAN, "plan: layer input shape differs from previous output", i, 0);
    if (L->in != P->out)
        return blob_fail(c->f, FAULT_PLAN, "plan: layer in_off differs from previous out_off", i, 0);
    if (p->fwd_mode != FWD_NONE)
        return 0;
    if (i > p->first_bwd && !(L->flags & LF_NEED_DX))
        return blob_fail(c->f, FAULT_PLAN, "plan: layer above first_bwd lacks need_dx", i, 0);
    if (i > p->first_bwd && L->din != P->dout)
        return blob_fail(c->f, FAULT_PLAN, "plan: layer din_off differs from previous dout_off", i, 0);
    return 0;
}

/* layer record i (parse_layers checked that every record lies inside the blob) */
static const uint8_t *layer_record(const ctx_t *c, uint32_t i)
{
    return c->blob + le32(c->blob + TPLN_H_LAYERS_OFFSET) + i * PLAN_RECORD;
}

/* the buffers a layer writes or reads in its backward, which a skip gradient crossing it must not overlap */
static int apart_in_backward(const layer_t *L, const float *g, uint32_t n)
{
    return (!L->dout || disjoint(L->dout, L->n_out, g, n)) && (!L->din || disjoint(L->din, L->n_in, g, n)) &&
           (!L->scratch || disjoint(L->scratch, L->op == OP_ADD ? L->n_in : fop_kinds[L->op]->row(L), g, n));
}

/* ADD i reads the input of layer a = k (a < i, same shape), which no layer from a up to the ADD may write. When a
 * is above first_bwd its gradient is needed: the ADD's scratch holds it from the ADD's backward to layer a's, which
 * must carry LF_MERGE; every LF_MERGE is fed by exactly one ADD. */
static int resolve_add(ctx_t *c, uint32_t i, uint32_t *merged)
{
    plan_t *p = c->p;
    layer_t *L = &p->layer[i], *A;
    uint32_t a = L->s.k;
    uint32_t sgrad = le32(layer_record(c, i) + TPLN_L_SCRATCH_OFF);
    if (a >= i || p->layer[a].n_in != L->n_in || p->layer[a].s.in_h != L->s.in_h ||
        p->layer[a].s.in_w != L->s.in_w || p->layer[a].s.in_c != L->s.in_c)
        return blob_fail(c->f, FAULT_PLAN, "plan: add skip is not an earlier layer's input of its shape", i, a);
    A = &p->layer[a];
    L->w = A->in;
    for (uint32_t j = a; j < i; j++)
        if (!disjoint(p->layer[j].out, p->layer[j].n_out, A->in, L->n_in))
            return blob_fail(c->f, FAULT_PLAN, "plan: a layer inside the residual branch overwrites its skip", i, j);
    if (p->fwd_mode || a <= p->first_bwd)
        return sgrad != PLAN_NONE ? blob_fail(c->f, FAULT_PLAN, "plan: add skip gradient set where nothing needs it",
                                              i, a)
                                  : 0;
    if (!(A->flags & LF_MERGE) || (*merged & (1u << a)))
        return blob_fail(c->f, FAULT_PLAN, "plan: add skip's layer lacks the merge flag or has two adds", i, a);
    *merged |= 1u << a;
    L->scratch = arena_floats(c, sgrad, L->n_in);
    if (!L->scratch || !disjoint(L->dout, L->n_out, L->scratch, L->n_in) ||
        !disjoint(L->din, L->n_in, L->scratch, L->n_in))
        return blob_fail(c->f, FAULT_PLAN, "plan: add skip gradient outside the arena or over its gradients", i, a);
    for (uint32_t j = a; j < i; j++)
        if (!apart_in_backward(&p->layer[j], L->scratch, L->n_in))
            return blob_fail(c->f, FAULT_PLAN, "plan: a backward inside the residual branch overwrites its skip "
                             "gradient", i, j);
    return 0;
}

static int resolve_residuals(ctx_t *c)
{
    plan_t *p = c->p;
    uint32_t merged = 0;
    for (uint32_t i = 0; i < p->n_layers; i++)
        if (p->layer[i].op == OP_ADD && resolve_add(c, i, &merged))
            return -1;
    for (uint32_t i = 0; i < p->n_layers; i++)
        if ((p->layer[i].flags & LF_MERGE) && !(merged & (1u << i)))
            return blob_fail(c->f, FAULT_PLAN, "plan: merge flag without an add whose skip is the layer's input", i,
                             0);
    return 0;
}

static float f32_at(const uint8_t *p)
{
    float v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* the modulated pass's two buffers, each as large as the largest activation, apart from each other and the
 * logits gradient; the last layer's dout is dlogits (its update uses e' there) */
static int parse_forward_only(ctx_t *c)
{
    plan_t *p = c->p;
    const uint8_t *h = c->blob;
    uint32_t last = p->n_layers - 1u, n = 0;
    for (uint32_t i = 0; i < p->n_layers; i++) {
        n = p->layer[i].n_in > n ? p->layer[i].n_in : n;
        n = p->layer[i].n_out > n ? p->layer[i].n_out : n;
    }
    p->mod_n = n;
    p->f_seed = le32(h + TPLN_H_F_SEED);
    p->f_bound = f32_at(h + TPLN_H_F_BOUND);
    p->mod_a = arena_floats(c, le32(h + TPLN_H_MOD_A_OFF), n);
    p->mod_b = arena_floats(c, le32(h + TPLN_H_MOD_B_OFF), n);
    if (!p->mod_a || !p->mod_b || !disjoint(p->mod_a, n, p->mod_b, n) || !disjoint(p->mod_a, n, p->dlogits,
                                                                                     p->n_classes) ||
        !disjoint(p->mod_b, n, p->dlogits, p->n_classes))
        return blob_fail(c->f, FAULT_PLAN, "plan: modulated-pass buffers outside the arena or overlapping",
                         le32(h + TPLN_H_MOD_A_OFF), le32(h + TPLN_H_MOD_B_OFF));
    if (!(p->f_bound > 0.0f && p->f_bound < 1.0f))
        return blob_fail(c->f, FAULT_PLAN, "plan: projection bound not in (0, 1)", le32(h + TPLN_H_F_BOUND), 0);
    if ((p->layer[last].flags & (LF_TRAIN_W | LF_TRAIN_B)) && p->layer[last].dout != p->dlogits)
        return blob_fail(c->f, FAULT_PLAN, "plan: last layer dout_off differs from dlogits_off", last, 0);
    return 0;
}

/* the reconstruction loss reads the input after the forward pass: as many outputs as inputs, and no activation or
 * gradient buffer over the input */
static int check_recon(ctx_t *c)
{
    plan_t *p = c->p;
    uint32_t n0 = p->layer[0].n_in;
    if (p->n_classes != n0)
        return blob_fail(c->f, FAULT_PLAN, "plan: reconstruction output size differs from the input's", p->n_classes,
                         p->layer[0].n_in);
    for (uint32_t i = 0; i < p->n_layers; i++) {
        const layer_t *L = &p->layer[i];
        if (!disjoint(p->input, n0, L->out, L->n_out) || (L->dout && !disjoint(p->input, n0, L->dout, L->n_out)) ||
            (L->din && !disjoint(p->input, n0, L->din, L->n_in)))
            return blob_fail(c->f, FAULT_PLAN, "plan: a buffer overlaps the input the reconstruction loss reads", i,
                             0);
    }
    return 0;
}

static int parse_layers(ctx_t *c)
{
    plan_t *p = c->p;
    const uint8_t *h = c->blob;
    uint32_t last = p->n_layers - 1u;
    for (uint32_t i = 0; i < p->n_layers; i++) {
        if (parse_layer(c, i, layer_record(c, i)))
            return -1;
        if (i > 0 && check_chain(c, i))
            return -1;
    }
    if (resolve_residuals(c))
        return -1;
    p->input = arena_floats(c, le32(h + TPLN_H_INPUT_OFF), p->layer[0].n_in);
    p->dlogits = arena_floats(c, le32(h + TPLN_H_DLOGITS_OFF), p->n_classes);
    if (!p->input || !p->dlogits)
        return blob_fail(c->f, FAULT_PLAN, "plan: input or dlogits outside arena", le32(h + TPLN_H_INPUT_OFF), le32(h + TPLN_H_DLOGITS_OFF));
    if (p->layer[0].in != p->input)
        return blob_fail(c->f, FAULT_PLAN, "plan: layer 0 in_off differs from input_off", 0, 0);
    if (p->layer[last].n_out != p->n_classes)
        return blob_fail(c->f, FAULT_PLAN, "plan: last layer output differs from n_classes",
                         last, p->layer[last].n_out);
    if (!p->fwd_mode && p->first_bwd <= last && p->layer[last].dout != p->dlogits)
        return blob_fail(c->f, FAULT_PLAN, "plan: last layer dout_off differs from dlogits_off", last, 0);
    if (!disjoint(p->dlogits, p->n_classes, p->layer[last].out, p->n_classes))
        return blob_fail(c->f, FAULT_PLAN, "plan: dlogits overlaps the logits", last, 0);
    if (p->recon && check_recon(c))
        return -1;
    return p->fwd_mode ? parse_forward_only(c) : 0;
}

static uint64_t align4(uint64_t v)
{
    return (v + 3u) & ~(uint64_t)3u;
}

/* dataset sections follow each other at 4-byte boundaries; returns 0 when they all fit the blob */
static int place_sections(dataset_t *d, const uint8_t *b, uint32_t blob_bytes, uint32_t x_off)
{
    uint64_t xt = x_off, yt, xe, ye, end;
    yt = align4(xt + (uint64_t)d->n_train * d->sample_bytes);
    xe = align4(yt + d->n_train);
    ye = align4(xe + (uint64_t)d->n_eval * d->sample_bytes);
    end = ye + d->n_eval;
    if (x_off < DATA_HEADER || (x_off & 3u) || end > blob_bytes)
        return -1;
    d->x_train = b + xt;
    d->y_train = b + yt;
    d->x_eval = b + xe;
    d->y_eval = b + ye;
    return 0;
}

static int labels_ok(const uint8_t *y, uint32_t n, uint32_t n_classes)
{
    for (uint32_t j = 0; j < n; j++)
        if (y[j] >= n_classes)
            return 0;
    return 1;
}

static int parse_dataset(ctx_t *c, const mem_window_t *win)
{
    plan_t *p = c->p;
    dataset_t *d = &p->data;
    uint32_t addr = le32(c->blob + TPLN_H_DATASET_ADDR), bytes;
    const uint8_t *b = blob_dataset(win, addr, &bytes, c->f), *h = b;
    if (!b)
        return -1;
    d->n_train = le32(h + TDST_H_N_TRAIN);
    d->n_eval = le32(h + TDST_H_N_EVAL);
    d->h = le16(h + TDST_H_H);
    d->w = le16(h + TDST_H_W);
    d->c = le16(h + TDST_H_C);
    d->sample_bytes = (uint32_t)d->h * d->w * d->c;
    d->scale = f32_at(h + TDST_H_SCALE);
    d->offset = f32_at(h + TDST_H_OFFSET);
    if (d->n_train == 0)
        return blob_fail(c->f, FAULT_DATASET, "dataset: no training samples", 0, 0);
    if (le32(h + TDST_H_DTYPE) != 0) /* sample dtype and shift (docs/plan-format.md): fp32 plans decode u8 only */
        return blob_fail(c->f, FAULT_DATASET, "dataset: sample dtype not u8 for an fp32 plan", le32(h + TDST_H_DTYPE), 0);
    if (le16(h + TDST_H_N_CLASSES) != p->n_classes)
        return blob_fail(c->f, FAULT_DATASET, "dataset: n_classes differs from plan", le16(h + TDST_H_N_CLASSES), p->n_classes);
    if (place_sections(d, b, bytes, le32(h + TDST_H_X_TRAIN_OFF)))
        return blob_fail(c->f, FAULT_DATASET, "dataset: sections outside blob", le32(h + TDST_H_X_TRAIN_OFF), bytes);
    if (!labels_ok(d->y_train, d->n_train, p->n_classes) || !labels_ok(d->y_eval, d->n_eval, p->n_classes))
        return blob_fail(c->f, FAULT_DATASET, "dataset: label >= n_classes", 0, 0);
    return 0;
}

static int check_input_shape(ctx_t *c)
{
    const dataset_t *d = &c->p->data;
    const layer_t *L = &c->p->layer[0];
    if (d->sample_bytes != L->n_in ||
        (!fop_kinds[L->op]->flat_input && (d->h != L->s.in_h || d->w != L->s.in_w || d->c != L->s.in_c)))
        return blob_fail(c->f, FAULT_DATASET, "dataset: sample shape differs from plan input",
                         d->sample_bytes, L->n_in);
    return 0;
}

int plan_load(plan_t *p, const mem_window_t *flash, uint32_t plan_addr, uint8_t *arena, uint32_t arena_bytes,
              fault_t *f)
{
    ctx_t c = {p, f, NULL, 0, arena, 0};
    *f = (fault_t){0};
    if (check_header(&c, flash, plan_addr, arena_bytes) || parse_layers(&c) || parse_dataset(&c, flash) ||
        check_input_shape(&c))
        return -1;
    return 0;
}
