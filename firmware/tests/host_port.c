#include <string.h>
#include "host_port.h"
#include "cobs.h"

static uint8_t out[8u << 20];
static uint32_t out_len;
static const uint8_t *in;
static uint32_t in_len, in_pos;
static uint64_t ticks;
static port_info_t *info;
static uint8_t pkt[WIRE_MAX_ENCODED];
uint8_t hp_markers[HP_MAX_MARKERS];
uint32_t hp_n_markers;

void hp_reset(port_info_t *i)
{
    info = i;
    out_len = 0;
    in = NULL;
    in_len = in_pos = 0;
    hp_n_markers = 0;
}

void hp_set_input(const uint8_t *bytes, uint32_t n)
{
    in = bytes;
    in_len = n;
    in_pos = 0;
}

void port_init(void)
{
}

void port_write(const uint8_t *buf, uint32_t n)
{
    if (n > sizeof out - out_len)
        n = (uint32_t)(sizeof out - out_len);
    memcpy(out + out_len, buf, n);
    out_len += n;
}

int port_read_byte(uint8_t *byte)
{
    if (in_pos >= in_len)
        return 0;
    *byte = in[in_pos++];
    return 1;
}

uint64_t port_ticks(void)
{
    return ticks += 3; /* advances on every read, as a real counter would between reads */
}

uint32_t port_counter_hz(void)
{
    return 1000000u;
}

uint16_t port_counter_kind(void)
{
    return PORT_COUNTER_SYSTICK;
}

void port_marker(uint8_t phase)
{
    if (hp_n_markers < HP_MAX_MARKERS)
        hp_markers[hp_n_markers] = phase;
    hp_n_markers++;
}

void port_exit(int code)
{
    (void)code;
}

/* The host build cannot fault on purpose without ending the test program: every kind is unsupported here. */
void port_selftest_fault(uint32_t kind)
{
    (void)kind;
}

const port_info_t *port_info(void)
{
    return info;
}

int hp_next_frame(uint32_t *pos, frame_t *f)
{
    while (*pos < out_len) {
        uint32_t start = *pos, end = start;
        while (end < out_len && out[end] != 0)
            end++;
        *pos = end + 1;
        if (end == start || end - start > sizeof pkt)
            continue;
        int32_t n = cobs_decode(out + start, end - start, pkt);
        if (n >= 0 && frame_parse(pkt, (uint32_t)n, f) == 0)
            return 1;
    }
    return 0;
}

uint32_t hp_count(uint8_t type)
{
    uint32_t pos = 0, n = 0;
    frame_t f;
    while (hp_next_frame(&pos, &f))
        n += f.type == type;
    return n;
}

uint32_t hp_encode(uint8_t *dst, uint8_t type, uint16_t seq, const uint8_t *body, uint16_t len)
{
    uint8_t p[WIRE_MAX_PACKET];
    if (len)
        memcpy(p + WIRE_HEADER, body, len);
    uint32_t n = frame_build(p, type, seq, len);
    uint32_t e = cobs_encode(p, n, dst);
    dst[e] = 0;
    return e + 1;
}
