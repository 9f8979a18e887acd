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
