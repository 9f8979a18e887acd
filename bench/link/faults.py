"""A fault-injecting TCP proxy between a board's serial port and the host, for tests and soaks of the bench itself.

Why: the frame decoder is tested on synthetic streams, but what a night on a rack does — bit errors, dropped and
inserted bytes, stalls, an unplugged cable — must be survived by whole runs: the record, the report and the exit
code. The proxy opens the board's port (any pyserial URL; a twin's pty) and serves it on ``socket://127.0.0.1:PORT``,
which the Link opens like any other port. Host → device bytes pass unharmed (a corrupted command only ever looks like
a hang); device → host bytes get the faults of a `LinkFaults`, drawn from its seed.

It also keeps the books the host is checked against: how many frames of the original stream it forwarded and how
many of them it damaged (a frame whose bytes, delimiter included, it altered, dropped or inserted into; a damaged
delimiter damages the next frame too, which it merges into). A host that accepts no corrupt frame and counts every
lost one must report exactly ``frames_damaged`` lost and ``frames_intact`` received.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import serial

from bench.config.boards import LinkFaults

CHUNK = 4096


@dataclass
class FaultStats:
    """What the proxy did to the device → host stream."""

    bytes_in: int = 0
    bytes_out: int = 0
    bits_flipped: int = 0
    bytes_dropped: int = 0
    bytes_inserted: int = 0
    frames: int = 0  # non-empty frames of the original stream, complete (delimiter seen)
    frames_damaged: int = 0
    stalled_s: float = 0.0
    disconnected: bool = False

    @property
    def frames_intact(self) -> int:
        return self.frames - self.frames_damaged


class _Damage:
    """Frame accounting over the original stream: which frames a fault touched, as the host's decoder will see it."""

    def __init__(self) -> None:
        self.length = 0
        self.damaged = False
        self.next_damaged = False

    def inserted(self, value: int, before: int) -> None:
        """A byte ``value`` inserted before original byte ``before``. A 0x00 at a frame boundary (before a frame's
        first byte or before its delimiter) only adds an empty frame; anywhere else the frame is damaged."""
        if not (value == 0 and (self.length == 0 or before == 0)):
            self.damaged = True

    def byte(self, value: int, dropped: bool, flipped: bool, stats: FaultStats) -> None:
        if value != 0:
            self.damaged |= dropped or flipped
            self.length += 1
            return
        if flipped or (dropped and (self.length or self.damaged)):
            # a delimiter lost: this frame runs into the next (a lone 0x00 dropped changes nothing)
            self.damaged = self.next_damaged = True
        if self.length:
            stats.frames += 1
            stats.frames_damaged += self.damaged
        self.length, self.damaged, self.next_damaged = 0, self.next_damaged, False


class Injector:
    """Applies a `LinkFaults` to a byte stream chunk by chunk (deterministic for a seed), counting what it did."""

    def __init__(self, faults: LinkFaults) -> None:
        self.faults = faults
        self.stats = FaultStats()
        self._rng = np.random.default_rng(faults.seed)
        self._damage = _Damage()

    def apply(self, data: bytes) -> bytes:
        f, rng, stats = self.faults, self._rng, self.stats
        n = len(data)
        flips = np.packbits(rng.random((n, 8)) < f.ber, axis=1)[:, 0] if f.ber else np.zeros(n, np.uint8)
        drop = rng.random(n) < f.drop if f.drop else np.zeros(n, bool)
        insert = rng.random(n) < f.insert if f.insert else np.zeros(n, bool)
        garbage = rng.integers(0, 256, n, dtype=np.uint8).tolist()
        out = bytearray()
        for i, value in enumerate(data):
            if insert[i]:
                out.append(garbage[i])
                stats.bytes_inserted += 1
                self._damage.inserted(garbage[i], value)
            flipped = int(flips[i])
            if drop[i]:
                stats.bytes_dropped += 1
            else:
                out.append(value ^ flipped)
                stats.bits_flipped += flipped.bit_count()
            self._damage.byte(value, bool(drop[i]), flipped != 0 and not drop[i], stats)
        stats.bytes_in += n
        stats.bytes_out += len(out)
        return bytes(out)


class FaultProxy:
    """Serves ``upstream`` (a pyserial URL) on 127.0.0.1 with faults injected; one client at a time. Use as a context
    manager; ``url`` is what the host opens."""

    def __init__(self, upstream: str, faults: LinkFaults, baudrate: int = 115200) -> None:
        self.upstream_url, self.faults = upstream, faults
        self.injector = Injector(faults)
        self._port = serial.serial_for_url(upstream, baudrate=baudrate, timeout=0.02)
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._serve, name="fault-proxy", daemon=True)]
        self._threads[0].start()

    @property
    def stats(self) -> FaultStats:
        return self.injector.stats

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self._server.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with client:
                client.settimeout(0.02)
                upward = threading.Thread(target=self._upward, args=(client,), daemon=True)
                upward.start()
                self._downward(client)
                upward.join(timeout=1)

    def _downward(self, client: socket.socket) -> None:
        """Device → host, with faults; returns when the client or the port goes, or at the injected disconnect."""
        f = self.faults
        while not self._stop.is_set():
            try:
                data = self._port.read(max(1, min(self._port.in_waiting, CHUNK)))
            except (serial.SerialException, OSError):
                return
            if not data:
                continue
            data = self._cut(data)
            if f.stall_after is not None and f.stall_s and not self.stats.stalled_s and \
                    self.stats.bytes_in + len(data) > f.stall_after:
                self.stats.stalled_s = f.stall_s
                self._stop.wait(f.stall_s)
            try:
                client.sendall(self.injector.apply(data))
            except OSError:
                return
            if f.disconnect_after is not None and self.stats.bytes_in >= f.disconnect_after:
                self.stats.disconnected = True
                client.shutdown(socket.SHUT_RDWR)
                return

    def _cut(self, data: bytes) -> bytes:
        """At most up to the disconnect point: bytes after it are never forwarded."""
        end = self.faults.disconnect_after
        return data if end is None else data[: max(end - self.stats.bytes_in, 0)]

    def _upward(self, client: socket.socket) -> None:
        """Host → device, unharmed, until the client goes."""
        while not self._stop.is_set() and not self.stats.disconnected:
            try:
                data = client.recv(CHUNK)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            try:
                self._port.write(data)
            except (serial.SerialException, OSError):
                return

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        for t in self._threads:
            t.join(timeout=2)
        self._port.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

