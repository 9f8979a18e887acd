"""Fault reports people can act on: PC/LR resolved to function file:line from the image's own ELF (pyelftools), CFSR
in words, and non-CPU faults with their own arguments instead of registers they do not carry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from bench.config.boards import load_catalogue
from bench.image.firmware import build_firmware
from bench.image.symbols import Symbols, decode_cfsr
from bench.link import protocol as proto
from bench.link.session import describe_fault

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.twin  # needs the ARM toolchain to build the image


def _function(elf: Path, name: str) -> tuple[int, int]:
    with elf.open("rb") as f:
        sym = ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name(name)[0]
        return sym["st_value"] & ~1, sym["st_size"]


def _source_span(path: Path, signature: str) -> tuple[int, int]:
    """Lines of the function whose definition starts with ``signature``, read from the source itself."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines, 1) if line.startswith(signature))
    end = next(i for i, line in enumerate(lines, 1) if i > start and line == "}")
    return start, end


@pytest.mark.parametrize("board_name", ["nucleo-f746zg", "rpi-pico"])
def test_a_hard_fault_names_the_function_and_line(board_name: str) -> None:
    fw = build_firmware(load_catalogue()[board_name])
    start, size = _function(fw.elf, "softmax_ce")
    pc = start + size // 2
    text = describe_fault(proto.Fault(1, pc, start | 1, 0x00020000, 0, 0), Symbols(fw.elf).describe, decode_cfsr)
    m = re.search(rf"pc=0x{pc:08x} in softmax_ce softmax_ce\.c:(\d+)", text)
    assert m, text
    first, last = _source_span(ROOT / "firmware/engine/ops/softmax_ce.c", "float softmax_ce(")
    assert first <= int(m.group(1)) <= last, (text, first, last)
    assert f"lr=0x{start | 1:08x} in softmax_ce" in text
    assert "cfsr=0x00020000 = INVSTATE" in text


def test_non_cpu_faults_show_their_own_arguments() -> None:
    plan = describe_fault(proto.Fault(2, 0, 0, 0, 7, 48, "qplan: bad tensor dims"))
    assert "pc=" not in plan and "arg0=7 (0x7), arg1=48 (0x30)" in plan and "qplan: bad tensor dims" in plan
    arena = describe_fault(proto.Fault(3, 0, 0, 0, 70000, 65536, "plan: arena too small"))
    assert "needs 70,000 B, has 65,536 B" in arena and "pc=" not in arena
    stack = describe_fault(proto.Fault(6, 0, 0, 0, 16400, 16384, "stack overflow"))
    assert "stack high-water 16,400 B of 16,384 B" in stack


def test_cfsr_words() -> None:
    assert decode_cfsr(0x00000082) == "DACCVIOL (data access violation), MMARVALID"
    assert decode_cfsr(0x02000000).startswith("DIVBYZERO")
    assert decode_cfsr(0) == ""
