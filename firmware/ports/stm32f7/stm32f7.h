/* STM32F746ZG registers this port uses (RM0385 reference manual): RCC, PWR, FLASH, GPIOB, GPIOD, USART3, and the
 * Cortex-M7 cache maintenance registers (ARMv7-M ARM). */
#ifndef STM32F7_H
#define STM32F7_H

#define RCC_BASE 0x40023800u
#define RCC_CR (RCC_BASE + 0x00u)      /* HSEON 16, HSERDY 17, HSEBYP 18, PLLON 24, PLLRDY 25 */
#define RCC_PLLCFGR (RCC_BASE + 0x04u) /* PLLM 5:0, PLLN 14:6, PLLP 17:16, PLLSRC 22, PLLQ 27:24 */
#define RCC_CFGR (RCC_BASE + 0x08u)    /* SW 1:0, SWS 3:2, HPRE 7:4, PPRE1 12:10, PPRE2 15:13 */
#define RCC_AHB1ENR (RCC_BASE + 0x30u) /* GPIOBEN 1, GPIODEN 3 */
#define RCC_APB1ENR (RCC_BASE + 0x40u) /* USART3EN 18, PWREN 28 */
#define RCC_CR_HSEON (1u << 16)
#define RCC_CR_HSERDY (1u << 17)
#define RCC_CR_HSEBYP (1u << 18)
#define RCC_CR_PLLON (1u << 24)
#define RCC_CR_PLLRDY (1u << 25)

#define PWR_BASE 0x40007000u
#define PWR_CR1 (PWR_BASE + 0x00u)  /* VOS 15:14, ODEN 16, ODSWEN 17 */
#define PWR_CSR1 (PWR_BASE + 0x04u) /* ODRDY 16, ODSWRDY 17 */
#define PWR_OD (1u << 16)
#define PWR_ODSW (1u << 17)

#define FLASH_ACR 0x40023C00u /* LATENCY 3:0, PRFTEN 8, ARTEN 9, ARTRST 11 */
#define FLASH_ACR_PRFTEN (1u << 8)
#define FLASH_ACR_ARTEN (1u << 9)
#define FLASH_ACR_ARTRST (1u << 11)

#define GPIOB_BASE 0x40020400u
#define GPIOD_BASE 0x40020C00u
#define GPIO_MODER 0x00u /* 2 bits per pin: 01 output, 10 alternate function */
#define GPIO_OSPEEDR 0x08u
#define GPIO_PUPDR 0x0Cu /* 2 bits per pin: 01 pull-up */
#define GPIO_BSRR 0x18u  /* bit n sets pin n, bit n + 16 resets it */
#define GPIO_AFRH 0x24u  /* 4 bits per pin 8..15 */

#define USART3_BASE 0x40004800u
#define USART_CR1 (USART3_BASE + 0x00u) /* UE 0, RE 2, TE 3 */
#define USART_CR3 (USART3_BASE + 0x08u) /* OVRDIS 12 */
#define USART_BRR (USART3_BASE + 0x0Cu)
#define USART_ISR (USART3_BASE + 0x1Cu) /* PE 0, FE 1, NF 2, ORE 3, RXNE 5, TC 6, TXE 7 */
#define USART_ICR (USART3_BASE + 0x20u)
#define USART_RDR (USART3_BASE + 0x24u)
#define USART_TDR (USART3_BASE + 0x28u)
#define USART_ISR_ERRORS 0xFu
#define USART_ISR_RXNE (1u << 5)
#define USART_ISR_TC (1u << 6)
#define USART_ISR_TXE (1u << 7)

#define SCB_CCSIDR 0xE000ED80u
#define SCB_CSSELR 0xE000ED84u
#define SCB_ICIALLU 0xE000EF50u
#define SCB_DCISW 0xE000EF60u
#define SCB_CCR_DC (1u << 16)
#define SCB_CCR_IC (1u << 17)

#endif
