/* An fp32 plan's trainable parameters over the wire (docs/protocol.md, "Parameters over the wire"): WSET writes a
 * slice of one trainable tensor's arena copy, WGET sends every trainable tensor as WDATA frames, and a START with
 * the resume flag trains on what the arena holds instead of the plan's initial values. This is how federated rounds
 * move weights without re-flashing. */
#ifndef PARAMS_H
#define PARAMS_H

#include <stdint.h>
#include "plan.h"
#include "wire.h"

#define PARAMS_CHUNK 240u /* values per WSET/WDATA frame */

/* the arena copy of trainable tensor (layer, param: 0 weight, 1 bias) and its value count; NULL when it does not
 * train. Layout as in GRAD: weights [out][row] (sparse: the listed rows in list order), biases [out]. */
float *params_tensor(const plan_t *p, uint32_t layer, uint32_t param, uint32_t *n);
/* mem_keep_fn over p's trainable tensors */
int params_keep(const void *plan, const uint8_t *w);
/* the head of a WSET (or WDATA) body and where its values start */
typedef struct {
    uint8_t layer, param, kind;
    uint32_t total, offset, count;
    const uint8_t *values;
} wslice_t;
/* parses a WSET body's head; 0, or -1 with *why (shorter than the head) */
int params_slice(const frame_t *f, wslice_t *s, const char **why);
/* the checks every WSET passes, in this order: its kind (0 fp32 plans, 1 int8), the body length, the tensor (n
 * values; 0 when it does not train), the slice inside it; 1, or 0 with *why */
int params_slice_ok(const frame_t *f, const wslice_t *s, uint8_t kind, uint32_t n, const char **why);
/* Writes a WSET body into its tensor; 0, or -1 with *why naming what is wrong (nothing written then). */
int params_set(const plan_t *p, const frame_t *f, const char **why);
/* Starts the WDATA frame of values [off, off + count) of a tensor of `total` values (kind 0 f32, 1 int32 words):
 * the head, so the caller appends the values and sends; returns count (at most PARAMS_CHUNK). */
uint32_t params_wdata_begin(uint8_t layer, uint8_t param, uint8_t kind, uint32_t total, uint32_t off);
/* Sends every trainable tensor, layer by layer (weight, then bias), in WDATA frames. */
void params_send(const plan_t *p);

#endif
