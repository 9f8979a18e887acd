/* Raspberry Pi Pico (RP2040, Cortex-M0+ core 0; core 1 stays asleep in the bootrom): 12 MHz crystal -> PLL_SYS
 * 125 MHz, UART0 on GP0 (TX) / GP1 (RX) to the Debug Probe, marker on GP2. boot2.S has already set up XIP flash
 * reads. Register facts from the RP2040 datasheet; nothing here has run on a board yet. */
#include <stdint.h>
#include "port.h"
#include "cortexm.h"
#include "rp2040.h"

#if CPU_HZ != 125000000
#error "the rp2040 clock tree is set up for 125 MHz: cpu_hz in boards/rpi-pico.toml must match"
#endif

/* 12 MHz / REFDIV 1 x FBDIV 125 = 1500 MHz VCO (750-1600 allowed), / 6 / 2 = 125 MHz */
#define PLL_FBDIV 125u
#define PLL_POSTDIV1 6u
#define PLL_POSTDIV2 2u
#define XOSC_STARTUP_DELAY 47u /* x 256 cycles of 12 MHz: about 1 ms, the datasheet's crystal settling time */

#define UART_TX_PIN 0u
#define UART_RX_PIN 1u
#define MARKER_PIN 2u

/* PL011 divider in 1/64 units: clk_peri / (16 x baud) x 64, rounded */
#define UART_DIV64 ((uint32_t)((8ull * CPU_HZ / BAUD_RATE + 1u) / 2u))

static void wait_set(uint32_t addr, uint32_t mask)
{
    while ((MMIO32(addr) & mask) != mask)
        ;
}

static void unreset(uint32_t mask)
{
    MMIO32(RESETS_RESET + ALIAS_CLR) = mask;
    wait_set(RESETS_DONE, mask);
}

static void start_xosc(void)
{
    MMIO32(XOSC_STARTUP) = XOSC_STARTUP_DELAY;
    MMIO32(XOSC_CTRL) = (0xFABu << 12) | 0xAA0u;
    wait_set(XOSC_STATUS, 1u << 31);
}

/* Reset first: after a debugger reset the PLL may still run from the last session (clk_sys is off it by now). */
static void start_pll_sys(void)
{
    MMIO32(RESETS_RESET + ALIAS_SET) = RESET_PLL_SYS;
    unreset(RESET_PLL_SYS);
    MMIO32(PLL_CS) = 1u; /* REFDIV */
    MMIO32(PLL_FBDIV_INT) = PLL_FBDIV;
    MMIO32(PLL_PWR + ALIAS_CLR) = PLL_PWR_PD | PLL_PWR_VCOPD;
    wait_set(PLL_CS, 1u << 31);
    MMIO32(PLL_PRIM) = (PLL_POSTDIV1 << 16) | (PLL_POSTDIV2 << 12);
    MMIO32(PLL_PWR + ALIAS_CLR) = PLL_PWR_POSTDIVPD;
}

/* a few cycles of the slowest possible old clock, for a clock enable to settle */
static void settle(void)
{
    for (uint32_t j = 0; j < 200u; j++)
        __asm volatile("nop");
}

/* clk_sys and clk_ref have glitchless muxes: each switch is confirmed through the one-hot SELECTED register.
 * clk_sys leaves the PLL before the PLL is touched, and only moves to it (divider 1) once it is locked. */
void board_clock_init(void)
{
    start_xosc();
    MMIO32(CLK_SYS_CTRL + ALIAS_CLR) = 1u; /* SRC = clk_ref */
    wait_set(CLK_SYS_SELECTED, 1u);
    MMIO32(CLK_REF_CTRL) = (MMIO32(CLK_REF_CTRL) & ~3u) | 2u; /* clk_ref = XOSC, 12 MHz */
    wait_set(CLK_REF_SELECTED, 1u << 2);
    start_pll_sys();
    MMIO32(CLK_SYS_DIV) = 1u << 8;
    MMIO32(CLK_SYS_CTRL + ALIAS_CLR) = 7u << 5; /* AUXSRC = pll_sys, changed while not selected */
    MMIO32(CLK_SYS_CTRL + ALIAS_SET) = 1u;      /* SRC = aux */
    wait_set(CLK_SYS_SELECTED, 1u << 1);
    /* clk_peri (the UART's clock) has no glitchless mux: stop it, then restart it on clk_sys */
    MMIO32(CLK_PERI_CTRL + ALIAS_CLR) = CLK_PERI_ENABLE;
    settle();
    MMIO32(CLK_PERI_CTRL) = 0;               /* AUXSRC 0 = clk_sys, changed while stopped */
    MMIO32(CLK_PERI_CTRL) = CLK_PERI_ENABLE;
    settle();
}

void board_uart_init(void)
{
    unreset(RESET_IO_BANK0 | RESET_PADS_BANK0);
    MMIO32(RESETS_RESET + ALIAS_SET) = RESET_UART0; /* a clean UART whatever a previous session left */
    unreset(RESET_UART0);
    MMIO32(PADS_BANK0_GPIO(UART_RX_PIN)) = PAD_IE | PAD_DRIVE_4MA | PAD_PUE | PAD_SCHMITT; /* idle high if unplugged */
    MMIO32(IO_BANK0_CTRL(UART_TX_PIN)) = FUNC_UART;
    MMIO32(IO_BANK0_CTRL(UART_RX_PIN)) = FUNC_UART;
    MMIO32(UART_IBRD) = UART_DIV64 >> 6;
    MMIO32(UART_FBRD) = UART_DIV64 & 63u;
    /* 8N1 with both 32-entry FIFOs; writing LCR_H also latches the divider */
    MMIO32(UART_LCR_H) = (3u << 5) | (1u << 4);
    MMIO32(UART_CR) = (1u << 0) | (1u << 8) | (1u << 9);
}

/* called before board_uart_init: IO_BANK0 and PADS_BANK0 leave reset here */
void board_marker_init(void)
{
    unreset(RESET_IO_BANK0 | RESET_PADS_BANK0);
    MMIO32(SIO_GPIO_OUT_CLR) = 1u << MARKER_PIN;
    MMIO32(SIO_GPIO_OE_SET) = 1u << MARKER_PIN;
    MMIO32(IO_BANK0_CTRL(MARKER_PIN)) = FUNC_SIO;
}

void port_marker(uint8_t phase)
{
    MMIO32(marker_level(phase) ? SIO_GPIO_OUT_SET : SIO_GPIO_OUT_CLR) = 1u << MARKER_PIN;
}

void port_write(const uint8_t *buf, uint32_t n)
{
    while (n--) {
        while (MMIO32(UART_FR) & UART_FR_TXFF)
            ;
        MMIO32(UART_DR) = *buf++;
    }
}

void board_uart_flush(void)
{
    while (MMIO32(UART_FR) & UART_FR_BUSY)
        ;
}

/* DR bits 11:8 flag framing/parity/break/overrun errors; the byte is delivered anyway and the frame CRC judges it */
int port_read_byte(uint8_t *byte)
{
    if (MMIO32(UART_FR) & UART_FR_RXFE)
        return 0;
    *byte = (uint8_t)MMIO32(UART_DR);
    return 1;
}
