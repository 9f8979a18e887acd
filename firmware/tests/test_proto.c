/* CRC32, COBS, framing and the receiver. */
#include <string.h>
#include "harness.h"
#include "cobs.h"
#include "crc32.h"
#include "wire.h"
#include "formats.h"
#include "host_port.h"
#include "msg.h"

static void t_crc(void)
{
    const char *s = "123456789";
    CHECK(crc32(s, 9) == 0xCBF43926u);
    CHECK(crc32("", 0) == 0x00000000u);
    CHECK(crc32("a", 1) == 0xE8B7BE43u);
    CHECK(crc32("The quick brown fox jumps over the lazy dog", 43) == 0x414FA339u);
    uint32_t st = crc32_update(CRC32_INIT, s, 4);
    CHECK(crc32_final(crc32_update(st, s + 4, 5)) == 0xCBF43926u);
}

static int round_trip(const uint8_t *src, uint32_t n)
{
    static uint8_t enc[4096], dec[4096];
    uint32_t e = cobs_encode(src, n, enc);
    if (e > COBS_MAX_ENCODED(n) || memchr(enc, 0, e))
        return 0;
    int32_t d = cobs_decode(enc, e, dec);
    if (d != (int32_t)n || memcmp(src, dec, n))
        return 0;
    /* in place as the receiver does it */
    d = cobs_decode(enc, e, enc);
    return d == (int32_t)n && memcmp(src, enc, n) == 0;
}

static void t_cobs_vectors(void)
{
    const uint8_t a[] = {0x11, 0x22, 0x00, 0x33}, a_enc[] = {0x03, 0x11, 0x22, 0x02, 0x33};
    const uint8_t z2[] = {0, 0}, z2_enc[] = {1, 1, 1};
    uint8_t enc[600], buf[600];
    CHECK(cobs_encode(a, 4, enc) == 5 && memcmp(enc, a_enc, 5) == 0);
    CHECK(cobs_encode(z2, 2, enc) == 3 && memcmp(enc, z2_enc, 3) == 0);
    CHECK(cobs_encode(a, 0, enc) == 1 && enc[0] == 1);
    memset(buf, 1, sizeof buf);
    CHECK(cobs_encode(buf, 254, enc) == 255 && enc[0] == 0xFF); /* as Python's cobs: no trailing block */
    CHECK(cobs_encode(buf, 255, enc) == 257 && enc[0] == 0xFF && enc[255] == 2);
    const uint8_t bad1[] = {0x03, 0x11}, bad2[] = {0x02, 0x00}, bad3[] = {0x00};
    CHECK(cobs_decode(bad1, 2, buf) < 0);
    CHECK(cobs_decode(bad2, 2, buf) < 0);
    CHECK(cobs_decode(bad3, 1, buf) < 0);
}

static void t_cobs_round_trips(void)
{
    static uint8_t buf[2100];
    const uint32_t lens[] = {0, 1, 2, 253, 254, 255, 256, 508, 509, 510, 1034, 2048};
    for (unsigned j = 0; j < sizeof lens / sizeof lens[0]; j++) {
        uint32_t n = lens[j];
        memset(buf, 0xA5, n); /* one long run without zeros */
        CHECK(round_trip(buf, n));
        memset(buf, 0, n); /* only zeros */
        CHECK(round_trip(buf, n));
        for (uint32_t i = 0; i < n; i++) /* zero exactly after 254 / 255 bytes and scattered */
            buf[i] = (uint8_t)((i % 255 == 254 || i % 97 == 5) ? 0 : 1 + i % 250);
        CHECK(round_trip(buf, n));
        for (uint32_t i = 0; i < n; i++)
            buf[i] = (uint8_t)(th_rand() % 4 == 0 ? 0 : th_rand());
        CHECK(round_trip(buf, n));
    }
}

static void t_frame(void)
{
    uint8_t pkt[WIRE_MAX_PACKET];
    frame_t f;
    memcpy(pkt + WIRE_HEADER, "abc", 3);
    uint32_t n = frame_build(pkt, 0x83, 0xBEEF, 3);
    CHECK(n == 13);
    CHECK(frame_parse(pkt, n, &f) == 0 && f.type == 0x83 && f.seq == 0xBEEF && f.len == 3 && !memcmp(f.body, "abc", 3));
    CHECK(crc32(pkt, 9) == le32(pkt + 9));
    CHECK(frame_parse(pkt, 9, &f) != 0);  /* too short */
    CHECK(frame_parse(pkt, 12, &f) != 0); /* len disagrees */
    pkt[7] ^= 1;
    CHECK(frame_parse(pkt, n, &f) != 0); /* CRC */
    pkt[7] ^= 1;
    pkt[1] = WIRE_VERSION + 1;
    CHECK(frame_parse(pkt, n, &f) != 0); /* version */
}

