"""Records stage: device messages of one run become a typed ``RunRecord``, then rows of the results tables.

Every figure carries how it was obtained: counts and SRAM are *measured* on the device or twin; energy on a twin is
*modelled* (counts ÷ clock × datasheet run current × supply voltage, assuming one cycle per instruction); planned
SRAM is *planned* (host analysis). Results are written after every run, so an interrupted session keeps what it had.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.config.boards import Board
from bench.energy.integrate import StepEnergies, level_step_energies
from bench.energy.model import board_energy_uj
from bench.link import protocol as proto
from bench.link.faults import FaultStats
from bench.target.drivers import Counting

PHASES = ("fwd", "bwd", "upd")
COUNTS = ("instr", "cycles")  # one column per unit: instructions on twins (-icount), cycles on hardware (DWT)
RUN_COLUMNS = [
    "run_id", "board", "target_kind", "technique", "scheme", "numerics", "model", "status", "error", "steps",
    "final_loss", "acc_before", "acc_after", "loss_before", "loss_after",
    "peak_sram_bytes", "static_bytes", "stack_peak_bytes", "arena_peak_bytes", "flash_bytes",
    "planned_sram_bytes", "planned_required_sram_bytes", "planned_weights_bytes", "planned_activations_bytes",
    "planned_gradients_bytes", "planned_optimizer_bytes", "board_sram_bytes", "board_flash_bytes",
    "count_unit", *(f"{c}{p}_per_step" for c in COUNTS for p in ("", *(f"_{q}" for q in PHASES))),
    "energy_per_step_uj", "energy_source", "energy_meter", "energy_spread_pct",
    "lost_frames", "journal", "fidelity_max_rel_err", "fidelity_exact", "build_id", "plan_hash", "wall_s",
    "link_faults", "frames_damaged_injected", "phase", "lr", "repeat", "seed", "place", "exporter",
]
LAYER_COLUMNS = ["run_id", "layer", "op", *(f"{c}_{p}_per_step" for c in COUNTS for p in PHASES),
                 "planned_weights_ram_bytes", "planned_kept_act_bytes", "planned_grad_bytes", "planned_scratch_bytes"]
OP_NAMES = {1: "dense", 2: "conv2d", 3: "relu", 4: "maxpool2d", 5: "dwconv2d", 6: "gap", 7: "add",
            0x81: "conv_i8", 0x82: "dwconv_i8", 0x83: "fc_i8", 0x84: "avgpool_i8", 0x85: "mean_i8", 0x86: "add_i8",
            0x87: "reshape_i8", 0x88: "softmax_i8", 0x89: "maxpool_i8"}
STEP_COLUMNS = ["run_id", "step", "sample", "label", "pred", "correct", "loss",
                *(f"{c}_{p}" for c in COUNTS for p in PHASES), "sram_bytes"]
GRAD_COLUMNS = ["run_id", "step", "layer", "param", "l2", "max_abs", "values"]
PARAM_NAMES = {0: "w", 1: "b"}
MEM_KINDS = ("weights", "activations", "gradients", "optimizer")


@dataclass
class RunRecord:
    """What one run produced, as received; derived figures are computed from it, never stored twice."""

    run_id: str
    board: Board
    target_kind: str
    technique: str
    model: str
    journal: str = ""
    status: str = "ok"
    error: str = ""
    hello: proto.Hello | None = None
    counting: Counting | None = None
    steps: list[proto.Step] = field(default_factory=list)
    gstats: list[proto.GradStats] = field(default_factory=list)
    grads: dict[tuple[int, int, int], np.ndarray] = field(default_factory=dict)
    # int8 plans: the int32 accumulators exactly as streamed, with the exponent E of their step
    qgrads: dict[tuple[int, int, int], tuple[np.ndarray, int]] = field(default_factory=dict)
    # int8 plans: (layer, param) -> C, so that dL/d(code) = accumulator · C · 2^E (set from the plan)
    grad_scales: dict[tuple[int, int], float] = field(default_factory=dict)
    evals: dict[int, proto.Eval] = field(default_factory=dict)
    summary: proto.Summary | None = None
    logs: list[proto.Log] = field(default_factory=list)
    faults: list[proto.Fault] = field(default_factory=list)
    layer_costs: proto.LayerCosts | None = None
    measured_energy: StepEnergies | None = None  # from a meter, per step and phase
    meter: str = ""
    plan_layers: list[dict[str, int]] = field(default_factory=list)  # planned bytes per layer
    plan_composition: dict[str, int] = field(default_factory=dict)  # planned arena bytes by kind at its peak
    lost_frames: int = 0
    planned_sram_bytes: int | None = None  # planned peak: static + the plan's arena
    required_sram_bytes: int | None = None  # what the fit check demands: planned + the linked stack reserve
    flash_bytes: int | None = None
    build_id: str = ""
    plan_hash: int | None = None
    fidelity_max_rel_err: float = math.nan
    fidelity_exact: float = math.nan  # int8: 1.0 when every checked gradient equals the integer reference exactly
    wall_s: float = math.nan
    phase: str = "final"  # "sweep": an lr-sweep run, evaluated on the validation split; "final": on the eval split
    lr: float = math.nan
    repeat: int = 0  # which of the profile's repeats (sample order seed = profile seed + repeat)
    seed: int | None = None  # the device's sample-order seed
    link_faults: str = ""  # faults injected between port and host (bench.link.faults; tests and soaks only)
    injected: FaultStats | None = None  # what the fault proxy did, live
    place: str = ""  # the labgrid place the run used (empty on a local rack)
    exporter: str = ""  # the labgrid exporter (lab host) that served it
    loss_kind: str = "cross-entropy"  # "reconstruction": an autoencoder's MSE, no classes (accuracy NaN)

    def add(self, msg: object) -> None:
        """File one decoded device message."""
        if isinstance(msg, proto.Step):
            self.steps.append(msg)
        elif isinstance(msg, proto.GradStats):
            self.gstats.append(msg)
        elif isinstance(msg, proto.GradChunk):
            self._add_chunk(msg)
        elif isinstance(msg, proto.Eval):
            self.evals[msg.phase] = msg
        elif isinstance(msg, proto.Summary):
            self.summary = msg
        elif isinstance(msg, proto.Log):
            self.logs.append(msg)
        elif isinstance(msg, proto.Fault):
            self.faults.append(msg)
        elif isinstance(msg, proto.LayerCosts):
            self.layer_costs = msg

    def _add_chunk(self, msg: proto.GradChunk) -> None:
        key = (msg.step, msg.layer, msg.param)
        if msg.exponent is not None:
            ints = self.qgrads.get(key)
            if ints is None or ints[0].size != msg.total:
                ints = self.qgrads[key] = (np.zeros(msg.total, np.int64), msg.exponent)
            got = np.asarray(msg.values, np.int64)
            ints[0][msg.offset: msg.offset + got.size] = got[: max(msg.total - msg.offset, 0)]
        tensor = self.grads.get(key)
        if tensor is None or tensor.size != msg.total:
            tensor = self.grads[key] = np.full(msg.total, np.nan, dtype=np.float32)
        values = np.asarray(msg.values, dtype=np.float64)
        if msg.exponent is not None:  # dL/d(code), the gradient w.r.t. the integer codes before QAS
            values = values * self.grad_scales.get((msg.layer, msg.param), 1.0) * 2.0**msg.exponent
        end = min(msg.offset + values.size, tensor.size)
        tensor[msg.offset:end] = values[: max(end - msg.offset, 0)]

    # ---- derived figures ------------------------------------------------------------------------------------

    def counts(self, ticks: float) -> float:
        return self.counting.convert(ticks) if self.counting else math.nan

    def mean_counts(self) -> tuple[float, float, float]:
        if not self.steps:
            return math.nan, math.nan, math.nan
        fwd = float(np.mean([s.t_fwd for s in self.steps]))
        bwd = float(np.mean([s.t_bwd for s in self.steps]))
        upd = float(np.mean([s.t_upd for s in self.steps]))
        return self.counts(fwd), self.counts(bwd), self.counts(upd)

    def energy_per_step_uj(self, counts_per_step: float) -> float:
        """Modelled: counts/clock × datasheet run current × supply voltage (1 cycle per instruction assumed)."""
        return board_energy_uj(self.board, counts_per_step)

    def attach_capture(self, capture, channel: int) -> None:
        """Energy per step and phase from a meter capture spanning this run's training steps."""
        self.measured_energy = level_step_energies(capture, len(self.steps), channel)
        self.meter = capture.meter

    def energy(self) -> tuple[float, str, float]:
        """(µJ per step, ``measured`` or ``modelled``, spread in % of the median): measured when a meter ran (its name
        in ``meter``), else modelled."""
        if self.measured_energy is not None and self.measured_energy.steps:
            per_step = self.measured_energy.per_step_uj()
            median = float(np.median(per_step))
            spread = float((per_step.max() - per_step.min()) / median * 100) if median else math.nan
            return median, "measured", spread
        fwd, bwd, upd = self.mean_counts()
        return self.energy_per_step_uj(fwd + bwd + upd), "modelled", math.nan

    def accuracy(self, phase: int) -> float:
        """Eval accuracy; NaN for a reconstruction, which has no classes (its eval loss is the figure)."""
        ev = self.evals.get(phase)
        return ev.correct / ev.n if ev and ev.n and self.loss_kind != "reconstruction" else math.nan

    def score(self, phase: int) -> float:
        """The figure an lr sweep maximises: eval accuracy, or minus the eval loss for a reconstruction (no classes)."""
        return -self.eval_loss(phase) if self.loss_kind == "reconstruction" else self.accuracy(phase)

    def eval_loss(self, phase: int) -> float:
        """Mean loss over the eval split, before (0) or after (1) training."""
        ev = self.evals.get(phase)
        return ev.loss_sum / ev.n if ev and ev.n else math.nan

    def peak_sram(self) -> tuple[float, float, float, float]:
        """(peak, static, stack, arena) bytes as measured by the device."""
        if self.summary is not None:
            s = self.summary
            return s.sram_peak, s.static_bytes, s.stack_hwm, s.arena_peak
        if self.steps:
            last = self.steps[-1]
            static = self.hello.static_bytes if self.hello else math.nan
            return max(s.sram_used for s in self.steps), static, last.stack_hwm, last.arena_peak
        return math.nan, math.nan, math.nan, math.nan

    def final_loss(self) -> float:
        """Mean loss of the last tenth of the steps (at least 10): one batch-1 loss says little."""
        tail = [s.loss for s in self.steps[-max(10, len(self.steps) // 10):]]
        return float(np.mean(tail)) if tail else math.nan

    @property
    def count_prefix(self) -> str:
        """Which count columns this run fills: ``instr`` (twin, -icount) or ``cycles`` (hardware, DWT)."""
        return "cycles" if self.counting is not None and self.counting.unit == "cycles" else "instr"

    def _count_cells(self, suffix: str, values: dict[str, float]) -> dict[str, float]:
        """``values`` (phase -> count) under this run's unit, NaN under the other one: a column has one unit."""
        return {f"{c}{p}{suffix}": (values[p] if c == self.count_prefix else math.nan) for c in COUNTS for p in values}

    def run_row(self) -> dict[str, object]:
        fwd, bwd, upd = self.mean_counts()
        peak, static, stack, arena = self.peak_sram()
        energy, energy_source, energy_spread = self.energy()
        scheme, _, numerics = self.technique.split("@")[0].partition("-")
        return {
            "run_id": self.run_id, "board": self.board.name, "target_kind": self.target_kind,
            "technique": self.technique, "scheme": scheme, "numerics": numerics, "model": self.model,
            "status": self.status, "error": self.error, "steps": len(self.steps), "final_loss": self.final_loss(),
            "acc_before": self.accuracy(0), "acc_after": self.accuracy(1),
            "loss_before": self.eval_loss(0), "loss_after": self.eval_loss(1),
            "peak_sram_bytes": peak, "static_bytes": static, "stack_peak_bytes": stack, "arena_peak_bytes": arena,
            "flash_bytes": _nan(self.flash_bytes), "planned_sram_bytes": _nan(self.planned_sram_bytes),
            "planned_required_sram_bytes": _nan(self.required_sram_bytes),
            **{f"planned_{k}_bytes": _nan(self.plan_composition.get(k)) for k in MEM_KINDS},
            "board_sram_bytes": self.board.sram_bytes, "board_flash_bytes": self.board.flash_bytes,
            "count_unit": self.counting.unit if self.counting else "",
            **self._count_cells("_per_step", {"": fwd + bwd + upd, "_fwd": fwd, "_bwd": bwd, "_upd": upd}),
            "energy_per_step_uj": energy, "energy_source": energy_source,
            "energy_meter": self.meter if energy_source == "measured" else "", "energy_spread_pct": energy_spread,
            "lost_frames": self.lost_frames, "journal": self.journal,
            "fidelity_max_rel_err": self.fidelity_max_rel_err,
            "fidelity_exact": None if math.isnan(self.fidelity_exact) else self.fidelity_exact == 1.0,
            "build_id": self.build_id,
            "plan_hash": f"{self.plan_hash:08x}" if self.plan_hash is not None else "", "wall_s": self.wall_s,
            "link_faults": self.link_faults, "phase": self.phase, "lr": self.lr, "repeat": self.repeat,
            "seed": _nan(self.seed),
            "frames_damaged_injected": self.injected.frames_damaged if self.injected else math.nan,
            "place": self.place, "exporter": self.exporter,
        }

    def step_rows(self) -> list[dict[str, object]]:
        """Per step: the sample the device drew, its label and prediction, loss, counts by phase and SRAM in use."""
        return [{"run_id": self.run_id, "step": s.step, "sample": s.sample, "label": s.label, "pred": s.pred,
                 "correct": s.label == s.pred if self.loss_kind != "reconstruction" else None, "loss": s.loss,
                 **self._count_cells("", {"_fwd": self.counts(s.t_fwd), "_bwd": self.counts(s.t_bwd),
                                          "_upd": self.counts(s.t_upd)}),
                 "sram_bytes": s.sram_used} for s in self.steps]

    def layer_rows(self) -> list[dict[str, object]]:
        """Per layer: measured mean counts per step by phase, and the plan's bytes for it."""
        steps = max(len(self.steps), 1)
        costs = {c.layer: c for c in self.layer_costs.entries} if self.layer_costs else {}
        rows = []
        for mem in self.plan_layers:
            cost = costs.get(mem["layer"])
            row: dict[str, object] = {"run_id": self.run_id, "layer": mem["layer"],
                                      "op": OP_NAMES.get(cost.op, "?") if cost else ""}
            row |= self._count_cells("_per_step", {f"_{p}": self.counts(getattr(cost, p) / steps) if cost else math.nan
                                                   for p in PHASES})
            rows.append(row | {f"planned_{k}": v for k, v in mem.items() if k != "layer"})
        return rows

    def grad_rows(self) -> list[dict[str, object]]:
        """Per-layer gradient statistics of every step, with the full tensor on steps that streamed it."""
        rows = []
        for g in self.gstats:
            for e in g.entries:
                tensor = self.grads.get((g.step, e.layer, e.param))
                scale = 1.0
                if e.exponent is not None:
                    scale = self.grad_scales.get((e.layer, e.param), 1.0) * 2.0**e.exponent
                rows.append({"run_id": self.run_id, "step": g.step, "layer": e.layer,
                             "param": PARAM_NAMES.get(e.param, "?"), "l2": e.l2 * scale, "max_abs": e.max_abs * scale,
                             "values": None if tensor is None else tensor.tolist()})
        return rows


def _nan(value: int | None) -> float:
    return math.nan if value is None else float(value)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it (one rename) once written: a kill mid-write leaves the old
    file whole, never a torn one."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


SCHEMA_VERSION = 2  # docs/results.md; bumped when a column changes meaning or goes away

# Column dtypes of the stored tables: nullable integers for counts of things and bytes (NA, not NaN-as-float, where a
# run did not produce one), booleans for flags, categories for names; everything else float64 or str.
_NAMES = ("board", "target_kind", "technique", "scheme", "numerics", "model", "status", "count_unit", "energy_source",
          "energy_meter", "phase", "place", "exporter")
DTYPES: dict[str, dict[str, str]] = {
    "runs": {**{c: "Int64" for c in RUN_COLUMNS if c.endswith("_bytes")},
             **dict.fromkeys(("steps", "lost_frames", "frames_damaged_injected", "repeat", "seed"), "Int64"),
             "fidelity_exact": "boolean", **dict.fromkeys(_NAMES, "category")},
    "steps": {**dict.fromkeys(("step", "sample", "label", "pred", "sram_bytes"), "Int64"), "correct": "boolean"},
    "grads": {"step": "Int64", "layer": "Int64", "param": "category"},
    "layers": {**{c: "Int64" for c in LAYER_COLUMNS if c.endswith("_bytes")}, "layer": "Int64", "op": "category"},
    "rounds": {**dict.fromkeys(("round", "samples", "steps", "eval_n", "clients_averaged", "bytes_down", "bytes_up",
                                "values_down", "values_up", "peak_sram_bytes"), "Int64"),
               **dict.fromkeys(("role", "client", "board", "technique", "status", "count_unit", "energy_source",
                                "measured_on"), "category")},
}


def typed(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """``frame`` with the stored dtypes of ``table`` (`DTYPES`)."""
    out = frame.copy()
    for col, kind in DTYPES[table].items():
        if col not in out:
            continue
        if kind == "Int64":
            out[col] = pd.to_numeric(out[col], errors="coerce").round().astype("Int64")
        elif kind == "boolean":
            out[col] = out[col].astype("boolean")
        else:
            out[col] = out[col].astype(object).where(out[col].notna(), "").astype(str).astype("category")
    return out


def read_plain(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A stored table with plain numpy dtypes (NaN floats for nullable integers and flags, str for categories): what
    the report's numeric code works on."""
    frame = pd.read_parquet(path, columns=columns)
    for col in frame.columns:
        dtype = frame[col].dtype
        if isinstance(dtype, pd.CategoricalDtype):
            frame[col] = frame[col].astype(object)
        elif isinstance(dtype, pd.BooleanDtype | pd.Int64Dtype | pd.Int32Dtype | pd.Int8Dtype):
            frame[col] = frame[col].astype("float64")
    return frame


def counts_view(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with each ``instr_*`` column filled from its ``cycles_*`` twin where empty: one column of counts in
    the unit its row's ``count_unit`` names, for tables and plots that show both kinds of board."""
    out = frame.copy()
    for col in [c for c in frame.columns if c.startswith("cycles")]:
        twin = "instr" + col[len("cycles"):]
        if twin in out:
            out[twin] = out[twin].fillna(out[col]) if col in out else out[twin]
    return out


def write_table(frame: pd.DataFrame, path: Path, table: str) -> None:
    """``frame`` as parquet at ``path`` (atomically) with the schema version in its metadata, and as CSV beside it
    (without whole gradient tensors)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = pa.Table.from_pandas(typed(frame, table), preserve_index=False)
    schema = json.dumps({"table": table, "version": SCHEMA_VERSION, "doc": "docs/results.md"})
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), b"bench.schema": schema.encode()})
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp)
    with atomic_path(path.with_suffix(".csv")) as tmp:
        frame.drop(columns=["values"], errors="ignore").to_csv(tmp, index=False)


class ResultsWriter:
    """Writes runs/steps/grads tables (parquet and CSV) after every run, so results survive an interruption."""

    def __init__(self, out: Path, meta: dict[str, object]) -> None:
        self.out = out
        self.meta = meta
        self.runs: list[dict] = []
        self.steps: list[dict] = []
        self.grads: list[dict] = []
        self.layers: list[dict] = []
        out.mkdir(parents=True, exist_ok=True)
        self._write_meta()

    @classmethod
    def resume(cls, out: Path) -> ResultsWriter:
        """A writer that keeps what ``out`` already holds (its meta and every table) and adds to it."""
        meta_path = out / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        writer = cls(out, meta)
        for name in ("runs", "steps", "grads", "layers"):
            path = out / f"{name}.parquet"
            if path.is_file():
                getattr(writer, name).extend(pd.read_parquet(path).to_dict("records"))
        return writer

    def add(self, record: RunRecord) -> None:
        self.runs.append(record.run_row())
        self.steps += record.step_rows()
        self.grads += record.grad_rows()
        self.layers += record.layer_rows()
        self.flush()

    def flush(self) -> None:
        for name, rows, cols in (("runs", self.runs, RUN_COLUMNS), ("steps", self.steps, STEP_COLUMNS),
                                 ("grads", self.grads, GRAD_COLUMNS), ("layers", self.layers, LAYER_COLUMNS)):
            write_table(pd.DataFrame(rows, columns=cols), self.out / f"{name}.parquet", name)

    def finish(self, **extra: object) -> None:
        self.meta.update(extra)
        self._write_meta()

    def _write_meta(self) -> None:
        with atomic_path(self.out / "meta.json") as tmp:
            tmp.write_text(json.dumps(self.meta, indent=2, default=str) + "\n")


TABLES = {"runs": RUN_COLUMNS, "steps": STEP_COLUMNS, "grads": GRAD_COLUMNS, "layers": LAYER_COLUMNS}


def merge_results(parts: list[Path], out: Path, meta: dict[str, object]) -> int:
    """One results directory from several (pytest-xdist workers' ``gwN``): tables concatenated, written atomically
    to ``out``. A run id two parts both use gets its part's name appended (``<run_id>@gw1``) in every table, so no
    run shadows another. Returns the number of runs."""
    seen: set[str] = set()
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in TABLES}
    for part in parts:
        runs_path = part / "runs.parquet"
        if not runs_path.is_file():
            continue
        ids = list(pd.read_parquet(runs_path, columns=["run_id"])["run_id"])
        rename = {i: f"{i}@{part.name}" for i in ids if i in seen}
        seen.update(rename.get(i, i) for i in ids)
        for name in TABLES:
            path = part / f"{name}.parquet"
            if path.is_file():
                frame = pd.read_parquet(path)
                frames[name].append(frame.assign(run_id=frame["run_id"].replace(rename)) if rename else frame)
    out.mkdir(parents=True, exist_ok=True)
    for name, cols in TABLES.items():
        merged = pd.concat(frames[name], ignore_index=True) if frames[name] else pd.DataFrame(columns=cols)
        write_table(merged, out / f"{name}.parquet", name)
    with atomic_path(out / "meta.json") as tmp:
        tmp.write_text(json.dumps(meta | {"parts": [p.name for p in parts]}, indent=2, default=str) + "\n")
    return len(seen)
