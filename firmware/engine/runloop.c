/* The training run shared by the fp32 and the int8 trainers (runloop.h). Nothing here is timed: every phase a step
 * reports is timed inside the trainer's step. */
#include "runloop.h"
#include "memmeter.h"

uint32_t trainer_xorshift(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

void runloop_evaluate(const train_ops_t *o, uint8_t phase, uint16_t max_samples)
{
    msg_eval_t e = {phase, o->n_eval, 0, 0.0f, 0};
    uint64_t t0 = port_ticks(), beat = t0;
    if (max_samples && max_samples < e.n)
        e.n = max_samples;
    for (uint32_t s = 0; s < e.n; s++) {
        float loss;
        msg_beat(&beat);
        e.correct += (uint32_t)o->eval_sample(o->ctx, s, &loss);
        e.loss_sum += loss;
    }
    e.ticks = port_ticks() - t0;
    msg_eval(&e);
}

/* STEP with the memory measured after the step */
static void send_step(const port_info_t *info, uint32_t arena_need, msg_step_t *m)
{
    m->stack_hwm = mem_stack_hwm(info);
    m->arena_peak = mem_arena_peak(info, arena_need);
    m->sram_used = info->static_bytes + m->stack_hwm + m->arena_peak;
    msg_step(m);
}

/* adds a sent step to the SUMMARY totals; 2 (and a FAULT sent) when the stack overflowed its paint guard */
static int account_step(const port_info_t *info, const msg_step_t *m, msg_summary_t *s)
{
    s->steps_done++;
    s->final_loss = m->loss;
    s->ticks_train += (uint64_t)m->t_fwd + m->t_bwd + m->t_upd;
    if (m->sram_used > s->sram_peak)
        s->sram_peak = m->sram_used;
    if (mem_stack_guard_hit(info)) {
        msg_fault(FAULT_STACK, 0, 0, 0, m->stack_hwm, info->stack_bytes, "stack overflow: paint guard hit");
        return 2;
    }
    return 0;
}

static int steps(const train_ops_t *o, const start_t *a, const port_info_t *info, stop_poll_fn poll,
                 msg_summary_t *s)
{
    uint32_t rng = a->seed ? a->seed : 1u;
    msg_step_t m;
    for (uint32_t step = 0; step < a->steps; step++) {
        if (poll && poll())
            return 1;
        o->step(o->ctx, step, trainer_xorshift(&rng) % o->n_train, a->grad_every && step % a->grad_every == 0, &m);
        send_step(info, o->arena_need, &m);
        o->send_gstat(o->ctx);
        if (account_step(info, &m, s))
            return 2;
    }
    return 0;
}

int runloop_train(const train_ops_t *o, const start_t *a, const port_info_t *info, stop_poll_fn poll)
{
    msg_summary_t s = {0, 0, 0.0f, 0, 0, info->static_bytes, 0, 0};
    uint32_t sram;
    if (a->resume && o->keep) {
        mem_repaint_keep(info, o->keep, o->keep_ctx);
    } else {
        mem_repaint(info);
        o->load_params(o->ctx);
    }
    runloop_evaluate(o, 0, a->eval_samples);
    s.status = (uint8_t)steps(o, a, info, poll, &s);
    if (s.status == 0)
        runloop_evaluate(o, 1, a->eval_samples);
    o->send_layers(o->ctx);
    s.stack_hwm = mem_stack_hwm(info);
    s.arena_peak = mem_arena_peak(info, o->arena_need);
    sram = info->static_bytes + s.stack_hwm + s.arena_peak;
    s.sram_peak = sram > s.sram_peak ? sram : s.sram_peak;
    msg_summary(&s);
    return s.status;
}
