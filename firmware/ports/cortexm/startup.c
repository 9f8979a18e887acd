/* Startup shared by the hardware ports: vector table, reset, fault entry. Valid for ARMv6-M (Thumb-1 only, the
 * RP2040's Cortex-M0+) and ARMv7E-M (Cortex-M4F, Cortex-M7). No external interrupt is used: every peripheral is
 * polled, so the table stops after SysTick. */
#include <stdint.h>
#include "port.h"
#include "cortexm.h"

extern uint32_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[];
extern uint32_t __arena_start[], __arena_end[], __stack_bottom[], __stack_top[];

int main(void);
void Reset_Handler(void);
void Fault_Handler(void);
void SysTick_Handler(void);

typedef void (*vector_t)(void);

/* the linker places .vectors first in .text: at the flash origin (+0x100 behind boot2 on the RP2040) */
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
    /* exceptions must find this table even when a debugger or a boot stage left VTOR elsewhere (the STM32F7
     * resets VTOR to its ITCM alias of flash, 0x00200000) */
    MMIO32(SCB_VTOR) = (uint32_t)(uintptr_t)vectors;
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
