"""Addresses of a firmware image resolved to ``function file:line`` from its ELF's symbols and DWARF line table.

Why here: a device FAULT carries raw PC and LR; what a user can act on is the function and source line, and the
image stage owns the ELF each run was built from. pyelftools reads it (no external addr2line).
"""

from __future__ import annotations

import bisect
from functools import cache
from pathlib import Path

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

# CFSR (SCB 0xE000ED28) bits, ARMv7-M: MemManage (7:0), BusFault (15:8), UsageFault (31:16)
CFSR_BITS = {
    0: "IACCVIOL (instruction fetch from a no-execute region)", 1: "DACCVIOL (data access violation)",
    3: "MUNSTKERR (MemManage on exception return)", 4: "MSTKERR (MemManage on exception entry)",
    5: "MLSPERR (MemManage on lazy FP save)", 7: "MMARVALID",
    8: "IBUSERR (instruction bus error)", 9: "PRECISERR (precise data bus error)",
    10: "IMPRECISERR (imprecise data bus error)", 11: "UNSTKERR (bus fault on exception return)",
    12: "STKERR (bus fault on exception entry)", 13: "LSPERR (bus fault on lazy FP save)", 15: "BFARVALID",
    16: "UNDEFINSTR (undefined instruction)", 17: "INVSTATE (invalid state: a branch to an even address?)",
    18: "INVPC (invalid EXC_RETURN)", 19: "NOCP (coprocessor access: FPU not enabled?)",
    24: "UNALIGNED (unaligned access)", 25: "DIVBYZERO (division by zero)",
}


# HFSR (SCB 0xE000ED2C) bits, ARMv7-M
HFSR_BITS = {1: "VECTTBL (bus fault on a vector table read)",
             30: "FORCED (a configurable fault escalated to HardFault: see CFSR)",
             31: "DEBUGEVT (debug event)"}


def decode_cfsr(cfsr: int) -> str:
    """The fault status bits set in ``cfsr``, in words ('' when none: e.g. ARMv6-M, which has no CFSR)."""
    return ", ".join(name for bit, name in CFSR_BITS.items() if cfsr >> bit & 1)


def decode_hfsr(hfsr: int) -> str:
    """The HardFault status bits set in ``hfsr``, in words ('' when none: e.g. ARMv6-M, which has no HFSR)."""
    return ", ".join(name for bit, name in HFSR_BITS.items() if hfsr >> bit & 1)


class Symbols:
    """Function and line lookup for one ELF (built once per image, cached by path and modification time)."""

    def __init__(self, elf: Path) -> None:
        with elf.open("rb") as f:
            image = ELFFile(f)
            self._functions = sorted(self._read_functions(image))
            self._starts = [start for start, _, _ in self._functions]
            self._lines = sorted(self._read_lines(image))
            self._line_addrs = [addr for addr, _, _ in self._lines]

    @staticmethod
    def _read_functions(image: ELFFile) -> list[tuple[int, int, str]]:
        symtab = image.get_section_by_name(".symtab")
        if not isinstance(symtab, SymbolTableSection):
            return []
        return [(s["st_value"] & ~1, s["st_size"], s.name) for s in symtab.iter_symbols()
                if s["st_info"]["type"] == "STT_FUNC" and s["st_size"]]

    @staticmethod
    def _read_lines(image: ELFFile) -> list[tuple[int, str, int]]:
        if not image.has_dwarf_info():
            return []
        rows = []
        for cu in image.get_dwarf_info().iter_CUs():
            program = image.get_dwarf_info().line_program_for_CU(cu)
            if program is None:
                continue
            files = program["file_entry"]
            base = 0 if program.header["version"] >= 5 else 1  # DWARF 5 file indices start at 0
            for entry in program.get_entries():
                state = entry.state
                if state is None or state.end_sequence:
                    continue
                index = state.file - base
                name = files[index].name.decode() if 0 <= index < len(files) else "?"
                rows.append((state.address, name, state.line))
        return rows

    def describe(self, addr: int) -> str:
        """``function file:line`` (or what of it is known) for a code address; '' outside every function."""
        addr &= ~1  # Thumb bit
        i = bisect.bisect_right(self._starts, addr) - 1
        if i < 0 or addr >= self._functions[i][0] + self._functions[i][1]:
            return ""
        where = self._functions[i][2]
        j = bisect.bisect_right(self._line_addrs, addr) - 1
        if j >= 0:
            _, name, line = self._lines[j]
            where += f" {name}:{line}"
        return where


@cache
def _symbols(elf: Path, mtime_ns: int) -> Symbols:
    return Symbols(elf)


def symbols_for(elf: Path) -> Symbols | None:
    """The symbols of ``elf``, or None when it is missing or unreadable (a fault report then keeps raw addresses)."""
    try:
        return _symbols(elf, elf.stat().st_mtime_ns)
    except (OSError, ValueError):
        return None
