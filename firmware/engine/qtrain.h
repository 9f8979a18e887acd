/* Int8 training with Quantization-Aware Scaling on a TQPL plan with a training section (docs/qplan-format.md,
 * docs/protocol.md): the same messages as the fp32 trainer; GRAD/GSTAT carry int32 gradient accumulators. */
#ifndef QTRAIN_H
#define QTRAIN_H

#include <stdint.h>
#include "port.h"
#include "qplan.h"
#include "trainer.h"

#define QTRAIN_GRAD_INT 0x01u /* GRAD/GSTAT flags byte: values are int32 accumulators with an int16 exponent E */

/* Runs one START (steps, lr, seed, grad_every, eval_samples as for fp32 plans; lr must equal the plan's, which the
 * caller checks). Returns the SUMMARY status (0 done, 1 stopped, 2 error). */
int qtrain_run(const qplan_t *p, const start_t *a, const port_info_t *info, stop_poll_fn poll);

/* the forward pass the training run uses: every op, the sparse channels recomputed from their arena rows; adds each
 * op's ticks to ticks[i][0] when not NULL; returns the ops' ticks (exposed for tests) */
uint32_t qtrain_forward(const qplan_t *p, uint64_t (*ticks)[3]);

/* the backward record of op i, NULL when op i is not on the backward path (or the plan does not train) */
const qtop_t *qtrain_top(const qplan_t *p, uint32_t i);

/* copies the trainable codes, biases and bias_eff to the arena and zeroes the residuals (exposed for tests) */
void qtrain_load_params(const qplan_t *p);

#endif
