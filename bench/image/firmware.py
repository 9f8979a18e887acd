"""Image stage: one firmware image per board, plus the plan and dataset blobs placed beside it in flash.

Firmware is built once per board and variant (``make -C firmware image``) with the board's memory sizes from
``boards/*.toml``: ``twin`` with the mps2 port for the board's QEMU machine, ``hardware`` with the board's own port
(``[build].port``) at its real flash and SRAM addresses. Each image is identified by a build id hashed from its sources
and build variables, so an unchanged image is never rebuilt and the id the device reports in HELLO says exactly what
runs. An ``ImageSet`` is what a target loads; assembling one checks that the run fits the board: SRAM (static +
planned arena + stack) and flash (firmware, plan, dataset).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile

from bench.config.boards import REPO_ROOT, Board
from bench.plan.fp32 import Plan
from bench.plan.int8 import QPlan

FIRMWARE_DIR = REPO_ROOT / "firmware"
IMAGES_DIR = REPO_ROOT / "firmware_images"
PROTOCOL_VERSION = 1
BLOB_ALIGN = 4096


class ImageError(RuntimeError):
    """The firmware could not be built or the toolchain is missing."""


class DoesNotFit(ValueError):
    """A run needs more SRAM or flash than the board has; carries required vs available bytes."""

    def __init__(self, what: str, required: int, available: int, detail: str) -> None:
        super().__init__(f"{detail}: needs {required:,} B of {what} but the board has {available:,} B")
        self.what, self.required, self.available = what, required, available


@dataclass(frozen=True)
class Firmware:
    """A built firmware image and what its ELF says about memory."""

    board: str
    variant: str
    build_id: str
    protocol_version: int
    elf: Path
    bin: Path
    flash_bytes: int  # bytes the image occupies in flash (text, rodata, data load image)
    static_bytes: int  # .data + .bss in SRAM
    stack_bytes: int  # stack reserved by the linker script


@dataclass(frozen=True)
class Blob:
    what: str
    addr: int
    path: Path
    size: int


@dataclass(frozen=True)
class ImageSet:
    """Everything a target loads for one run."""

    board: Board
    kind: str
    firmware: Firmware
    blobs: tuple[Blob, ...]
    plan_hash: int
    arena_bytes: int

    @property
    def planned_sram_bytes(self) -> int:
        """Analytic peak: static data plus the plan's arena (the stack is measured, not planned)."""
        return self.firmware.static_bytes + self.arena_bytes


VARIANTS = ("twin", "hardware")


def _make_vars(board: Board, build_id: str, out: Path, variant: str = "twin") -> dict[str, str]:
    flash_base, sram_base = _bases(board, variant)
    return {
        "BOARD": board.name,
        "CPU_CFLAGS": board.build.cflags,
        "FLASH_ORIGIN": hex(flash_base),
        "FLASH_BYTES": str(board.flash_bytes),
        "RAM_ORIGIN": hex(sram_base),
        "RAM_BYTES": str(board.sram_bytes),
        "PLAN_OFFSET": hex(board.memory.plan_offset),
        "STACK_BYTES": str(board.build.stack_bytes),
        "CPU_HZ": str(board.cpu_hz),
        "BUILD_ID": build_id,
        "OUT": str(out),
        **({"PORT": board.build.port, "BAUD": str(board.serial.baudrate)} if variant == "hardware" else {}),
    }


def _bases(board: Board, variant: str) -> tuple[int, int]:
    """(flash origin, SRAM origin): the twin machine's, or the real board's memory map."""
    if variant == "hardware":
        return board.memory.flash_base, board.memory.sram_base
    return board.twin.flash_base, board.twin.sram_base


