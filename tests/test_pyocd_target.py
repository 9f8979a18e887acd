"""PyocdTarget without a board: pyocd's ConnectHelper and FileProgrammer are replaced by FAKES that record calls.

The fakes stand exactly where pyocd's API starts (what the target calls, with the semantics pyocd documents: exact
unique-id match first, else a case-insensitive contains match; sessions as context managers). The board's serial side
is a FAKE device thread on a real pty that answers PING with HELLO, so the build-id check runs through real pyserial
and the real Link. One test calls the REAL pyocd probe listing on this machine.
"""

from __future__ import annotations

import os
import select
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import serial
from pyocd.core import exceptions as pyocd_exc

from bench.config.boards import RackEntry, load_catalogue
from bench.image.firmware import Blob, Firmware, ImageSet
from bench.link.protocol import FrameDecoder, Hello, Ping, Pong, decode_command, encode_message
from bench.link.session import running_build_id
from bench.target.drivers import (
    FlashError,
    PackMissing,
    PortError,
    ProbeAmbiguous,
    ProbeNotFound,
    PyocdTarget,
    TargetError,
    port_problem,
)
from bench.target.factory import make_target

BOARD = load_catalogue()["nucleo-f746zg"]
UID = "066DFF535155878281123456"


# -- fakes at pyocd's API boundary ------------------------------------------------------------------------------


@dataclass
class FakeProbe:
    unique_id: str
    vendor_name: str = "STMicroelectronics"
    product_name: str = "STLINK-V2-1"

    @property
    def description(self) -> str:
        return f"{self.vendor_name} {self.product_name}"


@dataclass
class FakeTarget:
    world: FakeWorld

    def reset(self) -> None:
        self.world.resets += 1

    def read32(self, addr: int) -> int:
        self.world.word_reads.append(addr)
        return self.world.words.get(addr, 1 if addr == 0x4001E400 else 0xFFFFFFFF)  # NVMC READY; erased UICR

    def write32(self, addr: int, value: int) -> None:
        self.world.word_writes.append((addr, value))
        self.world.words[addr] = value

    def read_memory_block8(self, addr: int, size: int) -> list[int]:
        self.world.reads.append((addr, size))
        data = bytearray(size)
        for start, blob in self.world.flash.items():
            lo, hi = max(addr, start), min(addr + size, start + len(blob))
            if lo < hi:
                data[lo - addr:hi - addr] = blob[lo - start:hi - start]
        return list(data)


@dataclass
class FakeSession:
    world: FakeWorld
    probe: FakeProbe
    kwargs: dict[str, Any]
    opened: bool = False
    closed: bool = False

    def __post_init__(self) -> None:
        self.target = FakeTarget(self.world)

    def __enter__(self) -> FakeSession:
        if self.world.open_error is not None:
            self.closed = True  # pyocd's Session.__enter__ closes itself when open() fails
            raise self.world.open_error
        self.opened = True
        return self

    def __exit__(self, *exc: object) -> bool:
        self.closed = True
        return False


