"""The reconstruction loss: an autoencoder (MLPerf Tiny's AD reference, 640 → … → 640 FULLY_CONNECTED, no SOFTMAX)
trains on the mean squared error of its output against its own input (docs/qplan-format.md, "Training header").

Host checks: the plan says so (loss byte, the input-to-output multiplier), the reference's streamed gradients are the
real gradient of the dequantised loss, the wrong loss for a graph is refused naming the fix, and the synthetic
machine-drift task is deterministic. On the twins: `profiles/ad.toml` fine-tunes through `bench run` with every
int32 accumulator equal to the host reference's, and the eval reconstruction error falls.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.config.boards import ConfigError
from bench.config.profile import load_profile
from bench.formats.blobs import TQPL_HEADER, TQPL_TRAIN_HEADER
from bench.model.qgraph import QModel
from bench.model.tasks import load_task
from bench.numerics import int8prep, int8ref, int8train
from bench.plan.int8 import QPlanError, QTrainSpec, compile_qplan


def ad_model(shared_models: Path) -> QModel:
    from bench.tflite.io import load_tflite

    return load_tflite(shared_models / "ad01_int8.tflite")


def recon_plan(model: QModel, trainable: set[tuple[int, str]], lr: float = 1e-6):
    return compile_qplan(model, QTrainSpec(frozenset(trainable), lr, loss="reconstruction"), "recon")


def test_the_plan_carries_the_loss_and_the_input_multiplier(shared_models: Path) -> None:
    model = ad_model(shared_models)
    plan = recon_plan(model, {(9, "w"), (9, "b"), (0, "b")})
    assert plan.train is not None and plan.train.loss == "reconstruction" and plan.train.top == 9
    s_x, _ = int8prep.qparams(model.tensors[model.inputs[0]])
    s_y, _ = int8prep.qparams(model.tensors[model.outputs[0]])
    mult, shift = plan.train.recon
    assert abs(mult * 2.0 ** (shift - 31) - s_x / s_y) < 1e-9
    blob = plan.blob(0)
    offset = TQPL_HEADER.unpack_from(blob)["train_offset"]
    head = TQPL_TRAIN_HEADER.unpack_from(blob, offset)
    assert (head["loss"], head["recon_mult"], head["recon_shift"]) == (1, mult, shift)


def test_streamed_gradients_are_the_real_gradient_of_the_reconstruction_error(shared_models: Path) -> None:
    """Op 9 (the output layer, no activation): dL/db̄ = 2/N·(y − x)·s_b and dL/dW̄ = 2/N·(y − x)·s_W·s_in·(x9 − zp),
    from the dequantised output and input, against C·2^E·a of the streamed accumulators (int8 rounding of the
    gradient codes: within 2% of the largest)."""
    model = ad_model(shared_models)
    plan = recon_plan(model, {(9, "w"), (9, "b")})
    x = load_task("machine-drift", 1)
    codes = int8ref.quantized_inputs(model, x.decode(x.x_train[:1]).reshape(1, -1))[0]
    grads, out = int8train.Int8Trainer(plan).step(codes, 0)
    (s_x, zp_x), (s_y, zp_y) = (int8prep.qparams(model.tensors[t]) for t in (model.inputs[0], model.outputs[0]))
    dy = s_y * (out.astype(np.float64) - zp_y) - s_x * (codes.astype(np.float64) - zp_x)
    op = model.ops[9]
    s_in, zp_in = int8prep.qparams(model.tensors[op.inputs[0]])
    x9 = int8ref.forward(model, codes[None])[8][0].astype(np.float64).ravel() - zp_in
    s_w = np.asarray(model.tensors[op.inputs[1]].scale, np.float64)
    top = plan.train.ops[9]
    want_b = 2.0 / dy.size * dy * s_in * s_w
    want_w = (2.0 / dy.size * dy * s_w * s_in)[:, None] * x9[None, :]
    for key, want in (((9, "b"), want_b), ((9, "w"), want_w.ravel())):
        got = top.grad_scale * 2.0 ** grads[key].exponent * grads[key].values.astype(np.float64)
        assert np.max(np.abs(got - want)) <= 0.02 * np.max(np.abs(want)), key


def test_training_lowers_the_reconstruction_error_in_the_reference(shared_models: Path) -> None:
    model = ad_model(shared_models)
    task = load_task("machine-drift", 1)
    xt = int8ref.quantized_inputs(model, task.decode(task.x_train).reshape(len(task.x_train), -1))
    xe = int8ref.quantized_inputs(model, task.decode(task.x_eval[:20]).reshape(20, -1))
    (s_x, zp_x), (s_y, zp_y) = (int8prep.qparams(model.tensors[t]) for t in (model.inputs[0], model.outputs[0]))

    def mse(m: QModel) -> float:
        y = int8ref.forward(m, xe)[-1].astype(np.float64)
        return float(np.mean((s_y * (y - zp_y) - s_x * (xe.astype(np.float64) - zp_x)) ** 2))

    trainer = int8train.Int8Trainer(recon_plan(model, {(i, "b") for i in range(10)}, lr=0.01))
    for s in range(60):
        trainer.step(xt[s % len(xt)], 0)
    assert mse(trainer.current_model()) < 0.8 * mse(model)


def test_the_wrong_loss_is_refused_naming_the_fix(shared_models: Path) -> None:
    from bench.tflite.io import load_tflite

    model = ad_model(shared_models)
    with pytest.raises(QPlanError, match='set loss = "reconstruction"'):
        compile_qplan(model, QTrainSpec(frozenset({(9, "b")}), 0.01), "ce")
    person = load_tflite(shared_models / "person_detect.tflite")
    with pytest.raises(QPlanError, match="needs an autoencoder, without SOFTMAX"):
        recon_plan(person, {(27, "b")})


def test_a_reconstruction_profile_needs_an_imported_model(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('techniques = ["last-int8"]\nloss = "reconstruction"\n')
    with pytest.raises(ConfigError, match="key 'loss'"):
        load_profile(path)


def test_machine_drift_is_deterministic_feature_windows() -> None:
    a, b = load_task("machine-drift", 3), load_task("machine-drift", 3)
    assert a.x_train.shape[1:] == (1, 640, 1) and a.x_train.dtype == np.uint8
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.x_eval, b.x_eval)
    assert not np.array_equal(a.x_train, load_task("machine-drift", 4).x_train)
    assert set(np.unique(a.y_train)) == {0} and "synthetic" in a.provenance[0]


@pytest.mark.twin
def test_ad_profile_fine_tunes_on_the_twins_with_exact_gradients(shared_models: Path, rack_entry, bench_run) -> None:
    """profiles/ad.toml through `bench run`: sparse-int8 on the M7 twin, the streamed accumulators exactly the host
    reference's, the eval reconstruction error down, no accuracy (a reconstruction has no classes)."""
    entry = rack_entry("nucleo-f746zg")
    run = bench_run(entry, "sparse-int8", profile="ad", steps=40, eval_samples=20, check_steps=2)
    assert run.status == "ok", run.error
    assert run.fidelity_exact == 1.0 and run.fidelity_max_rel_err == 0.0
    row = run.record.run_row()
    assert row["loss_after"] < 0.9 * row["loss_before"]
    assert np.isnan(row["acc_before"]) and np.isnan(row["acc_after"]) and run.steps["correct"].isna().all()


