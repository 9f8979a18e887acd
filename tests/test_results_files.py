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


def test_tables_are_stored_with_nullable_integers_booleans_and_categories(tmp_path: Path) -> None:
    """What `pd.read_parquet` gives a user: byte counts as Int64 with <NA> (not float NaN), flags as booleans, names
    as categories, scheme and numerics apart, each step's sample/label/prediction, counts under their unit."""
    from bench.config.boards import load_catalogue
    from bench.link.protocol import Step
    from bench.records.run import ResultsWriter, RunRecord
    from bench.target.drivers import Counting

    board = load_catalogue()["rpi-pico"]
    record = RunRecord("pico.last-int8-noqas@16KB", board, "emulated", "last-int8-noqas@16KB", "digits-cnn",
                       counting=Counting("instructions", 1.0), fidelity_exact=1.0, planned_sram_bytes=1234,
                       steps=[Step(0, 5, 3, 3, 0.5, 10, 20, 30, 100, 200, 300), Step(1, 7, 2, 1, 0.7, 11, 21, 31, 100,
                                                                                        200, 301)])
    writer = ResultsWriter(tmp_path, {})
    writer.add(record)
    writer.add(RunRecord("pico.full-fp32", board, "emulated", "full-fp32", "digits-cnn", status="hang"))
    runs = pd.read_parquet(tmp_path / "runs.parquet")
    assert str(runs["planned_sram_bytes"].dtype) == "Int64" and runs["planned_sram_bytes"].tolist()[0] == 1234
    assert runs["planned_sram_bytes"].isna().tolist() == [False, True]
    assert str(runs["fidelity_exact"].dtype) == "boolean" and runs["fidelity_exact"].tolist()[0] is True
    assert pd.isna(runs["fidelity_exact"].tolist()[1])
    assert all(isinstance(runs[c].dtype, pd.CategoricalDtype) for c in ("board", "technique", "status", "scheme"))
    assert runs[["scheme", "numerics"]].astype(str).values.tolist() == [["last", "int8-noqas"], ["full", "fp32"]]
    assert runs["instr_per_step"].tolist()[0] == 61.5 and runs["cycles_per_step"].isna().all()
    steps = pd.read_parquet(tmp_path / "steps.parquet")
    assert steps[["sample", "label", "pred"]].values.tolist() == [[5, 3, 3], [7, 2, 1]]
    assert steps["correct"].tolist() == [True, False] and str(steps["sample"].dtype) == "Int64"
    assert steps["instr_upd"].tolist() == [30.0, 31.0] and steps["cycles_upd"].isna().all()
