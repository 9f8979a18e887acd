/* SRAM measured on the device (docs/protocol.md): the arena and the free stack are painted before a run; what lost
 * the paint was used. Shared by the fp32 trainer and the int8 executor and trainer. */
#ifndef MEMMETER_H
#define MEMMETER_H

#include <stdint.h>
#include "port.h"

/* Paints the whole arena and the stack below the caller's frame, so the marks describe this run only. */
void mem_repaint(const port_info_t *info);
/* 1 when the arena word at w must keep its value: it holds part of a trainable parameter a resumed run trains on */
typedef int (*mem_keep_fn)(const void *ctx, const uint8_t *w);
/* mem_repaint, leaving the words `keep` names as they are (one call per arena word: no table of ranges, so a resumed
 * run measures the same stack and static memory as a fresh one) */
void mem_repaint_keep(const port_info_t *info, mem_keep_fn keep, const void *ctx);
/* Bytes of the stack ever used (from its top down to the lowest word that lost the paint). */
uint32_t mem_stack_hwm(const port_info_t *info);
/* Highest written byte of the arena's first arena_need bytes (validated plans never write beyond them). */
uint32_t mem_arena_peak(const port_info_t *info, uint32_t arena_need);
/* The lowest stack words still carry paint unless the stack overflowed into them. */
int mem_stack_guard_hit(const port_info_t *info);

#endif
