"""Wire protocol v1 between the bench and the training firmware (see docs/protocol.md).

Pure data handling, no I/O: framing (COBS + CRC-32), a resynchronising stream decoder with error counters,
and typed records for every message. The device is untrusted, so every length is bounded before it is used
and every string is sanitised; a bad frame is counted and dropped, never fatal to the stream.
"""

from __future__ import annotations

import functools
import struct
import sys
import zlib
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, NamedTuple, Self, TypeVar

from cobs import cobs

from bench.formats import messages
from bench.formats.layout import Layout

PROTOCOL_VERSION = 2  # 2: int8 gradient exponents are int16 (deep backward paths pass 127)
MAX_BODY = 1024
MAX_ENCODED = 1100  # COBS bytes of one frame, delimiter excluded
HEADER = struct.Struct("<BBHH")  # type, version, seq, len
CRC = struct.Struct("<I")
CRC_RESIDUE = 0x2144DF1C  # CRC-32 of any packet followed by its own little-endian CRC-32
MIN_PACKET = HEADER.size + CRC.size
SEQ_MOD = 65536
MAX_BOARD = 32
MAX_BUILD = 40
MAX_GRAD_VALUES = 240
GRAD_INT = 0x01  # GRAD/GSTAT flags byte: int32 accumulators, with an int16 exponent (int8 plans)
MAX_KEPT_ERRORS = 100

_T = TypeVar("_T")


class MsgType(IntEnum):
    """Message type codes; device→host below 0x80, host→device from 0x80."""

    HELLO = 0x01
    STEP = 0x02
    GSTAT = 0x03
    GRAD = 0x04
    EVAL = 0x05
    SUMMARY = 0x06
    LOG = 0x07
    FAULT = 0x08
    PONG = 0x09
    ACK = 0x0A
    LAYERS = 0x0B
    OUTPUT = 0x0C
    WDATA = 0x0D
    START = 0x81
    STOP = 0x82
    PING = 0x83
    SELFTEST = 0x84
    WSET = 0x85
    WGET = 0x86


def type_name(code: int) -> str:
    """Name of a type code for messages, also for codes this host does not know."""
    try:
        return MsgType(code).name
    except ValueError:
        return f"type 0x{code:02X}"


class ProtocolError(ValueError):
    """A frame that passed framing but whose body breaks the contract; names where it is in the stream."""

    def __init__(self, frame: Frame, reason: str) -> None:
        self.frame_type = frame.type
        self.seq = frame.seq
        self.offset = frame.offset
        self.reason = reason
        super().__init__(f"{type_name(frame.type)} seq={frame.seq} at stream offset {frame.offset}: {reason}")


# ----------------------------------------------------------------------------------------------------
# Framing


class Frame(NamedTuple):
    """A checked packet: header fields, body, and the stream offset of its first encoded byte (journal).

    A named tuple, not a frozen dataclass: building one per frame is a fifth of the cost (benchmarks/decoder.py)."""

    type: int
    seq: int
    body: bytes
    offset: int = 0

    @property
    def type_name(self) -> str:
        return type_name(self.type)


def encode_frame(msg_type: int, seq: int, body: bytes) -> bytes:
    """COBS-encode header|body|crc32 and append the 0x00 delimiter."""
    if len(body) > MAX_BODY:
        raise ValueError(f"body of {len(body)} bytes exceeds {MAX_BODY}")
    if not 0 <= msg_type <= 0xFF:
        raise ValueError(f"message type {msg_type} out of range")
    head = HEADER.pack(msg_type, PROTOCOL_VERSION, seq % SEQ_MOD, len(body))
    packet = head + body
    return cobs.encode(packet + CRC.pack(zlib.crc32(packet))) + b"\x00"


@dataclass
class DecoderStats:
    """Counters of a FrameDecoder; ``garbage_bytes`` counts non-delimiter bytes of every dropped run.

    ``bad_messages`` is kept by the consumer (Link): checked frames whose body decode_message rejected.
    """

    frames_ok: int = 0
    crc_errors: int = 0
    cobs_errors: int = 0
    malformed: int = 0
    bad_version: int = 0
    oversize: int = 0
    garbage_bytes: int = 0
    lost_frames: int = 0
    bad_messages: int = 0

    @property
    def dropped_frames(self) -> int:
        """Frames rejected by framing checks (each kind summed)."""
        return self.crc_errors + self.cobs_errors + self.malformed + self.bad_version + self.oversize


