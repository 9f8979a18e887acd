"""Benchmarks that print figures (never timed tests): training-step cost on the twins against published anchors.

The anchor is AIfES on the same Cortex-M7 twin (QEMU mps2-an500, fp32, batch 1, SGD, softmax cross-entropy,
../shared/ANCHORS.md): 282,550 instructions per training step of a 64-32-10 MLP (our target: a fifth of it) and
2,990,725 per step of its CNN workload, 1×16×16 → conv 3×3×8 valid (ReLU) → maxpool 2 → dense 10 (target: a tenth).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from bench import plan as bench_plan
from bench.app.runner import Bench, Prepared, load_profile, with_overrides
from bench.config.boards import RackEntry
from bench.config.profile import Profile, Technique, parse_technique
from bench.records.run import RunRecord


@dataclass(frozen=True)
class Workload:
    """One of AIfES's measured workloads, as our model and task, with AIfES's figures on the M7 twin."""

    name: str
    model: str
    task: str
    aifes_step: int
    aifes_forward: int
    aifes_params_bytes: int
    aifes_training_bytes: int
    aifes_stack_bytes: int
    target_ratio: float  # AIfES step ÷ ours must reach this


WORKLOADS = {
    "mlp": Workload("MLP 64-32-10", "digits-mlp", "digits-drift", 282_550, 16_238, 9_640, 18_504, 8_792, 5.0),
    "cnn": Workload("CNN 1x16x16 -> conv 3x3x8 (ReLU) -> maxpool 2 -> dense 10", "aifes-cnn", "digits16-drift",
                    2_990_725, 778_402, 16_040, 48_584, 16_280, 10.0),
}


@dataclass(frozen=True)
class StepCost:
    board: str
    technique: str
    fwd: float
    bwd: float
    upd: float
    unit: str
    params_bytes: int = 0  # the model's fp32 parameters (planned: the plan's tensors)
    training_bytes: float = float("nan")  # planned activations + gradients + optimizer state in the arena
    arena_peak_bytes: float = float("nan")  # measured: painted arena high-water mark (includes trained copies)
    stack_peak_bytes: float = float("nan")  # measured: painted stack high-water mark

    @property
    def total(self) -> float:
        return self.fwd + self.bwd + self.upd


def workload_costs(out: Path, workload: Workload, boards: list[str], techniques: list[str], steps: int = 50
                   ) -> list[StepCost]:
    """Mean counts per training step of ``workload``'s model, measured on each board's twin, with its memory."""
    profile = Profile(name=f"bench-{workload.model}", model=workload.model, task=workload.task,
                      techniques=tuple(techniques), steps=steps, eval_samples=1, check_steps=0)
    bench = Bench(out)
    prepared = bench.prepare(profile)
    return [_measured(bench, prepared, board, parse_technique(name))[1] for board in boards for name in techniques]


def _measured(bench: Bench, prepared: Prepared, board: str, technique: Technique) -> tuple[RunRecord, StepCost]:
    """One run on ``board``'s twin (anything but ok is an error: a benchmark has no partial figures) and its mean
    step: counts by phase, the model's parameter bytes, planned training memory, measured arena and stack peaks."""
    record = bench.run(prepared, RackEntry(board=board), technique)
    if record.status != "ok":
        raise RuntimeError(f"{record.run_id}: {record.status}: {record.error}")
    fwd, bwd, upd = record.mean_counts()
    row = record.run_row()
    training = sum(cast(float, row[f"planned_{k}_bytes"]) for k in ("activations", "gradients", "optimizer"))
    params = 4 * prepared.model.n_params() if prepared.model is not None else 0
    unit = record.counting.unit if record.counting else "?"
    return record, StepCost(board, technique.name, fwd, bwd, upd, unit, params, training,
                            cast(float, row["arena_peak_bytes"]), cast(float, row["stack_peak_bytes"]))


SMLAD_BOUND = 0.5  # instructions per MAC with SMLAD: two 16-bit MACs per instruction (Cortex-M4/M7 DSP)


