"""Results files are replaced whole: a write that fails (or a kill mid-write) leaves the previous file intact."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
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


def test_every_results_column_is_documented_and_files_carry_their_schema_version(tmp_path) -> None:
    """docs/results.md lists each column of each table (a new column without docs fails here), and a written parquet
    file says which table and schema version it is."""
    import json
    import re

    import pyarrow.parquet as pq

    from bench.records.run import GRAD_COLUMNS, LAYER_COLUMNS, RUN_COLUMNS, SCHEMA_VERSION, STEP_COLUMNS, write_table

    doc = (Path(__file__).resolve().parents[1] / "docs" / "results.md").read_text()
    for table, columns in (("runs", RUN_COLUMNS), ("steps", STEP_COLUMNS), ("grads", GRAD_COLUMNS),
                           ("layers", LAYER_COLUMNS)):
        section = doc.split(f"## {table}.parquet", 1)[1].split("\n## ", 1)[0]
        documented = {name.strip() for row in re.findall(r"^\| ([^|]+) \|", section, re.M)
                      for name in row.split(",")} - {"column"}
        assert set(columns) <= documented, (table, sorted(set(columns) - documented))
        assert documented <= set(columns), (table, sorted(documented - set(columns)))
    write_table(pd.DataFrame({"run_id": ["a"]}), tmp_path / "runs.parquet", "runs")
    meta = json.loads(pq.read_schema(tmp_path / "runs.parquet").metadata[b"bench.schema"])
    assert meta == {"table": "runs", "version": SCHEMA_VERSION, "doc": "docs/results.md"}
    assert (tmp_path / "runs.csv").read_text().splitlines() == ["run_id", "a"]
