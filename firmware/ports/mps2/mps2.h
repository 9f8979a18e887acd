/* The mps2 twins' CMSDK APB UART0 (the Cortex-M system registers are in cortexm.h). */
#ifndef MPS2_H
#define MPS2_H

#include "cortexm.h"

#define UART0_BASE 0x40004000u
#define UART_DATA (UART0_BASE + 0x00u)
#define UART_STATE (UART0_BASE + 0x04u) /* bit0 TX full, bit1 RX full */
#define UART_CTRL (UART0_BASE + 0x08u)  /* bit0 TX enable, bit1 RX enable */
#define UART_BAUDDIV (UART0_BASE + 0x10u)
#define UART_STATE_TXFULL 1u
#define UART_STATE_RXFULL 2u

#endif
