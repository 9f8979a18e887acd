# Included by the port.mk of every port (the boards stm32f7, nrf52840, rp2040 and the mps2 twins): the shared Cortex-M sources and the
# UART rate. BAUD comes from [serial].baudrate; bench/image.py passes it for hardware builds.
BAUD ?= 115200
PORT_SRCS += ports/cortexm/startup.c ports/cortexm/port_common.c ports/cortexm/selftest.c
INCLUDES += -Iports/cortexm
BOARD_DEFS += -DBAUD_RATE=$(BAUD)
