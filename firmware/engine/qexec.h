/* Int8 graph execution and the evaluation run a START on a TQPL plan performs (docs/protocol.md). */
#ifndef QEXEC_H
#define QEXEC_H

#include <stdint.h>
#include "port.h"
#include "qplan.h"

#define QEXEC_OUT_CHUNK 1000u     /* int8 values per OUTPUT frame (body 1024 - 20 bytes of header fields) */
#define QEXEC_OUT_ALL_OPS 0x0001u /* START out_flags bit 0: stream every op's output, not only the graph's */
#define QEXEC_OUT_GRAPH 0xFFu     /* OUTPUT op field for the graph output */

typedef struct {
    uint32_t steps;         /* must be 0: int8 plans evaluate only (training comes later) */
    uint16_t eval_samples;  /* 0 = all */
    uint16_t out_samples;   /* stream outputs of the first out_samples eval samples (0xFFFF = all) */
    uint16_t out_flags;     /* QEXEC_OUT_ALL_OPS */
} qstart_t;

/* Called after op i ran (outside the timed window); NULL for none. */
typedef void (*qexec_hook_fn)(const qplan_t *p, uint32_t i, void *ctx);

/* Runs every op on the input already in p->input; adds each op's ticks to op_ticks[i] when op_ticks is not NULL. */
void qexec_forward(const qplan_t *p, uint64_t *op_ticks, qexec_hook_fn hook, void *ctx);

/* One op (exposed for tests). */
void qexec_op(const qnode_t *n);

/* Copies eval/train sample bytes into the input tensor, converting by the dataset dtype. */
void qexec_load_sample(const qplan_t *p, const uint8_t *x);

/* index of the largest output value (first on ties) */
uint32_t qexec_argmax(const qplan_t *p);

/* -ln p(label) of the dequantised graph output (floored at 1/512) */
float qexec_sample_loss(const qplan_t *p, uint32_t label);

/* The START on a TQPL plan: EVAL phase 0 over the eval split with OUTPUT frames as asked, LAYERS (per-op forward
 * ticks), SUMMARY. Returns the SUMMARY status (0 done, 1 stopped). */
int qexec_run(const qplan_t *p, const qstart_t *a, const port_info_t *info, int (*poll)(void));

#endif
