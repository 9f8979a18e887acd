/* RP2040 registers this port uses (RP2040 datasheet): RESETS, XOSC, PLL_SYS, CLOCKS, IO_BANK0, PADS_BANK0, UART0
 * (an ARM PL011), SIO. Peripheral registers have atomic aliases: +0x2000 sets bits, +0x3000 clears them. */
#ifndef RP2040_H
#define RP2040_H

#define ALIAS_SET 0x2000u
#define ALIAS_CLR 0x3000u

#define RESETS_BASE 0x4000C000u
#define RESETS_RESET (RESETS_BASE + 0x0u)
#define RESETS_DONE (RESETS_BASE + 0x8u)
#define RESET_IO_BANK0 (1u << 5)
#define RESET_PADS_BANK0 (1u << 8)
#define RESET_PLL_SYS (1u << 12)
#define RESET_UART0 (1u << 22)

#define XOSC_BASE 0x40024000u
#define XOSC_CTRL (XOSC_BASE + 0x00u)    /* FREQ_RANGE 11:0 (0xAA0 = 1-15 MHz), ENABLE 23:12 (0xFAB) */
#define XOSC_STATUS (XOSC_BASE + 0x04u)  /* bit31 STABLE */
#define XOSC_STARTUP (XOSC_BASE + 0x0Cu) /* DELAY in units of 256 crystal cycles */

#define PLL_SYS_BASE 0x40028000u
#define PLL_CS (PLL_SYS_BASE + 0x0u)        /* REFDIV 5:0, LOCK 31 */
#define PLL_PWR (PLL_SYS_BASE + 0x4u)       /* PD 0, POSTDIVPD 3, VCOPD 5 (all power-down bits) */
#define PLL_FBDIV_INT (PLL_SYS_BASE + 0x8u)
#define PLL_PRIM (PLL_SYS_BASE + 0xCu)      /* POSTDIV1 18:16, POSTDIV2 14:12 */
#define PLL_PWR_PD (1u << 0)
#define PLL_PWR_POSTDIVPD (1u << 3)
#define PLL_PWR_VCOPD (1u << 5)

#define CLOCKS_BASE 0x40008000u
#define CLK_REF_CTRL (CLOCKS_BASE + 0x30u)     /* SRC 1:0: 0 ROSC, 2 XOSC */
#define CLK_REF_SELECTED (CLOCKS_BASE + 0x38u) /* one-hot of the source in use */
#define CLK_SYS_CTRL (CLOCKS_BASE + 0x3Cu)     /* SRC 0: 0 clk_ref, 1 aux; AUXSRC 7:5: 0 pll_sys */
#define CLK_SYS_DIV (CLOCKS_BASE + 0x40u)      /* INT 31:8, FRAC 7:0 */
#define CLK_SYS_SELECTED (CLOCKS_BASE + 0x44u)
#define CLK_PERI_CTRL (CLOCKS_BASE + 0x48u)    /* ENABLE 11, AUXSRC 7:5: 0 clk_sys */
#define CLK_PERI_ENABLE (1u << 11)

#define IO_BANK0_CTRL(n) (0x40014000u + 0x04u + 8u * (n)) /* FUNCSEL 4:0: 2 UART, 5 SIO */
#define PADS_BANK0_GPIO(n) (0x4001C000u + 0x04u + 4u * (n))
#define FUNC_UART 2u
#define FUNC_SIO 5u
#define PAD_IE (1u << 6)
#define PAD_DRIVE_4MA (1u << 4)
#define PAD_PUE (1u << 3)
#define PAD_SCHMITT (1u << 1)

#define UART0_BASE 0x40034000u
#define UART_DR (UART0_BASE + 0x000u)
#define UART_FR (UART0_BASE + 0x018u) /* BUSY 3, RXFE 4, TXFF 5 */
#define UART_IBRD (UART0_BASE + 0x024u)
#define UART_FBRD (UART0_BASE + 0x028u)
#define UART_LCR_H (UART0_BASE + 0x02Cu) /* FEN 4, WLEN 6:5 */
#define UART_CR (UART0_BASE + 0x030u)    /* UARTEN 0, TXE 8, RXE 9 */
#define UART_FR_BUSY (1u << 3)
#define UART_FR_RXFE (1u << 4)
#define UART_FR_TXFF (1u << 5)

#define SIO_BASE 0xD0000000u
#define SIO_GPIO_OUT_SET (SIO_BASE + 0x014u)
#define SIO_GPIO_OUT_CLR (SIO_BASE + 0x018u)
#define SIO_GPIO_OE_SET (SIO_BASE + 0x024u)

#endif
