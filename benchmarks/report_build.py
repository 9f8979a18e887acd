"""Benchmark: build the HTML report of a large synthetic results set and print how long it took.

A nightly sweep can hold a thousand runs; the report must still build in seconds (target: 10 s for 1000 runs of
300 steps, with per-step gradient statistics and per-layer costs). This prints figures; it asserts nothing.

    .venv/bin/python benchmarks/report_build.py [--runs 1000] [--steps 300] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.report import html as report

BOARDS = {f"board-{i}": 256 * 1024 + 32 * 1024 * i for i in range(8)}
TECHNIQUES = ("full-fp32", "last-fp32", "bias-fp32", "full-int8", "sparse-fp32")
LAYERS = ("conv3x3", "relu", "dense", "relu", "dense")
TARGET_S = 10.0


def _runs(n: int, steps: int, rng: np.random.Generator) -> pd.DataFrame:
    boards = np.array(list(BOARDS))[np.arange(n) % len(BOARDS)]
    techniques = np.array(TECHNIQUES)[(np.arange(n) // len(BOARDS)) % len(TECHNIQUES)]
    status = np.where(rng.random(n) < 0.03, "error", "ok")
    peak = rng.uniform(40e3, 200e3, n)
    instr = rng.uniform(1e5, 5e6, n)
    return pd.DataFrame({
        "run_id": [f"run{i:04d}" for i in range(n)], "board": boards, "target_kind": "emulated",
        "technique": techniques, "model": "digits-cnn", "status": status,
        "error": np.where(status == "error", "FAULT: HardFault", ""), "steps": steps,
        "final_loss": rng.uniform(0.2, 1.5, n), "acc_before": 0.58, "acc_after": rng.uniform(0.6, 0.9, n),
        "loss_before": 1.4, "loss_after": rng.uniform(0.4, 1.0, n), "peak_sram_bytes": peak,
        "planned_sram_bytes": peak + 200, "board_sram_bytes": [BOARDS[b] for b in boards], "flash_bytes": 30e3,
        "board_flash_bytes": 1 << 20, "static_bytes": 6e3, "stack_peak_bytes": 2e3, "arena_peak_bytes": peak - 8e3,
        "planned_weights_bytes": peak * 0.4, "planned_activations_bytes": peak * 0.3,
        "planned_gradients_bytes": peak * 0.1, "planned_optimizer_bytes": 0.0, "instr_per_step": instr,
        "count_unit": "instructions",
        "instr_fwd_per_step": instr * 0.4, "instr_bwd_per_step": instr * 0.4, "instr_upd_per_step": instr * 0.2,
        "energy_per_step_uj": instr * 1e-4, "energy_source": "modelled", "lost_frames": 0, "journal": "",
        "fidelity_max_rel_err": rng.uniform(1e-7, 1e-5, n), "build_id": "bench", "plan_hash": "0", "wall_s": 20.0,
        "phase": "final", "lr": 0.02, "repeat": 0, "seed": 1,
    })  # fmt: skip


def _steps(run_ids: list[str], steps: int, rng: np.random.Generator) -> pd.DataFrame:
    n = len(run_ids) * steps
    step = np.tile(np.arange(steps), len(run_ids))
    loss = 2.3 * np.exp(-step / 60) + 0.3 + rng.exponential(0.3, n)
    loss[rng.random(n) < 0.01] = 25.0
    return pd.DataFrame({
        "run_id": np.repeat(run_ids, steps), "step": step, "loss": loss,
        "correct": rng.random(n) < 0.7, "instr_fwd": 1e5, "instr_bwd": 1e5, "instr_upd": 5e4,
        "sram_bytes": 1e5,
    })  # fmt: skip


def _grads(run_ids: list[str], steps: int) -> pd.DataFrame:
    tensors = [(layer, p) for layer in (0, 2, 4) for p in ("w", "b")]
    n = len(run_ids) * steps * len(tensors)
    step = np.tile(np.repeat(np.arange(steps), len(tensors)), len(run_ids))
    layer = np.tile([t[0] for t in tensors], len(run_ids) * steps)
    return pd.DataFrame({
        "run_id": np.repeat(run_ids, steps * len(tensors)), "step": step, "layer": layer,
        "param": np.tile([t[1] for t in tensors], len(run_ids) * steps),
        "l2": (layer + 1) * np.exp(-step / 80) + 0.01, "max_abs": 0.5, "values": [None] * n,
    })  # fmt: skip


def _layers(run_ids: list[str]) -> pd.DataFrame:
    k = len(LAYERS)
    return pd.DataFrame({
        "run_id": np.repeat(run_ids, k), "layer": np.tile(np.arange(k), len(run_ids)),
        "op": np.tile(LAYERS, len(run_ids)), "instr_fwd_per_step": 2e4, "instr_bwd_per_step": 3e4,
        "instr_upd_per_step": 1e4, "planned_weights_ram_bytes": 4096, "planned_kept_act_bytes": 2048,
        "planned_grad_bytes": 4096, "planned_scratch_bytes": 512,
    })  # fmt: skip


def write_results(root: Path, n_runs: int, steps: int) -> None:
    rng = np.random.default_rng(0)
    runs = _runs(n_runs, steps, rng)
    ok = runs.loc[runs["status"] == "ok", "run_id"].tolist()
    runs.to_parquet(root / "runs.parquet")
    _steps(ok, steps, rng).to_parquet(root / "steps.parquet")
    _grads(ok, steps).to_parquet(root / "grads.parquet")
    _layers(ok).to_parquet(root / "layers.parquet")
    (root / "meta.json").write_text(json.dumps({"profile": "benchmark", "bench_version": "synthetic"}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--keep", type=Path, default=None, help="write the results and report here and keep them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        write_results(root, args.runs, args.steps)
        t1 = time.perf_counter()
        res = report.load_results(root)
        t2, cpu = time.perf_counter(), time.process_time()
        out = report.write_report(root)
        t3, cpu = time.perf_counter(), time.process_time() - cpu
        size = out.stat().st_size
    print(f"synthetic results: {args.runs} runs × {args.steps} steps, {len(res.steps):,} step rows, "
          f"{0 if res.grads is None else len(res.grads):,} gradient rows (written in {t1 - t0:.1f} s)")
    print(f"load only: {t2 - t1:.2f} s")
    print(f"report build (load + figures + HTML): {t3 - t2:.2f} s wall, {cpu:.2f} s CPU, {size / 1e6:.1f} MB "
          f"(target ≤ {TARGET_S:g} s: {'met' if t3 - t2 <= TARGET_S else 'MISSED'}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs — a busy machine inflates wall time)")


if __name__ == "__main__":
    main()
