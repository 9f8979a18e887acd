#include <string.h>
#include "session.h"
#include "formats.h"
#include "memmeter.h"
#include "msg.h"
#include "params.h"
#include "plan.h"
#include "port.h"
#include "qexec.h"
#include "qparams.h"
#include "qplan.h"
#include "qtrain.h"
#include "trainer.h"

static rx_t rx;
/* static: the resolved layer or op table is the biggest structure the engine keeps; one plan kind at a time */
static union {
    plan_t fp;
    qplan_t q;
} plans;
static uint8_t running;
static uint8_t stop_requested;
static uint8_t ready;    /* plans holds the validated plan in flash (fp32 or int8: flash holds one kind) */
static uint8_t resident; /* the arena holds the plan's trainable parameters (a run or WSET put them there) */

#define START_RESUME 2u /* START out_flags bit 1: train on the parameters in the arena */

static void answer_ping(const frame_t *f)
{
    if (f->len != 4) {
        msg_fault(FAULT_COMMAND, 0, 0, 0, f->type, f->len, "PING body must be 4 bytes");
        return;
    }
    msg_resync(); /* a lone delimiter first: whatever a real UART carried before now ends as an empty frame */
    msg_hello(port_info());
    msg_pong(le32(f->body + MSG_PING_NONCE));
}

/* a START body: 24 bytes, or the 20 before prox_mu (prox_mu 0) */
static int parse_start(const frame_t *f, start_t *a)
{
    const uint8_t *b = f->body;
    if (f->len != MSG_START_SIZE && f->len != MSG_START_PROX_MU)
        return -1;
    a->steps = le32(b + MSG_START_STEPS);
    {
        uint32_t u = le32(b + MSG_START_LR);
        memcpy(&a->lr, &u, sizeof a->lr);
    }
    a->seed = le32(b + MSG_START_SEED);
    a->grad_every = le16(b + MSG_START_GRAD_EVERY);
    a->eval_samples = le16(b + MSG_START_EVAL_SAMPLES);
    a->resume = (le16(b + MSG_START_OUT_FLAGS) & START_RESUME) != 0;
    a->prox_mu = 0.0f;
    if (f->len == MSG_START_SIZE) {
        uint32_t u = le32(b + MSG_START_PROX_MU);
        memcpy(&a->prox_mu, &u, sizeof a->prox_mu);
    }
    return 0;
}

static int poll_stop(void)
{
    while (session_poll())
        ;
    return stop_requested;
}

/* START on an int8 (TQPL) plan: evaluation only unless the plan has a training section; START's reserved words carry
 * out_samples and out_flags (evaluation-only plans) */
static void start_int8(const frame_t *f, const start_t *a, const port_info_t *info, const mem_window_t *flash)
{
    qstart_t q = {a->steps, a->eval_samples, le16(f->body + MSG_START_OUT_SAMPLES),
                   le16(f->body + MSG_START_OUT_FLAGS)};
    fault_t fl;
    if (a->prox_mu != 0.0f) {
        msg_fault(FAULT_COMMAND, 0, 0, 0, f->type, le32(f->body + MSG_START_PROX_MU), "START prox_mu: FedProx is "
                  "fp32 only (int8 plans train without a proximal term)");
        return;
    }
    if (qplan_load(&plans.q, flash, info->plan_addr, info->arena, info->arena_bytes, &fl)) {
        ready = resident = 0;
        msg_fault(fl.code, 0, 0, 0, fl.arg0, fl.arg1, fl.text);
        return;
    }
    ready = 1;
    if (a->resume && (!plans.q.train || !resident)) {
        msg_fault(FAULT_COMMAND, 0, 0, 0, f->type, START_RESUME, plans.q.train ? "START resume: no parameters in "
                  "SRAM (WSET them or run once first)" : "START resume: this int8 plan has no training section");
        return;
    }
    if (!plans.q.train && q.steps != 0) {
        msg_fault(FAULT_COMMAND, 0, 0, 0, f->type, q.steps, "int8 plans without a training section evaluate only: "
                  "steps must be 0");
        return;
    }
    if (plans.q.train && a->steps && memcmp(&a->lr, &plans.q.lr, sizeof a->lr) != 0) {
        msg_fault(FAULT_COMMAND, 0, 0, 0, f->type, le32(f->body + MSG_START_LR), "int8 training plan: START lr must equal the "
                  "lr its update multipliers were computed with");
        return;
    }
    if (plans.q.train && a->steps && plans.q.data.n_train == 0) {
        msg_fault(FAULT_DATASET, 0, 0, 0, 0, 0, "dataset: no training samples");
        return;
    }
    msg_ack(MSG_START, 0, plans.q.plan_hash);
    running = 1;
    stop_requested = 0;
    if (plans.q.train) {
        qtrain_run(&plans.q, a, info, poll_stop);
        resident = 1; /* whatever the run ended with stays for WGET or a resumed START */
    } else {
        qexec_run(&plans.q, &q, info, poll_stop);
    }
    running = 0;
}

