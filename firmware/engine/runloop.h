/* The one training run a START performs, whatever the plan's numerics: repaint memory, load the trainable
 * parameters, EVAL phase 0, the SGD steps (STEP + GSTAT each, GRAD on streamed steps), EVAL phase 1, LAYERS,
 * SUMMARY (docs/protocol.md). The fp32 trainer (trainer.c) and the int8 trainer (qtrain.c) only provide the
 * operations below. */
#ifndef RUNLOOP_H
#define RUNLOOP_H

#include <stdint.h>
#include "memmeter.h"
#include "msg.h"
#include "port.h"
#include "trainer.h"

typedef struct {
    void *ctx;                 /* the trainer's own run state */
    uint32_t arena_need, n_train, n_eval;
    /* copy the trainable parameters to the arena (and zero any residuals) */
    void (*load_params)(void *ctx);
    /* one SGD step on training sample `sample`, timing its phases and streaming GRAD when `stream`; fills *m
     * (step, sample, label, pred, loss, ticks) and the step's gradient statistics */
    void (*step)(void *ctx, uint32_t step, uint32_t sample, int stream, msg_step_t *m);
    /* the GSTAT of the step just taken */
    void (*send_gstat)(void *ctx);
    /* eval sample s: 1 when predicted right; its loss in *loss */
    int (*eval_sample)(void *ctx, uint32_t s, float *loss);
    /* LAYERS: per-layer (per-op) ticks summed over the run */
    void (*send_layers)(void *ctx);
    /* a resumed run (START resume flag) keeps the arena words this names instead of loading the parameters; NULL
     * when the trainer cannot resume */
    mem_keep_fn keep;
    const void *keep_ctx;
} train_ops_t;

/* Runs one START; returns the SUMMARY status (0 done, 1 stopped, 2 error: the stack overflowed its guard). */
int runloop_train(const train_ops_t *o, const start_t *a, const port_info_t *info, stop_poll_fn poll);

/* EVAL of phase `phase` over the first max_samples eval samples (0: all) */
void runloop_evaluate(const train_ops_t *o, uint8_t phase, uint16_t max_samples);

#endif
