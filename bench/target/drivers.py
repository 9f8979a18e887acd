"""Target stage: something you can load an image set into, reset, and read a byte stream from.

``QemuTarget`` runs a board's twin: the board's firmware image on the QEMU machine that can execute its code, blobs
placed by QEMU's loader device (what pyocd's FileProgrammer does on a board), serial on a pty that the Link opens with
pyserial like a real port, and ``-icount`` so counter ticks are deterministic instruction counts. ``PyocdTarget``
drives a real board through its SWD probe. Both say how their counter ticks convert to counts (``Counting``).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import serial
from filelock import FileLock

from bench.config.boards import Board, RackEntry, lock_dir
from bench.image.firmware import Blob, ImageSet

PYOCD_MISSING = ("pyocd is not installed ({exc}): real boards need the hardware extra, "
                 "`pip install 'mcu-train-bench[hardware]'` (the emulated rack does not)")
PTY_RE = re.compile(rb"char device redirected to (/dev/pts/\d+)")
_T = TypeVar("_T")

log = logging.getLogger(__name__)


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


def die_with_parent(cmd: list[str]) -> list[str]:
    """``cmd`` run so that the kernel SIGKILLs it when the thread that started it dies: a twin never outlives a killed
    bench. util-linux's setpriv sets the parent-death signal and execs the command (same pid; Linux only, elsewhere
    the command as it is, and `close` remains the only cleanup). Not a preexec_fn: that is unsafe with threads."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *cmd] if setpriv else cmd


def listening(port: int) -> bool:
    """Whether something listens on TCP 127.0.0.1:``port`` (Linux: /proc/net/tcp, state 0A)."""
    wanted = f"0100007F:{port:04X}"
    try:
        rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(parts[1] == wanted and parts[3] == "0A" for parts in (row.split() for row in rows) if len(parts) > 3)


def twin_counting(board: Board, counter_hz: int, counter_kind: int) -> Counting:
    """A twin's counter ticks are -icount time: 2^shift ns per instruction."""
    if counter_kind != 0:
        raise TargetError(f"{board.name}: twin firmware reported counter kind {counter_kind}, expected 0")
    ns_per_instruction = 2 ** board.twin.icount_shift
    return Counting("instructions", 1e9 / counter_hz / ns_per_instruction)


