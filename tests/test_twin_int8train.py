"""Int8 training with QAS on every twin, through the normal runner (`bench_run`): the loss on the eval split falls,
every streamed int32 gradient accumulator equals bench/numerics/int8train.py's exactly, the measured SRAM is within
10% of the
plan, and without QAS the codes do not move."""

from __future__ import annotations

import numpy as np
import pytest

from bench.app.runner import Bench
from bench.config.boards import default_rack, load_catalogue
from bench.config.profile import load_profile
from bench.image.firmware import assemble, build_firmware
from bench.link import protocol as proto
from bench.link import session
from bench.link.link import Link
from bench.plan.select import compile_int8_plan
from bench.target.drivers import QemuTarget

pytestmark = pytest.mark.twin
STEPS = 120


@pytest.mark.parametrize("technique", ["full-int8", "sparse-int8"])
def test_int8_training_on_twin(bench_board, bench_run, technique):
    run = bench_run(bench_board, technique, profile="techniques", steps=STEPS, grad_every=40)
    assert run.status == "ok", run.error
    assert len(run.steps) == STEPS and run.lost_frames == 0
    assert run.eval_loss(1) < run.eval_loss(0) and run.accuracy(1) > run.accuracy(0)
    # the check run's int32 accumulators, step by step, equal the integer reference exactly
    assert run.fidelity_max_rel_err == 0.0 and run.fidelity_exact == 1.0
    row = run.record.run_row()
    assert abs(row["peak_sram_bytes"] - row["planned_sram_bytes"]) <= 0.1 * row["planned_sram_bytes"]
    assert row["arena_peak_bytes"] <= row["planned_sram_bytes"] - row["static_bytes"]
    assert row["planned_optimizer_bytes"] > 0  # the Q16 residuals
    streamed = run.grads.dropna(subset=["values"])
    assert sorted(streamed["step"].unique()) == [0, 40, 80]
    sizes = {(r.layer, r.param): len(r.values) for r in streamed.itertuples() if r.step == 0}
    if technique == "sparse-int8":  # ops 0, 1, 2 = the fp32 layers 0, 2, 4: 1 of 8 conv rows, 8 of 32 FC rows
        assert sizes == {(0, "w"): 9, (1, "w"): 8 * 288, (2, "w"): 10 * 32, (0, "b"): 8, (1, "b"): 32, (2, "b"): 10}
    else:
        assert sizes[(1, "w")] == 32 * 288 and sizes[(0, "w")] == 72
    layers = {r["layer"]: r for r in run.record.layer_rows()}
    assert layers[1]["op"] == "fc_i8" and all(layers[i]["instr_upd_per_step"] > 0 for i in (0, 1, 2))
    assert layers[3]["op"] == "softmax_i8" and layers[3]["instr_upd_per_step"] == 0


def test_int8_training_through_max_pool_on_twin(bench_board, bench_run):
    """AIfES's CNN exported to int8: the conv below the MAX_POOL_2D trains, so the gradient passes the pool (routed
    to each window's first maximum) and the conv's accumulators still equal the reference exactly."""
    run = bench_run(bench_board, "full-int8", profile="aifes_cnn", steps=60, grad_every=30)
    assert run.status == "ok", run.error
    assert run.fidelity_max_rel_err == 0.0 and run.fidelity_exact == 1.0
    assert run.eval_loss(1) < run.eval_loss(0)
    layers = {r["layer"]: r for r in run.record.layer_rows()}
    assert layers[1]["op"] == "maxpool_i8" and layers[1]["instr_bwd_per_step"] > 0
    streamed = run.grads.dropna(subset=["values"])
    assert {(r.layer, r.param) for r in streamed.itertuples()} >= {(0, "w"), (0, "b"), (2, "w")}


def test_noqas_does_not_learn_where_qas_does(bench_run):
    """The ablation: without QAS the update of a code is s_W² times the fp32 step, below the residual's 2^-16."""
    entry = next(e for e in default_rack(load_catalogue()).boards if e.board == "nucleo-f746zg")
    qas = bench_run(entry, "last-int8", profile="techniques", steps=80, check_steps=1)
    raw = bench_run(entry, "last-int8-noqas", profile="techniques", steps=80, check_steps=1)
    assert qas.status == raw.status == "ok"
    assert qas.fidelity_exact == raw.fidelity_exact == 1.0
    assert qas.eval_loss(1) < qas.eval_loss(0) - 0.1
    assert raw.eval_loss(1) == pytest.approx(raw.eval_loss(0))


def test_int8_plan_refuses_another_lr(tmp_path):
    """The update multipliers bake the learning rate in: a START with another lr is refused before any ACK."""
    board = load_catalogue()["nucleo-f746zg"]
    profile = load_profile("techniques").model_copy(update={"steps": 1})
    bench = Bench(tmp_path / "out")
    prepared = bench.prepare(profile)
    int8 = bench.int8(prepared)
    technique = profile.technique("last-int8")
    plan = compile_int8_plan(prepared.model, int8.qmodel, technique, profile.lr_for(technique))
    images = assemble(board, "emulated", build_firmware(board), plan, int8.dataset, tmp_path / "images")
    target = QemuTarget(board, tmp_path / "qemu.log")
    target.load(images)
    target.reset()
    try:
        with Link.open(target.url, board.serial.baudrate, tmp_path, name="lr") as link:
            session.hello(link)
            link.send(proto.Start(steps=1, lr=float(np.float32(profile.lr_for(technique) * 2)), seed=1))
            fault = link.expect(proto.Fault, timeout=20, what="FAULT for a foreign lr")
    finally:
        target.close()
    assert fault.code == 5 and "lr" in fault.text
