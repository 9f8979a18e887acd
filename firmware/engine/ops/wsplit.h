/* Weights split by output channel (sparse update, docs/plan-format.md): the listed output channels are read from a
 * compact copy in the arena (updated by training), every other channel from the full tensor in flash (frozen).
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

/* Row of output channel oc when channels are visited in ascending order; *cur starts at 0. */
static inline const float *wsplit_row(const wsplit_t *w, uint32_t oc, uint32_t *cur)
{
    if (*cur < w->n_sel && w->idx[*cur] == oc)
        return w->sel + (*cur)++ * w->row;
    return w->full + oc * w->row;
}

#endif
