# nRF52840-DK: shared Cortex-M code and the DWT cycle counter.
include ports/cortexm/hw.mk
PORT_SRCS += ports/cortexm/dwt.c
