/* The training run started by START: eval, SGD steps at batch 1, eval, SUMMARY (docs/protocol.md). */
#ifndef TRAINER_H
#define TRAINER_H

#include <stdint.h>
#include "plan.h"
#include "msg.h"
#include "port.h"

#define TRAINER_PAINT 0x7FA5A5A5u /* a signalling NaN: float arithmetic never produces it */
#define GRAD_CHUNK 240u

typedef struct {
    uint32_t steps;
    float lr;
    uint32_t seed;
    uint16_t grad_every; /* 0 = never */
    uint16_t eval_samples; /* 0 = all */
    uint8_t resume;        /* train on the parameters the arena holds (a WSET or the last run put them there) */
    float prox_mu;         /* FedProx (fp32 plans): after each step w -= lr * mu * (w - w at the run's start) */
} start_t;

/* Polled between steps; returns 1 when the host asked to stop. */
typedef int (*stop_poll_fn)(void);

/* Runs one START on a plan that plan_load accepted; sends every message of the run, ending with SUMMARY.
 * Returns the SUMMARY status (0 done, 1 stopped, 2 error). */
int trainer_run(const plan_t *p, const start_t *a, const port_info_t *info, stop_poll_fn poll);

/* the arena bytes a run of START a needs: the plan's, and with prox_mu the FedProx anchor after them (a copy of
 * every trainable tensor, 8-byte aligned) */
uint32_t trainer_arena_need(const plan_t *p, const start_t *a);

/* Copies p's trainable parameters from the plan (or zeros) into their arena copies: what every fresh run does. */
void trainer_load_params(const plan_t *p);

/* xorshift32 as specified in docs/protocol.md */
uint32_t trainer_xorshift(uint32_t *state);

#endif