@dataclass(frozen=True)
class OpCost:
    """One layer (fp32) or op (int8) of one training step, measured on a twin: counts per phase, and the work."""

    board: str
    numerics: str
    index: int
    kind: str
    macs: int  # forward multiply-accumulates (backward does about twice)
    weights: int  # trainable weights it updates (0 for parameter-free ops)
    fwd: float
    bwd: float
    upd: float

    def per(self, count: float, work: int) -> float:
        return count / work if work else float("nan")


def op_costs(out: Path, boards: list[str], steps: int = 30) -> tuple[list[OpCost], list[StepCost]]:
    """digits-cnn trained with full backprop in fp32 and in int8 (QAS) on each board's twin: per-op counts per step
    from the device's layer costs, and MACs and weights from the plans (issue 11's "before" table)."""
    profile = with_overrides(load_profile("techniques"), {"techniques": ["full-fp32", "full-int8"], "steps": steps,
                                                          "check_steps": 0, "eval_samples": 1, "grad_every": 0})
    bench = Bench(out)
    prepared = bench.prepare(profile)
    assert prepared.model is not None
    qmodel = bench.int8(prepared).qmodel
    work: dict[str, list[tuple[str, int, int]]] = {
        "fp32": [(str(layer.op), _macs(layer.out_shape, layer.weight), _size(layer.weight))
                 for layer in prepared.model.layers]}
    qplan = bench_plan.compile(profile.technique("full-int8"), 0.01, prepared.model, qmodel)
    assert isinstance(qplan, bench_plan.QPlan)
    work["int8"] = [(op.kind, int(qplan.macs[i]), _size(qmodel.tensors[op.inputs[1]].data)
                     if op.kind in ("CONV_2D", "FULLY_CONNECTED") else 0) for i, op in enumerate(qmodel.ops)]
    ops: list[OpCost] = []
    steps_out: list[StepCost] = []
    for board in boards:
        for name in ("full-fp32", "full-int8"):
            record, step = _measured(bench, prepared, board, profile.technique(name))
            numerics = name.split("-", 1)[1]
            for row in record.layer_rows():
                i = cast(int, row["layer"])
                kind, macs, weights = work[numerics][i] if i < len(work[numerics]) else ("?", 0, 0)
                counts = (cast(float, row[f"instr_{p}_per_step"]) for p in ("fwd", "bwd", "upd"))
                ops.append(OpCost(board, numerics, i, kind, macs, weights, *counts))
            steps_out.append(step)
    return ops, steps_out