static void start(const frame_t *f)
{
    const port_info_t *info = port_info();
    mem_window_t flash = {info->flash_addr, info->flash_size, info->flash_host};
    start_t a;
    fault_t fl;
    if (parse_start(f, &a)) {
        msg_fault(FAULT_COMMAND, 0, 0, 0, f->type, f->len, "START body must be 24 bytes (or 20, without prox_mu)");
        return;
    }
    if (!(a.prox_mu >= 0.0f && a.prox_mu <= 1e30f)) { /* NaN fails both */
        msg_fault(FAULT_COMMAND, 0, 0, 0, f->type, le32(f->body + MSG_START_PROX_MU), "START prox_mu must be a "
                  "finite value >= 0");
        return;
    }
    if (qplan_is_tqpl(&flash, info->plan_addr)) {
        start_int8(f, &a, info, &flash);
        return;
    }
    if (plan_load(&plans.fp, &flash, info->plan_addr, info->arena, info->arena_bytes, &fl)) {
        ready = resident = 0;
        msg_fault(fl.code, 0, 0, 0, fl.arg0, fl.arg1, fl.text);
        return;
    }
    ready = 1;
    if (a.resume && !resident) {
        msg_fault(FAULT_COMMAND, 0, 0, 0, f->type, START_RESUME, "START resume: no parameters in SRAM (WSET them or "
                  "run once first)");
        return;
    }
    if (a.prox_mu != 0.0f && trainer_arena_need(&plans.fp, &a) > info->arena_bytes) {
        msg_fault(FAULT_ARENA, 0, 0, 0, trainer_arena_need(&plans.fp, &a), info->arena_bytes, "arena: no room for "
                  "the FedProx anchor (a copy of every trainable tensor after the plan's arena)");
        return;
    }
    msg_ack(MSG_START, 0, plans.fp.plan_hash);
    running = 1;
    stop_requested = 0;
    trainer_run(&plans.fp, &a, info, poll_stop);
    resident = 1; /* whatever the run ended with stays for WGET or a resumed START */
    running = 0;
}

/* the plan in flash, loaded, with its trainable parameters in the arena (the plan's initial values unless a run or
 * WSET put others there), for WSET and WGET: 1 fp32, 2 int8, or 0 with a FAULT sent */
static int params_ready(const frame_t *f)
{
    const port_info_t *info = port_info();
    mem_window_t flash = {info->flash_addr, info->flash_size, info->flash_host};
    int int8 = qplan_is_tqpl(&flash, info->plan_addr);
    fault_t fl;
    if (!ready && (int8 ? qplan_load(&plans.q, &flash, info->plan_addr, info->arena, info->arena_bytes, &fl)
                        : plan_load(&plans.fp, &flash, info->plan_addr, info->arena, info->arena_bytes, &fl))) {
        msg_fault(fl.code, 0, 0, 0, fl.arg0, fl.arg1, fl.text);
        return 0;
    }
    ready = 1;
    if (int8 && !plans.q.train) {
        msg_fault(FAULT_COMMAND, 0, 0, 0, f->type, 0, "this int8 plan has no training section: nothing trainable");
        return 0;
    }
    if (!resident) {
        mem_repaint(info);
        if (int8)
            qtrain_load_params(&plans.q);
        else
            trainer_load_params(&plans.fp);
        resident = 1;
    }
    return int8 ? 2 : 1;
}

/* WSET: one slice of one trainable tensor into its arena copy, acknowledged (so the host paces the frames) */
static void wset(const frame_t *f)
{
    const char *why = "";
    int kind = params_ready(f);
    if (!kind)
        return;
    if (kind == 2 ? qparams_set(&plans.q, f, &why) : params_set(&plans.fp, f, &why)) {
        msg_fault(FAULT_COMMAND, 0, 0, 0, f->type, f->len, why);
        return;
    }
    msg_ack(MSG_WSET, 0, kind == 2 ? plans.q.plan_hash : plans.fp.plan_hash);
}

/* WGET: every trainable tensor in WDATA frames, then ACK */
static void wget(const frame_t *f)
{
    int kind;
    if (f->len != 0) {
        msg_fault(FAULT_COMMAND, 0, 0, 0, f->type, f->len, "WGET body must be empty");
        return;
    }
    kind = params_ready(f);
    if (kind == 2)
        qparams_send(&plans.q);
    else if (kind == 1)
        params_send(&plans.fp);
    if (kind)
        msg_ack(MSG_WGET, 0, kind == 2 ? plans.q.plan_hash : plans.fp.plan_hash);
}

/* SELFTEST: the port faults on purpose, and its fault handler reports it; a kind it cannot produce is a bad
 * command. */
static void selftest(const frame_t *f)
{
    if (f->len != MSG_SELFTEST_SIZE) {
        msg_fault(FAULT_COMMAND, 0, 0, 0, f->type, f->len, "SELFTEST body must be 4 bytes");
        return;
    }
    port_selftest_fault(le32(f->body + MSG_SELFTEST_KIND));
    msg_fault(FAULT_COMMAND, 0, 0, 0, f->type, le32(f->body + MSG_SELFTEST_KIND), "selftest kind not supported here");
}

void session_handle(const frame_t *f)
{
    if (f->type == MSG_PING) {
        answer_ping(f);
    } else if (f->type == MSG_STOP && running) {
        stop_requested = 1;
    } else if (f->type == MSG_STOP) {
        /* nothing to stop: harmless, so no fault */
    } else if (f->type == MSG_START && !running) {
        start(f);
    } else if (f->type == MSG_SELFTEST && !running) {
        selftest(f);
    } else if (f->type == MSG_WSET && !running) {
        wset(f);
    } else if (f->type == MSG_WGET && !running) {
        wget(f);
    } else {
        msg_fault(FAULT_COMMAND, 0, 0, 0, f->type, f->len, running ? "command not allowed while training" : "unknown command");
    }
}

int session_poll(void)
{
    uint8_t b;
    frame_t f;
    while (port_read_byte(&b)) {
        if (rx_feed(&rx, b, &f)) {
            session_handle(&f);
            return 1;
        }
    }
    return 0;
}

void session_run(void)
{
    rx_init(&rx);
    for (;;)
        session_poll();
}