@dataclass
class FakeWorld:
    """A bench's worth of fake probes and flash; ``helper`` and ``programmer`` replace the pyocd classes."""

    probes: list[FakeProbe]
    flash: dict[int, bytes] = field(default_factory=dict)
    running_build: str = "old-build"
    elf_builds: dict[str, str] = field(default_factory=dict)
    sessions: list[FakeSession] = field(default_factory=list)
    programmed: list[tuple[str, int | None]] = field(default_factory=list)
    listings: list[dict[str, Any]] = field(default_factory=list)
    fail_programs: int = 0
    program_error: Exception | None = None
    open_error: Exception | None = None
    resets: int = 0
    reads: list[tuple[int, int]] = field(default_factory=list)
    words: dict[int, int] = field(default_factory=dict)
    word_reads: list[int] = field(default_factory=list)
    word_writes: list[tuple[int, int]] = field(default_factory=list)

    def matching(self, unique_id: str | None) -> list[FakeProbe]:
        if unique_id is None:
            return list(self.probes)
        exact = [p for p in self.probes if p.unique_id == unique_id]
        return exact or [p for p in self.probes if unique_id.lower() in p.unique_id.lower()]

    @property
    def helper(self) -> Any:
        world = self

        class FakeConnectHelper:
            @staticmethod
            def get_all_connected_probes(blocking: bool = True, unique_id: str | None = None,
                                         print_wait_message: bool = True) -> list[FakeProbe]:
                assert blocking is False, "the bench must never wait for a probe"
                world.listings.append({"unique_id": unique_id})
                return world.matching(unique_id)

            @staticmethod
            def session_with_chosen_probe(blocking: bool = True, return_first: bool = False,
                                          unique_id: str | None = None, options: dict | None = None,
                                          **kwargs: Any) -> FakeSession | None:
                assert blocking is False
                found = world.matching(unique_id)
                if not found or (len(found) > 1 and not return_first):
                    return None
                session = FakeSession(world, found[0], {"unique_id": unique_id, "options": options,
                                                        "return_first": return_first, **kwargs})
                world.sessions.append(session)
                return session

        return FakeConnectHelper

    @property
    def programmer(self) -> Any:
        world = self

        class FakeFileProgrammer:
            def __init__(self, session: FakeSession, smart_flash: bool = True, **kwargs: Any) -> None:
                assert session.opened and not session.closed, "programming outside an open session"
                assert smart_flash

            def program(self, path: str, file_format: str | None = None, base_address: int | None = None) -> None:
                if world.program_error is not None:
                    raise world.program_error
                if world.fail_programs:
                    world.fail_programs -= 1
                    raise pyocd_exc.FlashProgramFailure("flash algo failed", address=0x08000000, result_code=1)
                world.programmed.append((Path(path).name, base_address))
                if path.endswith(".elf"):
                    world.running_build = world.elf_builds[path]
                    world.flash[BOARD.memory.flash_base] = Path(path).with_suffix(".bin").read_bytes()
                else:
                    world.flash[base_address] = Path(path).read_bytes()

        return FakeFileProgrammer


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> FakeWorld:
    from pyocd.core import helpers
    from pyocd.flash import file_programmer

    w = FakeWorld(probes=[FakeProbe(UID)])
    monkeypatch.setattr(helpers, "ConnectHelper", w.helper)
    monkeypatch.setattr(file_programmer, "FileProgrammer", w.programmer)
    return w


# -- a fake device on a real pty: answers PING with HELLO carrying the build in the fake flash -------------------


class FakeHelloDevice:
    def __init__(self, fd: int, world: FakeWorld) -> None:
        self.fd, self.world = fd, world
        self.pings = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        decoder = FrameDecoder()
        while not self._stop.is_set():
            if not select.select([self.fd], [], [], 0.005)[0]:
                continue
            try:
                data = os.read(self.fd, 4096)
            except OSError:
                return
            for frame in decoder.feed(data):
                cmd = decode_command(frame)
                if isinstance(cmd, Ping):
                    self.pings += 1
                    hello = Hello(1, 1, BOARD.cpu_hz, BOARD.cpu_hz, BOARD.sram_bytes, BOARD.flash_bytes, 0, 0, 0,
                                  BOARD.name, self.world.running_build)
                    os.write(self.fd, b"\0" + encode_message(hello, 0) + encode_message(Pong(cmd.nonce), 1))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)


@pytest.fixture
def port(world: FakeWorld) -> Iterator[tuple[str, FakeHelloDevice]]:
    master, slave = os.openpty()
    device = FakeHelloDevice(master, world)
    yield os.ttyname(slave), device
    device.stop()
    os.close(master)
    os.close(slave)


def make_images(tmp_path: Path, world: FakeWorld, build_id: str = "new-build") -> ImageSet:
    tmp_path.mkdir(parents=True, exist_ok=True)
    elf, binary = tmp_path / "firmware.elf", tmp_path / "firmware.bin"
    elf.write_bytes(b"\x7fELF" + build_id.encode())
    binary.write_bytes(b"vectors+code " + build_id.encode())
    world.elf_builds[str(elf)] = build_id
    fw = Firmware(board=BOARD.name, variant="hardware", build_id=build_id, protocol_version=1, elf=elf, bin=binary,
                  flash_bytes=4096, static_bytes=1024, stack_bytes=BOARD.build.stack_bytes)
    plan_addr = BOARD.plan_addr(emulated=False)
    blobs = []
    for what, addr, data in (("plan", plan_addr, b"plan v1" * 10), ("dataset", plan_addr + 4096, b"data" * 100)):
        (tmp_path / f"{what}.bin").write_bytes(data)
        blobs.append(Blob(what, addr, tmp_path / f"{what}.bin", len(data)))
    return ImageSet(board=BOARD, kind="hardware", firmware=fw, blobs=tuple(blobs), plan_hash=1, arena_bytes=0)


