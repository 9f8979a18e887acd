/* Wire protocol v1 framing (docs/protocol.md): packet = header(6) | body | crc32(4), sent as COBS(packet) 0x00. */
#ifndef WIRE_H
#define WIRE_H

#include <stdint.h>

#define WIRE_VERSION 2u
#define WIRE_HEADER 6u
#define WIRE_CRC 4u
#define WIRE_MAX_BODY 1024u
#define WIRE_MAX_PACKET (WIRE_HEADER + WIRE_MAX_BODY + WIRE_CRC)
#define WIRE_MAX_ENCODED 1100u /* longest encoded frame accepted, delimiter excluded */

/* message types */
enum {
    MSG_HELLO = 0x01, MSG_STEP = 0x02, MSG_GSTAT = 0x03, MSG_GRAD = 0x04, MSG_EVAL = 0x05,
    MSG_SUMMARY = 0x06, MSG_LOG = 0x07, MSG_FAULT = 0x08, MSG_PONG = 0x09, MSG_ACK = 0x0A,
    MSG_LAYERS = 0x0B, MSG_OUTPUT = 0x0C, MSG_WDATA = 0x0D,
    MSG_START = 0x81, MSG_STOP = 0x82, MSG_PING = 0x83, MSG_SELFTEST = 0x84, MSG_WSET = 0x85,
    MSG_WGET = 0x86,
};

/* little-endian field access */
uint16_t le16(const uint8_t *p);
uint32_t le32(const uint8_t *p);
void put_le16(uint8_t *p, uint16_t v);
void put_le32(uint8_t *p, uint32_t v);

typedef struct {
    uint8_t type;
    uint16_t seq;
    uint16_t len;
    const uint8_t *body;
} frame_t;

/* Fills header and CRC around a body already placed at pkt + WIRE_HEADER; returns the packet length. */
uint32_t frame_build(uint8_t *pkt, uint8_t type, uint16_t seq, uint16_t body_len);
/* Checks a decoded packet; 0 and *f filled when valid, else a negative reason. */
int frame_parse(const uint8_t *pkt, uint32_t n, frame_t *f);

/* Receiver: feed bytes one at a time; frames are delimited by 0x00, bounded and resynchronised. */
typedef struct {
    uint8_t buf[WIRE_MAX_ENCODED];
    uint32_t len;
    uint8_t overflow; /* discarding until the next zero */
    uint32_t dropped; /* frames dropped for any reason in docs/protocol.md */
} rx_t;

void rx_init(rx_t *rx);
/* Returns 1 when b completed a valid frame (*f points into rx->buf until the next call), else 0. */
int rx_feed(rx_t *rx, uint8_t b, frame_t *f);

#endif