@dataclass(frozen=True)
class FramingError:
    """Why a run of bytes was dropped and where it started in the stream."""

    offset: int
    kind: str
    detail: str


class FrameDecoder:
    """Turns an arbitrary byte stream into checked frames, resynchronising at each 0x00.

    Memory is bounded: at most MAX_ENCODED bytes are buffered; a longer run is dropped and skipped to the
    next zero. Recent framing errors are kept (bounded) with stream offsets so reports can point into the
    journal.
    """

    def __init__(self, start_offset: int = 0) -> None:
        self.stats = DecoderStats()
        self.errors: deque[FramingError] = deque(maxlen=MAX_KEPT_ERRORS)
        self._buf = bytearray()
        self._skipping = False
        self._pos = start_offset  # stream offset of the next byte fed
        self._run_start = start_offset
        self._last_seq: int | None = None

    @property
    def buffered(self) -> int:
        """Bytes of the current unterminated run held in memory."""
        return len(self._buf)

    @property
    def offset(self) -> int:
        """Stream offset of the next byte to be fed."""
        return self._pos

    def forget_seq(self) -> None:
        """Do not count a seq gap for the next frame (e.g. after the host knows the device restarted)."""
        self._last_seq = None

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Consume bytes; return the frames completed by them, in order.

        One split at the delimiters, then a check per run: the per-frame work is what bounds a host following many
        fast links (benchmarks/decoder.py)."""
        data = bytes(data)
        runs = data.split(b"\x00")
        tail = runs.pop()  # after the last delimiter: the start of a run still unterminated
        frames: list[Frame] = []
        start = self._pos
        for run in runs:
            frame = self._end_run(run)
            if frame is not None:
                frames.append(frame)
            start += len(run) + 1
            self._run_start = start
        self._take(tail)
        self._pos += len(data)
        return frames

    def _take(self, chunk: bytes) -> None:
        """Buffer the start of an unterminated run, or drop it once it is longer than any frame."""
        if self._skipping:
            self.stats.garbage_bytes += len(chunk)
        elif len(self._buf) + len(chunk) <= MAX_ENCODED:
            self._buf += chunk
        else:
            self._oversize(len(chunk))
            self._skipping = True

    def _oversize(self, more: int) -> None:
        self.stats.oversize += 1
        self.stats.garbage_bytes += len(self._buf) + more
        self._note(self._run_start, "oversize", f"unterminated run longer than {MAX_ENCODED} bytes")
        self._buf.clear()

    def _end_run(self, chunk: bytes) -> Frame | None:
        """The frame of a run ended by a delimiter: the buffered bytes and ``chunk``."""
        if self._skipping:
            self.stats.garbage_bytes += len(chunk)
            self._skipping = False
            return None
        if self._buf:
            if len(self._buf) + len(chunk) > MAX_ENCODED:
                self._oversize(len(chunk))
                return None
            chunk = bytes(self._buf) + chunk
            self._buf.clear()
        elif not chunk:
            return None  # idle zeros between frames
        elif len(chunk) > MAX_ENCODED:
            self._oversize(len(chunk))
            return None
        frame = self._check(chunk)
        if frame is None:
            self.stats.garbage_bytes += len(chunk)
        return frame

    def _check(self, run: bytes) -> Frame | None:
        try:
            packet = cobs.decode(run)
        except cobs.DecodeError as exc:
            return self._reject("cobs_errors", f"COBS: {exc}")
        if len(packet) < MIN_PACKET:
            return self._reject("malformed", f"packet of {len(packet)} bytes < {MIN_PACKET}")
        msg_type, version, seq, length = HEADER.unpack_from(packet)
        if length > MAX_BODY:
            return self._reject("malformed", f"len {length} > {MAX_BODY}")
        if len(packet) != MIN_PACKET + length:
            return self._reject("malformed", f"len {length} but packet carries {len(packet) - MIN_PACKET}")
        if zlib.crc32(packet) != CRC_RESIDUE:  # the CRC over header|body|crc: one pass, no slice
            return self._reject("crc_errors", f"CRC mismatch in {type_name(msg_type)} seq={seq}")
        if version != PROTOCOL_VERSION:
            return self._reject("bad_version", f"version {version} != {PROTOCOL_VERSION}")
        if self._last_seq is not None:
            self.stats.lost_frames += (seq - self._last_seq - 1) % SEQ_MOD
        self._last_seq = seq
        self.stats.frames_ok += 1
        return Frame(msg_type, seq, packet[HEADER.size : -CRC.size], self._run_start)

    def _reject(self, counter: str, detail: str) -> Frame | None:
        """Count and note a dropped run; None, so ``return self._reject(...)`` reads as the check's answer."""
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        self._note(self._run_start, counter, detail)
        return None

    def _note(self, offset: int, kind: str, detail: str) -> None:
        self.errors.append(FramingError(offset, kind, detail))


