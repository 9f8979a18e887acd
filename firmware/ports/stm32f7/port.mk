# NUCLEO-F746ZG: shared Cortex-M code, the DWT cycle counter (Cortex-M7 locks DWT writes until unlocked).
include ports/cortexm/hw.mk
PORT_SRCS += ports/cortexm/dwt.c
BOARD_DEFS += -DDWT_HAS_LOCK=1
