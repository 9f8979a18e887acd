"""The Link stage over a real pseudo-terminal (and a TCP socket) with a FAKE device thread on the other end.

The fake device is a few lines of Python speaking protocol v1 on the pty master; it stands in for the firmware
so these tests exercise real pyserial, real termios and real journals without QEMU or a board.
"""

from __future__ import annotations

import os
import select
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.link.link import DeviceFault, Link, LinkError, LinkTimeout
from bench.link.protocol import (
    Ack,
    Command,
    Eval,
    Fault,
    FrameDecoder,
    GradChunk,
    GradStat,
    GradStats,
    Hello,
    Log,
    Message,
    MsgType,
    Ping,
    Pong,
    Start,
    Step,
    Stop,
    Summary,
    decode_command,
    encode_command,
    encode_frame,
    encode_message,
)

HELLO = Hello(1, 0, 25_000_000, 25_000_000, 327_680, 1_048_576, 9000, 65_536, 8192, "fake-board", "test")
PtyPair = tuple[int, str]  # master fd (device end), slave path (what QEMU prints)
WAIT = 1.0  # generous upper bound; the messages arrive in milliseconds


def firmware_like(cmd: Command, dev: FakeDevice) -> None:
    """Answers the way docs/protocol.md says the firmware does (with made-up numbers)."""
    if isinstance(cmd, Ping):
        dev.send(HELLO, Pong(cmd.nonce))
    elif isinstance(cmd, Start):
        dev.send(Ack(MsgType.START, 0, 0xABCD), Eval(0, 10, 1, 23.0, 1000))
        for i in range(cmd.steps):
            dev.send(Step(i, i * 3, 1, 2, 2.0, 10, 20, 5, 512, 4096, 13_608))
            dev.send(GradStats(i, (GradStat(0, 0, 1.0, 0.5),)))
            if cmd.grad_every and i % cmd.grad_every == 0:
                dev.send(GradChunk(i, 0, 0, 4, 0, (0.5, -0.5, 0.25, 0.0)))
        dev.send(Eval(1, 10, 9, 2.0, 1000), Summary(cmd.steps, 0, 0.5, 512, 4096, 9000, 13_608, 99))


class FakeDevice:
    """A thread on the device end of a pty or socket: decodes host commands and hands them to ``respond``."""

    def __init__(self, fd: int, respond: Responder = firmware_like) -> None:
        self.fd = fd
        self.respond = respond
        self.commands: list[Command] = []
        self.seqs: list[int] = []
        self.received = bytearray()
        self.sent = bytearray()
        self._seq = 0
        self._lock = threading.Lock()
        self._decoder = FrameDecoder()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> FakeDevice:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=WAIT)

    def send(self, *items: Message | bytes) -> None:
        """Write messages (encoded with the device seq) or raw bytes, as the firmware would."""
        with self._lock:
            for item in items:
                if isinstance(item, bytes):
                    data = item
                else:
                    data = encode_message(item, self._seq)
                    self._seq += 1
                self.sent += data  # before writing: the host may react before this thread runs again
                os.write(self.fd, data)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not select.select([self.fd], [], [], 0.005)[0]:
                continue
            try:
                data = os.read(self.fd, 4096)
            except OSError:
                return  # host side closed
            if not data:
                return
            self.received += data
            for frame in self._decoder.feed(data):
                cmd = decode_command(frame)
                self.commands.append(cmd)
                self.seqs.append(frame.seq)
                if self.respond is not None:
                    self.respond(cmd, self)


@pytest.fixture
def pty_path() -> Iterator[PtyPair]:
    """A pty pair: the master fd (device end) and the slave path (what QEMU would print)."""
    master, slave = os.openpty()
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


Responder = Callable[[Command, FakeDevice], None] | None
Rig = tuple[Link, FakeDevice]