static int feed(rx_t *rx, const uint8_t *b, uint32_t n, frame_t *f, uint32_t *got)
{
    int last = 0;
    for (uint32_t j = 0; j < n; j++)
        if (rx_feed(rx, b[j], f)) {
            (*got)++;
            last = f->type;
        }
    return last;
}

static void t_rx(void)
{
    static rx_t rx;
    static uint8_t wire[4096];
    uint8_t pkt[WIRE_MAX_PACKET];
    frame_t f;
    uint32_t got = 0, n;
    rx_init(&rx);
    const uint8_t garbage[] = {0x12, 0x34, 0x56, 0x00};
    put_le32(pkt + WIRE_HEADER, 42);
    n = frame_build(pkt, 0x83, 1, 4);
    uint32_t e = cobs_encode(pkt, n, wire);
    wire[e++] = 0;
    CHECK(feed(&rx, garbage, sizeof garbage, &f, &got) == 0 && rx.dropped == 1);
    CHECK(feed(&rx, wire, e, &f, &got) == 0x83 && got == 1 && le32(f.body) == 42);
    /* an overlong frame is dropped and the next one still arrives */
    memset(wire + e, 0x55, 1500);
    memcpy(wire + e + 1500, wire, e);
    got = 0;
    CHECK(feed(&rx, wire + e, 1500, &f, &got) == 0 && got == 0);
    CHECK(feed(&rx, (const uint8_t *)"\0", 1, &f, &got) == 0 && rx.dropped == 2);
    CHECK(feed(&rx, wire, e, &f, &got) == 0x83 && got == 1);
    /* a corrupted byte inside a frame: dropped by CRC, back-to-back frames still work */
    got = 0;
    memcpy(wire + e, wire, e);
    wire[3] ^= 0x40;
    feed(&rx, wire, 2 * e, &f, &got);
    CHECK(got == 1 && rx.dropped == 3);
}

static void t_le(void)
{
    uint8_t b[4];
    put_le32(b, 0x11223344u);
    CHECK(b[0] == 0x44 && b[3] == 0x11 && le32(b) == 0x11223344u && le16(b) == 0x3344);
}

static float f32_of(const uint8_t *p)
{
    float v;
    uint32_t u = le32(p);
    memcpy(&v, &u, sizeof v);
    return v;
}

/* the one frame captured since hp_reset, of type `type`, its body `size` bytes */
static int captured(uint8_t type, uint32_t size, frame_t *f)
{
    uint32_t pos = 0;
    int got = hp_next_frame(&pos, f);
    CHECK(got && f->type == type && f->len == size);
    return got && f->type == type && f->len == size;
}

/* The firmware's message builders write every field where bench/formats/messages.py (hence the generated
 * formats.h and the host's decoder) declares it: distinct values, read back at the declared offsets. */
