/* Checks shared by the blob validators: they read untrusted bytes, so every range is bounded before use. */
#include <stddef.h>
#include "blob.h"
#include "crc32.h"

int blob_fail(fault_t *f, uint32_t code, const char *text, uint32_t arg0, uint32_t arg1)
{
    f->code = code;
    f->text = text;
    f->arg0 = arg0;
    f->arg1 = arg1;
    return -1;
}

const uint8_t *blob_window_ptr(const mem_window_t *w, uint32_t addr, uint64_t bytes)
{
    if ((addr & 3u) || addr < w->addr || (uint64_t)(addr - w->addr) + bytes > w->size)
        return NULL;
    return (const uint8_t *)(w->host + (addr - w->addr));
}

uint32_t blob_crc(const uint8_t *b, uint32_t n)
{
    static const uint8_t zero[4];
    uint32_t s = crc32_update(CRC32_INIT, b, 12);
    s = crc32_update(s, zero, 4);
    return crc32_final(crc32_update(s, b + 16, n - 16));
}
