/* Bare-metal start-up of the twin programs (the kernel suites, twin_main.c; the kernel benchmark, kbench.c): their
 * own vector table and reset; output and exit through ARM semihosting (QEMU -semihosting-config enable=on). */
#include <stdint.h>
#include "harness.h"
#include "twin_start.h"

#define SH_WRITE0 0x04u
#define SH_EXIT 0x18u
#define SH_APP_EXIT 0x20026u    /* ADP_Stopped_ApplicationExit: QEMU exits 0 */
#define SH_RUNTIME_ERR 0x20023u /* ADP_Stopped_RunTimeErrorUnknown: QEMU exits 1 */

extern uint32_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[], __stack_top[];

void Reset_Handler(void);
void twin_fault(void);

static uint32_t semihost(uint32_t op, const void *arg)
{
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void th_out(const char *s)
{
    semihost(SH_WRITE0, s);
}

void twin_exit(int failed)
{
    for (;;)
        semihost(SH_EXIT, (const void *)(uintptr_t)(failed ? SH_RUNTIME_ERR : SH_APP_EXIT));
}

void Reset_Handler(void)
{
    uint32_t *src = __data_load, *dst = __data_start;
#if defined(__ARM_FP)
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20; /* CPACR: CP10/CP11 before any floating-point instruction */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    while (dst < __data_end)
        *dst++ = *src++;
    for (dst = __bss_start; dst < __bss_end; dst++)
        *dst = 0;
    twin_exit(main());
}

void twin_fault(void)
{
    th_out("FAULT: the core took an exception\n");
    twin_exit(1);
}

typedef void (*vector_t)(void);
__attribute__((section(".vectors"), used)) static const vector_t vectors[16] = {
    (vector_t)(uintptr_t)__stack_top, Reset_Handler, twin_fault, twin_fault, twin_fault, twin_fault, twin_fault, 0, 0,
    0, 0, twin_fault, twin_fault, 0, twin_fault, twin_fault,
};
