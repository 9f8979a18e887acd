/* Checks shared by the blob validators: they read untrusted bytes, so every range is bounded before use. */
#include <stddef.h>
#include "blob.h"
#include "formats.h"
#include "crc32.h"
#include "msg.h"
#include "wire.h"

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

static const uint8_t *no_dataset(fault_t *f, const char *text, uint32_t arg0, uint32_t arg1)
{
    blob_fail(f, FAULT_DATASET, text, arg0, arg1);
    return NULL;
}

const uint8_t *blob_dataset(const mem_window_t *win, uint32_t addr, uint32_t *bytes, fault_t *f)
{
    const uint8_t *h = blob_window_ptr(win, addr, DATA_HEADER), *b;
    if (!h)
        return no_dataset(f, "dataset: address outside flash", addr, 0);
    if (le32(h + TDST_H_MAGIC) != DATA_MAGIC)
        return no_dataset(f, "dataset: bad magic", le32(h + TDST_H_MAGIC), DATA_MAGIC);
    if (le16(h + TDST_H_VERSION) != 1 || le16(h + TDST_H_HEADER_BYTES) != DATA_HEADER)
        return no_dataset(f, "dataset: unsupported version or header size", le16(h + TDST_H_VERSION), le16(h + TDST_H_HEADER_BYTES));
    *bytes = le32(h + TDST_H_BLOB_BYTES);
    b = blob_window_ptr(win, addr, *bytes);
    if (*bytes < DATA_HEADER || !b)
        return no_dataset(f, "dataset: blob_bytes outside flash", *bytes, 0);
    if (blob_crc(b, *bytes) != le32(h + TDST_H_CRC32))
        return no_dataset(f, "dataset: CRC mismatch", blob_crc(b, *bytes), le32(h + TDST_H_CRC32));
    return b;
}