def open_rig(pty: PtyPair, journal: Path, respond: Responder = firmware_like) -> Rig:
    master, path = pty
    link = Link.open(path, 115_200, journal, "dut", timeout=0.005)
    return link, FakeDevice(master, respond).start()


@pytest.fixture
def rig(pty_path: PtyPair, tmp_path: Path) -> Iterator[Rig]:
    link, device = open_rig(pty_path, tmp_path)
    yield link, device
    link.close()
    device.stop()


def test_link_over_pty_with_fake_device_handshake_and_exact_journals(rig: Rig) -> None:
    link, device = rig
    assert link.send(Ping(7)) == 0
    assert link.expect(Hello, WAIT, "HELLO") == HELLO
    assert link.expect(Pong, WAIT, "PONG") == Pong(7)
    assert device.commands == [Ping(7)] and device.seqs == [0]
    assert link.journal_path.read_bytes() == bytes(device.sent)
    assert link.tx_journal_path.read_bytes() == bytes(device.received) == encode_command(Ping(7), 0)
    assert link.rx_bytes == len(device.sent) and link.stats.frames_ok == 2
    assert link.tx_bytes == len(device.received)


def test_link_over_pty_with_fake_device_full_run_routes_others_to_callback(rig: Rig) -> None:
    link, device = rig
    seen: list[Message] = []
    link.on_message = seen.append
    link.send(Ping(1))
    link.expect(Pong, WAIT, "PONG")
    assert link.send(Start(3, 0.25, 42, grad_every=2)) == 1
    assert link.expect(Ack, WAIT, "ACK to START") == Ack(MsgType.START, 0, 0xABCD)
    summary = link.expect(Summary, WAIT, "SUMMARY")
    assert isinstance(summary, Summary) and summary.steps_done == 3
    step0, step1, step2 = [Step, GradStats, GradChunk], [Step, GradStats], [Step, GradStats, GradChunk]
    assert [type(m) for m in seen] == [Hello, Eval, *step0, *step1, *step2, Eval]
    assert device.commands == [Ping(1), Start(3, 0.25, 42, 2, 0)] and device.seqs == [0, 1]
    assert link.stats.lost_frames == 0 and link.errors == []


def test_link_over_pty_with_fake_device_keeps_unmatched_messages_queued(rig: Rig) -> None:
    link, _ = rig
    link.send(Start(2, 0.25, 1))
    assert link.expect(lambda m: isinstance(m, Summary) and m.status == 0, WAIT, "SUMMARY ok").steps_done == 2
    queued = list(link.read_messages(0))
    assert [type(m) for m in queued] == [Ack, Eval, Step, GradStats, Step, GradStats, Eval]
    assert list(link.read_messages(0)) == []


def test_link_over_pty_with_fake_device_survives_garbage_and_bad_frames(rig: Rig) -> None:
    link, device = rig
    bad_step = encode_frame(MsgType.STEP, 0, bytes(12))  # framing fine, body too short
    bad_crc = bytearray(encode_message(Log(1, "x"), 1))
    bad_crc[bad_crc.index(b"x")] ^= 0x01  # text byte: only the CRC can tell
    device.send(b"\xfe\xedboot\r\n\x00", bad_step, bytes(bad_crc), encode_message(Pong(9), 2))
    assert link.expect(Pong, WAIT, "PONG after bad frames") == Pong(9)
    (err,) = link.errors
    assert "STEP seq=0" in str(err) and "12 < 40" in str(err)
    journal = link.journal_path.read_bytes()
    assert journal[err.offset : err.offset + len(bad_step)] == bad_step
    stats = link.stats
    assert (stats.bad_messages, stats.crc_errors, stats.frames_ok) == (1, 1, 2)
    assert stats.lost_frames == 1  # the LOG with the broken CRC
    crc_error = next(e for e in link.decoder.errors if e.kind == "crc_errors")
    assert journal[crc_error.offset : crc_error.offset + len(bad_crc)] == bad_crc


