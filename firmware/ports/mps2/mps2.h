/* Registers of the mps2 twins used by this port (CMSDK APB UART0, SysTick, SCB). */
#ifndef MPS2_H
#define MPS2_H

#include <stdint.h>

#define MMIO32(addr) (*(volatile uint32_t *)(uintptr_t)(addr))

#define UART0_BASE 0x40004000u
#define UART_DATA (UART0_BASE + 0x00u)
#define UART_STATE (UART0_BASE + 0x04u) /* bit0 TX full, bit1 RX full */
#define UART_CTRL (UART0_BASE + 0x08u)  /* bit0 TX enable, bit1 RX enable */
#define UART_BAUDDIV (UART0_BASE + 0x10u)
#define UART_STATE_TXFULL 1u
#define UART_STATE_RXFULL 2u

#define SYST_CSR 0xE000E010u /* bit0 ENABLE, bit1 TICKINT, bit2 CLKSOURCE (1 = core clock) */
#define SYST_RVR 0xE000E014u
#define SYST_CVR 0xE000E018u
#define SYST_RELOAD 0xFFFFFFu

#define SCB_ICSR 0xE000ED04u /* bit26 PENDSTSET: SysTick exception pending */
#define SCB_CPACR 0xE000ED88u
#define SCB_CFSR 0xE000ED28u /* ARMv7-M only */

#define PORT_PAINT 0x7FA5A5A5u /* same word as TRAINER_PAINT */

#endif