class QemuTarget:
    """A board's emulated twin under qemu-system-arm."""

    kind = "emulated"

    def __init__(self, board: Board, log_path: Path, start_timeout: float = 20.0, serial_port: int | None = None
                 ) -> None:
        """``serial_port``: the UART on a TCP server at 127.0.0.1:PORT (`bench twin-host`, which a labgrid exporter
        serves) instead of a pty."""
        self.board, self.log_path, self.start_timeout = board, log_path, start_timeout
        self.serial_port = serial_port
        self._images: ImageSet | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._url: str | None = None

    def command(self, images: ImageSet) -> list[str]:
        twin = self.board.twin
        serial = "pty" if self.serial_port is None else f"tcp:127.0.0.1:{self.serial_port},server=on,wait=off"
        cmd = ["qemu-system-arm", "-M", twin.machine, "-display", "none", "-monitor", "none",
               "-serial", serial, "-semihosting-config", "enable=on,target=native",
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
        log.info("%s: starting QEMU (log %s)", self.board.name, self.log_path)
        log.debug("%s: %s", self.board.name, " ".join(self.command(self._images)))
        self._proc = subprocess.Popen(die_with_parent(self.command(self._images)), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        found = threading.Event()
        threading.Thread(target=self._pump, args=(self._proc, found), daemon=True).start()
        if self.serial_port is not None:
            self._await_tcp(found)
            found.set()  # up (url set) or not (url None: the error below)
        if not found.wait(self.start_timeout) or self._url is None:
            code = self._proc.poll()
            self.close()
            raise TargetError(f"{self.board.name}: QEMU did not open its serial port within {self.start_timeout}s "
                              f"(exit code {code}); see {self.log_path}")

    def _await_tcp(self, found: threading.Event) -> None:
        """The TCP serial is up once QEMU listens on it. Seen in the kernel's socket table, not by connecting: QEMU
        serves one client, and a probe connection would race the Link's own."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline and self._proc is not None and self._proc.poll() is None:
            if listening(self.serial_port or 0):
                self._url = f"socket://127.0.0.1:{self.serial_port}"
                found.set()
                return
            time.sleep(0.02)

    def _pump(self, proc: subprocess.Popen[bytes], found: threading.Event) -> None:
        """Copy QEMU's own output to its log, noting the pty it opened for the UART."""
        assert proc.stdout is not None
        with self.log_path.open("ab") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                match = PTY_RE.search(line)
                if match and not found.is_set() and self.serial_port is None:
                    self._url = match.group(1).decode()
                    found.set()
        if self.serial_port is None:
            found.set()

    @property
    def url(self) -> str:
        if self._url is None:
            raise TargetError(f"{self.board.name}: twin not running")
        return self._url

    def exit_code(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def counting(self, counter_hz: int, counter_kind: int) -> Counting:
        return twin_counting(self.board, counter_hz, counter_kind)

    def kill(self) -> None:
        """SIGKILL the twin (fault injection): to the host this is an unplugged board, its serial port gone."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def close(self) -> None:
        proc, self._proc, self._url = self._proc, None, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a stopped QEMU (SIGSTOP) takes SIGTERM only once continued
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# nRF52840 Product Specification: UICR.APPROTECT and NVMC registers; HwDisabled keeps the debug port open
NRF52_UICR_APPROTECT, NRF52_APPROTECT_HWDISABLED = 0x10001208, 0x5A
NRF52_NVMC_READY, NRF52_NVMC_CONFIG = 0x4001E400, 0x4001E504


class ProbeNotFound(TargetError):
    """No attached probe matches the rack entry; the message lists the probes that are attached."""


class ProbeAmbiguous(TargetError):
    """Several attached probes match: flashing one of them at random is how the wrong board gets flashed."""


class PackMissing(TargetError):
    """pyocd does not know the target type; its CMSIS pack must be installed first."""


class PortError(TargetError):
    """The board's serial port is busy, gone or unreachable; the message names the port."""


class FlashError(TargetError):
    """Connecting to or programming the board failed even after retries: a rack fault, not a test failure."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


@dataclass(frozen=True)
class ProgramPart:
    """What one load did with one part of the image set: bytes written (0 when skipped) and why."""

    what: str
    bytes_written: int
    reason: str


def port_problem(url: str, exc: BaseException) -> PortError:
    """Turn a pyserial/OS error into a message that names the port and the likely cause."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO) or "No such file" in text:
        why = "vanished (no such device now): is the board plugged in? see `ls -l /dev/serial/by-id/`"
    elif code in (errno.EBUSY, errno.EAGAIN) or "exclusively lock" in text or "busy" in text.lower():
        why = f"is busy: another process holds it open (find it with `fuser -v {url}`)"
    elif code in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        why = "is not accessible: add the user to the 'dialout' group (docs/rack.md)"
    elif "://" in url:
        why = "is unreachable: is ser2net (or the RFC 2217 server) running on that host and port?"
    else:
        why = "could not be opened"
    return PortError(f"serial port {url} {why} ({type(exc).__name__}: {text})")


@contextmanager
def open_port(url: str, baudrate: int) -> Iterator[serial.SerialBase]:
    """Open a port exclusively and always release it; pyserial errors become ``PortError``."""
    try:
        port = serial.serial_for_url(url, baudrate=baudrate, timeout=0.05, exclusive=True)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise port_problem(url, exc) from exc
    try:
        yield port
    finally:
        port.close()


def _pyocd() -> tuple[Any, Any, Any]:
    """pyocd's ConnectHelper, FileProgrammer and exceptions, looked up at call time (tests swap them for fakes)."""
    try:
        from pyocd.core import exceptions, helpers
        from pyocd.flash import file_programmer
    except ImportError as exc:
        raise TargetError(PYOCD_MISSING.format(exc=exc)) from None

    return helpers.ConnectHelper, file_programmer.FileProgrammer, exceptions


def describe_probes(probes: list[Any]) -> str:
    return "; ".join(f"{p.unique_id} ({p.description})" for p in probes) or "none"


# (url, baudrate, journal dir, journal name, timeout) -> the build id a board's firmware reports, or None. The
# conversation belongs to the link stage (`bench.link.session.running_build_id`); the runner hands it in.
Identify = Callable[[str, int, Path, str, float], "str | None"]


class PyocdTarget:
    """A real board behind an SWD probe, programmed with pyocd; its serial port comes from the rack entry.

    Every probe session and every port is opened in a ``with`` block, so an exception never leaves either held.
    Firmware is programmed only when the board does not already run the same build (HELLO build id, else a hash
    read back from flash); blobs only when their read-back hash differs. ``last_programmed`` records what a load
    wrote, so "a repeated run programs 0 bytes of firmware" can be checked.
    """

    kind = "hardware"

    def __init__(self, board: Board, entry: RackEntry, journal_dir: Path | None = None, retries: int = 3,
                 backoff_s: float = 0.5, hello_timeout: float = 2.0,
                 sleep: Callable[[float], None] = time.sleep, identify: Identify | None = None) -> None:
        self.board, self.entry, self.identify = board, entry, identify
        self.journal_dir = journal_dir or Path(tempfile.gettempdir()) / "bench-journal"
        self.retries, self.backoff_s, self.hello_timeout, self._sleep = retries, backoff_s, hello_timeout, sleep
        self.last_programmed: list[ProgramPart] = []
        self._fresh = False  # load() ended with a reset: the runner's reset() right after needs no new session

    # -- probe ---------------------------------------------------------------------------------------------

    def _options(self) -> dict[str, object]:
        pairs = (("frequency", self.entry.swd_frequency), ("connect_mode", self.entry.connect_mode))
        return {k: v for k, v in pairs if v is not None}

    def choose_probe(self) -> str:
        """The unique id of the one probe this entry means; errors list what is attached instead."""
        helper, _, _ = _pyocd()
        uid = self.entry.probe_uid
        # pyocd returns the probe whose id is exactly ``uid`` if there is one, else every id containing it
        probes = list(helper.get_all_connected_probes(blocking=False, unique_id=uid))
        if not probes:
            attached = describe_probes(list(helper.get_all_connected_probes(blocking=False)))
            wanted = f"probe_uid {uid}" if uid else "any probe"
            raise ProbeNotFound(f"{self.entry.label}: no debug probe found for {wanted}; attached: {attached}")
        if len(probes) > 1:
            raise ProbeAmbiguous(f"{self.entry.label}: {len(probes)} debug probes match "
                                 f"{'probe_uid ' + uid if uid else '(no probe_uid set)'}: {describe_probes(probes)};"
                                 " set probe_uid in the rack entry to the full unique id of one of them")
        return str(probes[0].unique_id)

    @contextmanager
    def session(self) -> Iterator[Any]:
        """An open pyocd session on this entry's probe, closed on exit whatever happens inside."""
        helper, _, _ = _pyocd()
        uid = self.choose_probe()
        session = helper.session_with_chosen_probe(
            unique_id=uid, target_override=self.board.pyocd.target, options=self._options(),
            return_first=False, blocking=False)
        if session is None:
            raise ProbeNotFound(f"{self.entry.label}: debug probe {uid} disappeared before the session opened")
        with session:
            yield session

    def _classify(self, exc: BaseException) -> BaseException:
        """Unknown target type → PackMissing (never retried); anything else is returned unchanged."""
        _, _, exceptions = _pyocd()
        if isinstance(exc, exceptions.TargetSupportError) and "not recognized" in str(exc):
            pack = self.board.pyocd.pack or self.board.pyocd.target
            return PackMissing(f"{self.entry.label}: pyocd does not know target '{self.board.pyocd.target}'; "
                               f"install its CMSIS pack: `pyocd pack install {pack}` ({exc})")
        return exc

    def with_retries(self, action: Callable[[], _T], what: str) -> _T:
        """Run ``action`` with exponential backoff on probe/flash faults; give up with ``FlashError``."""
        _, _, exceptions = _pyocd()
        retryable = (exceptions.TargetError, exceptions.ProbeError, exceptions.TimeoutError, OSError)
        attempts = self.retries + 1
        for attempt in range(attempts):
            try:
                return action()
            except exceptions.TargetSupportError as exc:
                raise self._classify(exc) from exc
            except retryable as exc:
                if attempt == attempts - 1:
                    raise FlashError(f"{self.entry.label}: {what} failed after {attempts} attempts: "
                                     f"{type(exc).__name__}: {exc}", attempts) from exc
                delay = self.backoff_s * 2 ** attempt
                log.warning("%s: %s failed (%s: %s); retry %d of %d in %.1f s", self.entry.label, what,
                            type(exc).__name__, exc, attempt + 1, self.retries, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")

    # -- programming ---------------------------------------------------------------------------------------

    def load(self, images: ImageSet) -> None:
        """Program what differs from what the board holds, then reset it; ``last_programmed`` says what was written."""
        if images.kind != self.kind:
            raise TargetError(f"{self.entry.label}: a {images.kind} image set cannot load into a real board")
        missing = [str(p) for p in (images.firmware.elf, *(b.path for b in images.blobs)) if not p.exists()]
        if missing:
            raise TargetError(f"{self.entry.label}: image files missing: {', '.join(missing)}")
        with flash_lock():  # pyocd misbehaves when several boards are programmed at once (pyOCD #226)
            self.last_programmed = self.with_retries(lambda: self._program(images), "programming")
        self._fresh = True

    def _program(self, images: ImageSet) -> list[ProgramPart]:
        _, programmer_cls, _ = _pyocd()
        with self.session() as session:
            session.target.reset()  # run whatever is in flash, so it can say which build it is
            parts = [self._program_firmware(session, programmer_cls, images)]
            uicr = self._nrf52_debug_unlocked(session)
            if uicr is not None:
                parts.append(uicr)
            for blob in images.blobs:
                parts.append(self._program_blob(session, programmer_cls, blob))
            session.target.reset()
        return parts

    def _nrf52_debug_unlocked(self, session: Any) -> ProgramPart | None:
        """nRF52840: UICR.APPROTECT = HwDisabled, so the debug port stays open across resets. On build codes with
        hardware APPROTECT an erased word relocks it at every reset, and each night's load would need a mass erase
        (and the build-id skip could never hold). Other boards: nothing (None)."""
        if not self.board.pyocd.target.startswith("nrf52"):
            return None
        target = session.target
        value = target.read32(NRF52_UICR_APPROTECT)
        if value & 0xFF == NRF52_APPROTECT_HWDISABLED:
            return ProgramPart("uicr", 0, "UICR.APPROTECT already HwDisabled")
        if value != 0xFFFFFFFF:
            raise FlashError(f"{self.entry.label}: UICR.APPROTECT is 0x{value:08x}, neither erased nor HwDisabled; "
                             f"it can only be rewritten after erasing UICR (`pyocd erase --chip -t nrf52840`)", 1)
        target.write32(NRF52_NVMC_CONFIG, 1)  # write enable
        target.write32(NRF52_UICR_APPROTECT, NRF52_APPROTECT_HWDISABLED)
        for _ in range(1000):
            if target.read32(NRF52_NVMC_READY) & 1:
                break
        target.write32(NRF52_NVMC_CONFIG, 0)  # read only again
        return ProgramPart("uicr", 4, "UICR.APPROTECT = HwDisabled (0x5A): the debug port stays open after reset")

    def _program_firmware(self, session: Any, programmer_cls: Any, images: ImageSet) -> ProgramPart:
        fw = images.firmware
        running = self.running_build_id()
        if running == fw.build_id:
            return ProgramPart("firmware", 0, f"board already runs build {running} (HELLO)")
        if running is None and self._flash_matches(session, self.board.memory.flash_base, fw.bin):
            return ProgramPart("firmware", 0, "flash read-back matches the image")
        programmer_cls(session, smart_flash=True).program(str(fw.elf))
        was = f"board ran build {running}" if running else "board build unknown"
        return ProgramPart("firmware", fw.flash_bytes, f"{was}, programmed {fw.build_id}")

    def _program_blob(self, session: Any, programmer_cls: Any, blob: Blob) -> ProgramPart:
        if self._flash_matches(session, blob.addr, blob.path):
            return ProgramPart(blob.what, 0, "flash read-back matches")
        programmer_cls(session, smart_flash=True).program(str(blob.path), base_address=blob.addr)
        return ProgramPart(blob.what, blob.size, f"programmed at {blob.addr:#010x}")

    def _flash_matches(self, session: Any, addr: int, path: Path) -> bool:
        """Whether flash at ``addr`` already holds the file (read back over SWD, compared by hash)."""
        if not path.exists():
            return False
        data = path.read_bytes()
        _, _, exceptions = _pyocd()
        try:
            flash = bytes(session.target.read_memory_block8(addr, len(data)))
        except exceptions.TransferError:
            return False  # e.g. XIP flash not mapped yet: program to be safe
        return hashlib.sha256(flash).digest() == hashlib.sha256(data).digest()

    def running_build_id(self) -> str | None:
        """The build id the firmware reports in HELLO, or None when it does not answer (other image, no port, or no
        ``identify`` hook given)."""
        if not self.entry.port or self.identify is None:
            return None
        self._require_port_present()
        try:
            return self.identify(self.entry.port, self.board.serial.baudrate, self.journal_dir,
                                 f"{self.entry.label}.hello", self.hello_timeout)
        except (serial.SerialException, OSError) as exc:
            raise port_problem(self.entry.port, exc) from exc

    # -- running -------------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Reset the board (no second probe session right after ``load``, which ended with one) and check its port."""
        if not self._fresh:
            self.with_retries(self._reset_once, "reset")
        self._fresh = False
        self.check_port()

    def _reset_once(self) -> None:
        with self.session() as session:
            session.target.reset()

    def _require_port_present(self) -> None:
        port = self.entry.port or ""
        if port and "://" not in port and not Path(port).exists():
            raise PortError(f"serial port {port} of {self.entry.label} vanished (no such device now): is the board "
                            "plugged in? see `ls -l /dev/serial/by-id/`")

    def check_port(self) -> None:
        """Fail now, naming the port, if it is gone or held by another process, rather than mid-run."""
        self._require_port_present()
        with open_port(self.url, self.board.serial.baudrate):
            pass

    @property
    def url(self) -> str:
        if not self.entry.port:
            raise TargetError(f"{self.entry.label}: the rack entry has no 'port' (a device path or pyserial URL)")
        return self.entry.port

    def counting(self, counter_hz: int, counter_kind: int) -> Counting:
        return Counting("cycles", 1.0 if counter_kind == 1 else self.board.cpu_hz / counter_hz)

    def close(self) -> None:
        """Nothing stays open between calls: each pyocd session and port is closed where it was opened."""


_FLASH_THREADS = threading.Lock()


@contextmanager
def flash_lock() -> Iterator[None]:
    """One board programmed at a time on this host: across this process's workers and other processes."""
    directory = lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with _FLASH_THREADS, FileLock(str(directory / "pyocd-flash.lock")):
        yield