def test_an_lr_sweep_of_a_reconstruction_picks_the_lowest_validation_loss() -> None:
    """A reconstruction has no accuracy: the sweep chooses by validation loss (the lower the better)."""
    from bench.app.runner import chosen_lrs
    from bench.config.boards import load_catalogue
    from bench.link.protocol import Eval
    from bench.records.run import RunRecord

    board = load_catalogue()["nucleo-f746zg"]
    records = []
    for lr, loss_sum in ((0.1, 90.0), (0.01, 30.0), (0.001, 60.0)):
        r = RunRecord(run_id=f"ad.{lr}", board=board, target_kind="emulated", technique="last-int8", model="ad",
                      phase="sweep", lr=lr, loss_kind="reconstruction")
        r.evals[1] = Eval(1, 10, 0, loss_sum, 0)
        records.append(r)
    assert chosen_lrs(records) == {"last-int8": 0.01}
    assert np.isnan(records[0].accuracy(1)) and records[1].score(1) == -3.0


def test_the_budget_trials_of_an_autoencoder_score_by_held_out_mse(shared_models: Path) -> None:
    from bench.plan import search_int8

    model = ad_model(shared_models)
    task = load_task("machine-drift", 1)
    x = int8ref.quantized_inputs(model, task.decode(task.x_train).reshape(len(task.x_train), -1))
    y = np.zeros(len(x), np.int64)
    c = search_int8.analyse_graph(model, x, y, seed=1, steps=40, lr=0.01, depth=2,
                                  loss="reconstruction")
    assert c.loss == "reconstruction" and c.classifier == 9
    untrained = -search_int8.reconstruction_score(model, search_int8.split(x, y, 1)[2])
    scores = [c.base_acc, *c.bias_acc.values(), *c.weight_acc.values()]
    assert all(np.isfinite(scores)) and max(scores) < 0          # minus an MSE
    assert -c.base_acc < 0.8 * untrained                           # fine-tuning the last op lowers the held-out error
    assert -c.bias_acc[2] < untrained and c.delta_bias(2) == c.bias_acc[2] - c.base_acc
