"""The firmware's kernel suites on each board's own instruction set (real cross-compiler, real QEMU twin).

The host build (ASan/UBSan) compiles the plain C paths only: the SMLAD/SXTB16 int8 loops, the VLDM fp32 blocks and
the SSAT update exist only in the ARM builds. ``make -C firmware twin-tests`` builds the same suites for a board's
core, and its twin runs them: every optimized kernel against its plain reference on the core that runs it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bench.config.boards import load_catalogue

pytestmark = pytest.mark.twin
FIRMWARE = Path(__file__).resolve().parents[1] / "firmware"
BOARDS = load_catalogue()


@pytest.mark.parametrize("board_name", sorted(BOARDS))
def test_kernel_suites_pass_on_the_twin(board_name: str, tmp_path: Path) -> None:
    if shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None:
        pytest.skip("needs arm-none-eabi-gcc and qemu-system-arm (make test installs both)")
    board = BOARDS[board_name]
    build = subprocess.run(["make", "-s", "-C", str(FIRMWARE), "twin-tests", f"CPU_CFLAGS={board.build.cflags}",
                            f"OUT={tmp_path}"], capture_output=True, text=True, timeout=300, check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    run = subprocess.run(["qemu-system-arm", "-M", board.twin.machine, "-nographic", "-monitor", "none", "-serial",
                          "none", "-semihosting-config", "enable=on,target=native", "-kernel",
                          str(tmp_path / "twin_tests.elf")], capture_output=True, text=True, timeout=300, check=False)
    out = run.stdout + run.stderr
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert run.returncode == 0 and lines and lines[-1].endswith(" passed, 0 failed"), out
    passed = int(lines[-1].split()[0])
    assert passed >= 30, out  # the three suites ran, not an empty table


def test_kernel_bench_results_equal_the_references_on_the_twin(tmp_path: Path) -> None:
    """`bench bench --kernels` on the M4F twin: every kernel of every phase ran on its shapes and its result equals
    the plain reference kernel's (the benchmark's own check, on shapes the suites do not draw)."""
    if shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None:
        pytest.skip("needs arm-none-eabi-gcc and qemu-system-arm (make test installs both)")
    from bench.app.kernels import kernel_costs

    rows = kernel_costs(BOARDS["nrf52840-dk"], tmp_path)
    phases = {(r.op, r.shape, r.phase) for r in rows}
    assert {p for _, _, p in phases} == {"forward", "input-grad", "weight-grad", "update"}
    assert {op for op, _, _ in phases} == {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
    assert all(r.exact for r in rows), [r for r in rows if not r.exact]
    assert all(r.instructions > 0 and r.work > 0 for r in rows)


def test_kernel_bench_output_that_stops_early_is_an_error() -> None:
    from bench.app.kernels import KernelBenchError, parse

    board = BOARDS["nrf52840-dk"]
    with pytest.raises(KernelBenchError, match="stopped early"):
        parse(board, "KB CONV_2D 8x8 forward 10 20 1\n", board.twin.counter_hz)
    with pytest.raises(KernelBenchError, match="unreadable"):
        parse(board, "KB CONV_2D 8x8 forward ten 20 1\nKB end 0\n", board.twin.counter_hz)
    rows = parse(board, "FAULT\nKB CONV_2D 8x8 forward 10 64 0\nKB end 1\n", board.twin.counter_hz)
    assert len(rows) == 1 and not rows[0].exact and rows[0].instructions == pytest.approx(64 * 1e9 / 25e6 / 256)


@pytest.mark.parametrize("board_name", sorted(BOARDS))
def test_host_planner_knows_the_device_table_sizes(board_name: str, tmp_path: Path) -> None:
    """bench/plan/int8.py refuses plans the device's op tables cannot hold before anything is flashed: its sizes
    must be the ones qplan.c is compiled with for the board's core (read from the object's qplan_tables)."""
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("needs arm-none-eabi-gcc (make test installs it)")
    from elftools.elf.elffile import ELFFile

    from bench.plan import int8

    obj = tmp_path / "qplan.o"
    subprocess.run(["arm-none-eabi-gcc", *BOARDS[board_name].build.cflags.split(), "-std=c99", "-O2",
                    "-fdata-sections", "-I", str(FIRMWARE / "engine"), "-I", str(FIRMWARE / "port"), "-c",
                    str(FIRMWARE / "engine" / "qplan.c"), "-o", str(obj)], check=True, capture_output=True)
    with obj.open("rb") as f:
        data = ELFFile(f).get_section_by_name(".rodata.qplan_tables").data()
    assert tuple(int.from_bytes(data[k:k + 4], "little") for k in range(0, 16, 4)) == (
        int8.NODE_BYTES, int8.BACKWARD_RECORD_BYTES, int8.TABLE_POOL_BYTES, int8.MAX_TRAINED_TENSORS)
