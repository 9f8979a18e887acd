"""The firmware's own host unit tests, and the twin images checked against their board's memory map."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from elftools.elf.elffile import ELFFile

from bench.config.boards import load_catalogue
from bench.image.firmware import FIRMWARE_DIR, build_firmware

BOARDS = sorted(load_catalogue())


def test_engine_host_unit_tests_pass():
    """Kernels (optimised vs reference), protocol, plan validation and trainer, compiled for the host with ASan."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is required for the engine's host tests")
    proc = subprocess.run(["make", "-s", "-C", str(FIRMWARE_DIR), "host-test"], capture_output=True, text=True,
                          check=False)
    summary = re.search(r"^(\d+) passed, (\d+) failed$", proc.stdout, re.M)
    assert proc.returncode == 0 and summary, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert int(summary.group(1)) >= 20 and summary.group(2) == "0"


@pytest.mark.parametrize("name", BOARDS)
def test_twin_image_fits_the_board_memory_map(name: str):
    board = load_catalogue()[name]
    fw = build_firmware(board)
    flash_lo, ram_lo = board.twin.flash_base, board.twin.sram_base
    with fw.elf.open("rb") as fh:
        elf = ELFFile(fh)
        loaded = [s for s in elf.iter_sections() if s["sh_flags"] & 2 and s["sh_size"]]
        text = elf.get_section_by_name(".text")
        entry = elf.header["e_entry"]
        # the vector table sits at the flash origin, where the core fetches the initial SP and reset vector
        first = next(s for s in loaded if s["sh_addr"] == flash_lo)
        sp, reset = (int.from_bytes(first.data()[i:i + 4], "little") for i in (0, 4))
        assert sp == ram_lo + board.sram_bytes  # the stack starts at the top of the board's SRAM
        assert reset & 1 and reset == entry  # Thumb bit set, and the ELF entry point is the reset handler
        assert text["sh_addr"] <= entry & ~1 < text["sh_addr"] + text["sh_size"]
    for sec in loaded:
        addr, end = sec["sh_addr"], sec["sh_addr"] + sec["sh_size"]
        in_fw_flash = flash_lo <= addr and end <= flash_lo + board.memory.plan_offset
        in_ram = ram_lo <= addr and end <= ram_lo + board.sram_bytes
        assert in_fw_flash or in_ram, f"{sec.name} at {addr:#x}..{end:#x} is outside {name}'s memory"
    assert fw.static_bytes + fw.stack_bytes < board.sram_bytes
