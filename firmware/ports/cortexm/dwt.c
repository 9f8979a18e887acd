/* Cycle counter for ARMv7E-M ports: the DWT's 32-bit CYCCNT, extended to 64 bits in software.
 * port_ticks() counts a wrap whenever the counter reads lower than last time, which is exact as long as reads are
 * less than 2^32 cycles apart (19.9 s at 216 MHz). SysTick fires every 2^24 cycles only to make that read, so a
 * long evaluation or an idle session never loses a wrap; its handler costs about 50 cycles per 16.7 M (3 ppm). */
#include <stdint.h>
#include "port.h"
#include "cortexm.h"

static uint32_t cyc_last, cyc_high;

void counter_init(void)
{
    MMIO32(DEMCR) |= 1u << 24; /* TRCENA */
#if defined(DWT_HAS_LOCK)
    MMIO32(DWT_LAR) = DWT_LAR_KEY; /* Cortex-M7 ignores DWT writes from software until unlocked */
#endif
    MMIO32(DWT_CYCCNT) = 0;
    MMIO32(DWT_CTRL) |= 1u; /* CYCCNTENA */
    MMIO32(SYST_RVR) = SYST_RELOAD;
    MMIO32(SYST_CVR) = 0;
    MMIO32(SYST_CSR) = 7; /* core clock, interrupt on wrap, enabled */
}

/* Interrupts are masked so the SysTick keep-alive cannot update the state between the read and the store. */
uint64_t port_ticks(void)
{
    uint32_t primask = cortexm_irq_save();
    uint32_t now = MMIO32(DWT_CYCCNT);
    if (now < cyc_last)
        cyc_high++;
    cyc_last = now;
    uint64_t t = ((uint64_t)cyc_high << 32) | now;
    cortexm_irq_restore(primask);
    return t;
}

void SysTick_Handler(void)
{
    (void)port_ticks();
}

uint32_t port_counter_hz(void)
{
    return CPU_HZ; /* CYCCNT counts core clock cycles */
}

uint16_t port_counter_kind(void)
{
    return PORT_COUNTER_DWT;
}
