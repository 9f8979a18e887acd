/* Shared by every port (the boards stm32f7, nrf52840, rp2040 and the mps2 twins): Cortex-M system registers, the hooks each board
 * file provides to the common startup, counter and fault code, and the board defines every port needs.
 * Register addresses are from the ARMv6-M / ARMv7-M Architecture Reference Manuals. */
#ifndef CORTEXM_H
#define CORTEXM_H

#include <stdint.h>
#include "port.h"

#if !defined(BOARD_NAME) || !defined(BUILD_ID) || !defined(CPU_HZ) || !defined(FLASH_ORIGIN) || \
    !defined(FLASH_BYTES) || !defined(RAM_BYTES) || !defined(PLAN_OFFSET) || !defined(STACK_BYTES) || \
    !defined(BAUD_RATE)
#error "build through firmware/Makefile: board defines missing"
#endif

#define MMIO32(addr) (*(volatile uint32_t *)(uintptr_t)(addr))

#define SYST_CSR 0xE000E010u /* bit0 ENABLE, bit1 TICKINT, bit2 CLKSOURCE (1 = core clock) */
#define SYST_RVR 0xE000E014u
#define SYST_CVR 0xE000E018u
#define SYST_RELOAD 0xFFFFFFu

#define SCB_ICSR 0xE000ED04u /* bit26 PENDSTSET: SysTick exception pending */
#define SCB_VTOR 0xE000ED08u
#define SCB_CCR 0xE000ED14u  /* ARMv7-M: bit16 DC, bit17 IC (Cortex-M7 caches) */
#define SCB_CFSR 0xE000ED28u /* ARMv7-M only */
#define SCB_HFSR 0xE000ED2Cu /* ARMv7-M only */
#define SCB_CPACR 0xE000ED88u

#define DEMCR 0xE000EDFCu /* bit24 TRCENA: powers the DWT */
#define DWT_CTRL 0xE0001000u /* bit0 CYCCNTENA */
#define DWT_CYCCNT 0xE0001004u
#define DWT_LAR 0xE0001FB0u /* Cortex-M7 locks DWT writes until this key is written */
#define DWT_LAR_KEY 0xC5ACCE55u

#define PORT_PAINT 0x7FA5A5A5u /* same word as TRAINER_PAINT */

/* Saves PRIMASK and masks interrupts; cortexm_irq_restore puts the saved state back. */
static inline uint32_t cortexm_irq_save(void)
{
    uint32_t primask;
    __asm volatile("mrs %0, primask\n\tcpsid i" : "=r"(primask)::"memory");
    return primask;
}

static inline void cortexm_irq_restore(uint32_t primask)
{
    __asm volatile("msr primask, %0" ::"r"(primask) : "memory");
}

/* Marker GPIO level for a phase (port.h): high in forward and update, low in backward and after the step. */
static inline uint32_t marker_level(uint8_t phase)
{
    return phase == PORT_MARK_FORWARD || phase == PORT_MARK_UPDATE;
}

/* Provided by each board file. */
void board_clock_init(void);   /* core clock to CPU_HZ, flash wait states, caches */
void board_uart_init(void);    /* UART pins and rate (BAUD_RATE) */
void board_marker_init(void);  /* marker GPIO as a low output */
void board_uart_flush(void);   /* waits until the last byte has left the transmitter */
void board_exit(int code);     /* optional (weak default returns): ends the program where that is observable */

/* Common: the counter the board's port_ticks() uses (cortexm/dwt.c or cortexm/systick.c). */
void counter_init(void);

#endif
