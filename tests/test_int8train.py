"""The int8 training reference (bench/numerics/int8train.py) and the QAS constants of the plan compiler
(bench/plan/int8.py).

Hand cases pin the integer arithmetic the device must reproduce; the constants are checked against the real-valued
derivation: with QAS one int8 SGD step equals an fp32 SGD step on the dequantised weights (ΔW = −lr·dL/dW), without
QAS it is s_W² times smaller.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.model.qgraph import QModel
from bench.model.tasks import DeviceDataset, load_task
from bench.numerics import int8prep, int8ref, int8train, pretrain
from bench.numerics.int8train import delta, fc_row_delta, logits_grad, rdbp, requant_shift, update_bias, update_codes
from bench.plan.int8 import QPlanError, QTrainSpec, compile_qplan
from bench.tflite.quantize import digits_calibration, quantize_model

SEED = 0
LR = 0.01


@pytest.fixture(scope="module")
def task() -> DeviceDataset:
    return load_task("digits-drift", SEED)


@pytest.fixture(scope="module")
def digits(task: DeviceDataset, tmp_path_factory: pytest.TempPathFactory) -> QModel:
    model = pretrain.build_model("digits-cnn", task, SEED, tmp_path_factory.mktemp("cache"))
    return quantize_model(model, digits_calibration(task), name=model.name)


def _all(q: QModel) -> frozenset[tuple[int, str]]:
    return frozenset((i, p) for i in range(3) for p in "wb")


# --------------------------------------------------------------------------------------------- hand cases


def test_rounding_and_shift_choice():
    assert rdbp(np.array([3, -3, 5, -5, 6]), 1).tolist() == [2, -2, 3, -3, 3]  # ties away from zero
    assert requant_shift(np.array([127, -127])) == 0
    assert requant_shift(np.array([128])) == 1
    assert requant_shift(np.array([255])) == 2  # 255/2 = 127.5 rounds to 128: one more
    assert requant_shift(np.array([0, 0])) == 0


def test_logits_gradient_hand_cases():
    p = np.array([-128, 127, -128, -128], np.int8)
    g, k = logits_grad(p, 1)
    assert k == 0 and g.tolist() == [0, -1, 0, 0]  # confident and right: p - 1 = -1/256
    g, k = logits_grad(p, 0)
    assert k == 2 and g.tolist() == [-64, 64, 0, 0]  # confident and wrong: -256/256 and 255/256, scale 4/256


def test_update_step_and_residual():
    # Δ = round(a·M·2^(s − 31)) half up, clamped to ±2^30
    assert delta(np.array([1]), np.array([1 << 30]), np.array([31 - 16])).tolist() == [16384]  # a quarter code
    assert delta(np.array([-3]), np.array([1 << 30]), np.array([0])).tolist() == [-1]  # -1.5 rounds up to -1
    assert delta(np.array([1 << 20]), np.array([1 << 30]), np.array([60])).tolist() == [2**30]
    w, r = np.array([10]), np.array([0])
    for _ in range(4):  # four quarter-code steps move the code by exactly one
        w, r = update_codes(w, r, np.array([16384]))
    assert (w.tolist(), r.tolist()) == ([9], [0])
    w, r = update_codes(np.array([126]), np.array([0]), np.array([-10 * 65536]))
    assert (w.tolist(), r.tolist()) == ([127], [32767])  # saturation at the int8 code range (one SSAT on device)
    w, r = update_codes(np.array([-126]), np.array([0]), np.array([10 * 65536]))
    assert (w.tolist(), r.tolist()) == ([-128], [-32768])
    b, rb = update_bias(np.array([2**30 - 1]), np.array([0]), np.array([-(2**30)]))
    assert (b.tolist(), rb.tolist()) == ([2**30], [0])


def test_fused_fc_row_delta_rounds_the_row_step_once():
    """Unrounded row steps (|h·mult| < 2^22) give exactly the unfused Δ of a = h·z; larger ones differ from it by at
    most one unit plus the 2^-22 relative rounding of M; code-sized steps clamp like the unfused rule."""
    rng = np.random.default_rng(3)
    z = rng.integers(-255, 256, 500)
    for h, mult, shift in ((3, 1000, 27), (-7, 99_999, 10), (1, 4_194_303, 20)):
        assert (fc_row_delta(h, z, mult, shift) == delta(h * z, mult, shift)).all()
    for _ in range(50):
        h, mult = int(rng.integers(-16256, 16257)), int(rng.integers(1 << 30, 1 << 31))
        shift = int(rng.integers(-30, 20))
        fused, exact = fc_row_delta(h, z, mult, shift), delta(h * z, mult, shift)
        assert (np.abs(fused - exact) <= 1 + np.abs(exact) * 2.0**-21).all()
    assert fc_row_delta(16256, np.array([255, -255, 0]), (1 << 31) - 1, 60).tolist() == [2**30, -(2**30), 0]
    assert not fc_row_delta(0, z, 1 << 30, 0).any()


# --------------------------------------------------------------------------------------------- QAS constants


def test_qas_multipliers_follow_the_derivation(digits: QModel):
    """QAS/no-QAS multiplier ratio is s_W^-2 per channel for weights and (s_x·s_W)^-2 for biases; the streamed
    accumulators' scale C chains as c·max s_W·s_x·2^-7 from c = 1/256 at the logits."""
    qas = compile_qplan(digits, QTrainSpec(_all(digits), LR, True)).train
    raw = compile_qplan(digits, QTrainSpec(_all(digits), LR, False)).train
    assert qas is not None and raw is not None

    def value(mult_shift: np.ndarray) -> np.ndarray:
        return mult_shift[:, 0].astype(np.float64) * 2.0 ** (mult_shift[:, 1] - 31)

    c = 1 / 256
    for i in (2, 1, 0):
        op = digits.ops[i]
        s_w = digits.tensors[op.inputs[1]].scale.astype(np.float64)
        s_x = float(digits.tensors[op.inputs[0]].scale[0])
        s_b = digits.tensors[op.inputs[2]].scale.astype(np.float64)
        assert qas.ops[i].grad_scale == pytest.approx(c * s_w.max() * s_x / 128, rel=1e-12)
        assert value(qas.ops[i].w_upd) / value(raw.ops[i].w_upd) == pytest.approx(1 / s_w**2, rel=1e-8)
        assert value(qas.ops[i].b_upd) / value(raw.ops[i].b_upd) == pytest.approx(1 / s_b**2, rel=1e-8)
        assert value(raw.ops[i].w_upd) == pytest.approx(LR * qas.ops[i].grad_scale * 65536, rel=1e-8)
        assert np.array_equal(qas.ops[i].m, np.round(32768 * s_w / s_w.max()))
        c *= s_w.max()


