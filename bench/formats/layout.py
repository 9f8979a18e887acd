"""A fixed binary layout: ordered (field, struct code) items, little-endian, no implicit alignment.

Why one class for every format: the protocol's messages, the plan and dataset blobs and the generated C offsets must
agree byte for byte, so each layout is written once and everything else (pack, unpack, offsets, C defines) follows.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

RESERVED = "_"  # a reserved value: packed as 0, dropped on unpacking


def is_reserved(name: str) -> bool:
    """``"_"`` or a name starting with ``reserved``: packed as 0, dropped on unpacking (named ones get a C offset, so
    the device can check they are zero)."""
    return name == RESERVED or name.startswith("reserved")


@dataclass(frozen=True)
class Layout:
    """Items are (field, struct code). A named field takes its value from a mapping or an object's attribute;
    ``"_"`` is a reserved value, packed as 0; padding codes (``"3x"``) take no value."""

    items: tuple[tuple[str, str], ...]

    @cached_property
    def struct(self) -> struct.Struct:
        """Built once per layout: every frame of a stream is decoded through it."""
        return struct.Struct("<" + "".join(code for _, code in self.items))

    @property
    def size(self) -> int:
        return self.struct.size

    @cached_property
    def _valued_names(self) -> tuple[str, ...]:
        return tuple(name for name, code in self.items if not code.endswith("x"))

    @cached_property
    def _kept(self) -> tuple[tuple[int, str], ...]:
        """(value index, name) of the fields unpacking returns: valued and not reserved."""
        return tuple((i, name) for i, name in enumerate(self._valued_names) if not is_reserved(name))

    def _valued(self) -> list[str]:
        return list(self._valued_names)

    def pack(self, record: Mapping[str, Any] | object) -> bytes:
        """The bytes of ``record`` (a mapping of field values, or an object with them as attributes)."""
        get = record.__getitem__ if isinstance(record, Mapping) else lambda name: getattr(record, name)
        values = [0 if is_reserved(name) else get(name) for name in self._valued()]
        try:
            return self.struct.pack(*values)
        except struct.error as exc:
            raise ValueError(f"cannot encode {dict(zip(self._valued(), values, strict=True))}: {exc}") from exc

    def unpack_from(self, data: bytes, pos: int = 0) -> dict[str, Any]:
        """The named fields at ``pos`` (the caller has checked that ``size`` bytes are there)."""
        values = self.struct.unpack_from(data, pos)
        return {name: values[i] for i, name in self._kept}

    @cached_property
    def names(self) -> tuple[str, ...]:
        """The fields unpacking returns, in order."""
        return tuple(name for _, name in self._kept)

    @cached_property
    def _kept_indices(self) -> tuple[int, ...] | None:
        """Indices of the values unpacking keeps, or None when it keeps them all."""
        return None if len(self._kept) == len(self._valued_names) else tuple(i for i, _ in self._kept)

    def values_from(self, data: bytes, pos: int = 0) -> tuple[Any, ...]:
        """The named fields' values at ``pos``, in order: a message built positionally skips the dict of
        `unpack_from` (the caller has checked the size)."""
        values = self.struct.unpack_from(data, pos)
        kept = self._kept_indices
        return values if kept is None else tuple(values[i] for i in kept)

    def offsets(self) -> dict[str, tuple[int, str]]:
        """Field -> (byte offset, struct code) of every named field, named padding and reserved fields included."""
        out: dict[str, tuple[int, str]] = {}
        pos = 0
        for name, code in self.items:
            if name and name != RESERVED:
                out[name] = (pos, code)
            pos += struct.calcsize("<" + code)
        return out

    def c_defines(self, prefix: str) -> list[str]:
        """``#define PREFIX_FIELD offset`` for every named field, and ``PREFIX_SIZE`` (the C side's offsets)."""
        lines = [f"#define {prefix}_{name.upper()} {off}u" for name, (off, _) in self.offsets().items()]
        return [*lines, f"#define {prefix}_SIZE {self.size}u"]
