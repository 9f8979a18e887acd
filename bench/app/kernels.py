"""Benchmark: the int8 training kernels one by one on each twin (issue 11's per-op table).

`firmware/tests/kbench.c`, built for a board's core (``make -C firmware kernel-bench``), times every optimized
kernel of a training step (forward, input gradient, weight gradient, update) on digits-cnn's shapes and on a
MobileNet block's, and checks each result against its plain reference kernel. QEMU runs it with ``-icount``, so the
SysTick ticks it prints are deterministic instruction counts: converted here with the twin's counter clock.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.config.boards import Board
from bench.image.firmware import FIRMWARE_DIR
from bench.target.drivers import die_with_parent

ICOUNT_SHIFT = 8  # 256 ns per instruction: 6.4 SysTick ticks (25 MHz) each, and 2.6 M instructions before a wrap
SMLAD_BOUND = 0.5
MAX_LINES = 200  # what the device may print: bounded like everything it sends


class KernelBenchError(RuntimeError):
    """The kernel benchmark could not be built, run or read; the message says which and why."""


@dataclass(frozen=True)
class KernelCost:
    """One kernel on one shape, measured on a twin."""

    board: str
    op: str
    shape: str
    phase: str  # forward | input-grad | weight-grad | update
    work: int  # multiply-accumulates (update: weights)
    instructions: float
    exact: bool  # equal to the plain reference kernel's result

    @property
    def per_work(self) -> float:
        return self.instructions / self.work if self.work else float("nan")

    @property
    def target(self) -> float:
        """issue 11's target on M4/M7: forward 1.0 (depthwise 2.0), gradients 2.0 per MAC, update 4 per weight."""
        if self.phase == "forward":
            return 2.0 if self.op == "DEPTHWISE_CONV_2D" else 1.0
        return 4.0 if self.phase == "update" else 2.0


def kernel_costs(board: Board, out: Path, timeout: float = 300.0) -> list[KernelCost]:
    """Build the kernel benchmark for ``board``'s core into ``out``, run it on the twin, return its rows."""
    for tool in ("arm-none-eabi-gcc", "qemu-system-arm"):
        if shutil.which(tool) is None:
            raise KernelBenchError(f"{tool} not found: `make demo` (or `make bootstrap`) installs it")
    out.mkdir(parents=True, exist_ok=True)
    build = subprocess.run(["make", "-s", "-C", str(FIRMWARE_DIR), "kernel-bench", f"CPU_CFLAGS={board.build.cflags}",
                            f"OUT={out.resolve()}"], capture_output=True, text=True, timeout=timeout, check=False)
    if build.returncode != 0:
        raise KernelBenchError(f"{board.name}: building the kernel benchmark failed:\n{build.stderr[-2000:]}")
    cmd = die_with_parent(["qemu-system-arm", "-M", board.twin.machine, "-nographic", "-monitor", "none",
                           "-serial", "none", "-semihosting-config", "enable=on,target=native",
                           "-icount", f"shift={ICOUNT_SHIFT},align=off,sleep=off", "-kernel",
                           str(out / "kbench.elf")])
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise KernelBenchError(f"{board.name}: the kernel benchmark did not finish in {timeout:.0f} s") from exc
    text = run.stdout + run.stderr  # semihosting output goes where QEMU's stdio does
    (out / "kbench.log").write_text(text)
    return parse(board, text, board.twin.counter_hz)


def parse(board: Board, text: str, counter_hz: int) -> list[KernelCost]:
    """The rows of the benchmark's output ("KB op shape phase work ticks exact" ... "KB end failures")."""
    per_tick = 1e9 / counter_hz / 2 ** ICOUNT_SHIFT
    rows: list[KernelCost] = []
    lines = [ln.split() for ln in text.splitlines()[:MAX_LINES] if ln.startswith("KB ")]
    if not lines or lines[-1][:2] != ["KB", "end"]:
        raise KernelBenchError(f"{board.name}: the kernel benchmark stopped early; its last output: {text[-500:]!r}")
    for fields in lines[:-1]:
        try:
            _, op, shape, phase, work, ticks, exact = fields
            if op != "none":
                rows.append(KernelCost(board.name, op, shape, phase, int(work), int(ticks) * per_tick,
                                       exact == "1"))
        except ValueError as exc:
            raise KernelBenchError(f"{board.name}: unreadable kernel benchmark line {' '.join(fields)!r}") from exc
    return rows
