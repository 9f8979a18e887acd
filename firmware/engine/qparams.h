/* An int8 (TQPL) training plan's trainable state over the wire (docs/protocol.md, "Parameters over the wire"): the
 * same WSET / WGET / WDATA / START-resume as fp32 plans (params.h), with kind 1 frames of int32 words, so that
 * federated rounds move int8 weights without re-flashing and without losing the Q16 residuals.
 *
 * Per trained op (the layer byte is the op index), in the GRAD layout:
 * - weights (param 0): one word per trained weight, V = 65536·code + r with the residual r in [-32768, 32767]
 *   (the update's own representation, docs/qplan-format.md "Update"); rows of a sparse op are its listed channels;
 * - biases (param 1): two words per output channel, the int32 code (|code| <= 2^30) then its residual r.
 * Writing keeps bias_eff (bias - zp_in·Σw) in step with both, as an update does. */
#ifndef QPARAMS_H
#define QPARAMS_H

#include <stdint.h>
#include "qplan.h"
#include "wire.h"

#define QPARAMS_KIND 1u /* WPARAM head kind byte: int32 words */

/* the 32-bit words of trainable tensor (op, param) on the wire; 0 when it does not train */
uint32_t qparams_total(const qplan_t *p, uint32_t op, uint32_t param);
/* mem_keep_fn over p's trainable state (codes, residuals, biases, bias_eff) */
int qparams_keep(const void *plan, const uint8_t *w);
/* Writes a kind 1 WSET body; 0, or -1 with *why naming what is wrong (nothing written then). */
int qparams_set(const qplan_t *p, const frame_t *f, const char **why);
/* Sends every trainable tensor, op by op (weights, then biases), in kind 1 WDATA frames. */
void qparams_send(const qplan_t *p);

#endif
