/* What the TQPL loader (qplan.c) shares with the op kinds (qops/): the parse context, a tensor's checked record, an
 * op record being validated, and the checks every op kind composes. Internal to the engine. */
#ifndef QPARSE_H
#define QPARSE_H

#include <stddef.h>
#include <stdint.h>
#include "blob.h"
#include "msg.h"
#include "qplan.h"
#include "wire.h"

typedef struct {
    qplan_t *p;
    fault_t *f;
    const uint8_t *blob;
    uint32_t blob_bytes, tensors_off, ops_off;
    uint16_t n_tensors;
    uint16_t flags;            /* header flags: bit 0 training section */
    uint32_t train_off;
    uint8_t *arena;
    uint8_t ready[QPLAN_MAX_TENSORS / 8u];
    uint8_t merges, claimed; /* QTF_MERGE ops, and those an ADD's skip gradient feeds (must end equal) */
} qparse_t;

typedef struct {
    uint8_t kind, rank;
    uint16_t d[4]; /* n, h, w, c (lower ranks padded with leading 1s) */
    uint32_t count, off, bytes;
    int32_t zp;
    float scale;
    const uint8_t *data; /* constants */
    int8_t *act;         /* activations */
} qtinfo_t;

/* the 64-byte op record (docs/qplan-format.md) with its input, output and (when read) weight and bias tensors */
typedef struct {
    const uint8_t *r;
    uint32_t i;
    uint8_t per_channel, same;
    qtinfo_t x, x2, w, b, y;
} qoprec_t;

/* off..off+bytes a 4-aligned range of the blob past its header */
int qp_in_blob(const qparse_t *c, uint32_t off, uint64_t bytes);
/* tensor record idx, checked; where = op index for faults (0xFFFF for the header) */
int qp_tensor(qparse_t *c, uint32_t where, uint32_t idx, qtinfo_t *t);
/* an activation input an earlier op (or the sample load) has produced */
int qp_input(qparse_t *c, uint32_t op, uint32_t idx, qtinfo_t *t);
int qp_disjoint(const qtinfo_t *a, const qtinfo_t *b);
/* spatial geometry shared by conv, depthwise and pooling: kernel, stride, padding and output size */
int qp_geometry(qparse_t *c, const qoprec_t *o, uint32_t kh, uint32_t kw);
/* the fused activation's int8 clamp range */
int qp_act(qparse_t *c, const qoprec_t *o, int32_t *lo, int32_t *hi);
/* n (multiplier, shift) pairs at the record's rq_off */
int qp_rq(qparse_t *c, const qoprec_t *o, uint32_t n, const int32_t **rq);
/* weights (const int8) and optional bias (const int32, out_c values) */
int qp_wb(qparse_t *c, qoprec_t *o, uint32_t out_c);
/* bias_eff[oc] must be bias[oc] - zp_in * sum(w[oc]); w[oc] is n values spaced by step starting at oc * first */
int qp_fold(qparse_t *c, const qoprec_t *o, uint32_t out_c, uint32_t first, uint32_t n, uint32_t step,
            const int32_t **eff);
/* an arena range of the plan, 4-byte aligned; NULL when out of range */
void *qp_arena_at(const qparse_t *c, uint32_t off, uint64_t bytes);
/* FAULT 2 naming op i */
int qp_tfail(qparse_t *c, uint32_t op, const char *text);
/* int32 accumulator bounds of a weighted op: its input gradient sums fan products of |h| <= 16,256 and |W̄| <= 127
 * (when QTF_NEED_DX), its bias gradient pixels values of h and its weight gradient pixels products h·(x − zp) */
int qp_acc_bounds(qparse_t *c, uint32_t i, const qtop_t *t, uint64_t fan, uint64_t pixels);
/* training of a weighted op once its kind set t's geometry (out_c, row, n_in, b_flash, eff_flash, clamp): trained
 * tensors' arena copies, residuals, channel list, tables, gradient buffers and scratch; the kernels' bias and
 * bias_eff (*bias, *bias_eff) and weights (n->w) then point at the arena copies */
int qp_train_weighted(qparse_t *c, uint32_t i, const uint8_t *r, qtop_t *t, qnode_t *n, const int32_t **bias,
                      const int32_t **bias_eff);
/* t->din (t->n_in values) from the record, which must be the previous backward op's dout */
int qp_din(qparse_t *c, uint32_t i, const uint8_t *r, qtop_t *t);

#endif
