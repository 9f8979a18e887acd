"""Wire protocol v1: framing, resynchronisation, error accounting and hostile input (docs/protocol.md)."""

from __future__ import annotations

import dataclasses
import re
import struct
import zlib
from array import array
from pathlib import Path

import pytest
from cobs import cobs

from bench.link.protocol import (
    MAX_BODY,
    MAX_ENCODED,
    PROTOCOL_VERSION,
    Ack,
    Eval,
    Fault,
    Frame,
    FrameDecoder,
    GradChunk,
    GradStat,
    GradStats,
    Hello,
    Log,
    MsgType,
    Ping,
    Pong,
    ProtocolError,
    Start,
    Step,
    Stop,
    Strings,
    Summary,
    WData,
    WGet,
    WSet,
    clean_text,
    decode_command,
    decode_message,
    encode_command,
    encode_frame,
    encode_message,
)

HELLO = Hello(1, 0, 25_000_000, 25_000_000, 327_680, 1_048_576, 9000, 65_536, 8192, "nucleo-f746zg", "abc123")
MESSAGES = [
    HELLO,
    Step(7, 42, 3, 5, 2.25, 1000, 2000, 300, 1536, 40_000, 50_536),
    GradStats(7, (GradStat(0, 0, 1.5, 0.25), GradStat(0, 1, 0.5, 0.125), GradStat(2, 0, 3.0, 2.0))),
    GradStats(8, ()),
    GradChunk(7, 2, 0, 1000, 240, tuple(float(i) / 4 for i in range(240))),
    Eval(1, 200, 181, 35.5, 2**40 + 5),
    Summary(100, 1, 0.125, 1536, 40_000, 9000, 50_536, 2**33 + 7),
    Log(2, "arena at 91%"),
    Fault(3, 0x0800_1234, 0xFFFF_FFF9, 0x0000_8200, 70_000, 65_536, "arena too small"),
    Pong(0xDEADBEEF),
    Ack(0x81, 0, 0x1234_5678),
    WData(2, 0, 9216, 240, tuple(float(i) / 8 for i in range(240))),
    WData(4, 1, 20, 2, (-(2**30), -32768), WData.INT_WORDS),  # an int8 plan's bias (code, residual) pair
]
COMMANDS = [Start(100, 0.0078125, 1234, 10, 0), Start(5, 0.125, 9, out_flags=Start.RESUME, prox_mu=0.25), Stop(),
            Ping(0xCAFEF00D), WSet(0, 1, 8, 6, (1.5, -0.25)), WSet(3, 0, 12, 0, (127 * 65536 + 32767,), WSet.INT_WORDS),
            WGet()]


def frame_of(data: bytes) -> Frame:
    (frame,) = FrameDecoder().feed(data)
    return frame


def packet(msg_type: int, seq: int, body: bytes, version: int = PROTOCOL_VERSION, length: int | None = None) -> bytes:
    """A hand-built packet (not via encode_frame) so tests can break one field at a time."""
    head = struct.pack("<BBHH", msg_type, version, seq, len(body) if length is None else length)
    return head + body + struct.pack("<I", zlib.crc32(head + body))


def wire(pkt: bytes) -> bytes:
    return cobs.encode(pkt) + b"\x00"


def stream_of(*msgs: object, first_seq: int = 0) -> bytes:
    return b"".join(encode_message(m, first_seq + i) for i, m in enumerate(msgs))  # type: ignore[arg-type]


# --- round trips and the byte layout ---------------------------------------------------------------------


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_device_message_round_trips(msg: object) -> None:
    frame = frame_of(encode_message(msg, 513))  # type: ignore[arg-type]
    assert (frame.type, frame.seq) == (msg.TYPE, 513)  # type: ignore[attr-defined]
    assert decode_message(frame) == msg


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: type(c).__name__)
def test_every_command_round_trips(cmd: object) -> None:
    frame = frame_of(encode_command(cmd, 65_535))  # type: ignore[arg-type]
    assert frame.seq == 65_535
    assert decode_command(frame) == cmd


