/* Port for the QEMU mps2 twins (mps2-an385 / an386 / an500): CMSDK UART0, SysTick, semihosting exit.
 * Board facts come from -D defines set by the Makefile from boards/<name>.toml. */
#include <stdint.h>
#include "port.h"
#include "mps2.h"
#include "msg.h"

#if !defined(BOARD_NAME) || !defined(BUILD_ID) || !defined(CPU_HZ) || !defined(FLASH_ORIGIN) || \
    !defined(FLASH_BYTES) || !defined(RAM_BYTES) || !defined(PLAN_OFFSET) || !defined(STACK_BYTES)
#error "build through firmware/Makefile: board defines missing"
#endif

#define COUNTER_HZ 25000000u /* mps2 SYSCLK: SysTick with CLKSOURCE = 1 counts at 25 MHz */
#define PLAN_ADDR ((uint32_t)(FLASH_ORIGIN) + (uint32_t)(PLAN_OFFSET))

extern uint32_t __data_start[], __bss_end[], __arena_start[], __arena_end[], __stack_bottom[];

static volatile uint32_t systick_wraps;
static port_info_t info;

void SysTick_Handler(void)
{
    systick_wraps++;
}

void port_init(void)
{
    MMIO32(UART_BAUDDIV) = 16; /* QEMU ignores the rate but wants a legal divider (>= 16) */
    MMIO32(UART_CTRL) = 3;
    MMIO32(SYST_RVR) = SYST_RELOAD;
    MMIO32(SYST_CVR) = 0;
    MMIO32(SYST_CSR) = 7; /* core clock, interrupt on wrap, enabled */
    info.board = BOARD_NAME;
    info.build_id = BUILD_ID;
    info.cpu_hz = CPU_HZ;
    info.sram_bytes = RAM_BYTES;
    info.flash_bytes = FLASH_BYTES;
    info.static_bytes = (uint32_t)((uintptr_t)__bss_end - (uintptr_t)__data_start);
    info.arena = (uint8_t *)__arena_start;
    info.arena_bytes = (uint32_t)((uintptr_t)__arena_end - (uintptr_t)__arena_start);
    info.stack_bottom = __stack_bottom;
    info.stack_bytes = STACK_BYTES;
    /* blobs may only live above the firmware, inside the board's flash */
    info.flash_addr = PLAN_ADDR;
    info.flash_size = (uint32_t)(FLASH_BYTES) - (uint32_t)(PLAN_OFFSET);
    info.flash_host = PLAN_ADDR;
    info.plan_addr = PLAN_ADDR;
}

const port_info_t *port_info(void)
{
    return &info;
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

/* 24-bit down-counter extended by the wrap count. A wrap whose interrupt has not run yet shows as a pending
 * SysTick with the counter just reloaded (high value): count it here so time never steps back. */
uint64_t port_ticks(void)
{
    uint32_t hi, cur, pending;
    do {
        hi = systick_wraps;
        cur = MMIO32(SYST_CVR);
        pending = MMIO32(SCB_ICSR) & (1u << 26);
    } while (hi != systick_wraps);
    if (pending && cur > (SYST_RELOAD >> 1))
        hi++;
    return ((uint64_t)hi << 24) + (SYST_RELOAD - cur);
}

uint32_t port_counter_hz(void)
{
    return COUNTER_HZ;
}

uint16_t port_counter_kind(void)
{
    return PORT_COUNTER_SYSTICK;
}

/* No GPIO on the twins: the marker only matters to an energy meter on a real board. */
void port_marker(uint8_t phase)
{
    (void)phase;
}

/* Semihosting SYS_EXIT_EXTENDED: QEMU exits with `code` (plain SYS_EXIT on A32/T32 cannot carry one). */
void port_exit(int code)
{
    static uint32_t block[2];
    register uint32_t r0 __asm("r0") = 0x20u;
    register uint32_t *r1 __asm("r1") = block;
    block[0] = 0x20026u; /* ADP_Stopped_ApplicationExit */
    block[1] = (uint32_t)code;
    __asm volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    for (;;)
        ;
}

/* Called by Fault_Handler with the exception frame: r0 r1 r2 r3 r12 lr pc xpsr. */
void port_fault(const uint32_t *frame)
{
    uint32_t cfsr = 0;
#if defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__)
    cfsr = MMIO32(SCB_CFSR);
#endif
    msg_resync(); /* ends any frame the fault interrupted, so the FAULT frame decodes */
    msg_fault(1, frame[6], frame[5], cfsr, 0, 0, "hard fault");
    port_exit(1);
}

/* Naked: the exception frame sits at MSP on entry (this firmware never switches to PSP). BL reaches the whole
 * image also in Thumb-1. */
__attribute__((naked)) void Fault_Handler(void)
{
    __asm volatile("mrs r0, msp\n\t"
                   "bl port_fault\n\t");
}
