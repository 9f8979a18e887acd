"""Target stage: something you can load an image set into, reset, and read a byte stream from.

``QemuTarget`` runs a board's twin: the board's firmware image on the QEMU machine that can execute its code, blobs
placed by QEMU's loader device (what pyocd's FileProgrammer does on a board), serial on a pty that the Link opens with
pyserial like a real port, and ``-icount`` so counter ticks are deterministic instruction counts. ``PyocdTarget``
drives a real board through its SWD probe. Both say how their counter ticks convert to counts (``Counting``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bench.boards import Board, RackEntry
from bench.image import ImageSet

PTY_RE = re.compile(rb"char device redirected to (/dev/pts/\d+)")


class TargetError(RuntimeError):
    """A target could not be started, loaded or reached; the message says which and why."""


@dataclass(frozen=True)
class Counting:
    """How raw counter ticks become counts: instructions on a twin (icount), cycles on hardware (DWT)."""

    unit: str
    counts_per_tick: float

    def convert(self, ticks: float) -> float:
        return ticks * self.counts_per_tick


class Target(Protocol):
    kind: str
    board: Board

    def load(self, images: ImageSet) -> None: ...

    def reset(self) -> None: ...

    @property
    def url(self) -> str: ...

    def counting(self, counter_hz: int, counter_kind: int) -> Counting: ...

    def close(self) -> None: ...


class QemuTarget:
    """A board's emulated twin under qemu-system-arm."""

    kind = "emulated"

    def __init__(self, board: Board, log_path: Path, start_timeout: float = 20.0) -> None:
        self.board, self.log_path, self.start_timeout = board, log_path, start_timeout
        self._images: ImageSet | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._url: str | None = None

    def command(self, images: ImageSet) -> list[str]:
        twin = self.board.twin
        cmd = ["qemu-system-arm", "-M", twin.machine, "-display", "none", "-monitor", "none",
               "-serial", "pty", "-semihosting-config", "enable=on,target=native",
               "-icount", f"shift={twin.icount_shift},align=off,sleep=off", "-kernel", str(images.firmware.elf)]
        for blob in images.blobs:
            cmd += ["-device", f"loader,file={blob.path},addr={blob.addr:#x}"]
        return cmd

    def load(self, images: ImageSet) -> None:
        if images.kind != self.kind:
            raise TargetError(f"{self.board.name}: a {images.kind} image set cannot load into a QEMU twin")
        if shutil.which("qemu-system-arm") is None:
            raise TargetError("qemu-system-arm not found: install Debian's qemu-system-arm (`make bootstrap`)")
        self._images = images

    def reset(self) -> None:
        """(Re)start the twin from reset with the loaded images; the firmware then waits for a command."""
        if self._images is None:
            raise TargetError(f"{self.board.name}: reset before load")
        self.close()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(self.command(self._images), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        found = threading.Event()
        threading.Thread(target=self._pump, args=(self._proc, found), daemon=True).start()
        if not found.wait(self.start_timeout) or self._url is None:
            code = self._proc.poll()
            self.close()
            raise TargetError(f"{self.board.name}: QEMU did not open its serial pty within {self.start_timeout}s "
                              f"(exit code {code}); see {self.log_path}")

    def _pump(self, proc: subprocess.Popen[bytes], found: threading.Event) -> None:
        """Copy QEMU's own output to its log, noting the pty it opened for the UART."""
        assert proc.stdout is not None
        with self.log_path.open("ab") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                match = PTY_RE.search(line)
                if match and not found.is_set():
                    self._url = match.group(1).decode()
                    found.set()
        found.set()

    @property
    def url(self) -> str:
        if self._url is None:
            raise TargetError(f"{self.board.name}: twin not running")
        return self._url

    def exit_code(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def counting(self, counter_hz: int, counter_kind: int) -> Counting:
        if counter_kind != 0:
            raise TargetError(f"{self.board.name}: twin firmware reported counter kind {counter_kind}, expected 0")
        ns_per_instruction = 2 ** self.board.twin.icount_shift
        return Counting("instructions", 1e9 / counter_hz / ns_per_instruction)

    def close(self) -> None:
        proc, self._proc, self._url = self._proc, None, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class PyocdTarget:
    """A real board behind an SWD probe, programmed with pyocd; its serial port comes from the rack entry."""

    kind = "hardware"

    def __init__(self, board: Board, entry: RackEntry) -> None:
        self.board, self.entry = board, entry
        self._images: ImageSet | None = None

    def load(self, images: ImageSet) -> None:
        from pyocd.core.helpers import ConnectHelper
        from pyocd.flash.file_programmer import FileProgrammer

        options = {k: v for k, v in (("frequency", self.entry.swd_frequency),
                                     ("connect_mode", self.entry.connect_mode)) if v is not None}
        session = ConnectHelper.session_with_chosen_probe(
            unique_id=self.entry.probe_uid, target_override=self.board.pyocd.target, options=options,
            return_first=True, blocking=False)
        if session is None:
            raise TargetError(f"{self.entry.label}: no debug probe found (uid {self.entry.probe_uid or 'any'})")
        with session:
            programmer = FileProgrammer(session, smart_flash=True)
            programmer.program(str(images.firmware.elf))
            for blob in images.blobs:
                programmer.program(str(blob.path), base_address=blob.addr)
            session.target.reset()
        self._images = images

    def reset(self) -> None:
        from pyocd.core.helpers import ConnectHelper

        session = ConnectHelper.session_with_chosen_probe(
            unique_id=self.entry.probe_uid, target_override=self.board.pyocd.target, return_first=True,
            blocking=False)
        if session is None:
            raise TargetError(f"{self.entry.label}: no debug probe found for reset")
        with session:
            session.target.reset()

    @property
    def url(self) -> str:
        if not self.entry.port:
            raise TargetError(f"{self.entry.label}: the rack entry has no 'port' (a device path or pyserial URL)")
        return self.entry.port

    def counting(self, counter_hz: int, counter_kind: int) -> Counting:
        return Counting("cycles", 1.0 if counter_kind == 1 else self.board.cpu_hz / counter_hz)

    def close(self) -> None:
        """Nothing stays open between calls: each pyocd session is closed where it was opened."""


def make_target(entry: RackEntry, board: Board, log_dir: Path) -> QemuTarget | PyocdTarget:
    if entry.kind == "emulated":
        return QemuTarget(board, log_dir / f"{entry.label}.qemu.log")
    return PyocdTarget(board, entry)
