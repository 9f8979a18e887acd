/* Board file of the QEMU mps2 twins (mps2-an385 / an386 / an500): CMSDK UART0 and a semihosting exit. Startup,
 * fault report and the SysTick counter are the hardware ports' own (ports/cortexm). */
#include <stdint.h>
#include "mps2.h"

void board_clock_init(void)
{
    /* QEMU's core runs at the machine's fixed rate; there is no clock tree to set up */
}

void board_marker_init(void)
{
    /* no GPIO on the twins: the marker only matters to an energy meter on a real board */
}

void board_uart_init(void)
{
    MMIO32(UART_BAUDDIV) = 16; /* QEMU ignores the rate but wants a legal divider (>= 16) */
    MMIO32(UART_CTRL) = 3;
}

void board_uart_flush(void)
{
    while (MMIO32(UART_STATE) & UART_STATE_TXFULL)
        ;
}

void port_write(const uint8_t *buf, uint32_t n)
{
    while (n--) {
        while (MMIO32(UART_STATE) & UART_STATE_TXFULL)
            ;
        MMIO32(UART_DATA) = *buf++;
    }
}

int port_read_byte(uint8_t *byte)
{
    if (!(MMIO32(UART_STATE) & UART_STATE_RXFULL))
        return 0;
    *byte = (uint8_t)MMIO32(UART_DATA);
    return 1;
}

void port_marker(uint8_t phase)
{
    (void)phase;
}

/* Semihosting SYS_EXIT_EXTENDED: QEMU exits with `code` (plain SYS_EXIT on A32/T32 cannot carry one). */
void board_exit(int code)
{
    static uint32_t block[2];
    register uint32_t r0 __asm("r0") = 0x20u;
    register uint32_t *r1 __asm("r1") = block;
    block[0] = 0x20026u; /* ADP_Stopped_ApplicationExit */
    block[1] = (uint32_t)code;
    __asm volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
}
