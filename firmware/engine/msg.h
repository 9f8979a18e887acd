/* Device -> host messages (docs/protocol.md). One packet is assembled at a time in a static buffer, then framed,
 * COBS-encoded and written to the port. */
#ifndef MSG_H
#define MSG_H

#include <stdint.h>
#include "port.h"

/* fault codes */
enum {
    FAULT_HARD = 1, FAULT_PLAN = 2, FAULT_ARENA = 3, FAULT_DATASET = 4, FAULT_COMMAND = 5, FAULT_STACK = 6,
};

/* generic builder: begin, append fields (silently bounded to the 1024-byte body), send */
void msg_begin(uint8_t type);
void msg_u8(uint8_t v);
void msg_u16(uint16_t v);
void msg_u32(uint32_t v);
void msg_u64(uint64_t v);
void msg_f32(float v);
void msg_zeros(uint32_t n);
void msg_bytes(const void *p, uint32_t n);
uint32_t msg_body_len(void);
void msg_send(void);
/* Writes a lone 0x00 so that a receiver drops whatever partial frame preceded it. */
void msg_resync(void);

void msg_hello(const port_info_t *info);
void msg_pong(uint32_t nonce);
void msg_ack(uint8_t cmd_type, uint8_t status, uint32_t plan_hash);
void msg_fault(uint32_t code, uint32_t pc, uint32_t lr, uint32_t cfsr, uint32_t arg0, uint32_t arg1,
               const char *text);
void msg_log(uint8_t level, const char *text);
/* Heartbeat: a LOG (level 0, "busy") when a second of device time has passed since *last (updated), so the host
 * tells a long silent phase (evaluating a big model) from a hung device within its stall timeout. */
void msg_beat(uint64_t *last);

typedef struct {
    uint32_t step, sample;
    uint8_t label, pred;
    float loss;
    uint32_t t_fwd, t_bwd, t_upd;
    uint32_t stack_hwm, arena_peak, sram_used;
} msg_step_t;
void msg_step(const msg_step_t *s);

typedef struct {
    uint8_t phase;
    uint32_t n, correct;
    float loss_sum;
    uint64_t ticks;
} msg_eval_t;
void msg_eval(const msg_eval_t *e);

typedef struct {
    uint32_t steps_done;
    uint8_t status;
    float final_loss;
    uint32_t stack_hwm, arena_peak, static_bytes, sram_peak;
    uint64_t ticks_train;
} msg_summary_t;
void msg_summary(const msg_summary_t *s);
/* LAYERS: begin with the entry count, one msg_layer per layer (ticks: forward, backward, update), then msg_send. */
void msg_layers_begin(uint32_t n);
void msg_layer(uint32_t index, uint8_t op, const uint64_t ticks[3]);
/* GSTAT: begin with the step and entry count, one msg_gstat_entry per tensor, then msg_send. flags/e are 0 for fp32
 * gradients; int8 runs mark int32 values and their exponent (docs/protocol.md). */
void msg_gstat_begin(uint32_t step, uint32_t n);
void msg_gstat_entry(uint8_t layer, uint8_t param, uint8_t flags, int16_t e, float l2, float max_abs);

#endif
