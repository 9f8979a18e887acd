"""The Link stage: protocol messages over any pyserial URL, with every byte journaled.

A pty path (QEMU twin), /dev/ttyACM0 (a board's probe), ``socket://`` and ``rfc2217://`` look the same here:
the link only knows a URL and bytes. Received bytes are written and flushed to ``<name>.rx.bin`` before they
are decoded, so a crash or a decoder bug never loses evidence, and frame offsets point into that file.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import serial

from bench.link.protocol import (
    SEQ_MOD,
    Command,
    DecoderStats,
    Fault,
    FrameDecoder,
    Message,
    ProtocolError,
    encode_command,
    feed_messages,
)

MAX_KEPT_ERRORS = 1000
Matcher = type | tuple[type, ...] | Callable[[Message], bool]

log = logging.getLogger(__name__)


class LinkError(Exception):
    """The port failed or could not be opened."""


class LinkTimeout(LinkError, TimeoutError):
    """An awaited message did not arrive in time."""


class DeviceFault(LinkError):
    """The device sent FAULT while something else was awaited."""

    def __init__(self, fault: Fault, text: str) -> None:
        self.fault = fault
        super().__init__(text)


class Link:
    """A journaled, decoding byte stream to one device. Use ``Link.open`` and a ``with`` block."""

    def __init__(self, port: serial.SerialBase, url: str, journal_dir: Path, name: str) -> None:
        self.url = url
        self.name = name
        self.on_message: Callable[[Message], None] | None = None
        self.errors: list[ProtocolError] = []
        self._port = port
        self._rx_path = Path(journal_dir) / f"{name}.rx.bin"
        self._tx_path = Path(journal_dir) / f"{name}.tx.bin"
        self._rx: BinaryIO | None = None
        self._tx: BinaryIO | None = None
        self._queue: deque[Message] = deque()
        self._tx_seq = 0
        self._rx_bytes = 0
        self._tx_bytes = 0
        self._decoder = FrameDecoder()

    @classmethod
    def open(
        cls,
        url: str,
        baudrate: int,
        journal_dir: Path,
        name: str,
        timeout: float = 0.02,
        exclusive: bool = True,
    ) -> Link:
        """Open ``url`` with pyserial; ``timeout`` is the read poll interval, ``exclusive`` locks local ports.

        Journals are appended to (a reconnect keeps the earlier bytes) and frame offsets continue from the
        existing journal size, so they always index the rx journal file.
        """
        journal_dir = Path(journal_dir)
        journal_dir.mkdir(parents=True, exist_ok=True)
        try:
            port = serial.serial_for_url(url, baudrate=baudrate, timeout=timeout, exclusive=exclusive)
        except (serial.SerialException, ValueError, OSError) as exc:
            raise LinkError(f"cannot open {url}: {exc}") from exc
        link = cls(port, url, journal_dir, name)
        try:
            link._open_journals()
        except BaseException:
            port.close()
            raise
        return link

    def _open_journals(self) -> None:
        self._rx = self._rx_path.open("ab")
        self._tx = self._tx_path.open("ab")
        self._decoder = FrameDecoder(start_offset=self._rx.tell())

    # -- properties --------------------------------------------------------------------------------------

    @property
    def journal_path(self) -> Path:
        """The rx journal: every byte received, in order; frame offsets index this file."""
        return self._rx_path

    @property
    def tx_journal_path(self) -> Path:
        return self._tx_path

    @property
    def is_open(self) -> bool:
        return self._port.is_open

    @property
    def decoder(self) -> FrameDecoder:
        """The frame decoder (stats, recent framing errors with offsets)."""
        return self._decoder

    @property
    def stats(self) -> DecoderStats:
        """Live framing counters plus ``bad_messages`` (frames decode_message rejected)."""
        return self._decoder.stats

    @property
    def rx_bytes(self) -> int:
        """Bytes received by this link (the journal may hold earlier sessions too)."""
        return self._rx_bytes

    @property
    def tx_bytes(self) -> int:
        return self._tx_bytes

    # -- sending -----------------------------------------------------------------------------------------

    def send(self, cmd: Command) -> int:
        """Send one command with the next host seq; return the seq used."""
        if self._tx is None:
            raise LinkError(self._describe("link is closed"))
        seq = self._tx_seq
        data = encode_command(cmd, seq)
        try:
            self._port.write(data)
        except serial.SerialException as exc:
            raise LinkError(self._describe(f"write of {type(cmd).__name__} failed: {exc}")) from exc
        self._journal(self._tx, data)
        self._tx_seq = (seq + 1) % SEQ_MOD
        self._tx_bytes += len(data)
        return seq

    # -- receiving ---------------------------------------------------------------------------------------

    def read_messages(self, timeout: float) -> Iterator[Message]:
        """Yield queued then newly arriving messages until ``timeout`` seconds have passed."""
        deadline = time.monotonic() + timeout
        while True:
            while self._queue:
                yield self._queue.popleft()
            if time.monotonic() >= deadline:
                return
            self.poll()

    def expect(self, kind: Matcher, timeout: float, what: str, fail_on_fault: bool = True) -> Message:
        """Return the first message matching ``kind`` (a class, classes or a predicate).

        Earlier non-matching messages go to ``on_message`` if set, else stay queued in order. A FAULT that
        does not match raises DeviceFault at once (unless ``fail_on_fault`` is false) instead of waiting out
        the timeout.
        """
        match = _matcher(kind)
        deadline = time.monotonic() + timeout
        held: list[Message] = []  # skipped messages, returned to the front of the queue in order
        try:
            while True:
                while self._queue:
                    msg = self._queue.popleft()
                    if match(msg):
                        return msg
                    if fail_on_fault and isinstance(msg, Fault):
                        raise DeviceFault(msg, self._describe(f"device FAULT while waiting for {what}: {msg}"))
                    if self.on_message is not None:
                        self.on_message(msg)
                    else:
                        held.append(msg)
                if time.monotonic() >= deadline:
                    raise LinkTimeout(self._describe(f"timed out after {timeout:g} s waiting for {what}"))
                self.poll()
        finally:
            self._queue.extendleft(reversed(held))

    def poll(self) -> int:
        """Read what is waiting (at most one poll interval), journal then decode it; return the byte count."""
        data = self._read()
        if not data:
            return 0
        self._journal(self._rx, data)
        self._rx_bytes += len(data)
        dropped = self._decoder.stats.dropped_frames
        messages, errors = feed_messages(self._decoder, data)
        if errors or self._decoder.stats.dropped_frames != dropped:
            log.debug("%s: %s", self._rx_path.name, self._describe(
                f"{len(errors)} bad message(s) {'; '.join(map(str, errors[:3]))}" if errors else "frame(s) dropped"))
        self._queue.extend(messages)
        self.errors.extend(errors[: max(MAX_KEPT_ERRORS - len(self.errors), 0)])
        return len(data)

    def _read(self) -> bytes:
        """What is waiting, after up to one poll interval for the first byte. A ``socket://`` port says at most 1
        byte is waiting however many are, so after the first byte it is drained without waiting (else a raw TCP
        UART, a labgrid NetworkSerialPort, would be read a byte per poll)."""
        try:
            data = self._port.read(max(1, self._port.in_waiting))
            if data and self.url.startswith("socket://"):
                interval, self._port.timeout = self._port.timeout, 0
                try:
                    data += self._port.read(1 << 16)
                finally:
                    self._port.timeout = interval
            return data
        except (serial.SerialException, OSError) as exc:
            raise LinkError(self._describe(f"read failed: {exc}")) from exc

    # -- plumbing ----------------------------------------------------------------------------------------

    def _journal(self, sink: BinaryIO | None, data: bytes) -> None:
        if sink is None:
            raise LinkError(self._describe("link is closed"))
        sink.write(data)
        sink.flush()

    def _describe(self, problem: str) -> str:
        s = self._decoder.stats
        return (
            f"{problem} on {self.url}: {self._rx_bytes} bytes received so far "
            f"({s.frames_ok} frames ok, {s.dropped_frames} dropped, {s.bad_messages} bad messages); "
            f"rx journal {self._rx_path}"
        )

    def close(self) -> None:
        """Release the port and close the journals; safe to call more than once."""
        try:
            self._port.close()
        finally:
            for sink in (self._rx, self._tx):
                if sink is not None:
                    sink.close()
            self._rx = self._tx = None

    def __enter__(self) -> Link:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Link({self.url!r}, name={self.name!r}, open={self.is_open})"


def _matcher(kind: Matcher) -> Callable[[Message], bool]:
    if isinstance(kind, type | tuple):
        return lambda msg: isinstance(msg, kind)
    return kind
