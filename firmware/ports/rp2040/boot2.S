/* RP2040 second-stage boot (boot2), written for this project from the RP2040 datasheet (bootrom and SSI chapters).
 *
 * The bootrom copies the first 256 bytes of flash to SRAM (0x20041F00), checks that their last 4 bytes are the
 * CRC-32 of the first 252 (polynomial 0x04C11DB7, init 0xFFFFFFFF, no reflection, no final xor) and calls the copy
 * with lr = 0. This code must therefore be position-independent and fit 252 bytes: the build assembles it,
 * firmware/tools/boot2_crc.c pads it and appends the CRC, and the result is linked at 0x10000000.
 *
 * It leaves the SSI set for execute-in-place with the plain 03h READ command (one data line, 24-bit address, no
 * dummy cycles), which every SPI NOR flash answers, the Pico's W25Q16JV up to 50 MHz. SCK = clk_sys / 4: about
 * 1.5 MHz on the ring oscillator now, 31.25 MHz once the firmware runs clk_sys at 125 MHz. Slower than quad I/O,
 * but the 16 KB XIP cache holds the training loop. Then it enters the firmware through the vector table at
 * 0x10000100 (VTOR, MSP, reset vector), or returns when called with a return address. */
    .syntax unified
    .cpu cortex-m0plus
    .thumb

    .equ SSI_BASE, 0x18000000
    .equ SSI_CTRLR0, 0x00
    .equ SSI_CTRLR1, 0x04
    .equ SSI_SSIENR, 0x08
    .equ SSI_BAUDR, 0x14
    .equ SSI_SPI_CTRLR0, 0xF4
    /* CTRLR0: standard SPI frame format (SPI_FRF 22:21 = 0), 32-bit frames (DFS_32 20:16 = 31), EEPROM-read
     * transfer mode (TMOD 9:8 = 3: send command + address, then only receive) */
    .equ CTRLR0_XIP, (31 << 16) | (3 << 8)
    /* SPI_CTRLR0: XIP_CMD 31:24 = 0x03 READ, INST_L 9:8 = 2 (8-bit instruction), ADDR_L 5:2 = 6 (24 bits in
     * 4-bit units), WAIT_CYCLES = 0, TRANS_TYPE 1:0 = 0 (instruction and address on one line) */
    .equ SPI_CTRLR0_XIP, (0x03 << 24) | (2 << 8) | (6 << 2)
    .equ SCK_DIV, 4
    .equ VTOR, 0xE000ED08
    .equ APP_VECTORS, 0x10000100

    .section .text
    .global boot2_entry
    .type boot2_entry, %function
    .thumb_func
boot2_entry:
    push {lr}
    ldr r3, =SSI_BASE
    movs r1, #0
    str r1, [r3, #SSI_SSIENR]   /* the SSI is configurable only while disabled */
    movs r1, #SCK_DIV
    str r1, [r3, #SSI_BAUDR]
    ldr r1, =CTRLR0_XIP
    str r1, [r3, #SSI_CTRLR0]
    ldr r1, =SPI_CTRLR0_XIP
    ldr r0, =SSI_BASE + SSI_SPI_CTRLR0 /* beyond the reach of a Thumb-1 immediate offset */
    str r1, [r0]
    movs r1, #0
    str r1, [r3, #SSI_CTRLR1]   /* NDF = 0: one 32-bit frame per XIP request */
    movs r1, #1
    str r1, [r3, #SSI_SSIENR]

    pop {r0}
    cmp r0, #0
    beq enter_firmware
    bx r0                       /* called as a function (e.g. by a debugger's flash algorithm): return */

enter_firmware:
    ldr r0, =APP_VECTORS
    ldr r1, =VTOR
    str r0, [r1]
    ldmia r0!, {r1, r2}         /* initial MSP, reset vector */
    msr msp, r1
    bx r2

    .ltorg
    .size boot2_entry, . - boot2_entry
