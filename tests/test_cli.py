"""The command line: catalogue listing and clear errors for bad input (no board needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.app.cli import main

BENCH = [sys.executable, "-c", "from bench.app.cli import entry; entry()"]


def test_boards_lists_catalogue_and_default_rack():
    result = CliRunner().invoke(main, ["boards"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for text in ("nucleo-f746zg", "nrf52840-dk", "rpi-pico", "mps2-an500", "320 KB", "Rack 'emulated'"):
        assert text in result.output


def test_unknown_technique_in_profile_is_a_clear_error(tmp_path: Path):
    profile = tmp_path / "bad.toml"
    profile.write_text('techniques = ["full-fp32", "bias-int4"]\n')
    proc = subprocess.run([*BENCH, "run", str(profile), "--out", str(tmp_path / "out")], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 2
    assert "bad.toml: key 'techniques': unknown technique 'bias-int4'" in proc.stderr
    assert "full-fp32, last-fp32, bias-fp32" in proc.stderr


def test_unknown_board_filter_is_a_clear_error(tmp_path: Path):
    proc = subprocess.run([*BENCH, "run", "quick", "--board", "esp32", "--out", str(tmp_path)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 2 and "has no board esp32" in proc.stderr


def test_report_rebuilds_from_stored_results(tmp_path: Path):
    import pandas as pd

    from bench.records.run import RUN_COLUMNS

    row = dict.fromkeys(RUN_COLUMNS, float("nan")) | {
        "run_id": "rpi-pico.last-fp32", "board": "rpi-pico", "target_kind": "emulated", "technique": "last-fp32",
        "model": "digits-cnn", "status": "ok", "error": "", "count_unit": "instructions",
        "energy_source": "modelled", "journal": "", "build_id": "x", "plan_hash": "y"}
    pd.DataFrame([row]).to_parquet(tmp_path / "runs.parquet")
    result = CliRunner().invoke(main, ["report", str(tmp_path), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert "rpi-pico" in (tmp_path / "r.html").read_text()


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BENCH, *args], capture_output=True, text=True, check=False, timeout=120)


def test_unknown_model_or_task_in_a_profile_is_named_before_anything_runs(tmp_path: Path):
    for key, line in (("task", 'task = "nope"\nmodel = "digits-cnn"\n'),
                      ("model", 'task = "digits-drift"\nmodel = "nope-net"\n')):
        profile = tmp_path / f"bad-{key}.toml"
        profile.write_text(line + 'techniques = ["full-fp32"]\n')
        proc = _bench("run", str(profile), "--out", str(tmp_path / "out"))
        assert proc.returncode == 2, proc.stderr
        assert f"bad-{key}.toml: key '{key}': unknown {key} 'nope" in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "out" / "runs.parquet").exists()  # refused before any run started


def test_a_file_that_is_not_a_tflite_flatbuffer_is_named(tmp_path: Path):
    from bench.model.tasks import load_task
    from bench.numerics.pretrain import build_model
    from bench.tflite.quantize import export_digits_tflite

    text = tmp_path / "notes.tflite"
    text.write_text("hello, not a model")
    real = tmp_path / "digits.tflite"
    task = load_task("digits-drift", 1)
    export_digits_tflite(build_model("digits-mlp", task, 1, None), task, real)
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(real.read_bytes()[:160])  # identifier intact, offsets now point past the end
    for path, words in ((text, "not a TFLite flatbuffer"), (truncated, "corrupt TFLite flatbuffer"),
                        (tmp_path / "missing.tflite", "no such file")):
        proc = _bench("plan", str(path), "--technique", "full-fp32")
        assert proc.returncode == 2, proc.stderr
        assert f"{path}: {words}" in proc.stderr and "Traceback" not in proc.stderr
    int8 = json.loads(_bench("plan", str(real), "--technique", "last-int8", "--json").stdout)
    assert int8["how"] == "planned" and int8["fits_sram"] and int8["fits_flash"]
    assert int8["arena_bytes"] == sum(int8["composition"].values()) and int8["layers"][-2]["weights_ram_bytes"] > 0
    planned = json.loads(_bench("plan", str(real), "--technique", "last-fp32", "--json").stdout)
    assert planned["how"] == "planned" and planned["model"] == "digits.tflite" and planned["fits_sram"] is True
    assert planned["full_fp32_arena_bytes"] > planned["arena_bytes"] == sum(planned["composition"].values())


def test_json_output_of_list_and_boards():
    assert "full-int8" in json.loads(CliRunner().invoke(main, ["list", "techniques", "--json"]).output)
    data = json.loads(CliRunner().invoke(main, ["boards", "--json"]).output)
    assert {b["name"] for b in data["catalogue"]} >= {"rpi-pico", "nucleo-f746zg"} and data["rack"]["boards"]


def test_list_names_what_a_profile_may_use():
    for what, expected in (("techniques", "sparse-int8-noqas"), ("models", "digits-cnn"), ("tasks", "digits-drift"),
                           ("profiles", "study"), ("boards", "rpi-pico")):
        result = CliRunner().invoke(main, ["list", what])
        assert result.exit_code == 0 and expected in result.output.split("\n"), (what, result.output)


def test_run_overrides_are_checked_like_the_profile(tmp_path: Path):
    proc = subprocess.run([*BENCH, "run", "quick", "--technique", "bias-int4", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "overrides ['techniques']: unknown technique 'bias-int4'" in proc.stderr
    proc = subprocess.run([*BENCH, "run", "quick", "--repeats", "0", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "repeats" in proc.stderr and "greater than or equal to 1" in proc.stderr


@pytest.mark.twin
def test_run_overrides_change_the_run(tmp_path: Path):
    """--technique/--steps/--lr/--seed reach the device: one run, 12 steps, at the given lr and seed."""
    import pandas as pd

    out = tmp_path / "o"
    proc = subprocess.run([*BENCH, "run", "quick", "--board", "rpi-pico", "--technique", "last-fp32", "--steps", "12",
                           "--lr", "0.05", "--seed", "7", "--out", str(out), "--json"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    (run,) = pd.read_parquet(out / "runs.parquet").to_dict("records")
    assert (run["technique"], run["steps"], run["lr"], run["seed"]) == ("last-fp32", 12, 0.05, 7)
    (printed,) = [json.loads(line) for line in proc.stdout.splitlines()]  # --json: stdout holds only the rows
    assert printed["run_id"] == run["run_id"] and printed["steps"] == 12 and printed["energy_spread_pct"] is None


def test_help_imports_nothing_heavy():
    """`bench --help` stays fast because the commands import the bench's stages only when they run."""
    code = ("import sys; from bench.app.cli import main; main(['--help'], standalone_mode=False); "
            "heavy = sorted({'pandas', 'numpy', 'bench.app.runner', 'matplotlib', 'pydantic'} & set(sys.modules)); "
            "print(heavy, file=sys.stderr); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "plan" in proc.stdout, proc.stderr


def test_tables_are_not_cut_when_piped():
    """Through a pipe rich would wrap at 80 columns; tables then take 200, so every cell is whole."""
    proc = _bench("boards")
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if "nucleo-f746zg" in line and "MHz" in line)
    assert len(row) > 100 and row.split("│")[-2].strip() == "stm32f746zg" and "…" not in proc.stdout, proc.stdout


