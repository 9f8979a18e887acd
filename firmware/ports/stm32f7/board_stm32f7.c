/* NUCLEO-F746ZG (STM32F746ZG, Cortex-M7): 216 MHz from the ST-LINK's 8 MHz MCO, USART3 on the ST-LINK virtual COM
 * port, marker on PB0 (green user LED LD1). Register facts from RM0385; nothing here has run on a board yet. */
#include <stdint.h>
#include "port.h"
#include "cortexm.h"
#include "stm32f7.h"

/* HSE 8 MHz / M 4 = 2 MHz PLL input (the RM's recommended value for low jitter), x N 216 = 432 MHz VCO,
 * / P 2 = 216 MHz SYSCLK; Q 9 gives the 48 MHz USB clock, unused but kept legal. */
#define PLL_M 4u
#define PLL_N 216u
#define PLL_Q 9u
#define FLASH_WAIT_STATES 7u /* 216 MHz at 2.7-3.6 V (RM0385 table 5) */
#define APB1_HZ (CPU_HZ / 4u) /* APB1 at most 54 MHz */

#if CPU_HZ != 216000000
#error "the stm32f7 clock tree is set up for 216 MHz: cpu_hz in boards/nucleo-f746zg.toml must match"
#endif

#define UART_TX_PIN 8u /* PD8 = USART3_TX, AF7 */
#define UART_RX_PIN 9u /* PD9 = USART3_RX, AF7 */
#define MARKER_PIN 0u  /* PB0 */

static void wait_set(uint32_t addr, uint32_t mask)
{
    while ((MMIO32(addr) & mask) != mask)
        ;
}

/* Over-drive must be on before SYSCLK exceeds 180 MHz; the RM orders it after PLLON and before the switch. */
static void enable_overdrive(void)
{
    MMIO32(PWR_CR1) |= PWR_OD;
    wait_set(PWR_CSR1, PWR_OD);
    MMIO32(PWR_CR1) |= PWR_ODSW;
    wait_set(PWR_CSR1, PWR_ODSW);
}

/* 7 wait states before the clock rises; the ART accelerator is reset while disabled, then enabled with prefetch. */
static void set_flash_latency(void)
{
    MMIO32(FLASH_ACR) = FLASH_WAIT_STATES | FLASH_ACR_ARTRST;
    MMIO32(FLASH_ACR) = FLASH_WAIT_STATES | FLASH_ACR_ARTEN | FLASH_ACR_PRFTEN;
    while ((MMIO32(FLASH_ACR) & 0xFu) != FLASH_WAIT_STATES)
        ;
}

static void dsb_isb(void)
{
    __asm volatile("dsb\n\tisb" ::: "memory");
}

/* Both L1 caches come out of reset with undefined contents: invalidate, then enable. No DMA runs in this
 * firmware, so the write-back D-cache needs no maintenance afterwards. */
static void enable_caches(void)
{
    dsb_isb();
    MMIO32(SCB_ICIALLU) = 0;
    dsb_isb();
    MMIO32(SCB_CCR) |= SCB_CCR_IC;
    dsb_isb();
    MMIO32(SCB_CSSELR) = 0; /* level 1 data cache */
    dsb_isb();
    uint32_t ccsidr = MMIO32(SCB_CCSIDR);
    uint32_t sets = ((ccsidr >> 13) & 0x7FFFu) + 1u, ways = ((ccsidr >> 3) & 0x3FFu) + 1u;
    uint32_t set_shift = (ccsidr & 7u) + 4u, way_shift = ways > 1u ? (uint32_t)__builtin_clz(ways - 1u) : 0u;
    for (uint32_t set = 0; set < sets; set++)
        for (uint32_t way = 0; way < ways; way++)
            MMIO32(SCB_DCISW) = (way << way_shift) | (set << set_shift);
    dsb_isb();
    MMIO32(SCB_CCR) |= SCB_CCR_DC;
    dsb_isb();
}

