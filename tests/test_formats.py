"""Each binary format has one source of truth, `bench.formats.blobs`: the docs' tables say the same field by field,
the firmware's generated header is current, and the host's packers write through the layouts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.formats import cheader
from bench.formats.blobs import RECORDS
from bench.formats.layout import Layout, is_reserved

ROOT = Path(__file__).resolve().parent.parent
CODES = {"u8": "B", "i8": "b", "u16": "H", "i16": "h", "u32": "I", "i32": "i", "f32": "f"}


def _doc_rows(doc: str, heading: str) -> list[tuple[int, str, str]]:
    """(offset, type, field) rows of the first table after ``heading``."""
    text = (ROOT / doc).read_text()
    start = text.index(heading)
    rows = []
    for line in text[start:].splitlines()[1:]:
        m = re.fullmatch(r"\| (\d+) \| ([^|]+) \| (.+) \|", line.strip())
        if m:
            rows.append((int(m.group(1)), m.group(2).strip(), m.group(3).strip()))
        elif rows and not line.startswith("|"):
            break
    return rows


def _names(field: str, count: int) -> list[str]:
    """The identifiers a row names: its first ``count`` comma-separated words before any ':', '(', ';' or '='."""
    head = re.split(r"[:(;=`]", field, maxsplit=1)[0]
    words = [w.split()[0] for w in head.split(",") if w.split()]
    if count > 1 and len(words) < count:
        return [f"{words[0]}{k}" for k in range(count)]  # an array named once: dims -> dims0..dims3
    return words[:count]


def _doc_layout(doc: str, heading: str) -> list[tuple[int, str, str]]:
    """(offset, field, struct code) of every documented field, reserved ones as '_', padding as 'Nx'."""
    out = []
    for offset, kind, field in _doc_rows(doc, heading):
        pad = re.fullmatch(r"(\d+) bytes", kind)
        if pad:
            out.append((offset, "", f"{pad.group(1)}x"))
            continue
        m = re.fullmatch(r"(u8|i8|u16|i16|u32|i32|f32)(?: ×(\d+))?", kind)
        assert m, f"{doc}: type {kind!r} at offset {offset}"
        count, code = int(m.group(2) or 1), CODES[m.group(1)]
        names = ["_"] if field.startswith("reserved") else _names(field, count)
        width = {"B": 1, "b": 1, "H": 2, "h": 2}.get(code, 4)
        out += [(offset + k * width, name, code) for k, name in enumerate(names)]
    return out


def _layout_rows(layout: Layout) -> list[tuple[int, str, str]]:
    """As `_doc_layout` gives them: reserved values as '_', padding unnamed."""
    rows, pos = [], 0
    for name, code in layout.items:
        rows.append((pos, "" if code.endswith("x") else "_" if is_reserved(name) else name, code))
        pos += Layout(((name, code),)).size
    return rows


@pytest.mark.parametrize("prefix", list(RECORDS))
def test_doc_table_is_the_layout(prefix: str) -> None:
    layout, doc, heading = RECORDS[prefix]
    assert _doc_layout(doc, heading) == _layout_rows(layout), f"{doc} '{heading}' differs from bench.formats.blobs"


def test_generated_c_header_is_current() -> None:
    committed = (ROOT / "firmware" / "engine" / "formats.h").read_text()
    assert committed == cheader.render(), "run `python -m bench.formats.cheader` and commit firmware/engine/formats.h"


def test_c_header_generator_runs(tmp_path: Path) -> None:
    out = tmp_path / "formats.h"
    proc = subprocess.run([sys.executable, "-m", "bench.formats.cheader", str(out)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "#define TQPL_O_MACS 36u" in out.read_text() and "#define TPLN_L_SIZE 64u" in out.read_text()