def test_fixed_messages_declare_their_fields_in_layout_order() -> None:
    """A message without a tail is built positionally from its layout's values (the decoder's fast path), so its
    dataclass fields must be the layout's names in the same order."""
    wires = [c for c in (*{type(m) for m in MESSAGES}, *{type(c) for c in COMMANDS}) if hasattr(c, "LAYOUT")]
    assert len(wires) >= 10
    for cls in wires:
        tail = cls.TAIL.fields if isinstance(cls.TAIL, Strings) else [(cls.TAIL.field, 0)] if cls.TAIL else []
        names = [f.name for f in dataclasses.fields(cls)]
        assert names == [*cls.LAYOUT.names, *(name for name, _ in tail)], cls.__name__


def test_chunk_values_are_kept_as_the_wire_carries_them() -> None:
    """Built and decoded chunks hold the same f32/int32 arrays (so they compare equal); values the wire cannot carry
    are refused when the chunk is built."""
    built = GradChunk(1, 0, 0, 3, 0, (0.1, 2, -3.5))
    assert built.values == array("f", [0.1, 2.0, -3.5]) and built.values[0] != 0.1  # rounded to f32, as sent
    assert decode_message(frame_of(encode_message(built, 0))) == built
    with pytest.raises(ValueError, match="not int32"):
        WSet(0, 0, 1, 0, (2**31,), WSet.INT_WORDS)
    with pytest.raises(ValueError, match="not int32"):
        GradChunk(1, 0, 0, 1, 0, (0.5,), exponent=-3)


def test_body_sizes_match_the_doc() -> None:
    sizes = {MsgType.STEP: 40, MsgType.EVAL: 24, MsgType.SUMMARY: 36, MsgType.PONG: 4, MsgType.ACK: 8}
    for msg in MESSAGES:
        if msg.TYPE in sizes:
            assert len(msg.pack()) == sizes[msg.TYPE]
    assert len(Start(1, 0.1, 1).pack()) == 24  # prox_mu last; the device also takes the 20 bytes before it
    assert len(GradChunk(0, 0, 0, 5, 0, (1.0,)).pack()) == 24
    assert len(HELLO.pack()) == 32 + 2 + len("nucleo-f746zg") + len("abc123")


