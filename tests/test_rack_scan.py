"""``bench rack scan``: matching probes to ports to boards on FAKE pyocd probes and FAKE pyserial port listings,
the rack file it writes loading with ``load_rack``, and the REAL scan on this machine (no boards here)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bench.app.cli import main
from bench.config.boards import load_catalogue, load_rack
from bench.target.scan import ProbeInfo, by_id_links, list_ports, match, probe_info, rack_toml, same_serial, scan

CATALOGUE = load_catalogue()


@dataclass
class FakeBoardInfo:  # pyocd's BoardInfo
    name: str
    target: str


@dataclass
class FakePyocdProbe:  # what ConnectHelper.get_all_connected_probes returns
    unique_id: str
    vendor_name: str
    product_name: str
    associated_board_info: FakeBoardInfo | None = None


@dataclass
class FakeListPortInfo:  # what serial.tools.list_ports.comports() returns
    device: str
    vid: int | None = None
    pid: int | None = None
    serial_number: str | None = None
    description: str = "n/a"


STLINK = FakePyocdProbe("066DFF535155878281123456", "STMicroelectronics", "STLINK-V2-1",
                        FakeBoardInfo("NUCLEO-F746ZG", "stm32f746zgtx"))
JLINK = FakePyocdProbe("683123456", "Segger", "J-Link OB-nRF5340-NordicSemi")  # pyocd drops the leading zeros
PICOPROBE = FakePyocdProbe("E6614103E7396B2F", "Raspberry Pi", "Debug Probe (CMSIS-DAP)")
PORTS = [
    FakeListPortInfo("/dev/ttyACM0", 0x0483, 0x374B, "066DFF535155878281123456", "STM32 STLink"),
    FakeListPortInfo("/dev/ttyACM1", 0x1366, 0x1015, "000683123456", "J-Link - CDC"),
    FakeListPortInfo("/dev/ttyACM2", 0x2E8A, 0x000C, "E6614103E7396B2F", "Debug Probe (CMSIS-DAP)"),
    FakeListPortInfo("/dev/ttyACM3", 0x1915, 0xC00A, "C5A1B2C3D4E5", "PPK2"),  # an energy meter, not a board
    FakeListPortInfo("/dev/ttyS0"),
]
LINKS = {"/dev/ttyACM0": "/dev/serial/by-id/usb-STMicroelectronics_STM32_STLink_066DFF535155878281123456-if02"}


def fake_scan() -> Any:
    return scan(CATALOGUE, probes=[probe_info(p) for p in (STLINK, JLINK, PICOPROBE)], comports=PORTS, links=LINKS)


def test_probes_ports_and_boards_match_by_serial_and_vid_pid_with_fake_probes_and_ports() -> None:
    result = fake_scan()
    assert result.ignored_ports == ["/dev/ttyS0"]
    by_board = {e.board: e for e in result.entries}
    assert set(by_board) == {"nucleo-f746zg", "nrf52840-dk", "rpi-pico"}
    f7 = by_board["nucleo-f746zg"]
    assert (f7.kind, f7.name, f7.probe_uid, f7.port) == ("hardware", "nucleo-f746zg-3456", STLINK.unique_id, LINKS[
        "/dev/ttyACM0"])
    assert by_board["nrf52840-dk"].port == "/dev/ttyACM1" and by_board["nrf52840-dk"].probe_uid == "683123456"
    assert by_board["rpi-pico"].port == "/dev/ttyACM2"
    assert any("port /dev/ttyACM3 (1915:c00a, serial C5A1B2C3D4E5) not added" in n for n in result.notes)


def test_unknown_probe_and_orphan_port_are_reported_not_guessed_with_fake_probes_and_ports() -> None:
    mystery = ProbeInfo("ABCDEF", "ARM", "DAPLink CMSIS-DAP")
    ports, _ = list_ports([FakeListPortInfo("/dev/ttyACM5", 0x0483, 0x374B, "FFFF0000")], links={})
    entries, notes = match([mystery], ports, CATALOGUE)
    assert entries == []
    assert "probe ABCDEF (ARM DAPLink CMSIS-DAP) not added: no board in boards/" in notes[0]
    assert "looks like nucleo-f746zg but no probe has its serial number" in notes[1]


def test_probe_without_port_is_added_with_a_note_with_fake_probes() -> None:
    entries, notes = match([probe_info(STLINK)], [], CATALOGUE)
    assert entries[0].port is None and "set 'port' by hand" in notes[0]


def test_two_ports_of_one_probe_pick_the_first_and_say_so_with_fake_ports() -> None:
    ports, _ = list_ports([FakeListPortInfo("/dev/ttyACM1", 0x1366, 0x1015, "000683123456"),
                           FakeListPortInfo("/dev/ttyACM0", 0x1366, 0x1015, "000683123456")], links={})
    entries, notes = match([probe_info(JLINK)], ports, CATALOGUE)
    assert entries[0].port == "/dev/ttyACM0" and "has 2 ports" in notes[0]


def test_same_board_twice_gets_distinct_stable_names_with_fake_probes() -> None:
    a = FakePyocdProbe("0670FF11113456", "STMicroelectronics", "STLINK-V2-1", STLINK.associated_board_info)
    b = FakePyocdProbe("0670FF22223456", "STMicroelectronics", "STLINK-V2-1", STLINK.associated_board_info)
    entries, _ = match([probe_info(a), probe_info(b)], [], CATALOGUE)
    assert [e.name for e in entries] == ["nucleo-f746zg-3456", "nucleo-f746zg-23456"]


def test_probe_that_cannot_be_queried_is_still_listed_with_fake_probe() -> None:
    class Busy:
        unique_id = "X1"

        def __getattr__(self, name: str) -> Any:
            raise OSError("[Errno 16] Resource busy")

    info = probe_info(Busy())
    assert (info.unique_id, info.vendor, info.board_name) == ("X1", "? (OSError)", None)


def test_serial_numbers_match_without_case_or_leading_zeros() -> None:
    assert same_serial("000683123456", "683123456") and same_serial("e6614103", "E6614103")
    assert not same_serial(None, "1") and not same_serial("12", "13")


def test_by_id_links_map_real_devices_to_stable_paths(tmp_path: Path) -> None:
    tty = tmp_path / "ttyACM9"
    tty.touch()
    (tmp_path / "by-id").mkdir()
    link = tmp_path / "by-id" / "usb-SEGGER_J-Link_000683123456-if00"
    os.symlink(tty, link)
    assert by_id_links(tmp_path / "by-id") == {str(tty): str(link)}
    assert by_id_links(tmp_path / "absent") == {}


def test_written_rack_loads_with_load_rack(tmp_path: Path) -> None:
    result = fake_scan()
    path = tmp_path / "lab.toml"
    path.write_text(rack_toml(result.entries, "lab"))
    rack = load_rack(str(path), CATALOGUE)
    assert rack.name == "lab" and rack.boards == tuple(result.entries)
    empty = tmp_path / "empty.toml"
    empty.write_text(rack_toml([], "empty"))
    assert load_rack(str(empty), CATALOGUE).boards == ()


def test_cli_scan_writes_rack_with_fake_probes_and_ports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pyocd.core import helpers
    from serial.tools import list_ports as lp

    class FakeConnectHelper:
        @staticmethod
        def get_all_connected_probes(blocking: bool = True, unique_id: str | None = None) -> list[Any]:
            assert blocking is False
            return [STLINK, PICOPROBE]

    monkeypatch.setattr(helpers, "ConnectHelper", FakeConnectHelper)
    monkeypatch.setattr(lp, "comports", lambda: PORTS)
    out = tmp_path / "rack.toml"
    result = CliRunner().invoke(main, ["rack", "scan", "--out", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "066DFF535155878281123456" in result.output and "Rack entries" in result.output
    rack = load_rack(str(out), CATALOGUE)
    assert [e.board for e in rack.boards] == ["nucleo-f746zg", "rpi-pico"]


def test_real_scan_on_this_machine_runs_cleanly(tmp_path: Path) -> None:
    """REAL pyocd and pyserial: no probe is attached here, so nothing is written unless asked."""
    result = scan(CATALOGUE)
    if result.probes:
        pytest.skip("a debug probe is attached to this machine")
    out = tmp_path / "rack.toml"
    run = CliRunner().invoke(main, ["rack", "scan", "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert "no debug probes found" in run.output and not out.exists()
    run = CliRunner().invoke(main, ["rack", "scan", "--out", str(out), "--write-empty"])
    assert run.exit_code == 0 and load_rack(str(out), CATALOGUE).boards == ()
