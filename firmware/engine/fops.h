/* fp32 op kinds, one per file (engine/fops/<op>.c), listed once in fops/registry.c, as the int8 kinds (qops.h):
 * what the plan loader checks of a layer of this op and what the trainer runs for it. Adding an op: its kernels in
 * ops/, its kind file, one table line (and its code in plan.h). */
#ifndef FOPS_H
#define FOPS_H

#include <stddef.h>
#include <stdint.h>
#include "ftrain.h"
#include "plan.h"
#include "ops/relu.h"

typedef struct fop_kind {
    const char *name;
    /* the op's shape rules on the parsed layer (dimensions already non-zero); a FAULT 2 text or NULL when valid */
    const char *(*check_dims)(const layer_t *L);
    /* floats per output channel of its weights; 0: the op has no parameters */
    uint32_t (*row)(const layer_t *L);
    uint8_t aliases;        /* may run in place: in == out and din == dout */
    uint8_t flat_input;     /* reads its input flat: only the element count must match the previous output */
    uint8_t weight_scratch; /* trained weights need a k*k*in_c weight-gradient scratch (scratch_off) */
    uint8_t bwd_reads_input; /* its backward reads its input (MAXPOOL2D): din must not overlap it */
    uint8_t fused_act;      /* takes a fused activation without having parameters (ADD; every op with them does) */
    void (*forward)(const layer_t *L);
    /* the layer's backward and update at step r->step, timing its phases into r->t_bwd / r->t_upd */
    void (*backward)(run_t *r, uint8_t i, const layer_t *L);
} fop_kind_t;

/* the backward of an op without parameters: its input gradient (grad), timed as backward; nothing below first_bwd
 * + 1, where need_dx is clear */
static inline void fop_input_grad_only(run_t *r, const layer_t *L, void (*grad)(const layer_t *L))
{
    uint64_t t;
    if (!(L->flags & LF_NEED_DX))
        return;
    port_marker(PORT_MARK_BACKWARD);
    t = port_ticks();
    grad(L);
    r->t_bwd += ft_since(t);
}

/* the row() of an op without parameters (relu, pools, add): 0 */
uint32_t fop_no_params(const layer_t *L);

/* by op code; NULL for unknown codes */
extern const fop_kind_t *const fop_kinds[OP_COUNT];

/* a layer's forward with its fused activation (LF_RELU / LF_RELU6) applied in place on its output */
static inline void fop_forward(const layer_t *L)
{
    fop_kinds[L->op]->forward(L);
    if (L->flags & LF_RELU)
        relu_forward(L->out, L->out, L->n_out);
    else if (L->flags & LF_RELU6)
        relu6_forward(L->out, L->out, L->n_out);
}

/* a layer's backward: a fused activation first masks dout in place by the kept output (timed as backward) */
static inline void fop_backward(run_t *r, uint8_t i, const layer_t *L)
{
    if (L->flags & LF_ACT) {
        port_marker(PORT_MARK_BACKWARD);
        uint64_t t = port_ticks();
        if (L->flags & LF_RELU)
            relu_backward(L->out, L->dout, L->dout, L->n_out);
        else
            relu6_backward(L->out, L->dout, L->dout, L->n_out);
        r->t_bwd += ft_since(t);
    }
    fop_kinds[L->op]->backward(r, i, L);
}

#endif