def _macs(out_shape: tuple[int, ...], weight: object) -> int:
    """Forward MACs of a layer: every output value sums weight.size / out_channels products."""
    if weight is None:
        return 0
    w = np.asarray(weight)
    return int(np.prod(out_shape)) * (w.size // w.shape[0])


def _size(array: object) -> int:
    return 0 if array is None else int(np.asarray(array).size)


# ---- forward-only training against backprop (issue 15: PEPITA, MEMPEPITA) ------------------------------------------

FORWARD_ONLY_TECHNIQUES = ("full-fp32", "last-fp32", "pepita-fp32", "mempepita-fp32")


@dataclass(frozen=True)
class ForwardOnlyRow:
    """One (model, board, technique): peak SRAM and its arena part measured, planned arena, counts per step
    measured, accuracy on the eval split before and after ``steps`` steps measured on the twin."""

    model: str
    board: str
    technique: str
    steps: int
    peak_sram_bytes: float
    arena_peak_bytes: float
    planned_arena_bytes: int
    counts_per_step: float
    unit: str
    acc_before: float
    acc_after: float
    fidelity_max_rel_err: float


def forward_only_table(out: Path, boards: list[str], models: tuple[str, ...] = ("digits-cnn", "digits-mlp"),
                       steps: int = 300) -> list[ForwardOnlyRow]:
    """PEPITA, MEMPEPITA, full backprop and last-layer on each model and twin, digits-drift, the quick profile's lr;
    every run fidelity-checked against its host reference (a failed check is an error: no partial figures)."""
    rows = []
    for model in models:
        profile = with_overrides(load_profile("quick"), {"model": model, "techniques": list(FORWARD_ONLY_TECHNIQUES),
                                                         "steps": steps, "grad_every": 0})
        bench = Bench(out / model)
        prepared = bench.prepare(profile)
        assert prepared.model is not None
        for board in boards:
            for name in FORWARD_ONLY_TECHNIQUES:
                technique = profile.technique(name)
                record, step = _measured(bench, prepared, board, technique)
                plan = bench_plan.compile(technique, profile.lr_for(technique), prepared.model, None)
                assert isinstance(plan, bench_plan.Plan)
                rows.append(ForwardOnlyRow(model, board, name, len(record.steps), record.peak_sram()[0],
                                           step.arena_peak_bytes, plan.arena_bytes, step.total, step.unit,
                                           record.accuracy(0), record.accuracy(1), record.fidelity_max_rel_err))
    return rows


# ---- sparse int8 update against full fp32 backprop: SRAM (issue 9, MCUNetV3's 20-21x) ----------------------------

SRAM_BOARDS = ("nucleo-f746zg", "rpi-pico")  # the F746 first (MCUNetV3's board); a bigger flash where it does not fit


@dataclass(frozen=True)
class SramRatioRow:
    """One imported model: sparse-int8 at its profile's scheme, planned and measured, against full-fp32 planned
    (the engine's lifetime-sharing arena, and the naive every-buffer-coexists figure MCUNetV3's baseline is)."""

    profile: str
    model: str
    board: str  # the board the planned figures are for
    sparse_planned_bytes: int  # static + arena + stack reserve
    sparse_measured_bytes: float  # peak SRAM the device measured (nan when it fits no twin)
    measured_on: str  # the twin that measured it ("" if none)
    fp32_planned_bytes: int  # static + arena + stack reserve, full-fp32, planned
    fp32_naive_bytes: int  # static + every activation, gradient and weight kept + stack, planned

    @property
    def sparse_bytes(self) -> float:
        """The sparse figure the ratios use: measured where a twin ran it, else planned."""
        return self.sparse_planned_bytes if math.isnan(self.sparse_measured_bytes) else self.sparse_measured_bytes

    def ratio(self, fp32_bytes: int) -> float:
        return fp32_bytes / self.sparse_bytes


def sram_ratios(out: Path, profiles: tuple[str, ...] = ("person_detect", "vww"), steps: int = 4
                ) -> list[SramRatioRow]:
    """Each profile's sparse-int8 run (``steps`` steps: the peak does not grow with steps) on the first twin of
    SRAM_BOARDS it fits, and the full-fp32 plan of the same graph, on the F746."""
    from bench.app.plan_view import built_firmware
    from bench.config.boards import load_catalogue
    from bench.plan.fp32mem import plan_fp32
    from bench.plan.select import compile_imported_plan

    board = load_catalogue()[SRAM_BOARDS[0]]
    fw, note = built_firmware(board)
    if fw is None or "out of date" in note:
        raise RuntimeError(f"{board.name}: {note}: the planned SRAM needs the built twin image (`bench build`)")
    rows = []
    for name in profiles:
        profile = with_overrides(load_profile(name), {"techniques": ["sparse-int8"], "steps": steps,
                                                      "check_steps": 1, "eval_samples": 1})
        bench = Bench(out / name)
        prepared = bench.prepare(profile)
        assert prepared.int8 is not None, f"{name}: not an imported model"
        qmodel, technique = prepared.int8.qmodel, profile.technique("sparse-int8")
        sparse = compile_imported_plan(qmodel, technique, profile.lr_for(technique))
        fp32 = plan_fp32(qmodel, parse_technique("full-fp32"))
        measured, on = float("nan"), ""
        for twin in SRAM_BOARDS:
            record = bench.run(prepared, RackEntry(board=twin), technique)
            if record.status == "ok":
                measured, on = record.peak_sram()[0], twin
                break
            if record.status != "does-not-fit":
                raise RuntimeError(f"{record.run_id}: {record.status}: {record.error}")
        base = fw.static_bytes + fw.stack_bytes
        rows.append(SramRatioRow(name, qmodel.name, board.name, base + sparse.arena_bytes, measured, on,
                                 base + fp32.arena_bytes, base + fp32.naive_bytes))
    return rows
