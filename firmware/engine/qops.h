/* Int8 op kinds, registered as TFLM registers kernels: one `qop_kind_t` per op in its own file (engine/qops/<op>.c),
 * listed once in qops/registry.c. Adding an op: its kernel in ops/, its kind file, one table line (and its code in
 * qplan.h). The loader, the executor and the trainer only call through the kind. */
#ifndef QOPS_H
#define QOPS_H

#include <stdint.h>
#include "qparse.h"

struct qop_kind {
    const char *name;
    /* plan load: the op record after the checks every op shares (inputs, output, flags); fills n->k and n->w */
    int (*parse)(qparse_t *c, qoprec_t *o, qnode_t *n);
    /* the forward kernel; NULL: the output aliases the input (RESHAPE), which parse checks */
    void (*forward)(const qnode_t *n);
    /* plan load of the op's training record when it is on the backward path; NULL: no backward */
    int (*parse_train)(qparse_t *c, uint32_t i, const uint8_t *r, qtop_t *t, qnode_t *n);
    /* weighted ops, sparse update's forward: the outputs of listed rows j0 .. j0 + cnt - 1 (cnt <= QSPARSE_GROUP)
     * recomputed from their arena rows */
    void (*forward_rows)(const qnode_t *n, const qtop_t *t, uint32_t j0, uint32_t cnt);
    /* weighted ops: the input gradient accumulators t->acc from h */
    void (*input_grad)(const qnode_t *n, const qtop_t *t);
    /* weighted ops: output channel o's weight-gradient accumulators t->acc; NULL when update_row fuses them */
    void (*weight_grad)(const qnode_t *n, const qtop_t *t, uint32_t o);
    /* ops without weights on the backward path: the int8 input gradient t->din from t->dout (exponent e of dout);
     * returns the input gradient's exponent. NULL with input_grad NULL: the gradient aliases (RESHAPE) */
    int32_t (*backward)(const qnode_t *n, const qtop_t *t, int32_t e);
    /* weighted ops: the fused clamp (for the output-gradient mask) and the input zero point */
    void (*clamp)(const qnode_t *n, int32_t *act_min, int32_t *act_max, int32_t *zp_in);
    /* a weighted op whose weight-gradient row is zero when h[o] is (one output position: FULLY_CONNECTED) */
    uint8_t zero_row_when_h_zero;
    /* weighted ops whose weight gradient is an outer product h[o]·(x − zp) (FULLY_CONNECTED): that gradient and the
     * update of arena row j (output channel o) fused, with no accumulator row stored; returns the row's code change.
     * NULL: weight_grad, then qsgd_i8 on t->acc */
    int32_t (*update_row)(const qnode_t *n, const qtop_t *t, uint32_t o, uint32_t j, int32_t mult, int32_t shift_e);
    /* with update_row: run once before the op's rows (timed with the update), e.g. to list the input's non-zero
     * columns in t->acc; NULL: nothing to prepare */
    void (*prepare_update)(const qnode_t *n, const qtop_t *t);
    /* with update_row: row o, column j of the weight gradient, for the report (outside the timed windows) */
    int32_t (*grad_at)(const qnode_t *n, const qtop_t *t, uint32_t o, uint32_t j);
};

/* CONV_2D and DEPTHWISE_CONV_2D share their record checks (qops/conv_2d.c) */
int qconv_parse(qparse_t *c, qoprec_t *o, qnode_t *n, int depthwise);
/* AVERAGE_POOL_2D and MAX_POOL_2D share theirs (qops/average_pool_2d.c) */
int qpool_parse(qparse_t *c, qoprec_t *o, qnode_t *n);
int qpool_parse_train(qparse_t *c, uint32_t i, const uint8_t *r, qtop_t *t, qnode_t *n);
/* the buffers of a backward record without parameters (pools, MEAN; t->n_in set): dout, the int32 scratch after
 * the h area, din (qops/average_pool_2d.c) */
int qp_paramless_train(qparse_t *c, uint32_t i, const uint8_t *r, qtop_t *t, const qnode_t *n);

/* the kind of op code `op`, NULL when unknown */
const qop_kind_t *qop_kind(uint8_t op);

/* the kind of a loaded op (its code was checked at load); not stored per op, to keep static SRAM as it was */
extern const qop_kind_t *const qop_kinds[QOP_COUNT];
static inline const qop_kind_t *qnode_kind(const qnode_t *n)
{
    return qop_kinds[n->op];
}

#endif