@pytest.mark.twin
def test_rerun_into_an_out_dir_replaces_its_journals_and_verbose_says_what_happens(tmp_path: Path):
    out = tmp_path / "o"
    first = _bench("run", "quick", "--board", "rpi-pico", "--technique", "last-fp32", "--steps", "4", "--out", str(out))
    assert first.returncode == 0, first.stderr
    (out / "journal" / "ghost.rx.bin").write_bytes(b"\x00")  # files no run of the next session writes
    (out / "journal" / "ghost.run.json").write_text("{}")  # (and a damaged manifest: a warning, not a crash)
    second = _bench("-v", "run", "quick", "--board", "rpi-pico", "--technique", "bias-fp32", "--steps", "4", "--out",
                    str(out))
    assert second.returncode == 0, second.stderr
    names = sorted(p.name for p in (out / "journal").iterdir())
    assert names == ["rpi-pico.bias-fp32.run.json", "rpi-pico.bias-fp32.rx.bin", "rpi-pico.bias-fp32.tx.bin",
                     "rpi-pico.qemu.log"], names
    log = " ".join(second.stderr.split())  # rich wraps long log lines
    assert "starting QEMU" in log and "rpi-pico.bias-fp32: ok" in log, second.stderr
    assert "discarding the previous session's journals" in log and "ghost.run.json: not a run manifest" in log
    assert "starting QEMU" not in first.stderr  # without -v only warnings are logged


def test_bench_plan_of_a_tflite_is_the_same_under_any_hash_seed(tmp_path: Path):
    """Plans name ops by index in graph order, never in set or dict-of-hash order: PYTHONHASHSEED changes nothing."""
    import os

    from bench.model.tasks import load_task
    from bench.numerics.pretrain import build_model
    from bench.tflite.quantize import export_digits_tflite

    task = load_task("digits-drift", 1)
    model = tmp_path / "digits.tflite"
    export_digits_tflite(build_model("digits-cnn", task, 1, None), task, model)
    for technique in ("last-int8", "full-fp32"):
        outputs = {subprocess.run([*BENCH, "plan", str(model), "--technique", technique], capture_output=True,
                                  text=True, check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
                   for seed in ("0", "1", "2")}
        assert len(outputs) == 1 and "planned" in next(iter(outputs)), technique


@pytest.mark.twin
def test_bench_bench_json_measures_the_aifes_cnn_workload_beside_aifes(tmp_path: Path):
    """`bench bench --workload cnn`: the CNN (conv, maxpool, dense) trained on the M7 twin, its measured counts and
    peaks next to AIfES's figures, the training memory labelled planned."""
    proc = subprocess.run([*BENCH, "bench", "--workload", "cnn", "--board", "nucleo-f746zg", "--steps", "4", "--json",
                           "--out", str(tmp_path)], capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert "planned" in data["how"] and "measured" in data["how"]
    cnn = data["workloads"]["cnn"]
    assert set(data["workloads"]) == {"cnn"} and cnn["aifes"]["aifes_step"] == 2_990_725
    full = next(c for c in cnn["costs"] if c["technique"] == "full-fp32")
    assert full["unit"] == "instructions" and 0 < full["total"] < cnn["aifes"]["aifes_step"]
    assert full["params_bytes"] == 4 * (8 * 9 + 8 + 10 * 392 + 10)  # conv 3x3x8 + dense 392 -> 10, fp32
    assert 0 < full["stack_peak_bytes"] < full["arena_peak_bytes"]
