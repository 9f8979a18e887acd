/* Port functions shared by the hardware ports: bring-up order, board facts for HELLO, exit and fault report.
 * Board facts come from -D defines set by the Makefile from boards/<name>.toml. */
#include <stdint.h>
#include "port.h"
#include "cortexm.h"
#include "msg.h"

#define PLAN_ADDR ((uint32_t)(FLASH_ORIGIN) + (uint32_t)(PLAN_OFFSET))

extern uint32_t __data_start[], __bss_end[], __arena_start[], __arena_end[], __stack_bottom[];

static port_info_t info;

void port_init(void)
{
    board_clock_init(); /* first: the UART divider and the counter rate assume CPU_HZ */
    board_marker_init();
    board_uart_init();
    counter_init();
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
    /* blobs may only live above the firmware, inside the board's flash; on a device it is read in place */
    info.flash_addr = PLAN_ADDR;
    info.flash_size = (uint32_t)(FLASH_BYTES) - (uint32_t)(PLAN_OFFSET);
    info.flash_host = PLAN_ADDR;
    info.plan_addr = PLAN_ADDR;
}

const port_info_t *port_info(void)
{
    return &info;
}

/* A board has nothing to exit to: let the last frame leave the UART, then park with interrupts masked until the
 * host resets the board through its probe. A busy loop rather than WFI, because a sleeping core is harder for a
 * debug probe to attach to. The exit code is not observable on hardware (the FAULT or SUMMARY frame is). */
void port_exit(int code)
{
    board_uart_flush();
    board_exit(code);
    (void)cortexm_irq_save();
    for (;;)
        ;
}

/* Where something can observe the exit code (a twin's QEMU) the board file ends the program here; on a board
 * nothing can, so by default this returns and port_exit parks the core. */
__attribute__((weak)) void board_exit(int code)
{
    (void)code;
}

/* Called by Fault_Handler with the exception frame: r0 r1 r2 r3 r12 lr pc xpsr. FAULT carries the stacked pc
 * and lr, CFSR, and as its two arguments HFSR and the exception number (3 HardFault, 4 MemManage, 5 BusFault,
 * 6 UsageFault; ARMv6-M has HardFault only, and neither status register). */
void port_fault(const uint32_t *frame)
{
    uint32_t cfsr = 0, hfsr = 0, ipsr;
#if defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__)
    cfsr = MMIO32(SCB_CFSR);
    hfsr = MMIO32(SCB_HFSR);
#endif
    __asm volatile("mrs %0, ipsr" : "=r"(ipsr));
    msg_resync(); /* ends any frame the fault interrupted, so the FAULT frame decodes */
    msg_fault(1, frame[6], frame[5], cfsr, hfsr, ipsr & 0x1FFu, "hard fault");
    port_exit(1);
}

/* Naked: the exception frame sits at MSP on entry (this firmware never switches to PSP). BL reaches the whole
 * image also in Thumb-1. */
__attribute__((naked)) void Fault_Handler(void)
{
    __asm volatile("mrs r0, msp\n\t"
                   "bl port_fault\n\t");
}
