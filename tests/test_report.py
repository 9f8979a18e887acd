"""The HTML report: self-contained, complete, and safe against hostile device strings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from bench.report import write_report

BOARDS = {"nucleo-f746zg": 327_680, "nrf52840-dk": 262_144, "rpi-pico": 270_336}
TECHNIQUES = ("full-fp32", "last-fp32")
HOSTILE = "<script>alert(1)</script>\"'"
NOFIT = ("nrf52840-dk", "full-fp32")
ERROR = ("rpi-pico", "last-fp32")
NOFIT_PLANNED = 401_234


def _run_row(i: int, board: str, technique: str, sram: int) -> dict[str, object]:
    full = technique.startswith("full")
    status = {NOFIT: "does-not-fit", ERROR: "error"}.get((board, technique), "ok")
    ok = status == "ok"
    planned = NOFIT_PLANNED if status == "does-not-fit" else (180_000 if full else 90_000) + 4_096 * i
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
        "acc_after": (0.85 if full else 0.7) if ok else nan,
        "peak_sram_bytes": planned - 2_000 if ok else nan,
        "planned_sram_bytes": planned,
        "board_sram_bytes": sram,
        "flash_bytes": 150_000,
        "board_flash_bytes": 1_048_576,
        "static_bytes": 20_000 if ok else nan,
        "stack_bytes": 6_000 if ok else nan,
        "arena_bytes": planned - 28_000 if ok else nan,
        "instr_per_step": 3.0e6 if full else 1.1e6,
        "count_unit": "instructions",
        "instr_fwd_per_step": 1.0e6,
        "instr_bwd_per_step": 1.9e6 if full else 0.05e6,
        "instr_upd_per_step": 0.1e6 if full else 0.05e6,
        "energy_per_step_uj": (55.0 if full else 20.0) if ok else nan,
        "energy_source": "modelled",
        "lost_frames": 0,
        "journal": f"journal/r{i}.jsonl",
        "fidelity_max_rel_err": 1e-6 if ok else nan,
        "build_id": "abc123",
        "plan_hash": "0xdeadbeef",
        "wall_s": 12.5,
    }


def _steps(run_id: str, n: int, rng: np.random.Generator) -> pd.DataFrame:
    step = np.arange(n)
    loss = 2.3 * np.exp(-step / 60) + 0.3 + rng.normal(0, 0.15, n)
    return pd.DataFrame(
        {
            "run_id": run_id,
            "step": step,
            "loss": loss,
            "correct": rng.random(n) < 0.7,
            "instr_fwd": 1.0e6,
            "instr_bwd": 1.9e6,
            "instr_update": 1e5,
            "sram_bytes": 200_000,
        }
    )


def _grads(run_id: str, n: int) -> pd.DataFrame:
    rows = [
        {
            "run_id": run_id,
            "step": s,
            "layer": layer,
            "param": p,
            "l2": (layer + 1) * np.exp(-s / 80) + 0.01,
            "max_abs": 0.5 * (layer + 1),
        }
        for s in range(0, n, 10)
        for layer in range(3)
        for p in ("w", "b")
    ]
    return pd.DataFrame(rows)


def make_results(root: Path, *, grads: bool = True, meta: bool = True, hostile: bool = False) -> Path:
    """Results like a 3-board by 2-technique profile writes: one run does not fit, one fails."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    runs = [
        _run_row(i, b, t, sram) for i, ((b, sram), t) in enumerate((bs, t) for bs in BOARDS.items() for t in TECHNIQUES)
    ]
    if hostile:
        runs[0]["board"] = runs[1]["board"] = f"evil{HOSTILE}"
        runs[0]["technique"] = f"tech$x${HOSTILE}"
        runs[0]["energy_source"] = HOSTILE
        runs[4]["error"] = f"boom {HOSTILE}"
    pd.DataFrame(runs).to_parquet(root / "runs.parquet")
    ok_ids = [r["run_id"] for r in runs if r["status"] == "ok"]
    pd.concat([_steps(r, 200, rng) for r in ok_ids]).to_parquet(root / "steps.parquet")
    if grads:
        pd.concat([_grads(r, 200) for r in ok_ids]).to_parquet(root / "grads.parquet")
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


def test_report_is_self_contained(report_html: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", report_html, re.I)
    assert "<script" not in report_html.lower()
    images = re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', report_html)
    assert len(images) >= 6  # loss, SRAM, work, energy, accuracy, gradients


def test_report_names_every_board_and_technique(report_html: str) -> None:
    for name in (*BOARDS, *TECHNIQUES):
        assert name in report_html
    for section in (
        "summary",
        "results",
        "loss",
        "sram",
        "work",
        "energy",
        "accuracy",
        "grads",
        "provenance",
    ):
        assert f'id="{section}"' in report_html and f'href="#{section}"' in report_html


def test_energy_is_labelled_with_its_source(report_html: str) -> None:
    assert "Energy / step, µJ (modelled)" in report_html
    assert re.search(r'55 µJ<span class="src">modelled</span>', report_html)


def test_does_not_fit_cell_shows_required_and_available(report_html: str) -> None:
    cell = re.search(r'<td class="nofit"[^>]*>([^<]*)</td>', report_html)
    assert cell is not None
    assert f"{NOFIT_PLANNED:,} B" in cell.group(1) and f"{BOARDS['nrf52840-dk']:,} B" in cell.group(1)


def test_error_run_is_in_the_summary(report_html: str) -> None:
    summary = report_html.split('id="summary"')[1].split('id="results"')[0]
    assert "HardFault pc=0x08001234" in summary and "does-not-fit" in summary


def test_hostile_strings_are_escaped(tmp_path: Path) -> None:
    html = write_report(make_results(tmp_path, hostile=True)).read_text(encoding="utf-8")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&#39;" in html  # quotes escaped too


def test_missing_optional_files_still_render(tmp_path: Path) -> None:
    out = write_report(make_results(tmp_path, grads=False, meta=False), tmp_path / "out" / "report.html")
    html = out.read_text(encoding="utf-8")
    assert out.parent.name == "out"
    assert 'id="grads"' not in html and "meta.json not found" in html
    assert "full-fp32" in html


def test_single_hardware_run_labels_cycles_and_measured_energy(tmp_path: Path) -> None:
    row = _run_row(0, "nucleo-f746zg", "last-fp32", BOARDS["nucleo-f746zg"])
    row.update(target_kind="hardware", count_unit="cycles", energy_source="measured")
    pd.DataFrame([row]).to_parquet(tmp_path / "runs.parquet")
    _steps("r0", 50, np.random.default_rng(0)).to_parquet(tmp_path / "steps.parquet")
    html = write_report(tmp_path).read_text(encoding="utf-8")
    assert "Work / step (cycles)" in html and "Energy / step, µJ (measured)" in html
    assert '<span class="src">measured</span>' in html and "modelled</span>" not in html


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