def test_link_over_pty_with_fake_device_timeout_names_what_url_bytes_and_journal(
    pty_path: PtyPair, tmp_path: Path
) -> None:
    link, device = open_rig(pty_path, tmp_path, respond=None)
    with link, pytest.raises(LinkTimeout) as info:
        link.send(Ping(3))
        link.expect(Pong, 0.05, "PONG to PING 3")
    device.stop()
    text = str(info.value)
    assert "PONG to PING 3" in text and pty_path[1] in text
    assert "0 bytes received" in text and str(link.journal_path) in text
    assert isinstance(info.value, TimeoutError)


def test_link_over_pty_with_fake_device_fault_ends_the_wait(pty_path: PtyPair, tmp_path: Path) -> None:
    def reject(cmd: Command, dev: FakeDevice) -> None:
        dev.send(Log(3, "plan blob bad"), Fault(2, 0, 0, 0, 0, 0, "bad plan"))

    link, device = open_rig(pty_path, tmp_path, respond=reject)
    with link:
        link.send(Start(1, 0.5, 1))
        with pytest.raises(DeviceFault, match="FAULT while waiting for ACK") as info:
            link.expect(Ack, WAIT, "ACK")
        assert info.value.fault.code == 2 and info.value.fault.text == "bad plan"
        assert list(link.read_messages(0)) == [Log(3, "plan blob bad")]
    device.stop()


def test_link_over_pty_with_fake_device_read_messages_stops_at_timeout(rig: Rig) -> None:
    link, device = rig
    device.send(Log(1, "a"), Log(2, "b"))
    assert list(link.read_messages(0.1)) == [Log(1, "a"), Log(2, "b")]


def test_close_releases_the_port_after_an_exception(pty_path: PtyPair, tmp_path: Path) -> None:
    path = pty_path[1]
    with pytest.raises(RuntimeError), Link.open(path, 115_200, tmp_path, "a") as link:
        with pytest.raises(LinkError, match="cannot open"):
            Link.open(path, 115_200, tmp_path, "b")  # exclusive lock held while open
        raise RuntimeError("boom")
    assert not link.is_open
    with Link.open(path, 115_200, tmp_path, "c") as again:
        assert again.is_open
    again.close()  # idempotent
    with pytest.raises(LinkError, match="closed"):
        again.send(Stop())


def test_reopen_appends_to_the_journal_and_offsets_index_it(pty_path: PtyPair, tmp_path: Path) -> None:
    master, path = pty_path
    device = FakeDevice(master, respond=None).start()
    with Link.open(path, 115_200, tmp_path, "dut", timeout=0.005) as link:
        device.send(Pong(1))
        link.expect(Pong, WAIT, "first PONG")
    first = link.journal_path.read_bytes()
    bad = encode_frame(MsgType.ACK, 5, b"\x81")  # ACK body of 1 byte
    with Link.open(path, 115_200, tmp_path, "dut", timeout=0.005) as link:
        device.send(bad, Pong(2))
        link.expect(Pong, WAIT, "second PONG")
    device.stop()
    journal = link.journal_path.read_bytes()
    assert journal == first + bad + encode_message(Pong(2), 1)
    assert link.errors[0].offset == len(first)


def test_open_failure_names_the_url(tmp_path: Path) -> None:
    with pytest.raises(LinkError, match="/dev/does-not-exist"):
        Link.open("/dev/does-not-exist", 115_200, tmp_path, "x")


def test_link_over_socket_url_with_fake_device(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        url = f"socket://127.0.0.1:{server.getsockname()[1]}"
        with Link.open(url, 115_200, tmp_path, "tcp", timeout=0.005) as link:
            conn, _ = server.accept()
            device = FakeDevice(conn.fileno()).start()
            link.send(Ping(11))
            assert link.expect(Pong, WAIT, "PONG over TCP") == Pong(11)
            assert link.journal_path.read_bytes() == bytes(device.sent)
        device.stop()
        conn.close()