def crc32_bitwise(data: bytes) -> int:
    """Reference CRC-32 (IEEE 802.3, reflected poly 0xEDB88320, init and final xor 0xFFFFFFFF)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_frame_layout_and_crc_are_zlib_crc32_compatible() -> None:
    head = bytes([0x83, 2, 0x02, 0x01, 4, 0])  # PING, version 2, seq 0x0102 LE, len 4 LE
    body = bytes([0x78, 0x56, 0x34, 0x12])  # nonce 0x12345678 LE
    crc = crc32_bitwise(head + body)
    assert crc == zlib.crc32(head + body) == 0x31A4E4E3
    assert crc32_bitwise(b"123456789") == 0xCBF43926  # the standard check value
    data = encode_command(Ping(0x12345678), 0x0102)
    assert data == cobs.encode(head + body + crc.to_bytes(4, "little")) + b"\0"
    # golden frame: COBS blocks 06|8302020104 09|78563412 e3e4a431, delimiter 00
    assert data.hex() == "0683020201040978563412e3e4a43100"


def test_seq_wraps_when_encoding() -> None:
    assert frame_of(encode_frame(MsgType.LOG, 65_536 + 3, b"\x01")).seq == 3


def test_largest_body_fits_the_encoded_bound_and_larger_is_refused() -> None:
    data = encode_frame(MsgType.LOG, 0, b"\x01" + b"x" * (MAX_BODY - 1))
    assert len(data) - 1 <= MAX_ENCODED
    assert decode_message(frame_of(data)) == Log(1, "x" * (MAX_BODY - 1))
    with pytest.raises(ValueError, match="exceeds 1024"):
        encode_frame(MsgType.LOG, 0, b"\x01" * (MAX_BODY + 1))


def test_encoding_refuses_values_the_doc_does_not_allow() -> None:
    with pytest.raises(ValueError, match="board"):
        dataclasses.replace(HELLO, board="b" * 33).pack()
    with pytest.raises(ValueError, match="240"):
        GradChunk(0, 0, 0, 300, 0, (0.0,) * 241).pack()
    with pytest.raises(ValueError, match="cannot encode"):
        Start(-1, 0.1, 0).pack()


# --- resynchronisation and error accounting --------------------------------------------------------------

A, B, C = Pong(1), Log(1, "between"), Pong(3)


def test_bit_flips_inside_a_frame_drop_only_that_frame() -> None:
    first, middle, last = encode_message(A, 0), encode_message(B, 1), encode_message(C, 2)
    for i in range(len(middle) - 1):
        for bit in range(8):
            bad = bytearray(middle)
            bad[i] ^= 1 << bit
            dec = FrameDecoder()
            frames = dec.feed(first + bytes(bad) + last)
            assert [decode_message(f) for f in frames] == [A, C], (i, bit)
            s = dec.stats
            assert s.crc_errors + s.cobs_errors + s.malformed + s.bad_version >= 1, (i, bit)
            assert s.lost_frames == 1


def test_flip_in_the_body_is_counted_as_crc_error() -> None:
    data = bytearray(encode_message(B, 1))
    data[10] ^= 0x04
    dec = FrameDecoder()
    assert [decode_message(f) for f in dec.feed(bytes(data) + encode_message(C, 2))] == [C]
    assert (dec.stats.crc_errors, dec.stats.frames_ok) == (1, 1)
    assert dec.errors[0].kind == "crc_errors" and dec.errors[0].offset == 0


def test_stream_starting_mid_frame_resyncs_at_the_next_zero() -> None:
    middle, last = encode_message(B, 1), encode_message(C, 2)
    for cut in range(1, len(middle)):
        dec = FrameDecoder()
        frames = dec.feed(middle[cut:] + last)
        assert [decode_message(f) for f in frames] == [C], cut
        assert frames[0].offset == len(middle) - cut
        assert dec.stats.garbage_bytes == len(middle) - cut - 1


def test_frame_cut_then_delimiter_then_valid_frame() -> None:
    middle = encode_message(B, 1)
    for cut in range(1, len(middle) - 1):
        dec = FrameDecoder()
        frames = dec.feed(middle[:cut] + b"\x00" + encode_message(C, 2))
        assert [decode_message(f) for f in frames] == [C], cut
        assert dec.stats.dropped_frames == 1


def test_frame_cut_without_delimiter_costs_exactly_the_next_frame() -> None:
    dec = FrameDecoder()
    frames = dec.feed(encode_message(B, 1)[:7] + encode_message(A, 2) + encode_message(C, 3))
    assert [decode_message(f) for f in frames] == [C]
    assert dec.stats.dropped_frames == 1


def test_garbage_before_between_and_idle_zeros() -> None:
    junk = b"\xff\x13boot banner\r\n"
    data = junk + b"\x00\x00" + encode_message(A, 0) + b"\x00" * 5 + junk + b"\x00" + encode_message(C, 1)
    dec = FrameDecoder()
    frames = dec.feed(data)
    assert [decode_message(f) for f in frames] == [A, C]
    assert dec.stats.garbage_bytes == 2 * len(junk)
    assert dec.stats.dropped_frames == 2 and dec.stats.lost_frames == 0
    assert frames[1].offset == data.index(encode_message(C, 1))


def test_oversize_run_is_bounded_counted_and_recovered_from() -> None:
    dec = FrameDecoder()
    for _ in range(50):
        assert dec.feed(b"\x55" * 997) == []
        assert dec.buffered <= MAX_ENCODED
    frames = dec.feed(b"\x55\x00" + encode_message(C, 9))
    assert [decode_message(f) for f in frames] == [C]
    assert dec.stats.oversize == 1
    assert dec.stats.garbage_bytes == 50 * 997 + 1
    assert dec.errors[0].kind == "oversize" and dec.errors[0].offset == 0


def test_terminated_run_just_over_the_bound_is_oversize_and_at_the_bound_is_not() -> None:
    dec = FrameDecoder()
    dec.feed(b"\x01" * (MAX_ENCODED + 1) + b"\x00")
    assert dec.stats.oversize == 1
    dec = FrameDecoder()
    dec.feed(b"\x01" * MAX_ENCODED + b"\x00")
    assert (dec.stats.oversize, dec.stats.malformed) == (0, 1)


@pytest.mark.parametrize(
    ("data", "counter", "detail"),
    [
        (wire(packet(0x09, 0, b"\1\2\3\4", version=PROTOCOL_VERSION + 1)), "bad_version",
         f"version {PROTOCOL_VERSION + 1}"),
        (wire(packet(0x09, 0, b"\1\2\3\4", length=5)), "malformed", "len 5 but packet carries 4"),
        (wire(packet(0x07, 0, b"\1" * 1025)), "malformed", "len 1025 > 1024"),
        (wire(b"\x09\x01\x00\x00\x00\x00\x00\x00\x00"), "malformed", "9 bytes < 10"),
        (b"\x05\x01\x02\x00", "cobs_errors", "COBS"),
        (wire(packet(0x09, 0, b"\1\2\3\4")[:-1] + b"\x99"), "crc_errors", "CRC mismatch in PONG seq=0"),
    ],
    ids=["wrong-version", "len-mismatch", "len-over-max", "short", "cobs", "crc"],
)
def test_each_rejection_is_counted_by_kind(data: bytes, counter: str, detail: str) -> None:
    dec = FrameDecoder()
    frames = dec.feed(encode_message(A, 0) + data + encode_message(C, 1))
    assert [decode_message(f) for f in frames] == [A, C]
    assert getattr(dec.stats, counter) == 1 and dec.stats.dropped_frames == 1
    assert detail in dec.errors[0].detail
    assert dec.errors[0].offset == len(encode_message(A, 0))


@pytest.mark.parametrize(
    ("seqs", "lost"),
    [([0, 1, 2], 0), ([0, 1, 5], 3), ([65_534, 65_535, 0, 1], 0), ([65_535, 2], 2), ([10, 9], 65_534)],
)
def test_lost_frames_from_seq_gaps_modulo_65536(seqs: list[int], lost: int) -> None:
    dec = FrameDecoder()
    assert len(dec.feed(b"".join(encode_message(A, s) for s in seqs))) == len(seqs)
    assert dec.stats.lost_frames == lost


def test_forget_seq_skips_the_gap_after_a_known_restart() -> None:
    dec = FrameDecoder()
    dec.feed(encode_message(A, 500))
    dec.forget_seq()
    dec.feed(encode_message(A, 0))
    assert dec.stats.lost_frames == 0


def test_every_split_point_across_feed_calls_gives_the_same_frames() -> None:
    data = b"\x01junk\x00" + stream_of(*MESSAGES) + b"\x07\x00\x00" + encode_message(C, 40)
    whole = FrameDecoder()
    expected = whole.feed(data)
    assert len(expected) == len(MESSAGES) + 1
    for cut in range(len(data) + 1):
        dec = FrameDecoder()
        assert dec.feed(data[:cut]) + dec.feed(data[cut:]) == expected, cut
        assert dec.stats == whole.stats
    dec = FrameDecoder()
    assert [f for i in range(len(data)) for f in dec.feed(data[i : i + 1])] == expected


def test_start_offset_shifts_reported_offsets() -> None:
    frames = FrameDecoder(start_offset=1000).feed(b"\x00" + encode_message(A, 0))
    assert frames[0].offset == 1001


# --- untrusted bodies ------------------------------------------------------------------------------------

HOSTILE = b"<script>alert('x')</script>\"; DROP\xff\xfe\xc3\xa9\x1b[31m\x07\r\n\x7f\tend"


def test_hostile_log_text_is_bounded_printable_and_verbatim_otherwise() -> None:
    log = decode_message(frame_of(encode_frame(MsgType.LOG, 0, b"\x03" + HOSTILE)))
    assert isinstance(log, Log) and log.level == 3
    assert log.text == "<script>alert('x')</script>\"; DROP\ufffd\ufffd\ufffd\ufffd[31mend"
    assert all(ch.isprintable() for ch in log.text)


def test_log_and_fault_text_are_bounded_by_the_body() -> None:
    log = decode_message(frame_of(encode_frame(MsgType.LOG, 0, b"\x01" + b"\xff" * (MAX_BODY - 1))))
    fault = decode_message(frame_of(encode_frame(MsgType.FAULT, 0, bytes(24) + b"\x1b" * (MAX_BODY - 24))))
    assert isinstance(log, Log) and log.text == "\ufffd" * (MAX_BODY - 1)
    assert isinstance(fault, Fault) and fault.text == ""


def test_hostile_strings_in_hello_and_fault_are_sanitised() -> None:
    body = HELLO_FIXED + bytes([20]) + HOSTILE[:20] + bytes([3]) + b"\x00\xff<"
    hello = decode_message(frame_of(encode_frame(MsgType.HELLO, 0, body)))
    assert isinstance(hello, Hello)
    assert hello.board == "<script>alert('x')</"
    assert hello.build_id == "\ufffd<"
    fault = decode_message(frame_of(encode_frame(MsgType.FAULT, 0, bytes(24) + HOSTILE)))
    assert isinstance(fault, Fault) and fault.text.startswith("<script>") and fault.text.endswith("end")


def test_clean_text_removes_every_control_character() -> None:
    assert clean_text(bytes(range(256))) == "".join(map(chr, range(0x20, 0x7F))) + "\ufffd" * 128


HELLO_FIXED = HELLO.pack()[:32]


def grad_head(total: int, offset: int, count: int) -> bytes:
    return struct.pack("<IBBHIIHH", 1, 0, 0, 0, total, offset, count, 0)


def at(msg_type: int, body: bytes, seq: int = 7, offset: int = 321) -> Frame:
    return Frame(msg_type, seq, body, offset)


@pytest.mark.parametrize(
    ("frame", "words"),
    [
        (
            at(MsgType.STEP, bytes(12)),
            ["STEP seq=7 at stream offset 321", "body too short for STEP: 12 < 40"],
        ),
        (at(MsgType.STEP, bytes(41)), ["body too long for STEP: 41 > 40"]),
        (at(MsgType.GRAD, struct.pack("<IBBHIIHH", 1, 0, 0, 0, 999, 0, 300, 0)), ["GRAD", "count 300 > 240"]),
        (
            at(MsgType.GRAD, struct.pack("<IBBHIIHH", 1, 0, 0, 0, 8, 6, 3, 0) + bytes(12)),
            ["[6, 9)", "total 8"],
        ),
        (at(MsgType.GRAD, struct.pack("<IBBHIIHH", 1, 0, 0, 0, 9, 0, 3, 0) + bytes(8)), ["GRAD", "8 < 32"]),
        (at(MsgType.GSTAT, struct.pack("<IB3x", 1, 2) + bytes(12)), ["GSTAT", "20 < 34"]),  # two 13-byte entries
        (
            at(MsgType.HELLO, HELLO_FIXED + b"\x21" + b"b" * 33 + b"\x00"),
            ["board string longer than 32"],
        ),
        (at(MsgType.HELLO, HELLO_FIXED + b"\x00\x29" + b"c" * 41), ["build_id string longer than 40"]),
        (at(MsgType.HELLO, HELLO_FIXED + b"\x10abc"), ["board of 16 bytes runs past the body end"]),
        (at(MsgType.HELLO, HELLO_FIXED + b"\x00"), ["HELLO", "34"]),
        (at(MsgType.HELLO, HELLO.pack() + b"zz"), ["2 trailing bytes"]),
        (at(MsgType.LOG, b""), ["LOG", "0 < 1"]),
        (at(MsgType.FAULT, bytes(23)), ["FAULT", "23 < 24"]),
        (at(0x42, b""), ["type 0x42 seq=7", "not a device→host message type"]),
        (at(MsgType.START, Start(1, 0.1, 1).pack()), ["START", "not a device→host"]),
    ],
    ids=lambda v: "" if isinstance(v, list) else f"{v.type_name}-{len(v.body)}",
)
def test_decode_errors_name_type_seq_offset_and_the_problem(frame: Frame, words: list[str]) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_message(frame)
    for word in words:
        assert word in str(info.value)
    assert (info.value.seq, info.value.offset, info.value.frame_type) == (7, 321, frame.type)


def test_decode_command_rejects_device_messages() -> None:
    with pytest.raises(ProtocolError, match=r"PONG seq=0 .*host→device command"):
        decode_command(frame_of(encode_message(A, 0)))


def test_frame_offset_points_at_the_frame_in_the_stream() -> None:
    data = stream_of(A, B) + encode_frame(MsgType.STEP, 2, bytes(12))
    frames = FrameDecoder().feed(data)
    with pytest.raises(ProtocolError, match=f"STEP seq=2 at stream offset {len(stream_of(A, B))}:"):
        decode_message(frames[2])


@pytest.mark.parametrize("cls", [WData, WSet], ids=lambda c: c.__name__)
def test_parameter_chunks_follow_the_doc_and_are_bounded(cls: type) -> None:
    """WDATA and WSET share one head (docs/protocol.md); a chunk past its tensor, over 240 values or with a body
    that disagrees with its count is refused."""
    assert _doc_layout(_doc_bodies()[cls.TYPE.name]) == list(cls.HEAD.items)
    good = cls(1, 0, 10, 8, (1.0, 2.0))
    body = good.pack()
    assert cls.unpack(frame_of(encode_frame(cls.TYPE, 0, body))) == good
    past = body[:8] + struct.pack("<I", 9) + body[12:]  # offset 9 + 2 values > total 10
    kind = body[:2] + b"\x02" + body[3:]  # neither f32 nor int32 words
    for bad, why in ((past, "exceed total"), (body[:-4], "too short"), (body + b"\0" * 4, "too long"),
                     (kind, "kind 2 is neither")):
        with pytest.raises(ProtocolError, match=why):
            cls.unpack(frame_of(encode_frame(cls.TYPE, 0, bad)))
    with pytest.raises(ValueError, match="exceeds 240"):
        cls(0, 0, 300, 0, (0.0,) * 241).pack()


def test_layer_costs_round_trip_and_bound():
    from bench.link.protocol import LayerCost, LayerCosts

    msg = LayerCosts((LayerCost(0, 2, 2**40, 5, 6), LayerCost(1, 3, 7, 0, 0)))
    frame = FrameDecoder().feed(encode_message(msg, 9))[0]
    assert decode_message(frame) == msg
    too_many = encode_frame(0x0B, 1, bytes([33, 0, 0, 0]) + b"\0" * 28 * 33)
    with pytest.raises(ProtocolError, match="LAYERS count 33 > 32"):
        decode_message(FrameDecoder().feed(too_many)[0])


# ---- the doc's message tables against the declared layouts ---------------------------------------------------------

DOC_CODES = {"u8": "B", "i8": "b", "u16": "H", "u32": "I", "u64": "Q", "f32": "f"}


def _doc_bodies() -> dict[str, str]:
    """name -> body column of the message tables in docs/protocol.md."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    rows = re.findall(r"^\| 0x[0-9A-F]{2} \| (\w+) \| (.+) \|$", text, flags=re.M)
    return dict(rows)


