"""What ``bench run`` prints for a study (repeats, an lr sweep, an equal budget): the tables of `bench.report.study`."""

from __future__ import annotations

import math

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.config.profile import Profile
from bench.report import study


def expected_runs(profile: Profile, n_budget: int = 3) -> int:
    """Runs per board kind: sweep runs (every lr × repeat of swept techniques) and final runs (each technique ×
    repeat), counting the ``[compare]`` schemes as ``n_budget`` more techniques (for the progress bars)."""
    techniques = profile.parsed_techniques()
    swept = sum(len(profile.lrs_for(t)) for t in techniques if len(profile.lrs_for(t)) > 1)
    extra = n_budget if profile.compare is not None else 0
    fp32_lrs = len(profile.lrs_for(profile.technique("last-fp32")))
    return profile.repeats * (swept + len(techniques) + extra * (1 + (fp32_lrs if fp32_lrs > 1 else 0)))


def technique_table(runs: pd.DataFrame) -> Table:
    table = Table(title="Techniques at their chosen lr: accuracy mean ± 95% CI over repeats (measured on the twins); "
                        "difference to the board's best, with its CI")
    for col in ("board", "technique", "lr", "acc before", "acc after", "vs best", "peak SRAM (B)", "instr/step"):
        table.add_column(col)
    for r in study.technique_rows(runs):
        vs = "best" if r.vs_best is None else study.points(r.vs_best)
        table.add_row(escape(r.board), escape(r.technique), r.lr, study.pct(r.acc_before), study.pct(r.acc_after),
                      vs, study.figure(r.peak_sram), study.figure(r.instr_per_step))
    return table


def sweep_table(runs: pd.DataFrame) -> Table:
    table = Table(title="lr sweep: validation accuracy (a split of device-train; the eval split is not used), "
                        "mean ± 95% CI; * = chosen")
    for col in ("board", "technique", "lr", "validation acc"):
        table.add_column(col)
    for r in study.sweep_rows(runs):
        table.add_row(escape(r.board), escape(r.technique), f"{r.lr:g}" + (" *" if r.chosen else ""),
                      study.pct(r.val_acc))
    return table


def print_study(runs: pd.DataFrame, console: Console, wall_s: float, schemes: dict[str, str] | None = None) -> None:
    """Sweep, techniques, QAS vs no-QAS and equal-budget tables, then the wall time."""
    wide = Console(width=max(console.width, 180), stderr=console.stderr)
    if len(study.sweep_runs(runs)):
        wide.print(sweep_table(runs))
        for board, technique, lr in study.edge_choices(study.sweep_rows(runs)):
            wide.print(f"[yellow]{escape(board)} {escape(technique)}: the chosen lr {lr:g} is at the edge of its "
                       f"sweep; its best may lie outside the range (widen it)[/]")
    wide.print(technique_table(runs))
    for p in study.qas_pairs(runs):
        wide.print(f"{escape(p.board)}: {p.left} − {p.right} = {study.points(p.diff)}")
    budget = study.budget_rows(runs)
    if budget:
        wide.print("equal memory budget (planned arena): " + "; ".join(
            f"{escape(r.technique)} ({escape((schemes or {}).get(r.technique, '?'))}) {study.pct(r.acc_after)}, "
            f"peak SRAM {study.figure(r.peak_sram, ' B')}" for r in budget))
    n_sweep = len(study.sweep_runs(runs))
    console.print(f"{len(runs)} runs ({n_sweep} of them lr-sweep runs) in {wall_s:.0f} s wall"
                  + (f" ({wall_s / len(runs):.1f} s per run)" if len(runs) and math.isfinite(wall_s) else ""))
