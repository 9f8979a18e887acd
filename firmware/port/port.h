/* Port interface: everything the portable engine needs from a board.
 *
 * A port provides these functions plus the board facts in port_info(). The engine never touches a register. */
#ifndef PORT_H
#define PORT_H

#include <stdint.h>

/* Counter kinds reported in HELLO (docs/protocol.md). */
#define PORT_COUNTER_SYSTICK 0u /* SysTick on the core clock, extended to 64 bits */
#define PORT_COUNTER_DWT 1u     /* DWT cycle counter */

typedef struct {
    const char *board;       /* board name, <= 32 bytes */
    const char *build_id;    /* build identifier, <= 40 bytes */
    uint32_t cpu_hz;         /* clock of the real board */
    uint32_t sram_bytes;     /* SRAM of the real board */
    uint32_t flash_bytes;    /* flash of the real board */
    uint32_t static_bytes;   /* .data + .bss */
    uint8_t *arena;          /* free RAM between .bss and the stack, 8-byte aligned */
    uint32_t arena_bytes;
    uint32_t *stack_bottom;  /* lowest word of the stack region (painted), NULL if unknown */
    uint32_t stack_bytes;
    uint32_t flash_addr;     /* device address of the memory window holding the blobs */
    uint32_t flash_size;     /* its size in bytes */
    uintptr_t flash_host;    /* where that window is readable by this program (== flash_addr on a device) */
    uint32_t plan_addr;      /* device address of the plan blob */
} port_info_t;

void port_init(void);
/* Blocking: returns once every byte has been handed to the transmitter. */
void port_write(const uint8_t *buf, uint32_t n);
/* Non-blocking: 1 and *byte set when a byte was waiting, else 0. */
int port_read_byte(uint8_t *byte);
/* Monotonic 64-bit tick counter at port_counter_hz() ticks per second. */
uint64_t port_ticks(void);
uint32_t port_counter_hz(void);
uint16_t port_counter_kind(void);
/* Ends the program (on a twin: ends QEMU with this exit code). */
void port_exit(int code);
const port_info_t *port_info(void);
/* SELFTEST: fault on purpose so the host can check its fault report end to end (docs/protocol.md).
 * PORT_SELFTEST_UNDEFINED executes an undefined instruction, PORT_SELFTEST_BAD_LOAD loads from unmapped memory.
 * Does not return on a port that can fault; returns for kinds (or ports, the host build) that cannot. */
#define PORT_SELFTEST_UNDEFINED 1u
#define PORT_SELFTEST_BAD_LOAD 2u
void port_selftest_fault(uint32_t kind);

/* Phase markers for energy-meter synchronisation. The trainer calls port_marker() outside the timed windows as
 * each phase of a step starts. Hardware ports drive one GPIO high for FORWARD and UPDATE and low for BACKWARD
 * and STEP_END, so each change of phase is an edge a meter's logic input records; backward and update alternate
 * per layer. The twins ignore it. */
#define PORT_MARK_FORWARD 0u
#define PORT_MARK_BACKWARD 1u
#define PORT_MARK_UPDATE 2u
#define PORT_MARK_STEP_END 3u
void port_marker(uint8_t phase);

#endif
