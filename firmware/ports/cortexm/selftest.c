/* SELFTEST (docs/protocol.md): faults on purpose, so the bench can check that a fault reaches the host with its
 * registers and that the stacked pc resolves to this file and line. tests/test_twin_faults.py finds the lines by
 * their FAULT-HERE markers: keep each faulting statement on its marked line. */
#include <stdint.h>
#include "port.h"

/* Above every memory and peripheral of the supported cores: a load from here is a bus error (ARMv7-M BusFault,
 * escalated to HardFault; ARMv6-M HardFault). */
#define SELFTEST_UNMAPPED 0xFFFFFFF0u

static volatile uint32_t selftest_sink;

__attribute__((noinline)) void port_selftest_fault(uint32_t kind)
{
    if (kind == PORT_SELFTEST_UNDEFINED) {
        __asm volatile("udf #0"); /* FAULT-HERE undefined */
    } else if (kind == PORT_SELFTEST_BAD_LOAD) {
        selftest_sink = *(volatile uint32_t *)(uintptr_t)SELFTEST_UNMAPPED; /* FAULT-HERE bad-load */
    }
}
