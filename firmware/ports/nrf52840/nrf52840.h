/* nRF52840 registers this port uses (nRF52840 Product Specification v1.x): CLOCK, POWER, NVMC, UARTE0, GPIO. */
#ifndef NRF52840_H
#define NRF52840_H

#define CLOCK_BASE 0x40000000u
#define CLOCK_TASKS_HFCLKSTART (CLOCK_BASE + 0x000u)
#define CLOCK_EVENTS_HFCLKSTARTED (CLOCK_BASE + 0x100u)
#define POWER_DCDCEN (CLOCK_BASE + 0x578u) /* POWER shares the CLOCK block's address */

#define NVMC_ICACHECNF 0x4001E540u /* bit0 CACHEEN */

/* Access-port protection on build code Fxx and later: locked at every reset unless UICR says HwDisabled (0x5A)
 * and the firmware also writes SwDisable (0x5A). Older revisions ignore the DISABLE write. */
#define UICR_APPROTECT 0x10001208u
#define APPROTECT_DISABLE 0x40000558u
#define APPROTECT_KEY 0x5Au

#define UARTE0_BASE 0x40002000u
#define UARTE_TASKS_STARTRX (UARTE0_BASE + 0x000u)
#define UARTE_TASKS_STARTTX (UARTE0_BASE + 0x008u)
#define UARTE_EVENTS_ENDRX (UARTE0_BASE + 0x110u)
#define UARTE_EVENTS_ENDTX (UARTE0_BASE + 0x120u)
#define UARTE_EVENTS_ERROR (UARTE0_BASE + 0x124u)
#define UARTE_ERRORSRC (UARTE0_BASE + 0x480u)
#define UARTE_ENABLE (UARTE0_BASE + 0x500u) /* 8 = UARTE */
#define UARTE_PSEL_RTS (UARTE0_BASE + 0x508u)
#define UARTE_PSEL_TXD (UARTE0_BASE + 0x50Cu)
#define UARTE_PSEL_CTS (UARTE0_BASE + 0x510u)
#define UARTE_PSEL_RXD (UARTE0_BASE + 0x514u)
#define UARTE_BAUDRATE (UARTE0_BASE + 0x524u)
#define UARTE_RXD_PTR (UARTE0_BASE + 0x534u)
#define UARTE_RXD_MAXCNT (UARTE0_BASE + 0x538u)
#define UARTE_TXD_PTR (UARTE0_BASE + 0x544u)
#define UARTE_TXD_MAXCNT (UARTE0_BASE + 0x548u)
#define UARTE_CONFIG (UARTE0_BASE + 0x56Cu) /* 0: 8N1, no flow control */
#define UARTE_PSEL_DISCONNECTED 0x80000000u

#define GPIO_P0_BASE 0x50000000u
#define GPIO_P1_BASE 0x50000300u
#define GPIO_OUTSET 0x508u
#define GPIO_OUTCLR 0x50Cu
#define GPIO_PIN_CNF(n) (0x700u + 4u * (n)) /* bit0 DIR (1 output), bit1 INPUT (1 disconnect buffer), PULL 3:2 */

#endif
