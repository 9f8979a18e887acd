#include <string.h>
#include "msg.h"
#include "cobs.h"
#include "wire.h"

static uint8_t pkt[WIRE_MAX_PACKET];
static uint8_t enc[COBS_MAX_ENCODED(WIRE_MAX_PACKET) + 1];
static uint16_t body_len;
static uint16_t tx_seq;

void msg_begin(uint8_t type)
{
    pkt[0] = type;
    body_len = 0;
}

void msg_bytes(const void *p, uint32_t n)
{
    if (n > WIRE_MAX_BODY - body_len)
        n = WIRE_MAX_BODY - body_len;
    memcpy(pkt + WIRE_HEADER + body_len, p, n);
    body_len = (uint16_t)(body_len + n);
}

void msg_u8(uint8_t v)
{
    msg_bytes(&v, 1);
}

void msg_u16(uint16_t v)
{
    uint8_t b[2];
    put_le16(b, v);
    msg_bytes(b, 2);
}

void msg_u32(uint32_t v)
{
    uint8_t b[4];
    put_le32(b, v);
    msg_bytes(b, 4);
}

void msg_u64(uint64_t v)
{
    msg_u32((uint32_t)v);
    msg_u32((uint32_t)(v >> 32));
}

void msg_f32(float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    msg_u32(u);
}

void msg_zeros(uint32_t n)
{
    static const uint8_t z[8];
    while (n) {
        uint32_t c = n < sizeof z ? n : sizeof z;
        msg_bytes(z, c);
        n -= c;
    }
}

uint32_t msg_body_len(void)
{
    return body_len;
}

void msg_send(void)
{
    uint32_t n = frame_build(pkt, pkt[0], tx_seq++, body_len);
    uint32_t e = cobs_encode(pkt, n, enc);
    enc[e++] = 0;
    port_write(enc, e);
}

void msg_resync(void)
{
    static const uint8_t zero = 0;
    port_write(&zero, 1);
}

/* a length-prefixed string, cut at max bytes */
static void msg_str8(const char *s, uint32_t max)
{
    uint32_t n = 0;
    while (s && s[n] && n < max)
        n++;
    msg_u8((uint8_t)n);
    msg_bytes(s, n);
}

void msg_hello(const port_info_t *info)
{
    msg_begin(MSG_HELLO);
    msg_u16(WIRE_VERSION);
    msg_u16(port_counter_kind());
    msg_u32(info->cpu_hz);
    msg_u32(port_counter_hz());
    msg_u32(info->sram_bytes);
    msg_u32(info->flash_bytes);
    msg_u32(info->static_bytes);
    msg_u32(info->arena_bytes);
    msg_u32(info->stack_bytes);
    msg_str8(info->board, 32);
    msg_str8(info->build_id, 40);
    msg_send();
}

void msg_pong(uint32_t nonce)
{
    msg_begin(MSG_PONG);
    msg_u32(nonce);
    msg_send();
}

void msg_ack(uint8_t cmd_type, uint8_t status, uint32_t plan_hash)
{
    msg_begin(MSG_ACK);
    msg_u8(cmd_type);
    msg_u8(status);
    msg_u16(0);
    msg_u32(plan_hash);
    msg_send();
}

void msg_fault(uint32_t code, uint32_t pc, uint32_t lr, uint32_t cfsr, uint32_t arg0, uint32_t arg1,
               const char *text)
{
    msg_begin(MSG_FAULT);
    msg_u32(code);
    msg_u32(pc);
    msg_u32(lr);
    msg_u32(cfsr);
    msg_u32(arg0);
    msg_u32(arg1);
    if (text)
        msg_bytes(text, (uint32_t)strlen(text));
    msg_send();
}

void msg_beat(uint64_t *last)
{
    uint64_t now = port_ticks();
    if (now - *last < port_counter_hz())
        return;
    *last = now;
    msg_log(0, "busy");
}

void msg_log(uint8_t level, const char *text)
{
    msg_begin(MSG_LOG);
    msg_u8(level);
    if (text)
        msg_bytes(text, (uint32_t)strlen(text));
    msg_send();
}

void msg_step(const msg_step_t *s)
{
    msg_begin(MSG_STEP);
    msg_u32(s->step);
    msg_u32(s->sample);
    msg_u8(s->label);
    msg_u8(s->pred);
    msg_u16(0);
    msg_f32(s->loss);
    msg_u32(s->t_fwd);
    msg_u32(s->t_bwd);
    msg_u32(s->t_upd);
    msg_u32(s->stack_hwm);
    msg_u32(s->arena_peak);
    msg_u32(s->sram_used);
    msg_send();
}

void msg_eval(const msg_eval_t *e)
{
    msg_begin(MSG_EVAL);
    msg_u8(e->phase);
    msg_zeros(3);
    msg_u32(e->n);
    msg_u32(e->correct);
    msg_f32(e->loss_sum);
    msg_u64(e->ticks);
    msg_send();
}

void msg_summary(const msg_summary_t *s)
{
    msg_begin(MSG_SUMMARY);
    msg_u32(s->steps_done);
    msg_u8(s->status);
    msg_zeros(3);
    msg_f32(s->final_loss);
    msg_u32(s->stack_hwm);
    msg_u32(s->arena_peak);
    msg_u32(s->static_bytes);
    msg_u32(s->sram_peak);
    msg_u64(s->ticks_train);
    msg_send();
}

void msg_layers_begin(uint32_t n)
{
    msg_begin(MSG_LAYERS);
    msg_u8((uint8_t)n);
    msg_zeros(3);
}

void msg_layer(uint32_t index, uint8_t op, const uint64_t ticks[3])
{
    msg_u8((uint8_t)index);
    msg_u8(op);
    msg_u16(0);
    for (uint32_t k = 0; k < 3; k++)
        msg_u64(ticks[k]);
}

void msg_gstat_begin(uint32_t step, uint32_t n)
{
    msg_begin(MSG_GSTAT);
    msg_u32(step);
    msg_u8((uint8_t)n);
    msg_zeros(3);
}

void msg_gstat_entry(uint8_t layer, uint8_t param, uint8_t flags, int16_t e, float l2, float max_abs)
{
    msg_u8(layer);
    msg_u8(param);
    msg_u8(flags);
    msg_u16((uint16_t)e);
    msg_f32(l2);
    msg_f32(max_abs);
}