# ----------------------------------------------------------------------------------------------------
# Body helpers

_CONTROL = dict.fromkeys([*range(0x20), 0x7F])


def clean_text(raw: bytes) -> str:
    """Untrusted bytes → printable str: ASCII only (others → U+FFFD), control characters removed."""
    return raw.decode("ascii", errors="replace").translate(_CONTROL)


def _need(frame: Frame, size: int, exact: bool = True) -> None:
    n = len(frame.body)
    if n < size:
        raise ProtocolError(frame, f"body too short for {frame.type_name}: {n} < {size} bytes")
    if exact and n > size:
        raise ProtocolError(frame, f"body too long for {frame.type_name}: {n} > {size} bytes")


def _pack(fmt: struct.Struct, *values: object) -> bytes:
    try:
        return fmt.pack(*values)
    except struct.error as exc:
        raise ValueError(f"cannot encode {values}: {exc}") from exc


def _ascii(text: str, limit: int, what: str) -> bytes:
    raw = text.encode("ascii")
    if len(raw) > limit:
        raise ValueError(f"{what} of {len(raw)} bytes exceeds {limit}")
    return raw


# ----------------------------------------------------------------------------------------------------
# Message layouts, declared once: encode and decode both follow from them


def _fields(layout: Layout, frame: Frame, pos: int = 0) -> dict[str, Any]:
    """The named fields of ``layout`` at ``pos`` of a checked frame's body, its length checked first."""
    _need(frame, pos + layout.size, exact=False)
    return layout.unpack_from(frame.body, pos)