def target(port: str | None, sleeps: list[float] | None = None, **entry: Any) -> PyocdTarget:
    fields = {"board": BOARD.name, "kind": "hardware", "name": "f7-a", "probe_uid": UID, "port": port} | entry
    recorded = sleeps if sleeps is not None else []
    return PyocdTarget(BOARD, RackEntry(**fields), hello_timeout=1.0, sleep=recorded.append,
                       identify=running_build_id)


def written(t: PyocdTarget) -> dict[str, int]:
    return {p.what: p.bytes_written for p in t.last_programmed}


# -- programming and skipping ------------------------------------------------------------------------------------


def test_first_load_programs_all_and_repeat_programs_zero_firmware_bytes_with_fake_probe(
        world: FakeWorld, port: tuple[str, FakeHelloDevice], tmp_path: Path) -> None:
    path, device = port
    images = make_images(tmp_path, world)
    first = target(path, swd_frequency=4_000_000, connect_mode="under-reset")
    first.load(images)
    first.reset()
    assert written(first) == {"firmware": 4096, "plan": 70, "dataset": 400}
    assert "board ran build old-build" in first.last_programmed[0].reason
    session = world.sessions[0]
    assert session.kwargs == {"unique_id": UID, "target_override": "stm32f746zg", "return_first": False,
                              "options": {"frequency": 4_000_000, "connect_mode": "under-reset"}}
    assert [name for name, _ in world.programmed] == ["firmware.elf", "plan.bin", "dataset.bin"]
    assert world.programmed[1][1] == BOARD.plan_addr(emulated=False)
    assert len(world.sessions) == 1, "reset() right after load() must not open another probe session"

    again = target(path)
    again.load(images)
    assert written(again) == {"firmware": 0, "plan": 0, "dataset": 0}
    assert "already runs build new-build (HELLO)" in again.last_programmed[0].reason
    assert device.pings == 2
    assert all(s.closed for s in world.sessions)


def test_changed_blob_is_programmed_while_firmware_is_skipped_with_fake_probe(
        world: FakeWorld, port: tuple[str, FakeHelloDevice], tmp_path: Path) -> None:
    images = make_images(tmp_path, world)
    target(port[0]).load(images)
    images.blobs[0].path.write_bytes(b"plan v2" * 10)  # another technique: same firmware, new plan
    t = target(port[0])
    t.load(images)
    assert written(t) == {"firmware": 0, "plan": 70, "dataset": 0}


def test_firmware_skipped_by_flash_read_back_when_no_port_answers_with_fake_probe(
        world: FakeWorld, tmp_path: Path) -> None:
    images = make_images(tmp_path, world)
    world.flash[BOARD.memory.flash_base] = images.firmware.bin.read_bytes()
    t = target(None)
    t.load(images)
    assert written(t)["firmware"] == 0
    assert t.last_programmed[0].reason == "flash read-back matches the image"
    assert (BOARD.memory.flash_base, images.firmware.bin.stat().st_size) in world.reads


def test_hello_from_other_build_programs_firmware_with_fake_probe(
        world: FakeWorld, port: tuple[str, FakeHelloDevice], tmp_path: Path) -> None:
    old = make_images(tmp_path / "old", world, build_id="build-a")
    target(port[0]).load(old)
    t = target(port[0])
    t.load(make_images(tmp_path / "new", world, build_id="build-b"))
    assert written(t)["firmware"] == 4096 and world.running_build == "build-b"


# -- retries and failure classification --------------------------------------------------------------------------


def test_flash_failure_is_retried_with_exponential_backoff_with_fake_probe(world: FakeWorld, tmp_path: Path) -> None:
    world.fail_programs = 2
    sleeps: list[float] = []
    t = target(None, sleeps)
    t.load(make_images(tmp_path, world))
    assert sleeps == [0.5, 1.0]
    assert len(world.sessions) == 3 and all(s.closed for s in world.sessions)
    assert written(t)["firmware"] == 4096


def test_persistent_flash_failure_is_a_flash_error_not_a_test_failure_with_fake_probe(
        world: FakeWorld, tmp_path: Path) -> None:
    world.fail_programs = 100
    sleeps: list[float] = []
    with pytest.raises(FlashError) as info:
        target(None, sleeps).load(make_images(tmp_path, world))
    assert info.value.attempts == 4 and sleeps == [0.5, 1.0, 2.0]
    assert "f7-a: programming failed after 4 attempts: FlashProgramFailure: flash algo failed" in str(info.value)
    assert isinstance(info.value.__cause__, pyocd_exc.FlashFailure)
    assert not isinstance(info.value, AssertionError)  # the runner tells it apart from a failing check
    assert all(s.closed for s in world.sessions)