def test_int8_gradient_is_the_real_gradient(task: DeviceDataset, digits: QModel):
    """Last layer: C·2^E·a / s_W[o] is dL/dW = (p − onehot)·x of the dequantised network, to gradient quantisation
    (7 bits at the logits); the bias accumulator likewise gives dL/db = p − onehot."""
    plan = compile_qplan(digits, QTrainSpec(frozenset({(2, "w"), (2, "b")}), LR, True))
    x = int8ref.quantized_inputs(digits, task.decode(task.x_train[:1]))[0]
    label = int(task.y_train[0])
    grads, _ = int8train.Int8Trainer(plan).step(x, label)
    outs = int8ref.forward(digits, x[None])
    s_x, zp_x = int8prep.qparams(digits.tensors[digits.ops[2].inputs[0]])
    x_real = s_x * (outs[1][0].astype(np.float64) - zp_x)
    p = (outs[-1][0].astype(np.float64) + 128) / 256
    dz = p - np.eye(10)[label]
    top = plan.train.ops[2]
    s_w = digits.tensors[digits.ops[2].inputs[1]].scale.astype(np.float64)
    g_w = grads[(2, "w")]
    real = top.grad_scale * 2.0**g_w.exponent * g_w.values.reshape(10, -1) / s_w[:, None]
    want = np.outer(dz, x_real)
    assert np.linalg.norm(real - want) / np.linalg.norm(want) < 0.02
    s_b = digits.tensors[digits.ops[2].inputs[2]].scale.astype(np.float64)
    g_b = grads[(2, "b")]
    real_b = top.grad_scale * 2.0**g_b.exponent * g_b.values / s_b
    assert np.linalg.norm(real_b - dz) / np.linalg.norm(dz) < 0.02


