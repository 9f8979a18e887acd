/* What the fp32 trainer (trainer.c) shares with the fp32 op kinds (fops/): the run's state and the untimed gradient
 * reporting (GSTAT statistics, GRAD streaming). Internal to the engine. */
#ifndef FTRAIN_H
#define FTRAIN_H

#include <stdint.h>
#include "plan.h"
#include "port.h"

/* GSTAT entries a step can have: a weight and a bias per layer */
#define MAX_GSTAT (2u * PLAN_MAX_LAYERS)

typedef struct {
    uint8_t layer, param;
    float sumsq, max_abs; /* sumsq holds the l2 norm itself when norm_done */
    uint8_t norm_done;
} gstat_t;

/* the tensor being streamed in GRAD frames */
typedef struct {
    uint8_t layer, param;
    uint32_t total, offset, left;
} gstream_t;

/* one fp32 training run */
typedef struct {
    const plan_t *p;
    const port_info_t *info;
    float lr;
    uint32_t step;
    uint8_t stream;                    /* GRAD frames this step */
    uint32_t t_fwd, t_bwd, t_upd;
    uint64_t layer_ticks[PLAN_MAX_LAYERS][3]; /* per layer, summed over the run: forward, backward, update */
    gstat_t gstat[MAX_GSTAT];
    uint32_t n_gstat;
    gstream_t gs;
    float prox_lm;                     /* FedProx: lr * mu, 0 without */
    float *anchor;                     /* FedProx: every trainable tensor at step 0, in params_tensor order */
} run_t;

static inline uint32_t ft_since(uint64_t t0)
{
    return (uint32_t)(port_ticks() - t0);
}

static inline void ft_gstat_add(gstat_t *g, float v)
{
    float a = v < 0.0f ? -v : v;
    g->sumsq += v * v;
    if (a > g->max_abs)
        g->max_abs = a;
}

/* a new GSTAT entry of (layer, param) for this step */
gstat_t *ft_gstat_new(run_t *r, uint8_t layer, uint8_t param);
void ft_vec_stats(const float *v, uint32_t n, float *sumsq, float *max_abs);
/* GRAD streaming of one tensor of `total` values, pushed one by one */
void ft_stream_begin(run_t *r, uint8_t layer, uint8_t param, uint32_t total);
void ft_stream_push(run_t *r, float v);
/* dy of the rows whose weights train: every output, or only the listed channels (sparse) */
void ft_row_stats(const layer_t *L, float *sumsq, float *max_abs);
/* n gradient values into GSTAT entry g, and into GRAD when this step streams */
void ft_report_values(run_t *r, gstat_t *g, const float *v, uint32_t n);

#endif
