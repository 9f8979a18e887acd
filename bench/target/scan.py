"""Rack discovery: which debug probes and USB serial ports are attached, which board each one is, and a rack file.

A probe and its board's virtual COM port are one USB device, so they share the USB serial number: that pairs a port
with a probe (the wrong-board-flashed complaint comes from guessing this by order). The board is the one pyocd
recognises behind the probe, else the one whose ``[serial].usb_vid_pid`` the port carries. Ports are written by their
``/dev/serial/by-id`` path, which survives re-enumeration, unlike ``/dev/ttyACM<n>``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config.boards import Board, RackEntry

BY_ID_DIR = Path("/dev/serial/by-id")


@dataclass(frozen=True)
class ProbeInfo:
    """One attached debug probe as pyocd reports it."""

    unique_id: str
    vendor: str
    product: str
    board_name: str | None = None  # board pyocd recognises behind the probe (ST-LINK / DAPLink board ids)
    board_target: str | None = None  # pyocd target type of that board


@dataclass(frozen=True)
class PortInfo:
    """One USB serial port as pyserial reports it, with its stable by-id path when udev made one."""

    device: str
    vid: int | None
    pid: int | None
    serial_number: str | None
    description: str = ""
    by_id: str | None = None

    @property
    def vid_pid(self) -> str | None:
        return None if self.vid is None or self.pid is None else f"{self.vid:04x}:{self.pid:04x}"

    @property
    def path(self) -> str:
        """What a rack file should name: the by-id path when there is one."""
        return self.by_id or self.device


@dataclass
class ScanResult:
    probes: list[ProbeInfo]
    ports: list[PortInfo]
    ignored_ports: list[str]  # non-USB ports (e.g. /dev/ttyS0): never a board's probe
    entries: list[RackEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _safe(probe: Any, attr: str) -> str:
    """A probe attribute, or a placeholder when the probe cannot be queried (busy, no permission)."""
    try:
        return str(getattr(probe, attr))
    except Exception as exc:  # pyocd raises its own errors and USB errors here; a scan must go on
        return f"? ({type(exc).__name__})"


def probe_info(probe: Any) -> ProbeInfo:
    """Describe a pyocd ``DebugProbe``."""
    try:
        info = probe.associated_board_info
    except Exception:  # a probe that cannot be queried still gets listed
        info = None
    return ProbeInfo(unique_id=str(probe.unique_id), vendor=_safe(probe, "vendor_name"),
                     product=_safe(probe, "product_name"), board_name=getattr(info, "name", None),
                     board_target=getattr(info, "target", None))


def list_probes() -> list[ProbeInfo]:
    """Attached probes, from pyocd without waiting (an empty list when there are none)."""
    from pyocd.core.helpers import ConnectHelper

    return [probe_info(p) for p in ConnectHelper.get_all_connected_probes(blocking=False)]


def by_id_links(directory: Path = BY_ID_DIR) -> dict[str, str]:
    """Map each real device path (/dev/ttyACM0) to its /dev/serial/by-id link."""
    if not directory.is_dir():
        return {}
    return {os.path.realpath(link): str(link) for link in sorted(directory.iterdir())}


def port_info(port: Any, links: dict[str, str]) -> PortInfo:
    """Describe a pyserial ``ListPortInfo``."""
    return PortInfo(device=port.device, vid=port.vid, pid=port.pid, serial_number=port.serial_number,
                    description=port.description or "", by_id=links.get(os.path.realpath(port.device)))


def list_ports(comports: Iterable[Any] | None = None, links: dict[str, str] | None = None
               ) -> tuple[list[PortInfo], list[str]]:
    """(USB serial ports, other ports ignored); ``comports`` defaults to pyserial's list."""
    if comports is None:
        from serial.tools import list_ports as lp

        comports = lp.comports()
    links = by_id_links() if links is None else links
    usb: list[Any] = []
    other: list[Any] = []
    for port in comports:
        (usb if port.vid is not None else other).append(port)
    return sorted((port_info(p, links) for p in usb), key=lambda p: p.path), sorted(p.device for p in other)


def same_serial(a: str | None, b: str | None) -> bool:
    """USB serial numbers compare case-insensitively and without leading zeros (J-Link pads them, pyocd not)."""
    if not a or not b:
        return False
    return a.lower().lstrip("0") == b.lower().lstrip("0")


