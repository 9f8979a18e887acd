/* Board file of the QEMU mps2 twins (mps2-an385 / an386 / an500): CMSDK UART0, and a parked exit. Startup,
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

/* A twin parks like a board (the host closes it once it has the last frame). It must not end QEMU here: that closes
 * the pty's master side, and Linux then discards the bytes the host had not read yet, so the FAULT frame that
 * precedes every exit would race the exit and sometimes be lost. WFI keeps the parked twin off the host's CPU. */
void board_exit(int code)
{
    (void)code;
    MMIO32(0xE000E010u) = 0; /* SYST_CSR: SysTick off, or its pending exception would wake every WFI */
    for (;;)
        __asm volatile("wfi");
}
