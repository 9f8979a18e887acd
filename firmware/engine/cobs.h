/* Consistent Overhead Byte Stuffing. The encoded form contains no zero byte; the caller appends the 0x00
 * delimiter. */
#ifndef COBS_H
#define COBS_H

#include <stdint.h>

/* worst-case encoded size of n bytes (without the delimiter) */
#define COBS_MAX_ENCODED(n) ((n) + (n) / 254u + 1u)

/* Encodes src[n] into dst (room for COBS_MAX_ENCODED(n)); returns the encoded length. */
uint32_t cobs_encode(const uint8_t *src, uint32_t n, uint8_t *dst);
/* Decodes src[n] (no delimiter) into dst (room for n bytes; dst == src allowed, decoding in place).
 * Returns the decoded length, or -1 when the input is not valid COBS (zero byte or code past the end). */
int32_t cobs_decode(const uint8_t *src, uint32_t n, uint8_t *dst);

#endif