static void t_messages_at_declared_offsets(void)
{
    port_info_t info;
    frame_t f;
    msg_step_t s = {0x01020304u, 0x05060708u, 9, 10, 1.5f, 0x11121314u, 0x21222324u, 0x31323334u, 0x41424344u,
                    0x51525354u, 0x61626364u};
    msg_eval_t e = {1, 0x0A0B0C0Du, 0x0E0F1011u, 2.25f, 0x0102030405060708ull};
    msg_summary_t m = {0x12345678u, 2, 3.5f, 0x22u, 0x33u, 0x44u, 0x55u, 0x1122334455667788ull};
    const uint64_t ticks[3] = {0x1111111111ull, 0x2222222222ull, 0x3333333333ull};
    hp_reset(&info);
    msg_step(&s);
    if (captured(MSG_STEP, MSG_STEP_SIZE, &f))
        CHECK(le32(f.body + MSG_STEP_STEP) == s.step && le32(f.body + MSG_STEP_SAMPLE) == s.sample &&
              f.body[MSG_STEP_LABEL] == 9 && f.body[MSG_STEP_PRED] == 10 && f32_of(f.body + MSG_STEP_LOSS) == 1.5f &&
              le32(f.body + MSG_STEP_T_FWD) == s.t_fwd && le32(f.body + MSG_STEP_T_BWD) == s.t_bwd &&
              le32(f.body + MSG_STEP_T_UPD) == s.t_upd && le32(f.body + MSG_STEP_STACK_HWM) == s.stack_hwm &&
              le32(f.body + MSG_STEP_ARENA_PEAK) == s.arena_peak && le32(f.body + MSG_STEP_SRAM_USED) == s.sram_used);
    hp_reset(&info);
    msg_eval(&e);
    if (captured(MSG_EVAL, MSG_EVAL_SIZE, &f))
        CHECK(f.body[MSG_EVAL_PHASE] == 1 && le32(f.body + MSG_EVAL_N) == e.n &&
              le32(f.body + MSG_EVAL_CORRECT) == e.correct && f32_of(f.body + MSG_EVAL_LOSS_SUM) == 2.25f &&
              le32(f.body + MSG_EVAL_TICKS) == 0x05060708u && le32(f.body + MSG_EVAL_TICKS + 4) == 0x01020304u);
    hp_reset(&info);
    msg_summary(&m);
    if (captured(MSG_SUMMARY, MSG_SUMMARY_SIZE, &f))
        CHECK(le32(f.body + MSG_SUMMARY_STEPS_DONE) == m.steps_done && f.body[MSG_SUMMARY_STATUS] == 2 &&
              f32_of(f.body + MSG_SUMMARY_FINAL_LOSS) == 3.5f && le32(f.body + MSG_SUMMARY_STACK_HWM) == 0x22u &&
              le32(f.body + MSG_SUMMARY_ARENA_PEAK) == 0x33u && le32(f.body + MSG_SUMMARY_STATIC_BYTES) == 0x44u &&
              le32(f.body + MSG_SUMMARY_SRAM_PEAK) == 0x55u && le32(f.body + MSG_SUMMARY_TICKS_TRAIN) == 0x55667788u);
    hp_reset(&info);
    msg_ack(0x81, 3, 0xCAFEF00Du);
    if (captured(MSG_ACK, MSG_ACK_SIZE, &f))
        CHECK(f.body[MSG_ACK_CMD_TYPE] == 0x81 && f.body[MSG_ACK_STATUS] == 3 &&
              le32(f.body + MSG_ACK_PLAN_HASH) == 0xCAFEF00Du);
    hp_reset(&info);
    msg_pong(0xABCDEF01u);
    if (captured(MSG_PONG, MSG_PONG_SIZE, &f))
        CHECK(le32(f.body + MSG_PONG_NONCE) == 0xABCDEF01u);
    hp_reset(&info);
    msg_fault(1, 2, 3, 4, 5, 6, "x");
    if (captured(MSG_FAULT, MSG_FAULT_SIZE + 1u, &f))
        CHECK(le32(f.body + MSG_FAULT_CODE) == 1 && le32(f.body + MSG_FAULT_PC) == 2 && le32(f.body + MSG_FAULT_LR) == 3 &&
              le32(f.body + MSG_FAULT_CFSR) == 4 && le32(f.body + MSG_FAULT_ARG0) == 5 &&
              le32(f.body + MSG_FAULT_ARG1) == 6 && f.body[MSG_FAULT_SIZE] == 'x');
    hp_reset(&info);
    msg_layers_begin(1);
    msg_layer(7, 0x83, ticks);
    msg_send();
    if (captured(MSG_LAYERS, MSG_LAYERS_HEAD_SIZE + MSG_LAYERS_ENTRY_SIZE, &f)) {
        const uint8_t *r = f.body + MSG_LAYERS_HEAD_SIZE;
        CHECK(f.body[MSG_LAYERS_HEAD_N] == 1 && r[MSG_LAYERS_ENTRY_LAYER] == 7 && r[MSG_LAYERS_ENTRY_OP] == 0x83 &&
              le32(r + MSG_LAYERS_ENTRY_FWD) == 0x1111111111ull % 4294967296ull &&
              le32(r + MSG_LAYERS_ENTRY_BWD + 4) == 0x22u && le32(r + MSG_LAYERS_ENTRY_UPD + 4) == 0x33u);
    }
    hp_reset(&info);
    msg_gstat_begin(0x01020304u, 1);
    msg_gstat_entry(4, 1, 1, 0xF9, 0.5f, 0.25f);
    msg_send();
    if (captured(MSG_GSTAT, MSG_GSTAT_HEAD_SIZE + MSG_GSTAT_ENTRY_SIZE, &f)) {
        const uint8_t *r = f.body + MSG_GSTAT_HEAD_SIZE;
        CHECK(le32(f.body + MSG_GSTAT_HEAD_STEP) == 0x01020304u && f.body[MSG_GSTAT_HEAD_N] == 1 &&
              r[MSG_GSTAT_ENTRY_LAYER] == 4 && r[MSG_GSTAT_ENTRY_PARAM] == 1 && r[MSG_GSTAT_ENTRY_FLAGS] == 1 &&
              r[MSG_GSTAT_ENTRY_E] == 0xF9 && f32_of(r + MSG_GSTAT_ENTRY_L2) == 0.5f &&
              f32_of(r + MSG_GSTAT_ENTRY_MAX_ABS) == 0.25f);
    }
}

const test_case_t proto_tests[] = {
    {"crc32 known vectors and streaming", t_crc},
    {"cobs known vectors and invalid input", t_cobs_vectors},
    {"cobs round trips incl. 254/255-byte runs and zero runs", t_cobs_round_trips},
    {"frame build/parse and rejections", t_frame},
    {"receiver: resync, bound, drop counting", t_rx},
    {"little-endian helpers", t_le},
    {"messages: every field at the offset bench/formats/messages.py declares", t_messages_at_declared_offsets},
    {NULL, NULL},
};
