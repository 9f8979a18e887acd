"""Study figures from a runs table: per technique mean ± 95% CI over repeats at its chosen lr, the lr sweep, QAS vs
no-QAS, and schemes at equal memory budget, each difference marked significant or not.

Why a module of its own: the CLI prints these tables and the HTML report shows them, from the same runs table, so
both say the same thing. Accuracy and loss vary with the sample order and get a confidence interval; instruction
counts and SRAM on a twin are deterministic, and when every repeat gives the same figure it is shown once, "same in
all N", never with an invented spread.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import pandas as pd

from bench.records.stats import Difference, Estimate, difference, mean_ci

SCHEME_NUMERICS = ("fp32", "int8", "int8-noqas")


def phase_of(runs: pd.DataFrame) -> pd.Series:
    """Each run's phase; results written before lr sweeps existed hold final runs only."""
    if "phase" not in runs:
        return pd.Series("final", index=runs.index)
    return runs["phase"].astype(object).where(runs["phase"].notna(), "final")


def final_runs(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[phase_of(runs) == "final"]


def sweep_runs(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[phase_of(runs) == "sweep"]


def is_study(runs: pd.DataFrame) -> bool:
    """Whether the table holds repeats or a sweep (else a plain one-run-per-technique table)."""
    final = final_runs(runs)
    return bool(len(sweep_runs(runs))) or bool(final.groupby(["board", "technique"]).size().gt(1).any())


def _accuracies(group: pd.DataFrame) -> list[float]:
    ok = group[group["status"] == "ok"]
    return [float(v) for v in ok["acc_after"] if v == v]


@dataclass(frozen=True)
class TechniqueRow:
    board: str
    technique: str
    lr: str
    n_runs: int
    acc_before: Estimate
    acc_after: Estimate
    loss_after: Estimate
    peak_sram: Estimate
    instr_per_step: Estimate
    vs_best: Difference | None  # this − the board's best technique (None for the best itself)


def technique_rows(runs: pd.DataFrame) -> list[TechniqueRow]:
    """Final runs per (board, technique), best mean accuracy first on each board, each compared with that best."""
    rows: list[TechniqueRow] = []
    accs: dict[tuple[str, str], list[float]] = {}
    for (board, technique), g in final_runs(runs).groupby(["board", "technique"], sort=True):
        ok = g[g["status"] == "ok"]
        lrs = sorted({float(v) for v in g["lr"] if v == v}) if "lr" in g else []
        accs[(str(board), str(technique))] = _accuracies(g)
        rows.append(TechniqueRow(
            board=str(board), technique=str(technique), lr=", ".join(f"{v:g}" for v in lrs) or "–", n_runs=len(g),
            acc_before=mean_ci(ok["acc_before"].tolist()), acc_after=mean_ci(_accuracies(g)),
            loss_after=mean_ci(ok["loss_after"].tolist()), peak_sram=mean_ci(ok["peak_sram_bytes"].tolist()),
            instr_per_step=mean_ci(ok["instr_per_step"].tolist()), vs_best=None))
    out = []
    for board in sorted({r.board for r in rows}):
        mine = sorted((r for r in rows if r.board == board),
                      key=lambda r: -r.acc_after.mean if math.isfinite(r.acc_after.mean) else math.inf)
        best = accs[(board, mine[0].technique)]
        out.append(mine[0])
        out += [dataclasses.replace(r, vs_best=difference(accs[(board, r.technique)], best)) for r in mine[1:]]
    return out


@dataclass(frozen=True)
class SweepRow:
    board: str
    technique: str
    lr: float
    val_acc: Estimate
    chosen: bool


def edge_choices(rows: list[SweepRow]) -> list[tuple[str, str, float]]:
    """(board, technique, lr) where the chosen lr is the smallest or largest swept: the optimum may lie outside the
    range, so the comparison is not yet at each technique's best."""
    out = []
    for key in sorted({(r.board, r.technique) for r in rows}):
        mine = [r for r in rows if (r.board, r.technique) == key]
        lrs = [r.lr for r in mine]
        out += [(*key, r.lr) for r in mine if r.chosen and len(lrs) > 2 and r.lr in (min(lrs), max(lrs))]
    return out


def sweep_rows(runs: pd.DataFrame) -> list[SweepRow]:
    """Validation accuracy per (board, technique, lr) of the sweep; ``chosen`` marks the lr the final runs used."""
    sweep, final = sweep_runs(runs), final_runs(runs)
    rows = []
    for (board, technique, lr), g in sweep.groupby(["board", "technique", "lr"], sort=True):
        used = final[(final["board"] == board) & (final["technique"] == technique)]["lr"]
        rows.append(SweepRow(str(board), str(technique), float(lr), mean_ci(_accuracies(g)),
                             bool((used == lr).any())))
    return rows


@dataclass(frozen=True)
class Pairing:
    board: str
    left: str
    right: str
    diff: Difference


def qas_pairs(runs: pd.DataFrame) -> list[Pairing]:
    """Per board and scheme: int8 with QAS minus int8 without, each at its own chosen lr."""
    final = final_runs(runs)
    out = []
    for board, g in final.groupby("board", sort=True):
        for scheme in ("full", "last", "bias", "sparse"):
            qas, noqas = g[g["technique"] == f"{scheme}-int8"], g[g["technique"] == f"{scheme}-int8-noqas"]
            if len(qas) and len(noqas):
                out.append(Pairing(str(board), f"{scheme}-int8", f"{scheme}-int8-noqas",
                                   difference(_accuracies(qas), _accuracies(noqas))))
    return out


def budget_rows(runs: pd.DataFrame) -> list[TechniqueRow]:
    """The equal-budget schemes (technique names with '@budget')."""
    return [r for r in technique_rows(runs) if "@" in r.technique]


def pct(e: Estimate) -> str:
    """An accuracy estimate in points: mean ± half width (n), or the single value."""
    if e.n == 0:
        return "–"
    if e.n == 1 or math.isnan(e.half_width):
        return f"{e.mean * 100:.1f}% (n=1)"
    if e.constant:
        return f"{e.mean * 100:.1f}% (same in all {e.n})"
    return f"{e.mean * 100:.1f} ± {e.half_width * 100:.1f}% (n={e.n})"


def figure(e: Estimate, unit: str = "") -> str:
    """A count or byte figure: once when every repeat gave it (deterministic on twins), else mean ± half width."""
    if e.n == 0:
        return "–"
    if e.constant or e.n == 1:
        same = f" (same in all {e.n})" if e.n > 1 else ""
        return f"{e.mean:,.0f}{unit}{same}"
    return f"{e.mean:,.0f} ± {e.half_width:,.0f}{unit} (n={e.n})"


def points(d: Difference) -> str:
    """A difference of accuracies in points with its CI and verdict."""
    if math.isnan(d.lo):
        return f"{d.delta * 100:+.1f} pt (too few runs for a CI)"
    verdict = "significant" if d.significant else "not significant"
    return f"{d.delta * 100:+.1f} pt [{d.lo * 100:+.1f}, {d.hi * 100:+.1f}] ({verdict})"
