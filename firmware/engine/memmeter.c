/* Painted-memory measurement: see memmeter.h. */
#include <stddef.h>
#include "memmeter.h"
#include "trainer.h"

void mem_repaint(const port_info_t *info)
{
    mem_repaint_keep(info, NULL, NULL);
}

void mem_repaint_keep(const port_info_t *info, mem_keep_fn keep, const void *ctx)
{
    volatile uint32_t here = 0;
    /* stops well below this frame, so it never overwrites live data of its callers */
    uintptr_t limit = ((uintptr_t)&here - 128u) & ~(uintptr_t)3u;
    uint32_t *a = (uint32_t *)(void *)info->arena;
    for (uint32_t j = 0; j < info->arena_bytes / 4u; j++)
        if (!keep || !keep(ctx, (const uint8_t *)&a[j]))
            a[j] = TRAINER_PAINT;
    if (info->stack_bottom)
        for (uint32_t *w = info->stack_bottom; (uintptr_t)w < limit; w++)
            *w = TRAINER_PAINT;
    (void)here;
}

uint32_t mem_stack_hwm(const port_info_t *info)
{
    uint32_t words = info->stack_bytes / 4u, j = 0;
    if (!info->stack_bottom)
        return 0;
    while (j < words && info->stack_bottom[j] == TRAINER_PAINT)
        j++;
    return (words - j) * 4u;
}

uint32_t mem_arena_peak(const port_info_t *info, uint32_t arena_need)
{
    const uint32_t *w = (const uint32_t *)(const void *)info->arena;
    uint32_t j = arena_need / 4u;
    while (j > 0 && w[j - 1] == TRAINER_PAINT)
        j--;
    return j * 4u;
}

int mem_stack_guard_hit(const port_info_t *info)
{
    if (!info->stack_bottom || info->stack_bytes < 16u)
        return 0;
    for (uint32_t j = 0; j < 4u; j++)
        if (info->stack_bottom[j] != TRAINER_PAINT)
            return 1;
    return 0;
}
