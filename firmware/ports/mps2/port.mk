# QEMU mps2 twins: the same startup, fault report and SysTick counter as the hardware ports (ports/cortexm), so a
# twin runs the code a board runs except for its UART and exit. SysTick counts the mps2 SYSCLK, 25 MHz.
include ports/cortexm/hw.mk
PORT_SRCS += ports/cortexm/systick.c
BOARD_DEFS += -DCOUNTER_HZ=25000000u
