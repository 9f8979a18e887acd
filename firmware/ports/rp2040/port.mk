# Raspberry Pi Pico: shared Cortex-M code, SysTick cycle counting (the M0+ has no DWT cycle counter), and boot2:
# boot2.S is assembled and linked for where the bootrom runs it (0x20041F00, position-independent anyway), cut to
# a raw binary, stamped with the bootrom's CRC by the host tool tools/boot2_crc.c, and the 256 bytes come back as
# $(OUT)/boot2_stamped.S, which the firmware link places at the flash origin (section .boot2).
include ports/cortexm/hw.mk
PORT_SRCS += ports/cortexm/systick.c
PORT_EXTRA += $(OUT)/boot2_stamped.S

$(OUT)/boot2_crc: tools/boot2_crc.c
	@mkdir -p $(OUT)
	$(HOST_CC) $(WARN) -O1 $< -o $@

$(OUT)/boot2.elf: ports/rp2040/boot2.S FORCE
	@mkdir -p $(OUT)
	$(CROSS)gcc $(CPU_CFLAGS) -nostdlib -Wl,--entry=boot2_entry -Wl,-Ttext=0x20041f00 $< -o $@

$(OUT)/boot2.bin: $(OUT)/boot2.elf
	$(CROSS)objcopy -O binary -j .text $< $@

$(OUT)/boot2_stamped.S: $(OUT)/boot2.bin $(OUT)/boot2_crc
	$(OUT)/boot2_crc $< $@
