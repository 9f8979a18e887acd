"""The HTML report: self-contained, complete, and safe against hostile device strings."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from bench.report import html as report
from bench.report.html import write_report

BOARDS = {"nucleo-f746zg": 327_680, "nrf52840-dk": 262_144, "rpi-pico": 270_336}
TECHNIQUES = ("full-fp32", "last-fp32", "bias-fp32")
HOSTILE = "<script>alert(1)</script>\"'"
NOFIT = ("nrf52840-dk", "full-fp32")
ERROR = ("rpi-pico", "last-fp32")
NOFIT_PLANNED = 401_234
LAYERS = (("0", "conv3x3", 8 * 9 + 8), ("1", "dense", 512 * 32 + 32), ("2", "dense", 32 * 10 + 10))
SCALE = {"nucleo-f746zg": 1.0, "nrf52840-dk": 1.0, "rpi-pico": 33.0}  # soft float on the M0+
TRAINED = {"full-fp32": 3, "last-fp32": 1, "bias-fp32": 3}


def _run_row(i: int, board: str, technique: str, sram: int) -> dict[str, object]:
    full = technique.startswith("full")
    status = {NOFIT: "does-not-fit", ERROR: "error"}.get((board, technique), "ok")
    ok = status == "ok"
    planned = NOFIT_PLANNED if status == "does-not-fit" else (180_000 if full else 90_000) + 4_096 * i
    instr = (3.0e6 if full else 1.1e6) * SCALE[board]
    nan = float("nan")
    return {
        "run_id": f"r{i}",
        "board": board,
        "target_kind": "emulated",
        "technique": technique,
        "model": "mlp-small",
        "status": status,
        "error": "FAULT: HardFault pc=0x08001234" if status == "error" else "",
        "steps": 200 if ok else 0,
        "final_loss": 0.4 + 0.1 * i if ok else nan,
        "acc_before": 0.1 if ok else nan,
        "acc_after": (0.85 if full else 0.7 + 0.01 * i) if ok else nan,
        "loss_before": 2.3 if ok else nan,
        "loss_after": (0.5 if full else 0.9) if ok else nan,
        "peak_sram_bytes": planned - 2_000 if ok else nan,
        "planned_sram_bytes": planned,
        "board_sram_bytes": sram,
        "flash_bytes": 150_000,
        "board_flash_bytes": 1_048_576,
        "static_bytes": 20_000 if ok else nan,
        "stack_peak_bytes": 6_000 if ok else nan,
        "arena_peak_bytes": planned - 28_000 if ok else nan,
        "planned_weights_bytes": 70_000,
        "planned_activations_bytes": 60_000 if full else 4_000,
        "planned_gradients_bytes": 20_000 if full else 1_000,
        "planned_optimizer_bytes": 0,
        "instr_per_step": instr,
        "count_unit": "instructions",
        "instr_fwd_per_step": 1.0e6 * SCALE[board],
        "instr_bwd_per_step": (1.9e6 if full else 0.05e6) * SCALE[board],
        "instr_upd_per_step": (0.1e6 if full else 0.05e6) * SCALE[board],
        "energy_per_step_uj": (55.0 if full else 20.0) * SCALE[board] if ok else nan,
        "energy_source": "modelled",
        "lost_frames": 0,
        "journal": f"journal/r{i}.jsonl",
        "fidelity_max_rel_err": 1.5e-6 * (i + 1) if ok else nan,
        "build_id": "abc123",
        "plan_hash": "0xdeadbeef",
        "wall_s": 12.5,
    }


def _steps(run_id: str, n: int, rng: np.random.Generator, floor: float = 0.3) -> pd.DataFrame:
    """Batch-1 losses: a decaying trend with rare spikes up to 25, like the twins stream."""
    step = np.arange(n)
    loss = 2.3 * np.exp(-step / 60) + floor + np.abs(rng.normal(0, 0.3, n))
    spikes = rng.random(n) < 0.015
    loss[spikes] = rng.uniform(5, 25, spikes.sum())
    return pd.DataFrame(
        {
            "run_id": run_id,
            "step": step,
            "loss": loss,
            "correct": rng.random(n) < np.clip(0.3 + step / n, 0, 0.9),
            "instr_fwd": 1.0e6,
            "instr_bwd": 1.9e6,
            "instr_upd": 1e5,
            "sram_bytes": 200_000,
        }
    )


def _grads(run_id: str, n: int, layers: int = 3) -> pd.DataFrame:
    rows = [
        {
            "run_id": run_id,
            "step": s,
            "layer": layer,
            "param": p,
            "l2": (layer + 1) * np.exp(-s / 80) + 0.01,
            "max_abs": 0.5 * (layer + 1),
            "values": None,
        }
        for s in range(0, n, 10)
        for layer in range(3 - layers, 3)
        for p in ("w", "b")
    ]
    return pd.DataFrame(rows)


def _layers(row: dict[str, object]) -> pd.DataFrame:
    full, scale = str(row["technique"]).startswith("full"), SCALE.get(str(row["board"]), 1.0)
    trained = TRAINED.get(str(row["technique"]), 3)
    rows = [
        {
            "run_id": row["run_id"],
            "layer": layer,
            "op": op,
            "instr_fwd_per_step": 2e4 * params**0.5 * scale,
            "instr_bwd_per_step": (3e4 * params**0.5 if k >= 3 - trained else 0.0) * scale,
            "instr_upd_per_step": (1e4 * params**0.5 if k >= 3 - trained else 0.0) * scale * (1 if full else 0.3),
            "planned_weights_ram_bytes": 4 * params,
            "planned_kept_act_bytes": 2_048 if full else 0,
            "planned_grad_bytes": 4 * params if k >= 3 - trained else 0,
            "planned_scratch_bytes": 512,
        }
        for k, (layer, op, params) in enumerate(LAYERS)
    ]
    return pd.DataFrame(rows)


def make_results(
    root: Path, *, grads: bool = True, meta: bool = True, hostile: bool = False, layers: bool = True
) -> Path:
    """Results like a 3-board by 3-technique profile writes: one run does not fit, one fails."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    runs = [
        _run_row(i, b, t, sram) for i, ((b, sram), t) in enumerate((bs, t) for bs in BOARDS.items() for t in TECHNIQUES)
    ]
    if hostile:
        runs[0]["board"] = runs[1]["board"] = f"evil{HOSTILE}"
        runs[0]["technique"] = f"tech$x${HOSTILE}"
        runs[0]["energy_source"] = HOSTILE
        runs[5]["error"] = f"boom {HOSTILE}"
        runs[7]["error"] = f"boom {HOSTILE}"
    pd.DataFrame(runs).to_parquet(root / "runs.parquet")
    pd.DataFrame(runs).to_csv(root / "runs.csv", index=False)
    ok = [r for r in runs if r["status"] == "ok"]
    floors = {"full-fp32": 0.2, "last-fp32": 0.6, "bias-fp32": 0.9}
    steps = [_steps(str(r["run_id"]), 200, rng, floors.get(str(r["technique"]), 0.5)) for r in ok]
    pd.concat(steps).to_parquet(root / "steps.parquet")
    if grads:
        frames = [_grads(str(r["run_id"]), 200, TRAINED.get(str(r["technique"]), 3)) for r in ok]
        pd.concat(frames).to_parquet(root / "grads.parquet")
    if layers:
        pd.concat([_layers(r) for r in ok]).to_parquet(root / "layers.parquet")
    if meta:
        info = {
            "profile": "quick",
            "bench_version": "0.1.0",
            "git_commit": "0123456789abcdef",
            "host": "ci-runner",
            "started": "2025-01-01T10:00:00",
            "finished": "2025-01-01T10:07:30",
            "rack": "twins",
            "notes": ["synthetic data for the report test"],
        }
        if hostile:
            info["rack"] = HOSTILE
            info["notes"] = [HOSTILE]
        (root / "meta.json").write_text(json.dumps(info))
    return root


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory) -> str:
    open_before = set(plt.get_fignums())
    out = write_report(make_results(tmp_path_factory.mktemp("results")))
    assert set(plt.get_fignums()) == open_before  # no figure leaked into pyplot's registry
    assert out.name == "index.html" and out.exists()
    return out.read_text(encoding="utf-8")


