#include "wire.h"
#include "cobs.h"
#include "crc32.h"

uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

void put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

void put_le32(uint8_t *p, uint32_t v)
{
    put_le16(p, (uint16_t)v);
    put_le16(p + 2, (uint16_t)(v >> 16));
}

uint32_t frame_build(uint8_t *pkt, uint8_t type, uint16_t seq, uint16_t body_len)
{
    uint32_t n = WIRE_HEADER + body_len;
    pkt[0] = type;
    pkt[1] = WIRE_VERSION;
    put_le16(pkt + 2, seq);
    put_le16(pkt + 4, body_len);
    put_le32(pkt + n, crc32(pkt, n));
    return n + WIRE_CRC;
}

int frame_parse(const uint8_t *pkt, uint32_t n, frame_t *f)
{
    uint16_t len;
    if (n < WIRE_HEADER + WIRE_CRC)
        return -1;
    len = le16(pkt + 4);
    if (len > WIRE_MAX_BODY)
        return -2;
    if ((uint32_t)len + WIRE_HEADER + WIRE_CRC != n)
        return -3;
    if (pkt[1] != WIRE_VERSION)
        return -4;
    if (crc32(pkt, n - WIRE_CRC) != le32(pkt + n - WIRE_CRC))
        return -5;
    f->type = pkt[0];
    f->seq = le16(pkt + 2);
    f->len = len;
    f->body = pkt + WIRE_HEADER;
    return 0;
}

void rx_init(rx_t *rx)
{
    rx->len = 0;
    rx->overflow = 0;
    rx->dropped = 0;
}

/* a delimiter arrived: decode in place and check what was collected */
static int rx_complete(rx_t *rx, frame_t *f)
{
    int32_t n;
    uint32_t len = rx->len;
    uint8_t overflow = rx->overflow;
    rx->len = 0;
    rx->overflow = 0;
    if (overflow) {
        rx->dropped++;
        return 0;
    }
    if (len == 0) /* back-to-back delimiters: idle line, not a frame */
        return 0;
    n = cobs_decode(rx->buf, len, rx->buf);
    if (n < 0 || frame_parse(rx->buf, (uint32_t)n, f) != 0) {
        rx->dropped++;
        return 0;
    }
    return 1;
}

int rx_feed(rx_t *rx, uint8_t b, frame_t *f)
{
    if (b == 0)
        return rx_complete(rx, f);
    if (rx->overflow)
        return 0;
    if (rx->len >= WIRE_MAX_ENCODED) {
        rx->overflow = 1;
        return 0;
    }
    rx->buf[rx->len++] = b;
    return 0;
}
