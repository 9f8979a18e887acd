#include "cobs.h"

uint32_t cobs_encode(const uint8_t *src, uint32_t n, uint8_t *dst)
{
    uint32_t code_at = 0, out = 1;
    uint8_t code = 1;
    for (uint32_t i = 0; i < n; i++) {
        if (src[i] == 0) {
            dst[code_at] = code;
            code_at = out++;
            code = 1;
            continue;
        }
        dst[out++] = src[i];
        if (++code == 0xFF && i + 1 < n) {
            /* a full block of 254 data bytes carries no implied zero; at the very end it needs no successor */
            dst[code_at] = code;
            code_at = out++;
            code = 1;
        }
    }
    dst[code_at] = code;
    return out;
}

int32_t cobs_decode(const uint8_t *src, uint32_t n, uint8_t *dst)
{
    uint32_t in = 0, out = 0;
    while (in < n) {
        uint8_t code = src[in++];
        if (code == 0 || in + code - 1u > n)
            return -1;
        for (uint8_t j = 1; j < code; j++) {
            if (src[in] == 0)
                return -1;
            dst[out++] = src[in++];
        }
        /* a block shorter than 254 bytes stands for a zero, except at the very end */
        if (code != 0xFF && in < n)
            dst[out++] = 0;
    }
    return (int32_t)out;
}