void board_clock_init(void)
{
    MMIO32(RCC_APB1ENR) |= 1u << 28; /* PWREN */
    (void)MMIO32(RCC_APB1ENR);       /* the enable takes effect before the first PWR access */
    MMIO32(PWR_CR1) |= 3u << 14;     /* VOS scale 1: only writable while the PLL is off */
    /* the ST-LINK drives an 8 MHz clock into OSC_IN: bypass the oscillator (HSEBYP before HSEON) */
    MMIO32(RCC_CR) |= RCC_CR_HSEBYP;
    MMIO32(RCC_CR) |= RCC_CR_HSEON;
    wait_set(RCC_CR, RCC_CR_HSERDY);
    MMIO32(RCC_PLLCFGR) = PLL_M | (PLL_N << 6) | (0u << 16) /* P = 2 */ | (1u << 22) /* HSE */ | (PLL_Q << 24);
    MMIO32(RCC_CR) |= RCC_CR_PLLON;
    enable_overdrive();
    set_flash_latency();
    /* AHB /1, APB1 /4 (54 MHz), APB2 /2 (108 MHz): set before the switch so no bus ever runs over its limit */
    MMIO32(RCC_CFGR) = (MMIO32(RCC_CFGR) & ~0xFFF0u) | (5u << 10) | (4u << 13);
    wait_set(RCC_CR, RCC_CR_PLLRDY);
    MMIO32(RCC_CFGR) = (MMIO32(RCC_CFGR) & ~3u) | 2u; /* SYSCLK = PLL */
    while ((MMIO32(RCC_CFGR) & 0xCu) != 0x8u)
        ;
    enable_caches();
}

/* 2 bits per pin in MODER/OSPEEDR/PUPDR */
static void gpio_field2(uint32_t reg, uint32_t pin, uint32_t value)
{
    MMIO32(reg) = (MMIO32(reg) & ~(3u << (2u * pin))) | (value << (2u * pin));
}

void board_uart_init(void)
{
    MMIO32(RCC_AHB1ENR) |= 1u << 3;  /* GPIOD */
    MMIO32(RCC_APB1ENR) |= 1u << 18; /* USART3 */
    (void)MMIO32(RCC_APB1ENR);
    /* AF7 on PD8/PD9, then alternate-function mode; RX pulled up so an unplugged line reads idle */
    MMIO32(GPIOD_BASE + GPIO_AFRH) = (MMIO32(GPIOD_BASE + GPIO_AFRH) & ~0xFFu) | 0x77u;
    gpio_field2(GPIOD_BASE + GPIO_OSPEEDR, UART_TX_PIN, 1u);
    gpio_field2(GPIOD_BASE + GPIO_PUPDR, UART_RX_PIN, 1u);
    gpio_field2(GPIOD_BASE + GPIO_MODER, UART_TX_PIN, 2u);
    gpio_field2(GPIOD_BASE + GPIO_MODER, UART_RX_PIN, 2u);
    MMIO32(USART_CR1) = 0;
    /* USART3 runs from PCLK1 (the reset choice in RCC_DCKCFGR2); 16x oversampling: BRR = PCLK1 / baud */
    MMIO32(USART_BRR) = (APB1_HZ + BAUD_RATE / 2u) / BAUD_RATE;
    /* a byte that arrives while the engine is busy replaces the unread one instead of freezing reception */
    MMIO32(USART_CR3) = 1u << 12; /* OVRDIS */
    MMIO32(USART_CR1) = (1u << 0) | (1u << 2) | (1u << 3); /* UE, RE, TE */
}

void board_marker_init(void)
{
    MMIO32(RCC_AHB1ENR) |= 1u << 1; /* GPIOB */
    (void)MMIO32(RCC_AHB1ENR);
    MMIO32(GPIOB_BASE + GPIO_BSRR) = 1u << (MARKER_PIN + 16u); /* low before it drives */
    gpio_field2(GPIOB_BASE + GPIO_MODER, MARKER_PIN, 1u);
}

void port_marker(uint8_t phase)
{
    MMIO32(GPIOB_BASE + GPIO_BSRR) = marker_level(phase) ? 1u << MARKER_PIN : 1u << (MARKER_PIN + 16u);
}

void port_write(const uint8_t *buf, uint32_t n)
{
    while (n--) {
        while (!(MMIO32(USART_ISR) & USART_ISR_TXE))
            ;
        MMIO32(USART_TDR) = *buf++;
    }
}

void board_uart_flush(void)
{
    while (!(MMIO32(USART_ISR) & USART_ISR_TC))
        ;
}

/* A framing or noise error still delivers its byte (the frame CRC rejects it); the flags are cleared so they do
 * not accumulate. */
int port_read_byte(uint8_t *byte)
{
    uint32_t isr = MMIO32(USART_ISR);
    if (isr & USART_ISR_ERRORS)
        MMIO32(USART_ICR) = USART_ISR_ERRORS;
    if (!(isr & USART_ISR_RXNE))
        return 0;
    *byte = (uint8_t)MMIO32(USART_RDR);
    return 1;
}
