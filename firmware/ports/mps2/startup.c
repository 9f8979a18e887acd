/* Cortex-M startup for the mps2 twins, valid for ARMv6-M (Thumb-1 only) and ARMv7-M/ARMv7E-M. */
#include <stdint.h>
#include "port.h"
#include "mps2.h"

extern uint32_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[];
extern uint32_t __arena_start[], __arena_end[], __stack_bottom[], __stack_top[];

int main(void);
void Reset_Handler(void);
void Fault_Handler(void);
void SysTick_Handler(void);

typedef void (*vector_t)(void);

/* ARMv6-M and ARMv7-M share the first 16 entries; no external interrupt is used */
__attribute__((section(".vectors"), used)) static const vector_t vectors[16] = {
    (vector_t)(uintptr_t)__stack_top, /* initial MSP */
    Reset_Handler,
    Fault_Handler, /* NMI */
    Fault_Handler, /* HardFault */
    Fault_Handler, /* MemManage (v7-M) */
    Fault_Handler, /* BusFault (v7-M) */
    Fault_Handler, /* UsageFault (v7-M) */
    0, 0, 0, 0,
    Fault_Handler, /* SVCall */
    Fault_Handler, /* DebugMonitor (v7-M) */
    0,
    Fault_Handler, /* PendSV */
    SysTick_Handler,
};

static void enable_fpu(void)
{
#if defined(__ARM_FP)
    /* full access to CP10/CP11 before any floating-point instruction runs */
    MMIO32(SCB_CPACR) |= 0xFu << 20;
    __asm volatile("dsb\n\tisb" ::: "memory");
#endif
}

static uint32_t *current_sp(void)
{
    uint32_t *sp;
    __asm volatile("mov %0, sp" : "=r"(sp));
    return sp;
}

/* Fills [from, to) with the paint word; the engine later scans for the highest word that lost it. */
static void paint_words(uint32_t *from, uint32_t *to)
{
    while (from < to)
        *from++ = PORT_PAINT;
}

void Reset_Handler(void)
{
    uint32_t *src = __data_load, *dst = __data_start;
    enable_fpu();
    while (dst < __data_end)
        *dst++ = *src++;
    for (dst = __bss_start; dst < __bss_end; dst++)
        *dst = 0;
    paint_words(__arena_start, __arena_end);
    /* nothing lives below the current stack pointer; keep a margin for paint_words' own frame */
    paint_words(__stack_bottom, current_sp() - 16);
    main();
    port_exit(0);
}