def test_transfer_error_on_connect_is_retried_with_fake_probe(world: FakeWorld, tmp_path: Path) -> None:
    world.open_error = pyocd_exc.TransferError("SWD ack fault")
    sleeps: list[float] = []
    with pytest.raises(FlashError, match="SWD ack fault"):
        target(None, sleeps, connect_mode="under-reset").load(make_images(tmp_path, world))
    assert len(sleeps) == 3 and all(s.closed for s in world.sessions)


def test_unknown_target_says_which_pack_to_install_and_is_not_retried_with_fake_probe(
        world: FakeWorld, tmp_path: Path) -> None:
    world.open_error = pyocd_exc.TargetSupportError("Target type stm32f746zg not recognized. Use 'pyocd list'")
    sleeps: list[float] = []
    with pytest.raises(PackMissing) as info:
        target(None, sleeps).load(make_images(tmp_path, world))
    assert "install its CMSIS pack: `pyocd pack install stm32f746zg`" in str(info.value)
    assert sleeps == [] and len(world.sessions) == 1 and world.sessions[0].closed


def test_unexpected_error_inside_session_still_closes_it_with_fake_probe(world: FakeWorld, tmp_path: Path) -> None:
    world.program_error = KeyError("boom")
    with pytest.raises(KeyError):
        target(None).load(make_images(tmp_path, world))
    assert len(world.sessions) == 1 and world.sessions[0].closed


# -- choosing the probe ------------------------------------------------------------------------------------------


def test_no_probe_found_lists_attached_probes_with_fake_probe(world: FakeWorld, tmp_path: Path) -> None:
    world.probes = [FakeProbe("E6614103E7", "Raspberry Pi", "Debug Probe (CMSIS-DAP)")]
    with pytest.raises(ProbeNotFound) as info:
        target(None).load(make_images(tmp_path, world))
    assert str(info.value) == ("f7-a: no debug probe found for probe_uid 066DFF535155878281123456; attached: "
                               "E6614103E7 (Raspberry Pi Debug Probe (CMSIS-DAP))")
    assert world.sessions == []
    world.probes = []
    with pytest.raises(ProbeNotFound, match=r"attached: none$"):
        target(None).load(make_images(tmp_path, world))


def test_two_matching_probes_ask_for_the_full_uid_with_fake_probe(world: FakeWorld, tmp_path: Path) -> None:
    world.probes = [FakeProbe("066DFF111"), FakeProbe("066DFF222")]
    with pytest.raises(ProbeAmbiguous) as info:
        target(None, probe_uid="066DFF").load(make_images(tmp_path, world))
    assert "2 debug probes match probe_uid 066DFF: 066DFF111 (STMicroelectronics STLINK-V2-1); 066DFF222" in \
        str(info.value)
    assert "set probe_uid in the rack entry" in str(info.value)
    with pytest.raises(ProbeAmbiguous, match=r"match \(no probe_uid set\)"):
        target(None, probe_uid=None).load(make_images(tmp_path, world))
    assert world.sessions == [], "never flash one of two candidates"


def test_full_uid_that_is_a_prefix_of_another_picks_the_exact_probe_with_fake_probe(
        world: FakeWorld, tmp_path: Path) -> None:
    world.probes = [FakeProbe("0668"), FakeProbe("06681")]
    target(None, probe_uid="0668").load(make_images(tmp_path, world))
    assert world.sessions[0].probe.unique_id == "0668"


def test_later_reset_opens_and_closes_its_own_session_with_fake_probe(
        world: FakeWorld, port: tuple[str, FakeHelloDevice], tmp_path: Path) -> None:
    t = target(port[0])
    t.load(make_images(tmp_path, world))
    t.reset()
    resets = world.resets
    t.reset()
    assert world.resets == resets + 1 and len(world.sessions) == 2 and all(s.closed for s in world.sessions)


# -- serial port errors (real pyserial) ---------------------------------------------------------------------------


def test_vanished_port_is_named_with_fake_probe(world: FakeWorld, tmp_path: Path) -> None:
    gone = "/dev/serial/by-id/usb-STMicroelectronics_STM32_STLink_066DFF-if02"
    with pytest.raises(PortError) as info:
        target(gone).load(make_images(tmp_path, world))
    assert str(info.value).startswith(f"serial port {gone} of f7-a vanished")
    assert len(world.sessions) == 1 and world.sessions[0].closed


