/* Checks shared by the blob validators (plan.c for fp32 TPLN plans, qplan.c for int8 TQPL plans). */
#ifndef BLOB_H
#define BLOB_H

#include <stdint.h>
#include "plan.h"

/* Fills *f and returns -1, so a validator can `return blob_fail(...)`. */
int blob_fail(fault_t *f, uint32_t code, const char *text, uint32_t arg0, uint32_t arg1);
/* Host pointer to [addr, addr + bytes) when inside the window and 4-byte aligned, else NULL. */
const uint8_t *blob_window_ptr(const mem_window_t *w, uint32_t addr, uint64_t bytes);
/* CRC-32 of a blob whose crc field (at offset 12) counts as zero; n >= 16. */
uint32_t blob_crc(const uint8_t *b, uint32_t n);
/* The dataset blob at addr once its window, magic, version, header size, length and CRC check out (*bytes set);
 * NULL with *f filled otherwise. Field checks that depend on the plan kind stay with each plan's parser. */
const uint8_t *blob_dataset(const mem_window_t *win, uint32_t addr, uint32_t *bytes, fault_t *f);

#endif
