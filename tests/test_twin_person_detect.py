"""TFLM's person_detect (MobileNetV1-0.25, 96×96×1) fine-tuned with sparse int8 training on the NUCLEO-F746ZG twin.

A new 10-class head replaces the 2-class classifier (`bench.tflite.head.replace_head`), the downstream task is the
drifted
digits scaled up to 96×96 (`bench.model.tasks.digits96.digits96`); the sparse scheme trains the biases of the last 9
ops with a bias
(pointwise and depthwise convs, so the backward pass runs through AVERAGE_POOL_2D, RESHAPE and DEPTHWISE_CONV_2D),
the weights of 1/8–1/4 of the channels of three pointwise convs, and the whole head. Checked: every streamed int32
accumulator equals bench/numerics/int8train.py's exactly in the check steps, the eval loss falls, the measured peak
SRAM is
within the board's 320 KB and within 10% of the plan, and fp32 training of the same model would not fit
(bench/plan/fp32mem.py). Figures are printed (`pytest -s`) and kept as JUnit properties.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.app.runner import load_profile
from bench.config.boards import load_catalogue
from bench.config.profile import parse_technique
from bench.image.firmware import build_firmware
from bench.link import session
from bench.model.tasks import load_task
from bench.model.tasks.digits96 import digits96
from bench.numerics import int8ref
from bench.plan import blob, fp32mem
from bench.plan import int8 as qplan
from bench.plan.select import sparse_spec
from bench.records import fidelity
from bench.records.run import RunRecord
from bench.tflite.head import replace_head
from tests.twin_session import plan_on_twin

pytestmark = pytest.mark.twin
N_TRAIN, N_EVAL, STEPS, CHECK_STEPS, LR = 40, 20, 40, 2, 0.05
SPARSE = {28: 1.0, 26: 0.125, 24: 0.125, 22: 0.25}  # op index -> ratio of output channels whose weights train


def test_person_detect_sparse_int8_on_m7_twin(shared_models: Path, tmp_path: Path, record_property) -> None:
    board = load_catalogue()["nucleo-f746zg"]
    model = replace_head(qplan_model(shared_models), 10, seed=1, path=tmp_path / "person_detect-head10.tflite")
    task = load_task("digits-drift", 1)
    x, y = digits96(task.x_train[:N_TRAIN]), task.y_train[:N_TRAIN]
    xe, ye = digits96(task.x_eval[:N_EVAL]), task.y_eval[:N_EVAL]
    plan = qplan.compile_qplan(model, sparse_spec(model, 9, SPARSE, LR), "sparse-int8")
    assert plan.train is not None and plan.train.first_bwd == 19
    assert {plan.train.ops[i].kind for i in plan.train.ops} >= {"AVERAGE_POOL_2D", "DEPTHWISE_CONV_2D", "RESHAPE"}
    scale, zp = int8ref.input_qparams(model)
    data = blob.int8_dataset_blob(x, y, xe, ye, 10, scale, zp)
    check = RunRecord(run_id="pd.check", board=board, target_kind="emulated", technique="sparse-int8",
                      model=model.name)
    run = RunRecord(run_id="pd", board=board, target_kind="emulated", technique="sparse-int8", model=model.name)
    with plan_on_twin(board, plan, data, tmp_path, "pd") as link:  # assemble refuses what exceeds 1 MB of flash
        session.train(link, check, session.TrainSettings(CHECK_STEPS, LR, 1, 1, eval_samples=1), idle_timeout=300,
                      name="pd.check")
        session.train(link, run, session.TrainSettings(STEPS, LR, 2, 0, eval_samples=N_EVAL), idle_timeout=300,
                      name="pd")
    fw = build_firmware(board)  # the image plan_on_twin ran (built once, then cached)
    checks = fidelity.check_int8_gradients(check, plan, x, y)
    assert len(checks) == CHECK_STEPS * 13 and all(c.exact for c in checks)
    assert run.summary is not None and len(run.steps) == STEPS
    assert run.eval_loss(1) < run.eval_loss(0)
    planned = fw.static_bytes + plan.arena_bytes
    peak = run.summary.sram_peak
    fp32 = fp32mem.plan_fp32(qplan_model(shared_models), parse_technique("full-fp32"))
    figures = {"measured_peak_sram": peak, "planned_sram": planned, "arena": plan.arena_bytes,
               "plan_blob": len(plan.blob(0)), "dataset_blob": len(data),
               "acc_before": run.accuracy(0), "acc_after": run.accuracy(1),
               "eval_loss_before": run.eval_loss(0), "eval_loss_after": run.eval_loss(1),
               "fp32_full_planned_sram": fw.static_bytes + fp32.arena_bytes}
    for k, v in figures.items():
        record_property(f"person_detect.sparse_int8.{k}", v)
    print("\nperson_detect sparse-int8 on nucleo-f746zg: " + ", ".join(f"{k} {v:,.3f}" for k, v in figures.items()))
    assert peak <= board.sram_bytes and abs(peak - planned) <= 0.1 * planned
    assert fw.static_bytes + fp32.arena_bytes > board.sram_bytes  # full fp32 training does not fit


def test_person_detect_profile_through_bench_run(shared_models: Path, rack_entry, bench_run) -> None:
    """profiles/person_detect.toml through `Bench.prepare`/`Bench.run`: sparse-int8 trains with exact int8 gradients
    within 10% of its planned SRAM; full-fp32 of the same graph is a does-not-fit record with required vs available."""
    entry = rack_entry("nucleo-f746zg")
    sram = load_catalogue()["nucleo-f746zg"].sram_bytes
    run = bench_run(entry, "sparse-int8", profile="person_detect", steps=6, eval_samples=4, check_steps=1)
    assert run.status == "ok", run.error
    assert run.model == "person_detect-head10" and run.fidelity_exact == 1.0 and run.fidelity_max_rel_err == 0.0
    peak = run.summary.sram_peak
    assert peak < sram and abs(peak - run.planned_sram_bytes) <= 0.1 * run.planned_sram_bytes
    fp32 = bench_run(entry, "full-fp32", profile="person_detect", steps=6, eval_samples=4, check_steps=1)
    assert fp32.status == "does-not-fit" and fp32.required_sram_bytes > sram
    assert f"needs {fp32.required_sram_bytes:,} B of SRAM but the board has {sram:,} B" in fp32.error
    # `bench plan` of the .tflite plans what the run loaded: the same arena and the same fit
    from click.testing import CliRunner

    from bench.app.cli import main

    shown = CliRunner().invoke(main, ["plan", str(shared_models / "person_detect.tflite"), "--technique",
                                      "sparse-int8", "--profile", "person_detect", "--json"])
    assert shown.exit_code == 0, shown.output
    plan = json.loads(shown.output)
    assert plan["static_bytes"] + plan["arena_bytes"] == run.planned_sram_bytes and plan["fits_sram"] is True


def qplan_model(shared_models: Path):
    from bench.tflite.io import load_tflite

    return load_tflite(shared_models / "person_detect.tflite")


@pytest.mark.parametrize(("profile", "board", "technique"), [("vww", "rpi-pico", "sparse-int8"),
                                                             ("kws", "nrf52840-dk", "last-int8")])
def test_mlperf_tiny_profiles_train_adapted_digits_with_exact_int8_gradients(shared_models: Path, bench_rack,
                                                                            rack_entry, bench_run, profile: str,
                                                                            board: str, technique: str) -> None:
    """profiles/vww.toml and kws.toml: the built-in digits are adapted to the model's input (resized, channel
    replicated, quantised with its input parameters) and train the new head exactly as the integer reference does;
    VWW's 60 samples of 96x96x3 overflow a 1 MB board's flash, a does-not-fit record with the figures."""
    entry = rack_entry(board)
    run = bench_run(entry, technique, profile=profile, steps=3, eval_samples=4, check_steps=1)
    assert run.status == "ok", run.error
    assert run.fidelity_exact == 1.0 and run.summary.sram_peak < load_catalogue()[board].sram_bytes
    if profile == "vww":
        m7 = next((e for e in bench_rack.boards if e.board == "nucleo-f746zg"), None)
        if m7 is not None:
            small = bench_run(m7, technique, profile=profile, steps=3, eval_samples=4, check_steps=1)
            assert small.status == "does-not-fit" and "of flash but the board has 1,048,576 B" in small.error


def test_kws_full_int8_trains_depthwise_weights_exactly(shared_models: Path, rack_entry, bench_run) -> None:
    """full-int8 on the KWS DS-CNN trains every CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED weight on the M7
    twin, its streamed gradients (the depthwise weights' included) exactly those of the host integer reference."""
    entry = rack_entry("nucleo-f746zg")
    run = bench_run(entry, "full-int8", profile="kws", steps=3, eval_samples=4, check_steps=1)
    assert run.status == "ok", run.error
    assert run.fidelity_exact == 1.0 and run.fidelity_max_rel_err == 0.0
    assert abs(run.summary.sram_peak - run.planned_sram_bytes) <= 0.1 * run.planned_sram_bytes
    trained = set(run.grads.loc[run.grads["param"] == "w", "layer"])
    assert {1, 3, 5, 7} <= trained  # the four depthwise ops


def test_full_int8_on_vww_plans_and_is_a_does_not_fit_record(shared_models: Path, bench_rack, bench_run) -> None:
    """full-int8 on VWW's MobileNetV1 sums 576 pixels' weight gradients in its 24×24 convs: their output gradients
    give up a bit (h_down 1) so int32 accumulators hold them, where the planner used to refuse. The whole-network
    plan needs about 1 MB of SRAM, so on every board of the rack it is a does-not-fit record with the figures."""
    entry = bench_rack.boards[0]
    run = bench_run(entry, "full-int8", profile="vww", steps=3, eval_samples=4, check_steps=1)
    assert run.status == "does-not-fit", run.error
    assert run.required_sram_bytes > 1_000_000 and "needs 1,0" in run.error and "of SRAM but the board has" in run.error


def test_sram_benchmark_measures_sparse_below_its_plan_and_fp32_above(shared_models: Path, tmp_path: Path) -> None:
    """`bench bench --sram` for person_detect: the sparse-int8 peak is measured on the F746 twin and stays within its
    plan; the naive fp32 figure exceeds the engine's planned fp32 arena, and both exceed the sparse run."""
    from bench.app.benchmark import sram_ratios

    (row,) = sram_ratios(tmp_path, ("person_detect",), steps=2)
    assert row.measured_on == "nucleo-f746zg"
    assert 0 < row.sparse_measured_bytes <= row.sparse_planned_bytes
    assert row.sparse_planned_bytes < row.fp32_planned_bytes < row.fp32_naive_bytes
    assert row.ratio(row.fp32_naive_bytes) == row.fp32_naive_bytes / row.sparse_measured_bytes


def test_person_detect_mcunet_style_deep_bias_scheme_is_exact(shared_models: Path, rack_entry, bench_run) -> None:
    """MCUNetV3's 100 KB-class scheme trains the biases of the last 22 layers: on person_detect a 24-op backward path
    (op 6 up), past the 16 the device's tables once held, with gradient exponents past what an int8 carried (135 at
    op 9). Every streamed accumulator and exponent equals the host integer reference's."""
    entry = rack_entry("nucleo-f746zg")
    base = load_profile("person_detect")
    assert base.sparse is not None
    deep = base.model_copy(update={"sparse": base.sparse.model_copy(update={"bias_k": 22})})
    run = bench_run(entry, "sparse-int8", profile=deep, steps=3, eval_samples=4, check_steps=1)
    assert run.status == "ok", run.error
    assert run.fidelity_exact == 1.0 and run.summary.sram_peak < load_catalogue()["nucleo-f746zg"].sram_bytes
    assert min(run.grads["layer"]) == 6
