/* Host stand-in for the port: captures output, replays scripted input, counts ticks. */
#ifndef HOST_PORT_H
#define HOST_PORT_H

#include <stdint.h>
#include "port.h"
#include "wire.h"

void hp_reset(port_info_t *info);
void hp_set_input(const uint8_t *bytes, uint32_t n);
/* Decodes the next captured frame from *pos; returns 1 with f (body valid until the next call), 0 at the end. */
int hp_next_frame(uint32_t *pos, frame_t *f);
/* Count of captured frames of a type. */
uint32_t hp_count(uint8_t type);
/* port_marker() calls since hp_reset, in order (the first HP_MAX_MARKERS) */
#define HP_MAX_MARKERS 4096u
extern uint8_t hp_markers[HP_MAX_MARKERS];
extern uint32_t hp_n_markers;
/* Appends a framed command to the input script. */
uint32_t hp_encode(uint8_t *dst, uint8_t type, uint16_t seq, const uint8_t *body, uint16_t len);

#endif
