/* Cycle counter for the ARMv6-M board (no DWT cycle counter on the Cortex-M0+) and for the mps2 twins (QEMU has no
 * DWT cycle counter): SysTick on the core clock, 24 bits, extended to 64 bits by its wrap interrupt. */
#include <stdint.h>
#include "port.h"
#include "cortexm.h"

static volatile uint32_t systick_wraps;

void counter_init(void)
{
    MMIO32(SYST_RVR) = SYST_RELOAD;
    MMIO32(SYST_CVR) = 0;
    MMIO32(SYST_CSR) = 7; /* core clock (CLKSOURCE = 1), interrupt on wrap, enabled */
}

void SysTick_Handler(void)
{
    systick_wraps++;
}

/* Down-counter extended by the wrap count. A wrap whose interrupt has not run yet shows as a pending SysTick with
 * the counter just reloaded (high value): count it here so time never steps back. */
uint64_t port_ticks(void)
{
    uint32_t hi, cur, pending;
    do {
        hi = systick_wraps;
        cur = MMIO32(SYST_CVR);
        pending = MMIO32(SCB_ICSR) & (1u << 26);
    } while (hi != systick_wraps);
    if (pending && cur > (SYST_RELOAD >> 1))
        hi++;
    return ((uint64_t)hi << 24) + (SYST_RELOAD - cur);
}

uint32_t port_counter_hz(void)
{
#if defined(COUNTER_HZ)
    return COUNTER_HZ; /* a twin's core clock is the machine's, not the board's (mps2: 25 MHz SYSCLK) */
#else
    return CPU_HZ; /* CLKSOURCE = 1: one tick per core clock cycle */
#endif
}

uint16_t port_counter_kind(void)
{
    return PORT_COUNTER_SYSTICK;
}
