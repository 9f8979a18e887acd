"""Benchmarks that print figures (never timed tests): training-step cost on the twins against published anchors.

The anchor is AIfES on the same Cortex-M7 twin (QEMU mps2-an500, fp32, batch 1, SGD, softmax cross-entropy):
282,550 instructions per training step of a 64-32-10 MLP (../shared/ANCHORS.md). Our target is a fifth of that.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.app.runner import Bench
from bench.config.boards import RackEntry
from bench.config.profile import Profile, parse_technique

AIFES_MLP_STEP = 282_550
AIFES_MLP_FORWARD = 16_238
TARGET_RATIO = 5.0


@dataclass(frozen=True)
class StepCost:
    board: str
    technique: str
    fwd: float
    bwd: float
    upd: float
    unit: str

    @property
    def total(self) -> float:
        return self.fwd + self.bwd + self.upd


def mlp_step_costs(out: Path, boards: list[str], techniques: list[str], steps: int = 50) -> list[StepCost]:
    """Mean counts per training step of the digits MLP (64-32-10), measured on each board's twin."""
    profile = Profile(name="bench-mlp", model="digits-mlp", techniques=tuple(techniques), steps=steps,
                      eval_samples=1, check_steps=0)
    bench = Bench(out)
    prepared = bench.prepare(profile)
    costs = []
    for board in boards:
        for name in techniques:
            record = bench.run(prepared, RackEntry(board=board), parse_technique(name))
            if record.status != "ok":
                raise RuntimeError(f"{record.run_id}: {record.status}: {record.error}")
            fwd, bwd, upd = record.mean_counts()
            costs.append(StepCost(board, name, fwd, bwd, upd, record.counting.unit if record.counting else "?"))
    return costs
