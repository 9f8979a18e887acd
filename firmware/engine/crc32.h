/* CRC-32 (IEEE 802.3, reflected, poly 0xEDB88320, init and final xor 0xFFFFFFFF): the value of Python's zlib.crc32. */
#ifndef CRC32_H
#define CRC32_H

#include <stdint.h>

#define CRC32_INIT 0xFFFFFFFFu

/* Streaming: state = crc32_update(CRC32_INIT, ...); ...; crc = crc32_final(state). */
uint32_t crc32_update(uint32_t state, const void *data, uint32_t n);
uint32_t crc32_final(uint32_t state);
uint32_t crc32(const void *data, uint32_t n);

#endif