def _source_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(FIRMWARE_DIR.rglob("*")):
        if path.is_file() and "build" not in path.relative_to(FIRMWARE_DIR).parts:
            digest.update(str(path.relative_to(FIRMWARE_DIR)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def build_id_for(board: Board, variant: str = "twin") -> str:
    """Hash of the firmware sources and every build variable except the id itself."""
    variables = _make_vars(board, "", Path("."), variant)
    variables.pop("OUT")
    key = json.dumps({"src": _source_digest(), "vars": variables, "variant": variant}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _require_toolchain() -> None:
    missing = [t for t in ("make", "arm-none-eabi-gcc") if shutil.which(t) is None]
    if missing:
        raise ImageError(
            f"missing {', '.join(missing)}: install Debian's gcc-arm-none-eabi and libnewlib-arm-none-eabi "
            "(`make bootstrap` does it)"
        )


def build_firmware(board: Board, variant: str = "twin", images_dir: Path = IMAGES_DIR) -> Firmware:
    """Build (or reuse) the firmware image for ``board``: ``twin`` runs on the board's QEMU machine, ``hardware`` on
    the board itself (written to ``<board>-hw/``; built and checked on the host, not yet run on a board)."""
    if variant not in VARIANTS:
        raise ImageError(f"{board.name}: unknown firmware variant '{variant}' (known: {', '.join(VARIANTS)})")
    build_id = build_id_for(board, variant)
    out = images_dir / f"{board.name}-{'hw' if variant == 'hardware' else variant}"
    manifest = out / "manifest.json"
    if manifest.exists():
        cached = read_manifest(manifest)
        if cached.build_id == build_id and cached.elf.exists():
            return cached
    _require_toolchain()
    out.mkdir(parents=True, exist_ok=True)
    cmd = ["make", "-s", "-C", str(FIRMWARE_DIR), "image"]
    cmd += [f"{k}={v}" for k, v in _make_vars(board, build_id, out.resolve(), variant).items()]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ImageError(f"firmware build for {board.name} failed:\n{proc.stdout}\n{proc.stderr}")
    fw = _describe(board, variant, build_id, out)
    manifest.write_text(json.dumps(asdict(fw), default=str, indent=2) + "\n")
    return fw


def read_manifest(path: Path) -> Firmware:
    data = json.loads(path.read_text())
    data["elf"], data["bin"] = Path(data["elf"]), Path(data["bin"])
    return Firmware(**data)


def _describe(board: Board, variant: str, build_id: str, out: Path) -> Firmware:
    elf, binary = out / "firmware.elf", out / "firmware.bin"
    flash, static = elf_memory(elf, _bases(board, variant)[1], board.sram_bytes)
    return Firmware(board=board.name, variant=variant, build_id=build_id, protocol_version=PROTOCOL_VERSION,
                    elf=elf, bin=binary, flash_bytes=flash, static_bytes=static,
                    stack_bytes=board.build.stack_bytes)


def elf_memory(elf: Path, sram_base: int, sram_bytes: int) -> tuple[int, int]:
    """(flash bytes, static SRAM bytes) from the ELF's allocated sections; stack and arena are not sections."""
    flash = static = 0
    with elf.open("rb") as fh:
        for sec in ELFFile(fh).iter_sections():
            if not sec["sh_flags"] & SH_FLAGS.SHF_ALLOC or sec["sh_size"] == 0:
                continue
            in_ram = sram_base <= sec["sh_addr"] < sram_base + sram_bytes
            loaded = sec["sh_type"] != "SHT_NOBITS"
            if in_ram and not _is_reserved(sec.name):
                static += sec["sh_size"]
            if loaded:
                flash += sec["sh_size"]
    return flash, static


def _is_reserved(name: str) -> bool:
    return any(word in name for word in ("stack", "arena", "heap"))


def assemble(board: Board, kind: str, firmware: Firmware, plan: Plan | QPlan, dataset: bytes, work: Path
             ) -> ImageSet:
    """Place plan and dataset after the firmware's flash region; refuse runs that do not fit the board."""
    _check_sram(board, firmware, plan)
    plan_addr = board.plan_addr(emulated=kind == "emulated")
    plan_len = len(plan.blob(0))
    dataset_addr = plan_addr + _round_up(plan_len, BLOB_ALIGN)
    flash_end = dataset_addr + len(dataset) - (plan_addr - board.memory.plan_offset)
    if flash_end > board.flash_bytes:
        raise DoesNotFit("flash", flash_end, board.flash_bytes,
                         f"{plan.model.name} on {board.name}: firmware region {board.memory.plan_offset:,} B + "
                         f"plan {plan_len:,} B + dataset {len(dataset):,} B")
    work.mkdir(parents=True, exist_ok=True)
    blobs = (_write(work, "plan", plan_addr, plan.blob(dataset_addr)),
             _write(work, "dataset", dataset_addr, dataset))
    return ImageSet(board=board, kind=kind, firmware=firmware, blobs=blobs, plan_hash=plan.plan_hash,
                    arena_bytes=plan.arena_bytes)


def _check_sram(board: Board, firmware: Firmware, plan: Plan | QPlan) -> None:
    check_sram(board, firmware, plan.arena_bytes, f"plan {plan.model.name}/{plan.technique.name}")


def check_sram(board: Board, firmware: Firmware, arena_bytes: int, what: str) -> None:
    """`DoesNotFit` when static data + ``arena_bytes`` + the stack reserve exceed the board's SRAM."""
    required = firmware.static_bytes + arena_bytes + firmware.stack_bytes
    if required > board.sram_bytes:
        available = board.sram_bytes - firmware.static_bytes - firmware.stack_bytes
        raise DoesNotFit(
            "SRAM", required, board.sram_bytes,
            f"{what} does not fit {board.name}: arena {arena_bytes:,} B (arena available {available:,} B) + static "
            f"{firmware.static_bytes:,} B + stack {firmware.stack_bytes:,} B",
        )


def _round_up(n: int, align: int) -> int:
    return (n + align - 1) // align * align


def _write(work: Path, what: str, addr: int, data: bytes) -> Blob:
    """``<what>-<sha256 prefix>.bin`` in ``work``, written whole (temp + rename) unless already there: a file named
    by its content is the content the host compiled, whoever else writes into the same directory."""
    path = work / f"{what}-{hashlib.sha256(data).hexdigest()[:16]}.bin"
    if not path.is_file() or path.stat().st_size != len(data):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return Blob(what=what, addr=addr, path=path, size=len(data))
