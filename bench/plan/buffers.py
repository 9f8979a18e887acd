"""Arena buffers and their placement by lifetime, shared by the fp32 and the int8 planners and by the fp32 memory
planner of imported graphs: one first-fit placement, one peak time, one composition by kind."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

FP32_ALIGN = 8


@dataclass(frozen=True)
class Buffer:
    """A range of the arena live from forward/backward time ``start`` to ``end`` inclusive."""

    name: str
    size: int
    start: int
    end: int
    offset: int = -1


_B = TypeVar("_B", bound=Any)  # a buffer dataclass: Buffer here, QBuffer in bench.plan.int8


def peak_time(buffers: Sequence[Any]) -> int:
    """The plan time at which the most buffer bytes are live."""
    times = sorted({t for b in buffers for t in (b.start, b.end)})
    return max(times, key=lambda t: sum(b.size for b in buffers if b.start <= t <= b.end), default=0)


def arena_composition(buffers: Sequence[_B], kind_of: Callable[[_B], str]) -> dict[str, int]:
    """Bytes by kind (weights, activations, gradients, optimizer) of the buffers live at the peak time."""
    live = peak_time(buffers)
    parts = {"weights": 0, "activations": 0, "gradients": 0, "optimizer": 0}
    for b in buffers:
        if b.start <= live <= b.end:
            parts[kind_of(b)] += b.size
    return parts


def buffer_kind(name: str) -> str:
    if name[0] in "wb":
        return "weights"
    return "activations" if name[0] == "a" else "gradients"


def channel_count(out_c: int, ratio: float) -> int:
    """Output channels a ratio selects: round(ratio · out_c), at least 1."""
    return min(out_c, max(1, int(ratio * out_c + 0.5)))


def aligned(nbytes: int, align: int = FP32_ALIGN) -> int:
    """``nbytes`` rounded up to ``align`` (the fp32 engine's float buffers are 8-byte aligned)."""
    return (nbytes + align - 1) // align * align


def place_buffers(buffers: list[_B]) -> list[_B]:
    """Greedy first fit, largest first, among buffers whose lifetimes overlap (any dataclass with name, size,
    start, end and offset: the fp32 and the int8 planners place their buffers alike)."""
    placed: list[_B] = []
    for b in sorted(buffers, key=lambda b: (-b.size, b.start, b.name)):
        clashes = sorted((p.offset, p.offset + p.size) for p in placed if p.start <= b.end and b.start <= p.end)
        offset = 0
        for lo, hi in clashes:
            if offset + b.size <= lo:
                break
            offset = max(offset, hi)
        placed.append(dataclasses.replace(b, offset=offset))
    return sorted(placed, key=lambda b: b.offset)
