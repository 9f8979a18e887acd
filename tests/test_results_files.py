"""Results files are replaced whole: a write that fails (or a kill mid-write) leaves the previous file intact."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.records.run import atomic_path


def test_atomic_path_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "runs.csv"
    target.write_text("old\n")
    with atomic_path(target) as tmp:
        assert tmp != target and tmp.parent == tmp_path
        tmp.write_text("new\n")
        assert target.read_text() == "old\n"  # nothing visible until the rename
    assert target.read_text() == "new\n"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("torn")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv"]  # no temporary left behind