def test_busy_port_is_named() -> None:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    try:
        with serial.serial_for_url(path, exclusive=True), pytest.raises(PortError) as info:
            target(path).check_port()
        assert f"serial port {path} is busy: another process holds it open (find it with `fuser -v {path}`)" in \
            str(info.value)
    finally:
        os.close(master)
        os.close(slave)


def test_unreachable_rfc2217_port_is_named() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]  # closed again before use: nothing listens there
    url = f"rfc2217://127.0.0.1:{free}"
    with pytest.raises(PortError, match=rf"serial port {url} is unreachable: is ser2net"):
        target(url).check_port()


def test_port_problem_classifies_pyserial_errors() -> None:
    vanished = serial.SerialException(2, "could not open port /dev/ttyACM7: [Errno 2] No such file or directory")
    assert "vanished" in str(port_problem("/dev/ttyACM7", vanished))
    denied = serial.SerialException(13, "could not open port /dev/ttyACM7: [Errno 13] Permission denied")
    assert "'dialout' group" in str(port_problem("/dev/ttyACM7", denied))


def test_rack_entry_without_port_is_a_clear_error() -> None:
    with pytest.raises(TargetError, match="the rack entry has no 'port'"):
        _ = target(None).url


def test_make_target_builds_a_pyocd_target_for_hardware_entries(tmp_path: Path) -> None:
    t = make_target(RackEntry(board=BOARD.name, kind="hardware", probe_uid=UID, port="/dev/null"), BOARD, tmp_path)
    assert isinstance(t, PyocdTarget) and t.journal_dir == tmp_path


# -- the real pyocd on this machine --------------------------------------------------------------------------------


def test_real_pyocd_probe_listing_answers_on_this_machine() -> None:
    """The REAL ConnectHelper: no probe is attached here, so it answers an empty list without blocking."""
    from pyocd.core.helpers import ConnectHelper

    probes = ConnectHelper.get_all_connected_probes(blocking=False)
    assert isinstance(probes, list)
    if probes:
        pytest.skip(f"a probe is attached: {[p.unique_id for p in probes]}")
    with pytest.raises(ProbeNotFound, match=r"no debug probe found for probe_uid .*; attached: none"):
        target(None).choose_probe()


def test_an_nrf52840_load_leaves_the_debug_port_unlocked_with_fake_probe(world: FakeWorld, tmp_path: Path) -> None:
    """UICR.APPROTECT = HwDisabled written once via the NVMC (write enable, word, read only); not on other boards."""
    nrf = load_catalogue()["nrf52840-dk"]
    images = make_images(tmp_path, world)

    def nrf_target() -> PyocdTarget:
        return PyocdTarget(nrf, RackEntry(board=nrf.name, kind="hardware", probe_uid=UID), sleep=lambda s: None)

    first = nrf_target()
    first.load(images)
    assert world.word_writes == [(0x4001E504, 1), (0x10001208, 0x5A), (0x4001E504, 0)]
    assert written(first)["uicr"] == 4
    again = nrf_target()
    again.load(images)
    assert written(again)["uicr"] == 0 and len(world.word_writes) == 3  # already HwDisabled: nothing written
    world.words[0x10001208] = 0x00  # protected by an earlier tool: not silently "fixed"
    with pytest.raises(FlashError, match=r"UICR\.APPROTECT is 0x00000000"):
        nrf_target().load(images)
    world.word_reads.clear()
    target(None).load(images)  # the STM32 board: UICR is none of its business
    assert world.word_reads == []


def test_without_pyocd_a_real_board_is_a_clear_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyocd is the [hardware] extra: an emulated-rack install has none, and a real board then says what to install
    (sys.modules[...] = None makes the import fail as if pyocd were absent)."""
    from click.testing import CliRunner

    from bench.app.cli import main
    from bench.target.drivers import TargetError, _pyocd

    for name in ("pyocd", "pyocd.core", "pyocd.core.helpers", "pyocd.flash"):
        monkeypatch.setitem(__import__("sys").modules, name, None)
    with pytest.raises(TargetError, match=r"pip install 'mcu-train-bench\[hardware\]'"):
        _pyocd()
    result = CliRunner().invoke(main, ["rack", "scan"])
    assert result.exit_code == 1 and "mcu-train-bench[hardware]" in result.output, result.output
