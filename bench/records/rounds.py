"""The federation's results: one row per (round, client) and one global row per round, written after every round.

``rounds.parquet`` (and CSV beside it) holds them; ``federation.json`` the settings, the clients' shards and the
global accuracy per round. Columns and how each figure was obtained: docs/federated.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench.records.run import atomic_path, write_table

ROUND_COLUMNS = [
    "round", "role", "client", "board", "technique", "samples", "status", "error", "prox_mu", "steps", "local_loss",
    "acc_before", "acc_local", "acc_global", "loss_global", "eval_n", "measured_on", "clients_averaged",
    "weight_share", "update_norm", "bytes_down", "bytes_up", "values_down", "values_up", "count_unit",
    "counts_per_step", "energy_round_uj", "energy_source", "peak_sram_bytes", "fidelity_max_rel_err", "wall_s",
    "wall_down_s", "wall_up_s", "node", "note",
]


class RoundsWriter:
    """Appends round rows and rewrites rounds.parquet/.csv atomically each time, so a killed bench keeps every
    finished round."""

    def __init__(self, out: Path, meta: dict[str, object]) -> None:
        self.out, self.meta = out, meta
        self.rows: list[dict[str, object]] = []
        out.mkdir(parents=True, exist_ok=True)
        self._write_meta()
        self.add([])  # a federation that ends before its first round still leaves its (empty) table

    def add(self, rows: list[dict[str, object]]) -> None:
        self.rows += rows
        write_table(pd.DataFrame(self.rows, columns=ROUND_COLUMNS), self.out / "rounds.parquet", "rounds")

    def finish(self, **extra: object) -> None:
        self.meta.update(extra)
        self._write_meta()

    def _write_meta(self) -> None:
        with atomic_path(self.out / "federation.json") as tmp:
            tmp.write_text(json.dumps(self.meta, indent=2, default=str) + "\n")


def read_rounds(out: Path) -> tuple[pd.DataFrame, dict[str, object]]:
    """rounds.parquet and federation.json of a federation's out directory."""
    return pd.read_parquet(out / "rounds.parquet"), json.loads((out / "federation.json").read_text())