def _same_board(probe: ProbeInfo, name: str, board: Board) -> bool:
    """pyocd's board table names the board, or gives a target with the ordering suffix (stm32f746zgtx)."""
    if probe.board_name and probe.board_name.lower() == name:
        return True
    return probe.board_target is not None and probe.board_target.lower().startswith(board.pyocd.target.lower())


def board_for(probe: ProbeInfo | None, port: PortInfo | None, catalogue: dict[str, Board]) -> tuple[str | None, str]:
    """(board name or None, how it was decided)."""
    if probe is not None and (probe.board_name or probe.board_target):
        named = [n for n, b in catalogue.items() if _same_board(probe, n, b)]
        if len(named) == 1:
            return named[0], f"pyocd recognises {probe.board_name or probe.board_target}"
    if port is not None and port.vid_pid:
        named = [n for n, b in catalogue.items() if (b.serial.usb_vid_pid or "").lower() == port.vid_pid]
        if len(named) == 1:
            return named[0], f"port VID:PID {port.vid_pid}"
        if len(named) > 1:
            return None, f"VID:PID {port.vid_pid} fits {', '.join(named)}"
    return None, "no board in boards/ has this probe's target or this port's VID:PID"


def _name(board: str, uid: str, taken: set[str]) -> str:
    """``<board>-<last 4 of uid>``, longer when that is taken: stable across scans, unique in the rack."""
    tail = "".join(c for c in uid.lower() if c.isalnum()) or "x"
    for n in range(4, len(tail) + 1):
        name = f"{board}-{tail[-n:]}"
        if name not in taken:
            return name
    i = 2
    while f"{board}-{tail}-{i}" in taken:
        i += 1
    return f"{board}-{tail}-{i}"


def match(probes: list[ProbeInfo], ports: list[PortInfo], catalogue: dict[str, Board]
          ) -> tuple[list[RackEntry], list[str]]:
    """Pair ports with probes by USB serial number, name the board, and say what could not be placed."""
    entries: list[RackEntry] = []
    notes: list[str] = []
    used: set[str] = set()
    for probe in probes:
        mine = [p for p in ports if same_serial(p.serial_number, probe.unique_id)]
        port = mine[0] if mine else None
        used.update(p.device for p in mine)
        if len(mine) > 1:
            notes.append(f"probe {probe.unique_id} has {len(mine)} ports ({', '.join(p.path for p in mine)}); "
                         f"chose {mine[0].path}: edit the rack file if the board's UART is on another")
        board, why = board_for(probe, port, catalogue)
        if board is None:
            notes.append(f"probe {probe.unique_id} ({probe.vendor} {probe.product}) not added: {why}")
            continue
        if port is None:
            notes.append(f"probe {probe.unique_id} ({board}) has no serial port with its USB serial number: "
                         "set 'port' by hand (a by-id path or rfc2217:// URL)")
        name = _name(board, probe.unique_id, {e.label for e in entries})
        entries.append(RackEntry(board=board, kind="hardware", name=name, probe_uid=probe.unique_id,
                                 port=port.path if port else None))
    for port in ports:
        if port.device not in used:
            board, why = board_for(None, port, catalogue)
            what = f"looks like {board} but no probe has its serial number" if board else why
            notes.append(f"port {port.path} ({port.vid_pid}, serial {port.serial_number}) not added: {what}")
    return entries, notes


def _quote(value: str) -> str:
    """A TOML basic string (JSON's escapes are valid TOML)."""
    return json.dumps(value, ensure_ascii=False)


def rack_toml(entries: list[RackEntry], name: str) -> str:
    """A rack file that ``bench.config.boards.load_rack`` reads back into the same entries."""
    lines = [f"# Rack written by `bench rack scan`. Check each port; see docs/rack.md.\nname = {_quote(name)}"]
    if not entries:
        lines.append("boards = []")
    for e in entries:
        lines.append("\n[[boards]]")
        for key in ("board", "kind", "name", "probe_uid", "port"):
            value = getattr(e, key)
            if value is not None:
                lines.append(f"{key} = {_quote(value)}")
    return "\n".join(lines) + "\n"


def scan(catalogue: dict[str, Board], probes: list[ProbeInfo] | None = None,
         comports: Iterable[Any] | None = None, links: dict[str, str] | None = None) -> ScanResult:
    """Discover probes and ports (real ones unless given) and match them to the catalogue."""
    probes = list_probes() if probes is None else probes
    ports, ignored = list_ports(comports, links)
    entries, notes = match(probes, ports, catalogue)
    return ScanResult(probes=probes, ports=ports, ignored_ports=ignored, entries=entries, notes=notes)
