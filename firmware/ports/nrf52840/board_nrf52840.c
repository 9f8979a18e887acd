/* nRF52840-DK (nRF52840, Cortex-M4F): 64 MHz core on the 32 MHz crystal (HFXO), UARTE0 on the J-Link OB virtual COM
 * port (TX P0.06, RX P0.08), marker on P1.01. Register facts from the nRF52840 Product Specification; nothing here
 * has run on a board yet. */
#include <stdint.h>
#include "port.h"
#include "cortexm.h"
#include "nrf52840.h"

#if CPU_HZ != 64000000
#error "the nRF52840 core runs at 64 MHz: cpu_hz in boards/nrf52840-dk.toml must match"
#endif

#define UART_TX_PIN 6u /* P0.06 */
#define UART_RX_PIN 8u /* P0.08 */
#define MARKER_PIN 1u  /* P1.01 */
#define TX_CHUNK 64u

/* EasyDMA reads and writes data RAM only: every transmitted byte passes through tx_buf (port_write's callers
 * also send from flash), and received bytes land in rx_byte. */
static uint8_t tx_buf[TX_CHUNK];
static volatile uint8_t rx_byte;

/* BAUDRATE takes the PS's UARTE table value, not a divider formula (the table rounds each rate its own way); the
 * legacy UART's 115200 word (0x01D7E000) differs from the UARTE's */
#if BAUD_RATE == 115200
#define UARTE_BAUD_WORD 0x01D60000u
#elif BAUD_RATE == 1000000
#define UARTE_BAUD_WORD 0x10000000u
#else
#error "nrf52840: add the Product Specification's UARTE BAUDRATE value for this [serial].baudrate"
#endif

/* The bench reflashes and resets through the probe between runs: keep the debug port open when the board has
 * been provisioned for it (UICR.APPROTECT = HwDisabled), as newer nRF52840s relock it on every reset otherwise. */
static void keep_debug_port_open(void)
{
    if ((MMIO32(UICR_APPROTECT) & 0xFFu) == APPROTECT_KEY)
        MMIO32(APPROTECT_DISABLE) = APPROTECT_KEY;
}

void board_clock_init(void)
{
    keep_debug_port_open();
    /* The core always runs at 64 MHz; starting HFXO replaces the RC oscillator (about 1% off) with the crystal, so
     * the UART rate and the cycle counter's seconds are exact. */
    MMIO32(CLOCK_EVENTS_HFCLKSTARTED) = 0;
    MMIO32(CLOCK_TASKS_HFCLKSTART) = 1;
    while (MMIO32(CLOCK_EVENTS_HFCLKSTARTED) == 0)
        ;
    /* the DK fits the REG1 DC/DC inductor; the board's run current in boards/nrf52840-dk.toml assumes DC/DC on */
    MMIO32(POWER_DCDCEN) = 1;
    MMIO32(NVMC_ICACHECNF) = 1; /* flash instruction cache on (the same figure assumes it) */
}

void board_uart_init(void)
{
    /* TX idles high as an output before the UARTE takes it; RX is an input with its buffer connected */
    MMIO32(GPIO_P0_BASE + GPIO_OUTSET) = 1u << UART_TX_PIN;
    MMIO32(GPIO_P0_BASE + GPIO_PIN_CNF(UART_TX_PIN)) = 1u;
    MMIO32(GPIO_P0_BASE + GPIO_PIN_CNF(UART_RX_PIN)) = 0u;
    MMIO32(UARTE_PSEL_TXD) = UART_TX_PIN; /* port 0, connected */
    MMIO32(UARTE_PSEL_RXD) = UART_RX_PIN;
    MMIO32(UARTE_PSEL_RTS) = UARTE_PSEL_DISCONNECTED;
    MMIO32(UARTE_PSEL_CTS) = UARTE_PSEL_DISCONNECTED;
    MMIO32(UARTE_BAUDRATE) = UARTE_BAUD_WORD;
    MMIO32(UARTE_CONFIG) = 0;
    MMIO32(UARTE_ENABLE) = 8;
    /* one-byte receptions: ENDRX means rx_byte holds a byte; the UARTE's RX FIFO keeps the next few bytes until
     * port_read_byte restarts reception */
    MMIO32(UARTE_RXD_PTR) = (uint32_t)(uintptr_t)&rx_byte;
    MMIO32(UARTE_RXD_MAXCNT) = 1;
    MMIO32(UARTE_EVENTS_ENDRX) = 0;
    MMIO32(UARTE_TASKS_STARTRX) = 1;
}

void board_marker_init(void)
{
    MMIO32(GPIO_P1_BASE + GPIO_OUTCLR) = 1u << MARKER_PIN;
    MMIO32(GPIO_P1_BASE + GPIO_PIN_CNF(MARKER_PIN)) = 3u; /* output, input buffer disconnected */
}

void port_marker(uint8_t phase)
{
    MMIO32(GPIO_P1_BASE + (marker_level(phase) ? GPIO_OUTSET : GPIO_OUTCLR)) = 1u << MARKER_PIN;
}

/* one EasyDMA transfer from RAM; returns when the UARTE has taken every byte (ENDTX) */
static void send_chunk(uint32_t n)
{
    MMIO32(UARTE_TXD_PTR) = (uint32_t)(uintptr_t)tx_buf;
    MMIO32(UARTE_TXD_MAXCNT) = n;
    MMIO32(UARTE_EVENTS_ENDTX) = 0;
    MMIO32(UARTE_TASKS_STARTTX) = 1;
    while (MMIO32(UARTE_EVENTS_ENDTX) == 0)
        ;
}

void port_write(const uint8_t *buf, uint32_t n)
{
    while (n) {
        uint32_t k = n < TX_CHUNK ? n : TX_CHUNK;
        for (uint32_t j = 0; j < k; j++)
            tx_buf[j] = buf[j];
        send_chunk(k);
        buf += k;
        n -= k;
    }
}

/* Nothing to wait for: ENDTX, which port_write waits on, comes once the last byte of the buffer has been sent. */
void board_uart_flush(void)
{
}

/* Errors (framing, overrun) are acknowledged; the byte still arrives through ENDRX and the frame CRC judges it. */
int port_read_byte(uint8_t *byte)
{
    if (MMIO32(UARTE_EVENTS_ERROR)) {
        MMIO32(UARTE_ERRORSRC) = MMIO32(UARTE_ERRORSRC); /* write-1-to-clear */
        MMIO32(UARTE_EVENTS_ERROR) = 0;
    }
    if (MMIO32(UARTE_EVENTS_ENDRX) == 0)
        return 0;
    MMIO32(UARTE_EVENTS_ENDRX) = 0;
    *byte = rx_byte;
    MMIO32(UARTE_TASKS_STARTRX) = 1;
    return 1;
}
