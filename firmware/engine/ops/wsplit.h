/* The weight rows an fp32 kernel reads (one view for every kernel, as the int8 kernels' qrows_t): idx NULL = every
 * row from `full`; else split by output channel (sparse update, docs/plan-format.md): the listed output channels
 * from a compact copy in the arena (`sel`, updated by training), every other channel from `full` in flash (frozen).
 * A row is one output channel's weights: n_in floats (dense [out][in]) or k*k*in_c floats (conv OHWI). */
#ifndef OPS_WSPLIT_H
#define OPS_WSPLIT_H

#include <stdint.h>

typedef struct {
    const float *full;   /* [out][row]: every output channel, initial values */
    const float *sel;    /* [n_sel][row]: the listed channels, current values */
    const uint16_t *idx; /* n_sel strictly ascending output channels; NULL = not split */
    uint32_t n_sel, row;
} wsplit_t;

/* all rows of w, [out][row] */
static inline wsplit_t wsplit_all(const float *w, uint32_t row)
{
    wsplit_t v = {w, 0, 0, 0, row};
    return v;
}

/* Row of output channel oc of a split view when channels are visited in ascending order; *cur starts at 0. */
static inline const float *wsplit_row(const wsplit_t *w, uint32_t oc, uint32_t *cur)
{
    if (*cur < w->n_sel && w->idx[*cur] == oc)
        return w->sel + (*cur)++ * w->row;
    return w->full + oc * w->row;
}

#endif