@dataclass(frozen=True)
class Strings:
    """A tail of u8-length-prefixed ASCII strings (field, longest), ending the body exactly."""

    fields: tuple[tuple[str, int], ...]

    def pack(self, record: object) -> bytes:
        out = b""
        for name, limit in self.fields:
            raw = _ascii(getattr(record, name), limit, name)
            out += bytes([len(raw)]) + raw
        return out

    def unpack(self, frame: Frame, pos: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, limit in self.fields:
            out[name], pos = _counted_string(frame, pos, limit, name)
        if pos != len(frame.body):
            raise ProtocolError(frame, f"{len(frame.body) - pos} trailing bytes after {self.fields[-1][0]}")
        return out


@dataclass(frozen=True)
class Text:
    """A tail of free ASCII text: the rest of the body, sanitised on receipt."""

    field: str

    def pack(self, record: object, room: int) -> bytes:
        return _ascii(getattr(record, self.field), room, f"{type(record).__name__} {self.field}")

    def unpack(self, frame: Frame, pos: int) -> dict[str, Any]:
        return {self.field: clean_text(frame.body[pos:])}


class _Wire:
    """A message or command whose body is its ``LAYOUT`` and, optionally, a ``TAIL`` of strings or text."""

    __slots__ = ()
    TYPE: ClassVar[MsgType]
    LAYOUT: ClassVar[Layout]
    TAIL: ClassVar[Strings | Text | None] = None

    def pack(self) -> bytes:
        fixed = self.LAYOUT.pack(self)
        if isinstance(self.TAIL, Text):
            return fixed + self.TAIL.pack(self, MAX_BODY - len(fixed))
        return fixed + (self.TAIL.pack(self) if self.TAIL else b"")

    @classmethod
    def unpack(cls, frame: Frame) -> Self:
        if cls.TAIL is None:  # the layout is the whole body; fields in layout order (tests/test_protocol.py)
            if len(frame.body) != cls.LAYOUT.size:
                _need(frame, cls.LAYOUT.size)
            return cls(*cls.LAYOUT.values_from(frame.body))
        # a strings tail needs at least its length bytes
        tail_min = len(cls.TAIL.fields) if isinstance(cls.TAIL, Strings) else 0
        _need(frame, cls.LAYOUT.size + tail_min, exact=cls.TAIL is None)
        fields = _fields(cls.LAYOUT, frame)
        if cls.TAIL is not None:
            fields |= cls.TAIL.unpack(frame, cls.LAYOUT.size)
        return cls(**fields)


@functools.lru_cache(maxsize=512)
def _values_struct(count: int, code: str) -> struct.Struct:
    """``count`` little-endian values of ``code``: one compiled format per chunk size, not one per frame."""
    return struct.Struct(f"<{count}{code}")


_SWAP = sys.byteorder != "little"
if array("f").itemsize != 4 or array("i").itemsize != 4:
    raise ImportError("bench.link.protocol needs 4-byte array('f') and array('i') items")


def _as_words(values: Sequence[float] | Sequence[int], code: str) -> array[Any]:
    """``values`` as the array the wire carries: decoded and built chunks compare equal, rounded alike."""
    if isinstance(values, array) and values.typecode == code:
        return values
    try:
        return array(code, values)
    except (TypeError, OverflowError) as exc:
        raise ValueError(f"chunk values are not {'f32' if code == 'f' else 'int32'}: {exc}") from exc


def _words(body: bytes, pos: int, code: str) -> array[Any]:
    """The little-endian f32 (``code`` "f") or int32 ("i") values from ``pos`` to the end of ``body``, as an array:
    copied in one go instead of becoming a Python object each (the bulk of a gradient stream's decoding)."""
    out = array(code, body[pos:])
    if _SWAP:
        out.byteswap()
    return out


def _bounded_slice(frame: Frame, what: str, head: int, width: int, count: int, limit: int, offset: int,
                   total: int) -> None:
    """A tensor slice's bounds: at most ``limit`` values of ``width`` bytes filling the body after ``head``, and
    within the tensor (``offset + count <= total``)."""
    if count > limit:
        raise ProtocolError(frame, f"{what} count {count} > {limit}")
    _need(frame, head + width * count)
    if offset + count > total:
        raise ProtocolError(frame, f"{what} values [{offset}, {offset + count}) exceed total {total}")


def _counted_string(frame: Frame, pos: int, limit: int, what: str) -> tuple[str, int]:
    """Read a u8-length-prefixed string at ``pos``; return it and the position after it."""
    body = frame.body
    if pos >= len(body):
        raise ProtocolError(frame, f"body ends before the {what} length byte")
    n = body[pos]
    if n > limit:
        raise ProtocolError(frame, f"{what} string longer than {limit}: {n} bytes")
    if pos + 1 + n > len(body):
        raise ProtocolError(frame, f"{what} of {n} bytes runs past the body end ({len(body)} bytes)")
    return clean_text(body[pos + 1 : pos + 1 + n]), pos + 1 + n


# ----------------------------------------------------------------------------------------------------
# Device → host messages


@dataclass(slots=True)
class Hello(_Wire):
    """Device identity and memory budget, sent in answer to the first PING."""

    TYPE: ClassVar[MsgType] = MsgType.HELLO
    LAYOUT: ClassVar[Layout] = messages.HELLO
    TAIL: ClassVar[Strings] = Strings((("board", MAX_BOARD), ("build_id", MAX_BUILD)))

    proto_version: int
    counter_kind: int
    cpu_hz: int
    counter_hz: int
    sram_bytes: int
    flash_bytes: int
    static_bytes: int
    arena_bytes: int
    stack_bytes: int
    board: str
    build_id: str


@dataclass(slots=True)
class Step(_Wire):
    """One training step: sample drawn, prediction, loss, raw tick timings and memory marks."""

    TYPE: ClassVar[MsgType] = MsgType.STEP
    LAYOUT: ClassVar[Layout] = messages.STEP

    step: int
    sample: int
    label: int
    pred: int
    loss: float
    t_fwd: int
    t_bwd: int
    t_upd: int
    stack_hwm: int
    arena_peak: int
    sram_used: int


@dataclass(slots=True)
class GradStat:
    """Norms of one parameter tensor's gradient (param 0 = weight, 1 = bias); ``exponent`` not None: norms of int32
    accumulators whose real value is accumulator · C · 2^exponent (int8 plans)."""

    layer: int
    param: int
    l2: float
    max_abs: float
    exponent: int | None = None


@dataclass(slots=True)
class GradStats:
    """Per-tensor gradient norms of one step."""

    TYPE: ClassVar[MsgType] = MsgType.GSTAT
    HEAD: ClassVar[Layout] = messages.GSTAT_HEAD
    ENTRY: ClassVar[struct.Struct] = messages.GSTAT_ENTRY.struct  # layer, param, flags, exponent, l2, max_abs

    step: int
    entries: tuple[GradStat, ...]

    @property
    def n(self) -> int:
        return len(self.entries)

    def pack(self) -> bytes:
        parts = [self.HEAD.pack(self)]
        parts += [_pack(self.ENTRY, e.layer, e.param, 0 if e.exponent is None else GRAD_INT,
                        0 if e.exponent is None else e.exponent, e.l2, e.max_abs) for e in self.entries]
        return b"".join(parts)

    @classmethod
    def unpack(cls, frame: Frame) -> GradStats:
        head = _fields(cls.HEAD, frame)
        _need(frame, cls.HEAD.size + head["n"] * cls.ENTRY.size)
        entries = tuple(
            GradStat(layer, param, l2, mx, e if flags & GRAD_INT else None)
            for layer, param, flags, e, l2, mx in cls.ENTRY.iter_unpack(frame.body[cls.HEAD.size :])
        )
        return cls(head["step"], entries)


@dataclass(slots=True)
class GradChunk:
    """A slice ``values`` of the flattened gradient of one tensor, starting at ``offset`` of ``total``.

    Int8 plans (``exponent`` not None) send int32 gradient accumulators: the flags byte has bit 0 set and the
    head's last field is the exponent E (int16) of the op's output gradient (docs/protocol.md)."""

    TYPE: ClassVar[MsgType] = MsgType.GRAD
    HEAD: ClassVar[Layout] = messages.GRAD_HEAD

    step: int
    layer: int
    param: int
    total: int
    offset: int
    values: Sequence[float] | Sequence[int]  # kept as an array of f32, or of int32 (exponent not None)
    exponent: int | None = None

    def __post_init__(self) -> None:
        self.values = _as_words(self.values, "f" if self.exponent is None else "i")

    @property
    def flags(self) -> int:
        return 0 if self.exponent is None else GRAD_INT

    @property
    def e(self) -> int:
        return 0 if self.exponent is None else self.exponent

    @property
    def count(self) -> int:
        return len(self.values)

    def pack(self) -> bytes:
        n = len(self.values)
        if n > MAX_GRAD_VALUES:
            raise ValueError(f"GRAD chunk of {n} values exceeds {MAX_GRAD_VALUES}")
        code = "f" if self.exponent is None else "i"
        return self.HEAD.pack(self) + _pack(struct.Struct(f"<{n}{code}"), *self.values)

    @classmethod
    def unpack(cls, frame: Frame) -> GradChunk:
        body, head = frame.body, cls.HEAD.size
        if len(body) < head:
            _need(frame, head, exact=False)  # raises
        step, layer, param, flags, total, offset, count, e = cls.HEAD.struct.unpack_from(body)
        if flags & ~GRAD_INT:
            raise ProtocolError(frame, f"GRAD flags 0x{flags:02x} unknown")
        if count > MAX_GRAD_VALUES or len(body) != head + 4 * count or offset + count > total:
            _bounded_slice(frame, "GRAD", head, 4, count, MAX_GRAD_VALUES, offset, total)  # raises, naming which
        if flags & GRAD_INT:
            return cls(step, layer, param, total, offset, _words(body, head, "i"), e)
        return cls(step, layer, param, total, offset, _words(body, head, "f"))


@dataclass(slots=True)
class Eval(_Wire):
    """Accuracy and loss over the eval split, before (phase 0) or after (phase 1) training."""

    TYPE: ClassVar[MsgType] = MsgType.EVAL
    LAYOUT: ClassVar[Layout] = messages.EVAL

    phase: int
    n: int
    correct: int
    loss_sum: float
    ticks: int


@dataclass(slots=True)
class Summary(_Wire):
    """End of a run (status 0 done, 1 stopped, 2 error) with whole-run memory and time."""

    TYPE: ClassVar[MsgType] = MsgType.SUMMARY
    LAYOUT: ClassVar[Layout] = messages.SUMMARY

    steps_done: int
    status: int
    final_loss: float
    stack_hwm: int
    arena_peak: int
    static_bytes: int
    sram_peak: int
    ticks_train: int


@dataclass(slots=True)
class Log(_Wire):
    """A device log line (level 0 debug … 3 error); text is sanitised and bounded by the body."""

    TYPE: ClassVar[MsgType] = MsgType.LOG
    LAYOUT: ClassVar[Layout] = messages.LOG
    TAIL: ClassVar[Text] = Text("text")

    level: int
    text: str


@dataclass(slots=True)
class Fault(_Wire):
    """A device-side failure (codes in docs/protocol.md); the run is over."""

    TYPE: ClassVar[MsgType] = MsgType.FAULT
    LAYOUT: ClassVar[Layout] = messages.FAULT
    TAIL: ClassVar[Text] = Text("text")

    code: int
    pc: int
    lr: int
    cfsr: int
    arg0: int
    arg1: int
    text: str = ""


@dataclass(slots=True)
class Pong(_Wire):
    """Answer to PING, echoing its nonce."""

    TYPE: ClassVar[MsgType] = MsgType.PONG
    LAYOUT: ClassVar[Layout] = messages.PONG

    nonce: int


@dataclass(slots=True)
class Ack(_Wire):
    """Acceptance of a command (status 0 ok) with the hash of the plan the device will run."""

    TYPE: ClassVar[MsgType] = MsgType.ACK
    LAYOUT: ClassVar[Layout] = messages.ACK

    cmd_type: int
    status: int
    plan_hash: int


# ----------------------------------------------------------------------------------------------------
# Host → device commands


@dataclass(slots=True)
class Start(_Wire):
    """Train ``steps`` SGD steps at ``lr``; GRAD every ``grad_every`` steps (0 never); evaluate on
    ``eval_samples`` samples (0 all). Int8 (TQPL) plans evaluate only (steps 0) and stream OUTPUT frames for the
    first ``out_samples`` eval samples (0xFFFF all): the graph output, or every op's output with ``out_flags`` bit 0.
    fp32 plans ignore ``out_samples``. ``prox_mu`` > 0 (FedProx, fp32 plans only): after each step every trained
    value moves toward the value it had when the run started, w ← w − lr·mu·(w − w₀)."""

    TYPE: ClassVar[MsgType] = MsgType.START
    LAYOUT: ClassVar[Layout] = messages.START

    steps: int
    lr: float
    seed: int
    grad_every: int = 0
    eval_samples: int = 0
    out_samples: int = 0
    out_flags: int = 0
    prox_mu: float = 0.0

    RESUME: ClassVar[int] = 0x02  # out_flags bit 1: train on the parameters in SRAM (a WSET or the last run's)


@dataclass(slots=True)
class Stop(_Wire):
    """End the current run early."""

    TYPE: ClassVar[MsgType] = MsgType.STOP
    LAYOUT: ClassVar[Layout] = messages.STOP


@dataclass(slots=True)
class Ping(_Wire):
    """Liveness check; the first one also asks for HELLO."""

    TYPE: ClassVar[MsgType] = MsgType.PING
    LAYOUT: ClassVar[Layout] = messages.PING

    nonce: int


@dataclass(slots=True)
class SelfTest(_Wire):
    """Fault on purpose (``kind`` 1: an undefined instruction, 2: a load from unmapped memory) so the host can check
    its fault report end to end; the device answers with FAULT and stops, as after any fault."""

    TYPE: ClassVar[MsgType] = MsgType.SELFTEST
    LAYOUT: ClassVar[Layout] = messages.SELFTEST
    UNDEFINED: ClassVar[int] = 1
    BAD_LOAD: ClassVar[int] = 2

    kind: int


@dataclass(slots=True)
class LayerCost:
    """Ticks one layer spent over a whole run, per phase."""

    layer: int
    op: int
    fwd: int
    bwd: int
    upd: int


@dataclass(slots=True)
class LayerCosts:
    """Per-layer forward/backward/update ticks summed over a run; sent once, before SUMMARY."""

    TYPE: ClassVar[MsgType] = MsgType.LAYERS
    HEAD: ClassVar[Layout] = messages.LAYERS_HEAD
    ENTRY: ClassVar[Layout] = messages.LAYERS_ENTRY
    MAX_ENTRIES: ClassVar[int] = 32

    entries: tuple[LayerCost, ...]

    @property
    def n(self) -> int:
        return len(self.entries)

    def pack(self) -> bytes:
        return self.HEAD.pack(self) + b"".join(self.ENTRY.pack(e) for e in self.entries)

    @classmethod
    def unpack(cls, frame: Frame) -> LayerCosts:
        n = _fields(cls.HEAD, frame)["n"]
        if n > cls.MAX_ENTRIES:
            raise ProtocolError(frame, f"LAYERS count {n} > {cls.MAX_ENTRIES}")
        _need(frame, cls.HEAD.size + n * cls.ENTRY.size)
        return cls(tuple(LayerCost(**_fields(cls.ENTRY, frame, cls.HEAD.size + k * cls.ENTRY.size)) for k in range(n)))


@dataclass(slots=True)
class Output:
    """A slice of an int8 tensor an int8 (TQPL) run computed: ``op`` 0xFF is the graph output, else the output of op
    ``op`` (START's out_flags bit 0); ``values`` are the int8 codes of elements [offset, offset + len) of ``total``."""

    TYPE: ClassVar[MsgType] = MsgType.OUTPUT
    HEAD: ClassVar[Layout] = messages.OUTPUT_HEAD
    MAX_VALUES: ClassVar[int] = 1000
    GRAPH: ClassVar[int] = 0xFF

    sample: int
    op: int
    phase: int
    total: int
    offset: int
    values: bytes  # int8 codes, two's complement

    @property
    def count(self) -> int:
        return len(self.values)

    def pack(self) -> bytes:
        if self.count > self.MAX_VALUES:
            raise ValueError(f"OUTPUT chunk of {self.count} values exceeds {self.MAX_VALUES}")
        return self.HEAD.pack(self) + bytes(self.values)

    @classmethod
    def unpack(cls, frame: Frame) -> Output:
        h = _fields(cls.HEAD, frame)
        count = h.pop("count")
        _bounded_slice(frame, "OUTPUT", cls.HEAD.size, 1, count, cls.MAX_VALUES, h["offset"], h["total"])
        return cls(**h, values=frame.body[cls.HEAD.size:])


@dataclass(slots=True)
class ParamChunk:
    """A slice of one trainable tensor of the plan (``layer``, ``param`` 0 weight / 1 bias; layout as in GRAD):
    values [offset, offset + count) of ``total``. The device sends them as WDATA (answering WGET), the host as WSET
    (docs/protocol.md, "Parameters over the wire"). ``kind`` 0: f32 values of an fp32 plan; 1 (`INT_WORDS`): int32
    words of an int8 plan (a weight's Q16 value 65536·code + residual, a bias's code and residual in turn)."""

    HEAD: ClassVar[Layout] = messages.WPARAM_HEAD
    MAX_VALUES: ClassVar[int] = 240
    FLOATS: ClassVar[int] = 0
    INT_WORDS: ClassVar[int] = 1

    layer: int
    param: int
    total: int
    offset: int
    values: Sequence[float] | Sequence[int]  # kept as an array of f32 (kind 0), or of int32 words (kind 1)
    kind: int = 0

    def __post_init__(self) -> None:
        self.values = _as_words(self.values, _word_code(self.kind))

    @property
    def count(self) -> int:
        return len(self.values)

    def pack(self) -> bytes:
        if self.count > self.MAX_VALUES:
            raise ValueError(f"parameter chunk of {self.count} values exceeds {self.MAX_VALUES}")
        return self.HEAD.pack(self) + _pack(_values_struct(self.count, _word_code(self.kind)), *self.values)

    @classmethod
    def unpack(cls, frame: Frame) -> Self:
        h = _fields(cls.HEAD, frame)
        count = h.pop("count")
        _bounded_slice(frame, cls.__name__, cls.HEAD.size, 4, count, cls.MAX_VALUES, h["offset"], h["total"])
        if h["kind"] not in (cls.FLOATS, cls.INT_WORDS):
            raise ProtocolError(frame, f"{cls.__name__} kind {h['kind']} is neither 0 (f32) nor 1 (int32 words)")
        return cls(**h, values=_words(frame.body, cls.HEAD.size, _word_code(h["kind"])))


def _word_code(kind: int) -> str:
    """The struct code of a parameter chunk's values: f32 (kind 0) or int32 words (kind 1)."""
    return "i" if kind == ParamChunk.INT_WORDS else "f"


@dataclass(slots=True)
class WData(ParamChunk):
    """Device → host: a slice of a trainable tensor, answering WGET (an ACK of WGET follows the last one)."""

    TYPE: ClassVar[MsgType] = MsgType.WDATA


@dataclass(slots=True)
class WSet(ParamChunk):
    """Host → device (idle only): write a slice of a trainable tensor into its SRAM copy; answered by ACK."""

    TYPE: ClassVar[MsgType] = MsgType.WSET


@dataclass(slots=True)
class WGet(_Wire):
    """Host → device (idle only): send every trainable tensor as WDATA, then ACK."""

    TYPE: ClassVar[MsgType] = MsgType.WGET
    LAYOUT: ClassVar[Layout] = messages.WGET


Message = (Hello | Step | GradStats | GradChunk | Eval | Summary | Log | Fault | Pong | Ack | LayerCosts | Output
           | WData)
Command = Start | Stop | Ping | SelfTest | WSet | WGet

_MESSAGES: dict[int, Callable[[Frame], Message]] = {
    c.TYPE: c.unpack
    for c in (Hello, Step, GradStats, GradChunk, Eval, Summary, Log, Fault, Pong, Ack, LayerCosts, Output, WData)
}
_COMMANDS: dict[int, Callable[[Frame], Command]] = {
    c.TYPE: c.unpack for c in (Start, Stop, Ping, SelfTest, WSet, WGet)}


def encode_message(msg: Message, seq: int) -> bytes:
    """Encode a device→host message as a frame (used by fake devices and tests)."""
    return encode_frame(msg.TYPE, seq, msg.pack())


def encode_command(cmd: Command, seq: int) -> bytes:
    """Encode a host→device command as a frame."""
    return encode_frame(cmd.TYPE, seq, cmd.pack())


def decode_message(frame: Frame) -> Message:
    """Typed device→host message of a checked frame; ProtocolError if the body breaks the contract."""
    return _decode(frame, _MESSAGES, "device→host message")


def feed_messages(decoder: FrameDecoder, data: bytes) -> tuple[list[Message], list[ProtocolError]]:
    """The messages of the frames ``data`` completes, and the frames whose body broke the contract (each counted in
    the decoder's ``bad_messages``): what the live Link and the journal replay of `bench recover` both do."""
    messages: list[Message] = []
    errors: list[ProtocolError] = []
    for frame in decoder.feed(data):
        try:
            unpack = _MESSAGES.get(frame.type)  # decode_message, inlined: this loop runs once per frame
            if unpack is None:
                raise ProtocolError(frame, f"not a device→host message type (0x{frame.type:02X})")
            messages.append(unpack(frame))
        except ProtocolError as exc:
            decoder.stats.bad_messages += 1
            errors.append(exc)
    return messages, errors


def decode_command(frame: Frame) -> Command:
    """Typed host→device command of a checked frame (what the firmware sees; used by fake devices)."""
    return _decode(frame, _COMMANDS, "host→device command")


def _decode(frame: Frame, table: dict[int, Callable[[Frame], _T]], what: str) -> _T:
    unpack = table.get(frame.type)
    if unpack is None:
        raise ProtocolError(frame, f"not a {what} type (0x{frame.type:02X})")
    return unpack(frame)


__all__ = [
    "MAX_BODY",
    "MAX_ENCODED",
    "PROTOCOL_VERSION",
    "Ack",
    "Command",
    "DecoderStats",
    "Eval",
    "Fault",
    "Frame",
    "FrameDecoder",
    "FramingError",
    "GradChunk",
    "GradStat",
    "GradStats",
    "Hello",
    "LayerCost",
    "LayerCosts",
    "Log",
    "Message",
    "MsgType",
    "Output",
    "ParamChunk",
    "Ping",
    "Pong",
    "ProtocolError",
    "SelfTest",
    "Start",
    "Step",
    "Stop",
    "Summary",
    "WData",
    "WGet",
    "WSet",
    "clean_text",
    "decode_command",
    "decode_message",
    "encode_command",
    "encode_frame",
    "encode_message",
    "feed_messages",
]