def test_qas_step_is_the_fp32_step_and_noqas_is_s_w_squared_smaller(task: DeviceDataset, digits: QModel):
    """One step from zero residuals: the code change (with its residual, in real units s_W·ΔV/65536) is −lr·dL/dW
    with QAS; without QAS it is the same times s_W² (far below a code: nothing moves)."""
    x = int8ref.quantized_inputs(digits, task.decode(task.x_train[:1]))[0]
    label = int(task.y_train[0])
    s_w = digits.tensors[digits.ops[2].inputs[1]].scale.astype(np.float64)
    moved = {}
    for qas in (True, False):
        plan = compile_qplan(digits, QTrainSpec(frozenset({(2, "w")}), LR, qas))
        tr = int8train.Int8Trainer(plan)
        w0 = tr.w[2].copy()
        grads, _ = tr.step(x, label)
        dv = (tr.w[2] - w0) * 65536 + tr.wres[2]  # the step in 2^-16 code units
        g = grads[(2, "w")]
        g_real = plan.train.ops[2].grad_scale * 2.0**g.exponent * g.values.reshape(10, -1) / s_w[:, None]
        moved[qas] = (dv, g_real)
    dv, g_real = moved[True]
    want = -LR * g_real / s_w[:, None] * 65536  # ΔW̄ = ΔW / s_W with ΔW = −lr·dL/dW
    big = np.abs(want) > 50
    assert big.sum() >= 10 and np.allclose(dv[big], want[big], rtol=0.02)
    dv_raw, _ = moved[False]
    want_raw = want * s_w[:, None] ** 2
    assert np.abs(want_raw).max() < 0.5 and not dv_raw.any()  # sub-2^-16 steps: noqas cannot move the codes


def test_replay_is_deterministic_and_learns(task: DeviceDataset, digits: QModel):
    """Replaying the same samples twice gives identical accumulators; 60 steps of last-layer QAS lower the loss."""
    plan = compile_qplan(digits, QTrainSpec(frozenset({(2, "w"), (2, "b")}), LR, True))
    xs = int8ref.quantized_inputs(digits, task.decode(task.x_train))
    ys = task.y_train
    a = int8train.replay(plan, xs, ys, [0, 5, 9])
    b = int8train.replay(plan, xs, ys, [0, 5, 9])
    assert all(np.array_equal(a[s][k].values, b[s][k].values) and a[s][k].exponent == b[s][k].exponent
               for s in range(3) for k in a[s])
    tr = int8train.Int8Trainer(plan)
    xe = int8ref.quantized_inputs(digits, task.decode(task.x_eval))

    def eval_loss() -> float:
        p = (int8ref.forward(tr.current_model(), xe)[-1].astype(np.float64) + 128) / 256
        return float(-np.log(np.maximum(p[np.arange(len(xe)), task.y_eval], 1 / 512)).mean())

    before = eval_loss()
    rng = np.random.default_rng(0)
    for s in rng.integers(0, len(xs), 60):
        tr.step(xs[s], int(ys[s]))
    assert eval_loss() < before


def test_training_plan_refusals(digits: QModel):
    with pytest.raises(QPlanError, match="nothing to train"):
        compile_qplan(digits, QTrainSpec(frozenset(), LR))
    with pytest.raises(QPlanError, match="only the weights and biases"):
        compile_qplan(digits, QTrainSpec(frozenset({(3, "w")}), LR))
    with pytest.raises(QPlanError, match="channel list"):
        compile_qplan(digits, QTrainSpec(frozenset({(1, "w")}), LR, channels=((1, (5, 2)),)))
    from tests.test_qplan import zoo_core

    zoo = zoo_core(0, keep_dims=True)  # depthwise, pooling, mean, add on the way down
    first = next(i for i, op in enumerate(zoo.ops) if op.kind == "CONV_2D")
    with pytest.raises(QPlanError, match="MAX_POOL_2D: backward needs no fused activation"):  # below the MEAN
        compile_qplan(zoo, QTrainSpec(frozenset({(first, "w")}), LR))


def test_training_plan_memory(digits: QModel):
    """Trained tensors, residuals (optimizer state: 2 B per trained weight and bias) and gradients are planned;
    the sparse plan copies only the listed rows."""
    full = compile_qplan(digits, QTrainSpec(_all(digits), LR))
    sparse = compile_qplan(digits, QTrainSpec(_all(digits), LR, channels=((0, (3,)), (1, tuple(range(8))))))
    n_w = sum(int(np.prod(digits.tensors[digits.ops[i].inputs[1]].shape)) for i in range(3))
    n_b = sum(int(np.prod(digits.tensors[digits.ops[i].inputs[2]].shape)) for i in range(3))
    sizes = {b.name: b.size for b in full.buffers}
    assert sum(v for k, v in sizes.items() if k.startswith(("wres", "bres"))) >= 2 * (n_w + n_b)
    assert full.composition()["optimizer"] >= 2 * n_w
    assert {b.name: b.size for b in sparse.buffers}["w1"] == 8 * 288
    assert sparse.arena_bytes < full.arena_bytes / 2
    assert full.plan_hash != compile_qplan(digits, QTrainSpec(_all(digits), LR / 2)).plan_hash  # lr is baked in
    assert compile_qplan(digits).train is None and compile_qplan(digits).blob(0)[46] == 0