def _doc_layout(body: str) -> list[tuple[str, str]]:
    """The fixed fields a body column names, up to its variable tail (counted strings, text, arrays, entries)."""
    items: list[tuple[str, str]] = []
    for part in re.sub(r"\([^()]*\)", "", body).split(","):
        m = re.fullmatch(r"\s*(u8|i8|u16|u32|u64|f32) (\w+)(?:\[(\d+)\])?\s*", part)
        if m is None or m.group(2).endswith("_len"):
            break  # the variable tail starts (a counted string's length byte, text, arrays, entries)
        kind, name, count = m.groups()
        if name == "reserved":
            items.append(("", f"{count}x") if count else ("_", DOC_CODES[kind]))
        else:
            items.append((name, DOC_CODES[kind]))
    return items


@pytest.mark.parametrize("cls", [Hello, Step, Eval, Summary, Log, Fault, Pong, Ack, Start, Stop, Ping, WGet],
                         ids=lambda c: c.__name__)
def test_doc_table_matches_the_declared_layout(cls: type) -> None:
    """Each fixed body in docs/protocol.md is the message's `Layout`, field by field: names, widths and order (HELLO's
    counted strings and LOG/FAULT's text follow their fixed part)."""
    body = _doc_bodies()[cls.TYPE.name]
    doc = _doc_layout(body) if body != "(empty)" else []
    assert doc == list(cls.LAYOUT.items), f"{cls.TYPE.name}: doc {doc} vs layout {cls.LAYOUT.items}"
    if isinstance(cls.TAIL, Strings):
        for name, limit in cls.TAIL.fields:
            assert re.search(rf"\b{name.split('_')[0]}\w*\[\w+\] \(≤ {limit}\)", body), (name, body)
