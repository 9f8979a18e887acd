"""Repeats, confidence intervals, lr sweeps and equal budgets (issue 12): the statistics against known cases, lr
selection that never sees the eval split, the gate's CI rule, and a real sweep on a twin."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.app import runner
from bench.app.runner import Bench, RunSpec, chosen_lrs, final_jobs, load_profile, sweep_jobs
from bench.config.boards import load_catalogue, load_rack
from bench.config.profile import Profile
from bench.plan.blob import validation_split
from bench.records.run import RunRecord
from bench.records.stats import best_lr, difference, mean_ci, t975
from bench.report import study
from bench.report.compare import Thresholds, compare_runs
from bench.report.html import write_report


def test_mean_ci_and_t_quantiles_match_known_values() -> None:
    e = mean_ci([1, 2, 3, 4, 5])  # mean 3, sd sqrt(2.5), t(4) = 2.776: 3 ± 2.776·1.5811/√5
    assert e.mean == 3 and e.n == 5 and math.isclose(e.half_width, 2.776 * math.sqrt(2.5) / math.sqrt(5))
    assert math.isclose(e.lo, 1.0368, abs_tol=5e-4) and math.isclose(e.hi, 4.9632, abs_tol=5e-4)  # exact t: 2.7764
    assert t975(1) == 12.706 and t975(30) == 2.042
    assert math.isclose(t975(100), 1.984, abs_tol=2e-3) and math.isclose(t975(1e9), 1.95996, abs_tol=1e-4)
    assert 2.306 > t975(8.5) > 2.262  # fractional df between its neighbours
    one = mean_ci([0.7])
    assert one.n == 1 and math.isnan(one.lo) and one.constant  # no spread to invent
    assert mean_ci([5.0, 5.0, 5.0]).constant and mean_ci([math.nan, 1.0]).n == 1


def test_welch_difference_known_case() -> None:
    d = difference([1, 2, 3, 4, 5], [2, 3, 4, 5, 6])  # Δ −1, se 1, Welch df 8, t 2.306
    assert d.delta == -1 and math.isclose(d.lo, -3.306) and math.isclose(d.hi, 1.306)
    assert not d.significant
    assert difference([10, 11, 12], [1, 2, 3]).significant
    assert math.isnan(difference([1.0], [2.0, 3.0]).lo)  # too few runs: no verdict


def test_best_lr_uses_means_ignores_failures_and_breaks_ties_low() -> None:
    assert best_lr([(0.01, 0.7), (0.01, 0.8), (0.02, 0.74), (0.02, 0.74)]) == 0.01  # 0.75 beats 0.74
    assert best_lr([(0.01, 0.7), (0.02, 0.7)]) == 0.01
    assert best_lr([(0.01, math.nan), (0.02, 0.5)]) == 0.02
    assert best_lr([(0.04, math.nan), (0.02, math.nan)]) == 0.02


def test_validation_split_is_inside_device_train_and_deterministic() -> None:
    keep, held = validation_split(400, 0.25, seed=1)
    assert len(held) == 100 and len(keep) == 300 and not set(keep) & set(held)
    assert set(keep) | set(held) == set(range(400))
    again_keep, again_held = validation_split(400, 0.25, seed=1)
    assert np.array_equal(held, again_held) and np.array_equal(keep, again_keep)


def _record(technique: str, lr: float, phase: str, correct: int) -> RunRecord:
    from bench.link import protocol as proto

    r = RunRecord("r", load_catalogue()["rpi-pico"], "emulated", technique, "m", phase=phase, lr=lr)
    r.evals[1] = proto.Eval(phase=1, n=100, correct=correct, loss_sum=0.0, ticks=0)
    return r


def test_lr_choice_reads_sweep_runs_only() -> None:
    """A final run (on the eval split) that would favour another lr must not move the choice."""
    records = [_record("full-fp32", 0.01, "sweep", 70), _record("full-fp32", 0.02, "sweep", 60),
               _record("full-fp32", 0.02, "final", 99)]
    assert chosen_lrs(records) == {"full-fp32": 0.01}


def test_jobs_sweep_every_lr_and_repeat_then_run_final_at_the_choice() -> None:
    profile = Profile(name="p", techniques=("full-fp32", "last-int8"), lr=(0.01, 0.02), lr_int8=0.005, repeats=3)
    techniques = profile.parsed_techniques()
    sweep = sweep_jobs(profile, techniques)
    assert sorted((t.name, s.lr, s.repeat) for t, s in sweep) == [
        ("full-fp32", lr, r) for lr in (0.01, 0.02) for r in range(3)]  # last-int8 has one lr: not swept
    assert {s.phase for _, s in sweep} == {"sweep"}
    final = final_jobs(profile, techniques, {"full-fp32": 0.02})
    assert [(t.name, s.lr, s.repeat, s.phase) for t, s in final] == [
        *[("full-fp32", 0.02, r, "final") for r in range(3)], *[("last-int8", 0.005, r, "final") for r in range(3)]]


def _study_runs(base_accs: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for technique, accs in base_accs.items():
        for i, acc in enumerate(accs):
            rows.append({"run_id": f"b.{technique}.r{i}", "board": "rpi-pico", "technique": technique,
                         "status": "ok", "acc_after": acc, "acc_before": 0.5, "loss_after": 1.0,
                         "peak_sram_bytes": 20000.0, "instr_per_step": 1e5, "flash_bytes": 60000.0,
                         "energy_per_step_uj": 1.0, "count_unit": "instructions", "energy_source": "modelled",
                         "phase": "final", "lr": 0.01, "repeat": i})
    return pd.DataFrame(rows)


def test_gate_uses_the_ci_of_accuracy_when_both_sides_have_repeats() -> None:
    base = _study_runs({"full-fp32": [0.80, 0.82, 0.78, 0.81, 0.79]})
    noisy = _study_runs({"full-fp32": [0.77, 0.81, 0.76, 0.80, 0.79]})  # −1.4 pt, inside the noise
    worse = _study_runs({"full-fp32": [0.70, 0.71, 0.69, 0.72, 0.70]})
    th = Thresholds(accuracy_points=1.0)
    (pair,) = compare_runs(base, noisy, th)
    acc = next(d for d in pair.deltas if d.metric == "accuracy")
    assert acc.verdict == "within" and "not significant" in acc.note and acc.limit == "95% CI"
    (pair,) = compare_runs(base, worse, th)
    assert pair.verdict == "regression" and "significant" in next(d for d in pair.deltas if d.metric == "accuracy").note
    single = compare_runs(base.iloc[:1], noisy.iloc[:1], th)[0]  # one run a side: the fixed points rule
    assert next(d for d in single.deltas if d.metric == "accuracy").verdict == "regression"  # 0.80 → 0.77


def test_study_tables_mark_what_is_significant(tmp_path: Path) -> None:
    runs = _study_runs({"full-fp32": [0.80, 0.82, 0.78, 0.81, 0.79], "sparse-fp32": [0.79, 0.81, 0.80, 0.78, 0.80],
                        "bias-fp32": [0.55, 0.56, 0.55, 0.57, 0.56]})
    rows = {r.technique: r for r in study.technique_rows(runs)}
    assert rows["full-fp32"].vs_best is None
    assert not rows["sparse-fp32"].vs_best.significant and rows["bias-fp32"].vs_best.significant
    assert study.figure(rows["bias-fp32"].peak_sram) == "20,000 (same in all 5)"
    assert study.pct(rows["full-fp32"].acc_after).startswith("80.0 ± ")
    runs.to_parquet(tmp_path / "runs.parquet")
    html = write_report(tmp_path).read_text()
    assert "Study: repeats, tuned learning rates, equal budget" in html and "not significant" in html


@pytest.mark.twin
def test_a_sweep_on_a_twin_tunes_on_the_validation_split_and_reports_on_eval(tmp_path: Path) -> None:
    profile = load_profile("quick").model_copy(update={
        "techniques": ("last-fp32",), "steps": 30, "lr": (0.01, 0.04), "repeats": 2, "check_steps": 1,
        "eval_samples": 0})
    rack = load_rack(None, load_catalogue())
    rack = rack.model_copy(update={"boards": [e for e in rack.boards if e.board == "nucleo-f746zg"]})
    records = runner.run_profile(profile, rack, tmp_path)
    sweep = [r for r in records if r.phase == "sweep"]
    final = [r for r in records if r.phase == "final"]
    assert len(sweep) == 4 and len(final) == 2 and all(r.status == "ok" for r in records), [r.error for r in records]
    ds = Bench(tmp_path).prepare(profile).task
    assert ds is not None
    _, held = validation_split(len(ds.y_train), profile.val_fraction, profile.seed)
    assert {r.evals[1].n for r in sweep} == {len(held)}  # sweep runs are scored on the validation split
    assert {r.evals[1].n for r in final} == {len(ds.y_eval)}  # final runs on the eval split
    assert {r.lr for r in final} == {chosen_lrs(sweep)["last-fp32"]}
    assert {r.seed for r in final} == {1, 2} and all(math.isnan(r.fidelity_max_rel_err) for r in sweep)
    assert all(r.fidelity_max_rel_err < 1e-4 for r in final)
    assert RunSpec(0.01).phase == "final"


def test_a_chosen_lr_at_the_edge_of_its_sweep_is_flagged() -> None:
    def row(lr: float, chosen: bool) -> study.SweepRow:
        return study.SweepRow("b", "full-fp32", lr, mean_ci([0.5, 0.6]), chosen)

    assert study.edge_choices([row(0.01, True), row(0.02, False), row(0.04, False)]) == [("b", "full-fp32", 0.01)]
    assert study.edge_choices([row(0.01, False), row(0.02, True), row(0.04, False)]) == []
