"""The real-board firmware images (stm32f7, nrf52840, rp2040 ports), checked on the host without hardware.

Each image must put its vector table where the core fetches it, start the stack at the top of the board's SRAM, keep
every loaded byte inside the board's memory map from ``boards/*.toml`` and below the plan area, and carry the
energy-meter marker. The RP2040 image must start with a 256-byte boot2 whose CRC the bootrom will accept. None of
this has run on a board: these checks are what stands between a build and a bricked first flash.
"""

from __future__ import annotations

import fcntl
import subprocess

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from bench.config.boards import Board, load_catalogue
from bench.image.firmware import FIRMWARE_DIR, IMAGES_DIR, Firmware, build_firmware

BOARDS = sorted(load_catalogue())
# where each core fetches its initial SP and reset vector (RP2040: behind the 256-byte boot2, where boot2 jumps)
VECTORS = {"nucleo-f746zg": 0x08000000, "nrf52840-dk": 0x00000000, "rpi-pico": 0x10000100}
PORTS = {"nucleo-f746zg": "stm32f7", "nrf52840-dk": "nrf52840", "rpi-pico": "rp2040"}
SHF_ALLOC = 2


def _hardware_image(board: Board) -> Firmware:
    """Builds (or reuses) the image; the lock keeps two xdist workers from building the same board at once."""
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    with (IMAGES_DIR / ".hw-build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return build_firmware(board, "hardware")


def _symbols(elf: ELFFile) -> dict[str, tuple[int, int, str]]:
    table = elf.get_section_by_name(".symtab")
    assert isinstance(table, SymbolTableSection)
    return {s.name: (s["st_value"], s["st_size"], s["st_info"]["type"]) for s in table.iter_symbols() if s.name}


def _crc32_rp2040_bootrom(data: bytes) -> int:
    """CRC-32 as the RP2040 bootrom checks boot2: poly 0x04C11DB7, init 0xFFFFFFFF, MSB first, no final xor."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


def test_crc_reference_matches_the_published_check_value():
    assert _crc32_rp2040_bootrom(b"123456789") == 0x0376E6E7  # CRC-32/MPEG-2 check value


def test_every_board_names_its_hardware_port():
    for name, board in load_catalogue().items():
        assert board.build.port == PORTS[name]
        assert (FIRMWARE_DIR / "ports" / board.build.port / "link.ld.in").is_file()


@pytest.mark.parametrize("name", BOARDS)
def test_hardware_image_fits_the_board_memory_map(name: str):
    board = load_catalogue()[name]
    fw = _hardware_image(board)
    flash_lo, ram_lo = board.memory.flash_base, board.memory.sram_base
    assert fw.variant == "hardware" and fw.elf.parent.name == f"{name}-hw"
    with fw.elf.open("rb") as fh:
        elf = ELFFile(fh)
        loaded = [s for s in elf.iter_sections() if s["sh_flags"] & SHF_ALLOC and s["sh_size"]]
        text = elf.get_section_by_name(".text")
        entry = elf.header["e_entry"]
        assert text["sh_addr"] == VECTORS[name]  # the vector table opens .text
        sp, reset = (int.from_bytes(text.data()[i:i + 4], "little") for i in (0, 4))
        symbols = _symbols(elf)
        image_end = symbols["__flash_image_end"][0]
    assert sp == ram_lo + board.sram_bytes  # the stack starts at the top of the board's SRAM
    assert reset & 1 and reset == entry  # Thumb bit set, and the ELF entry point is the reset handler
    assert text["sh_addr"] <= entry & ~1 < text["sh_addr"] + text["sh_size"]
    for sec in loaded:
        addr, end = sec["sh_addr"], sec["sh_addr"] + sec["sh_size"]
        in_fw_flash = flash_lo <= addr and end <= flash_lo + board.memory.plan_offset
        in_ram = ram_lo <= addr and end <= ram_lo + board.sram_bytes
        assert in_fw_flash or in_ram, f"{sec.name} at {addr:#x}..{end:#x} is outside {name}'s memory"
    # the raw binary is what a probe writes at the flash base: it must end below the plan blob
    assert image_end <= flash_lo + board.memory.plan_offset
    assert fw.bin.stat().st_size == image_end - flash_lo <= board.memory.plan_offset
    assert fw.static_bytes + fw.stack_bytes < board.sram_bytes


@pytest.mark.parametrize("name", BOARDS)
def test_hardware_image_has_its_port_and_the_marker(name: str):
    fw = _hardware_image(load_catalogue()[name])
    with fw.elf.open("rb") as fh:
        elf = ELFFile(fh)
        symbols = _symbols(elf)
        text = elf.get_section_by_name(".text")
        code, base = text.data(), text["sh_addr"]
        # the marker GPIO writes a register: more than the twins' empty function
        _, size, kind = symbols["port_marker"]
        assert kind == "STT_FUNC" and size > 2
        for fn in ("board_clock_init", "board_uart_init", "board_marker_init", "port_ticks", "Fault_Handler"):
            assert symbols.get(fn, (0, 0, ""))[2] == "STT_FUNC", f"{name}: {fn} missing"
        # no semihosting call (BKPT 0xAB): without a debugger it would fault on a board
        for fn_addr, fn_size, fn_kind in symbols.values():
            if fn_kind != "STT_FUNC" or not base <= fn_addr < base + len(code):
                continue
            start = (fn_addr & ~1) - base
            body = code[start:start + fn_size]
            halfwords = {body[i:i + 2] for i in range(0, len(body) - 1, 2)}
            assert b"\xab\xbe" not in halfwords, f"{name}: semihosting BKPT in the hardware image at {fn_addr:#x}"


def test_rp2040_boot2_is_256_bytes_with_the_bootrom_crc():
    board = load_catalogue()["rpi-pico"]
    fw = _hardware_image(board)
    with fw.elf.open("rb") as fh:
        boot2 = ELFFile(fh).get_section_by_name(".boot2")
        assert boot2 is not None and boot2["sh_addr"] == board.memory.flash_base == 0x10000000
        assert boot2["sh_size"] == 256
        data = boot2.data()
    stored = int.from_bytes(data[252:256], "little")
    assert stored == _crc32_rp2040_bootrom(data[:252])
    assert fw.bin.read_bytes()[:256] == data  # the binary written to flash starts with the same 256 bytes
    # boot2 jumps to the vector table at +0x100 and sets VTOR: both constants must be in its literal pool
    assert (0x10000100).to_bytes(4, "little") in data[:252] and (0xE000ED08).to_bytes(4, "little") in data[:252]


def test_port_refuses_a_clock_it_was_not_written_for(tmp_path):
    """The clock trees are fixed per port: a cpu_hz that does not match fails the build with a clear error."""
    board = load_catalogue()["nucleo-f746zg"]
    cmd = ["make", "-s", "-C", str(FIRMWARE_DIR), "image", "PORT=stm32f7", f"BOARD={board.name}",
           f"CPU_CFLAGS={board.build.cflags}", "FLASH_ORIGIN=0x08000000", "FLASH_BYTES=1048576",
           "RAM_ORIGIN=0x20000000", "RAM_BYTES=327680", "PLAN_OFFSET=0x20000", "STACK_BYTES=16384",
           "CPU_HZ=180000000", "BUILD_ID=x", f"OUT={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert "set up for 216 MHz" in proc.stderr