def _section(html: str, anchor: str) -> str:
    return html.split(f'<section id="{anchor}">')[1].split("</section>")[0]


SECTIONS = ("summary", "overview", "results", "curves", "tradeoffs", "memory", "layers", "grads", "fidelity",
            "energy", "work", "provenance")  # fmt: skip


def test_report_is_self_contained(report_html: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", report_html, re.I)
    scripts = re.findall(r"<script>(.*?)</script>", report_html, re.S)
    ours = (Path(report.__file__).parent / "templates" / "report.js").read_text(encoding="utf-8")
    assert scripts == [ours] and report_html.lower().count("<script") == 1  # only the bench's own, inline
    digest = base64.b64encode(hashlib.sha256(ours.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in report_html and "default-src 'none'" in report_html
    images = re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', report_html)
    assert len(images) >= 11  # 4 curves, trade-offs, memory, layers, gradients, fidelity, energy, work


def test_every_section_is_in_the_table_of_contents(report_html: str) -> None:
    for name in (*BOARDS, *TECHNIQUES):
        assert name in report_html
    for section in SECTIONS:
        assert f'id="{section}"' in report_html and f'href="#{section}"' in report_html
    assert 'id="comparison"' not in report_html  # no compare.json


def test_every_figure_has_its_numbers(report_html: str) -> None:
    for anchor in SECTIONS[3:-1]:
        body = _section(report_html, anchor)
        assert "<figure>" in body and "<table" in body.split("<details")[1], anchor


def test_results_tables_are_linked(report_html: str) -> None:
    for name in ("runs.parquet", "runs.csv", "steps.parquet", "grads.parquet", "layers.parquet", "meta.json"):
        assert f'href="{name}"' in report_html
    assert 'href="steps.csv"' not in report_html  # only files that exist


def test_overview_matrix_shows_status_and_required_vs_available_sram(report_html: str) -> None:
    overview = _section(report_html, "overview")
    cells = re.findall(r'<td class="(\w+)"><span class="badge', overview)
    assert sorted(cells) == ["error"] + ["nofit"] + ["ok"] * 7
    assert f"needs {NOFIT_PLANNED / 1024:,.1f} KiB SRAM" in overview
    assert f"board has {BOARDS['nrf52840-dk'] / 1024:,.1f} KiB" in overview


def test_energy_is_labelled_with_its_source(report_html: str) -> None:
    assert "Energy / step, µJ (modelled)" in report_html
    assert re.search(r'55 µJ<span class="src">modelled</span>', report_html)
    assert "modelled" in _section(report_html, "energy")


def test_does_not_fit_row_shows_required_and_available(report_html: str) -> None:
    cell = re.search(r'<td class="nofit" colspan="7">([^<]*)</td>', report_html)
    assert cell is not None
    assert f"{NOFIT_PLANNED:,} B" in cell.group(1) and f"{BOARDS['nrf52840-dk']:,} B" in cell.group(1)


def test_error_run_is_in_the_summary(report_html: str) -> None:
    summary = _section(report_html, "summary")
    assert "HardFault pc=0x08001234" in summary and "does-not-fit" in summary


def test_loss_axis_clip_is_explained(report_html: str) -> None:
    curves = _section(report_html, "curves")
    assert "clipped at 1.15× the 99th percentile of the smoothed curves" in curves
    assert re.search(r"\(\d+ raw points lie above it", curves)
    assert curves.count("<figure>") == 4  # loss and accuracy, per board and per technique


def test_loss_clip_ignores_spikes() -> None:
    smooth = pd.Series(np.linspace(2.5, 0.5, 300))
    top = report._loss_top(smooth)
    assert top == pytest.approx(1.15 * np.percentile(smooth, 99))
    assert top < 3.0  # a raw spike of 25 does not stretch the axis


def test_pareto_front() -> None:
    cost = np.array([10.0, 20.0, 30.0, 15.0, 30.0])
    gain = np.array([0.5, 0.8, 0.9, 0.4, 0.85])
    assert report._pareto(cost, gain).tolist() == [True, True, True, False, False]


def test_memory_breakdown_has_every_part(report_html: str) -> None:
    memory = _section(report_html, "memory")
    for text in ("Weights", "Activations kept", "Gradients", "Optimizer", "70,000 B", "60,000 B", "20,000 B"):
        assert text in memory
    assert "board&#39;s SRAM" in memory and "planned peak" in memory


def test_layers_and_provenance(report_html: str) -> None:
    layers = _section(report_html, "layers")
    assert "conv3x3" in layers and "Weights (RAM)" in layers
    provenance = _section(report_html, "provenance")
    for text in ("0123456789abcdef", "ci-runner", "abc123", "0xdeadbeef", "QEMU twin", "2025-01-01 10:00"):
        assert text in provenance


def test_hostile_strings_are_escaped(tmp_path: Path) -> None:
    html = write_report(make_results(tmp_path, hostile=True)).read_text(encoding="utf-8")
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&#39;" in html  # quotes escaped too


def test_a_diverged_runs_infinite_gradient_norms_do_not_break_the_heatmap(tmp_path: Path) -> None:
    """A run whose training diverged streams inf (and NaN) norms: the heatmap colours the finite ones, the report is
    written (it used to raise matplotlib's "Invalid vmin or vmax")."""
    results = make_results(tmp_path)
    grads = pd.read_parquet(results / "grads.parquet")
    first = grads["run_id"] == grads["run_id"].iloc[0]
    grads.loc[first & (grads["step"] >= 100), "l2"] = np.inf
    grads.loc[first & (grads["step"] == 50), "l2"] = np.nan
    grads.to_parquet(results / "grads.parquet")
    html = write_report(results).read_text(encoding="utf-8")
    assert 'id="grads"' in html and "gradient heatmap" in html


def test_missing_optional_files_still_render(tmp_path: Path) -> None:
    results = make_results(tmp_path, grads=False, meta=False, layers=False)
    out = write_report(results, tmp_path / "out" / "report.html")
    html = out.read_text(encoding="utf-8")
    assert out.parent.name == "out"
    assert 'id="grads"' not in html and 'id="layers"' not in html and "meta.json not found" in html
    assert "full-fp32" in html
    assert 'href="../runs.parquet"' in html  # links follow the report when it is written elsewhere


def test_runs_without_the_new_memory_columns_show_the_arena_whole(tmp_path: Path) -> None:
    """Results written before the memory composition columns existed still get a memory section."""
    results = make_results(tmp_path, grads=False, layers=False)
    kinds = ("weights", "activations", "gradients", "optimizer")
    runs = pd.read_parquet(results / "runs.parquet").drop(columns=[f"planned_{k}_bytes" for k in kinds])
    runs.to_parquet(results / "runs.parquet")
    res = report.load_results(results)
    parts = report._memory_parts(res.groups)
    assert (parts["arena_other"] == res.groups["arena_peak_bytes"].fillna(0)).all()


def test_large_tables_are_capped_with_a_pointer_to_the_csv() -> None:
    rows = [_run_row(i, "rpi-pico", f"t{i}", 270_336) for i in range(report.MAX_ROWS + 50)]
    runs = report._clean_runs(pd.DataFrame(rows))
    table = report._results_table(runs)
    assert len(table["rows"]) == report.MAX_ROWS
    assert f"First {report.MAX_ROWS:,} of {report.MAX_ROWS + 50:,} runs" in table["note"]
    assert "runs.csv" in table["note"]


def test_repeated_runs_are_drawn_as_their_median() -> None:
    rows = [_run_row(i, "rpi-pico", "full-fp32", 270_336) | {"acc_after": a} for i, a in enumerate((0.6, 0.7, 0.9))]
    groups = report._groups(report._clean_runs(pd.DataFrame(rows)))
    assert len(groups) == 1 and groups["n_runs"].iloc[0] == 3
    assert groups["acc_after"].iloc[0] == pytest.approx(0.7)


def test_single_hardware_run_labels_cycles_and_measured_energy(tmp_path: Path) -> None:
    row = _run_row(0, "nucleo-f746zg", "last-fp32", BOARDS["nucleo-f746zg"])
    row.update(target_kind="hardware", count_unit="cycles", energy_source="measured", energy_meter="ina228",
               board_serial="066DFF5")
    pd.DataFrame([row]).to_parquet(tmp_path / "runs.parquet")
    _steps("r0", 50, np.random.default_rng(0)).to_parquet(tmp_path / "steps.parquet")
    html = write_report(tmp_path).read_text(encoding="utf-8")
    assert "Work / step (cycles)" in html and "Energy / step, µJ (measured (ina228))" in html
    assert '<span class="src">measured (ina228)</span>' in html and "modelled</span>" not in html
    assert "066DFF5" in _section(html, "provenance")


def test_single_failed_run_without_steps(tmp_path: Path) -> None:
    row = {
        "run_id": "only",
        "board": "rpi-pico",
        "technique": "full-fp32",
        "status": "error",
        "error": "no HELLO",
        "steps": 0,
        "final_loss": float("nan"),
    }
    pd.DataFrame([row]).to_parquet(tmp_path / "runs.parquet")
    pd.DataFrame({"run_id": pd.Series(dtype=str), "step": pd.Series(dtype=int)}).to_parquet(tmp_path / "steps.parquet")
    html = write_report(tmp_path).read_text(encoding="utf-8")
    assert "no HELLO" in html and "No step data was recorded." in html


def test_numerics_section_compares_fp32_qas_and_noqas(tmp_path):
    from bench.records.run import RUN_COLUMNS

    def row(board, technique, acc):
        return dict.fromkeys(RUN_COLUMNS, float("nan")) | {
            "run_id": f"{board}.{technique}", "board": board, "target_kind": "emulated", "technique": technique,
            "model": "digits-cnn", "status": "ok", "error": "", "acc_before": 0.58, "acc_after": acc,
            "count_unit": "instructions", "energy_source": "modelled", "journal": "", "build_id": "b",
            "plan_hash": "p"}

    runs = [row(b, t, a) for b in ("nucleo-f746zg", "rpi-pico")
            for t, a in (("full-fp32", 0.86), ("full-int8", 0.85), ("full-int8-noqas", 0.70), ("last-fp32", 0.76))]
    pd.DataFrame(runs).to_parquet(tmp_path / "runs.parquet")
    html = write_report(tmp_path).read_text()
    assert 'href="#numerics"' in html and 'id="numerics"' in html and "int8 without QAS" in html
    # the table carries the measured differences: int8 − fp32 = −1.0 pt, no-QAS − QAS = −15.0 pt
    assert "-1.0" in html and "-15.0" in html


def test_numerics_section_absent_with_one_arithmetic(tmp_path):
    from bench.records.run import RUN_COLUMNS

    row = dict.fromkeys(RUN_COLUMNS, float("nan")) | {
        "run_id": "a.full-fp32", "board": "a", "target_kind": "emulated", "technique": "full-fp32", "model": "m",
        "status": "ok", "error": "", "acc_after": 0.8, "count_unit": "instructions", "energy_source": "modelled",
        "journal": "", "build_id": "b", "plan_hash": "p"}
    pd.DataFrame([row]).to_parquet(tmp_path / "runs.parquet")
    assert 'id="numerics"' not in write_report(tmp_path).read_text()


def test_identical_curves_are_dashed_and_named_not_hidden() -> None:
    """Three twins running the same firmware draw the same loss curve: the second and third get dash patterns of
    their own (so each colour shows) and the caption says which curves lie on another."""
    overlaps = report.Overlaps()
    overlaps.start()
    same, other = pd.Series([1.0, 0.8, 0.5]), pd.Series([1.0, 0.9, 0.7])
    styles = [overlaps.style(same, "nrf52840-dk", "full-fp32"), overlaps.style(same, "nucleo-f746zg", "full-fp32"),
              overlaps.style(other, "rpi-pico", "full-fp32"), overlaps.style(same, "stm32h7", "full-fp32")]
    assert styles[0] == "-" and styles[2] == "-" and styles[1] != "-" and styles[3] not in ("-", styles[1])
    assert overlaps.note() == (" Dashed: a curve identical to one drawn before it in its panel (nucleo-f746zg in "
                               "full-fp32, stm32h7 in full-fp32).")
    overlaps.start()  # a new panel: nothing drawn in it yet
    assert overlaps.style(same, "nrf52840-dk", "last-fp32") == "-"


def test_times_are_shown_to_the_minute() -> None:
    meta = {"started": "2026-12-02T00:37:12.123456+00:00", "finished": "2026-12-02T00:38:30.5+00:00"}
    assert report._when(meta) == "2026-12-02 00:37 UTC → 00:38 UTC (1.3 min)"
    assert report.friendly_time("not a time") == "not a time"


def test_the_twelve_techniques_of_a_study_each_get_a_colour_of_their_own() -> None:
    names = [f"{s}-{n}" for s in ("full", "last", "bias", "sparse") for n in ("fp32", "int8", "int8-noqas")]
    colors = report._colors(names, report.PALETTE)
    assert len(set(colors.values())) == 12 and report.MAX_SERIES >= 12  # none repeats, none is left undrawn
