"""Int8 training through MEAN (Keras' GlobalAveragePooling2D, the head of MobileNetV2- and MCUNet-style graphs):
a small CONV_2D → MEAN → FULLY_CONNECTED → SOFTMAX graph. On the host, the integer reference's conv bias gradient
below the MEAN is the real gradient of the dequantised network; on a twin, every streamed accumulator equals the
reference's exactly. The same with two 24×24 convs, whose 576 output pixels need h_down (docs/qplan-format.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.config.boards import load_catalogue
from bench.link import session
from bench.model.qgraph import ConvOptions, FullyConnectedOptions, MeanOptions, QModel, QOp, SoftmaxOptions
from bench.numerics import int8prep, int8ref, int8train
from bench.plan.blob import int8_dataset_blob
from bench.plan.int8 import QPlan, QTrainSpec, compile_qplan
from bench.records import fidelity
from bench.records.run import RunRecord
from tests.test_int8ref import _Zoo
from tests.twin_session import plan_on_twin

LR = 0.01
TRAIN = frozenset({(0, "w"), (0, "b"), (2, "w"), (2, "b")})


def mean_graph(seed: int = 4) -> QModel:
    z = _Zoo(seed)
    x = z.tensor((1, 6, 6, 3), 0.02, 5)
    conv = z.tensor((1, 6, 6, 8), 0.03, -128)
    z.weighted("CONV_2D", x, (8, 3, 3, 3), conv, ConvOptions("SAME", (1, 1), "RELU"), 0)
    return _mean_head(z, x, conv, "mean-head")


def _mean_head(z: _Zoo, x: int, conv: int, name: str) -> QModel:
    """MEAN over height and width of an 8-channel ``conv`` → FC 10 → SOFTMAX, the model from input ``x``."""
    axis = z.tensor((2,), dtype="int32", data=np.array([1, 2], np.int32))
    mean = z.tensor((1, 8), 0.02, -100)
    z.ops.append(QOp("MEAN", (conv, axis), (mean,), MeanOptions(False)))
    logits = z.tensor((1, 10), 0.08, 3)
    z.weighted("FULLY_CONNECTED", mean, (10, 8), logits, FullyConnectedOptions(), None)  # type: ignore[arg-type]
    probs = z.tensor((1, 10), 1 / 256, -128)
    z.ops.append(QOp("SOFTMAX", (logits,), (probs,), SoftmaxOptions(1.0)))
    return QModel(name, tuple(z.tensors), tuple(z.ops), (x,), (probs,))


def samples(n: int, seed: int = 9) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, (n, 6, 6, 3)).astype(np.int8), rng.integers(0, 10, n)


def _bias_grad(model: QModel, plan: QPlan, grads: dict, i: int) -> np.ndarray:  # type: ignore[type-arg]
    """The real dL/db of op i from the reference's streamed accumulator: C·2^E·a_b over the bias scale."""
    bias = model.tensors[model.ops[i].inputs[2]]
    assert bias.scale is not None and plan.train is not None
    g = grads[(i, "b")]
    return plan.train.ops[i].grad_scale * 2.0**g.exponent * g.values / bias.scale.astype(np.float64)


def _exact_on_twin(model: QModel, train: frozenset[tuple[int, str]], x: np.ndarray, y: np.ndarray, n_train: int,
                   steps: int, work: Path) -> None:
    """full-int8 of ``model`` on the F746 twin: every streamed accumulator equals the host integer reference's."""
    plan = compile_qplan(model, QTrainSpec(train, LR, True), "full-int8")
    scale, zp = int8prep.qparams(model.tensors[model.inputs[0]])
    data = int8_dataset_blob(x[:n_train], y[:n_train], x[n_train:], y[n_train:], 10, scale, zp)
    board = load_catalogue()["nucleo-f746zg"]
    rec = RunRecord(run_id=model.name, board=board, target_kind="emulated", technique="full-int8", model=model.name)
    with plan_on_twin(board, plan, data, work, model.name) as link:
        session.train(link, rec, session.TrainSettings(steps, LR, 3, 1, 4), idle_timeout=60, name=model.name)
    checks = fidelity.check_int8_gradients(rec, plan, x[:n_train], y[:n_train])
    assert len(checks) == steps * len(train) and all(c.exact for c in checks), [c for c in checks if not c.exact]


def test_conv_bias_gradient_below_a_mean_is_the_real_gradient() -> None:
    """dL/db of the conv = Σ over positions of its ReLU-masked output gradient, which the MEAN spreads as 1/36 of
    dL/dmean = W_fc^T (p − onehot); the int8 accumulator C·2^E·a_b / s_b gives it to gradient quantisation. The
    conv's ReLU has zero point −128, so its inactive outputs sit at code −128: they must get no gradient."""
    model = mean_graph()
    plan = compile_qplan(model, QTrainSpec(TRAIN, LR, True))
    assert plan.train is not None and plan.train.ops[1].kind == "MEAN" and plan.train.ops[1].need_dx
    x, y = samples(4)
    for xi, label in zip(x, y, strict=True):
        grads, _ = int8train.Int8Trainer(plan).step(xi, int(label))
        outs = int8ref.forward(model, xi[None])
        p = (outs[-1][0].astype(np.float64) + 128) / 256
        dz = p - np.eye(10)[int(label)]
        fc_w = model.tensors[model.ops[2].inputs[1]]
        assert fc_w.data is not None and fc_w.scale is not None
        dmean = (fc_w.data.astype(np.float64) * fc_w.scale.astype(np.float64)[:, None]).T @ dz
        active = outs[0][0].reshape(36, 8) > -128  # the conv's fused ReLU: code -128 is real 0
        want = (active * dmean[None, :] / 36).sum(axis=0)
        real = _bias_grad(model, plan, grads, 0)
        # three 7-bit gradient quantisations (logits, FC input, MEAN input): within 10%; unmasked ReLUs were 100% off
        assert np.linalg.norm(real - want) <= 0.1 * np.linalg.norm(want) + 1e-9, (real, want)


@pytest.mark.twin
def test_int8_training_through_a_mean_is_exact_on_a_twin(tmp_path: Path) -> None:
    x, y = samples(40)
    _exact_on_twin(mean_graph(), TRAIN, x, y, 30, 4, tmp_path)


# ---- 24×24 convs: 576 output pixels, more than int32 weight-gradient accumulators hold at full h (h_down 1) --------

WIDE_TRAIN = frozenset({(0, "w"), (0, "b"), (1, "w"), (1, "b"), (3, "w"), (3, "b")})


def wide_graph(seed: int = 5) -> QModel:
    z = _Zoo(seed)
    x = z.tensor((1, 24, 24, 2), 0.02, 5)
    c1 = z.tensor((1, 24, 24, 4), 0.03, -128)
    z.weighted("CONV_2D", x, (4, 3, 3, 2), c1, ConvOptions("SAME", (1, 1), "RELU"), 0)
    c2 = z.tensor((1, 24, 24, 8), 0.03, -128)
    z.weighted("CONV_2D", c1, (8, 3, 3, 4), c2, ConvOptions("SAME", (1, 1), "RELU"), 0)
    return _mean_head(z, x, c2, "wide-convs")


def _real(model: QModel, i: int) -> tuple[np.ndarray, int]:
    """Op i's weights dequantised [out, kh, kw, in] and its output's zero point."""
    w = model.tensors[model.ops[i].inputs[1]]
    assert w.data is not None and w.scale is not None
    scale = w.scale.astype(np.float64).reshape(-1, *([1] * (w.data.ndim - 1)))
    return w.data.astype(np.float64) * scale, int(int8prep.qparams(model.tensors[model.ops[i].outputs[0]])[1])


def test_convs_with_many_pixels_train_with_h_down_and_keep_the_real_gradient() -> None:
    """576 output pixels: full h would overflow the weight-gradient accumulators (the planner used to refuse, as on
    VWW's 24×24 convs). Both convs give h one bit (h_down 1); conv 1's bias gradient, below conv 2's input gradient
    (whose exponent carries h_down), is still the real gradient of the dequantised network."""
    model = wide_graph()
    plan = compile_qplan(model, QTrainSpec(WIDE_TRAIN, LR, True))
    assert plan.train is not None
    assert [plan.train.ops[i].h_down for i in (0, 1, 3)] == [1, 1, 0]
    assert all(int(plan.train.ops[i].m.max()) <= 16384 for i in (0, 1))
    rng = np.random.default_rng(3)
    w2, _ = _real(model, 1)
    fc, _ = _real(model, 3)
    for _ in range(3):
        xi, label = rng.integers(-128, 128, (24, 24, 2)).astype(np.int8), int(rng.integers(0, 10))
        grads, _ = int8train.Int8Trainer(plan).step(xi, label)
        outs = int8ref.forward(model, xi[None])
        dz = (outs[-1][0].astype(np.float64) + 128) / 256 - np.eye(10)[label]
        # a ReLU's real 0 is code -128; code 127 is int8's clamp: neither passes gradient
        active1, active2 = ((o[0] > -128) & (o[0] < 127) for o in outs[:2])
        dy2 = active2 * (fc.T @ dz / 576)[None, None, :]
        pad = np.pad(dy2, ((1, 1), (1, 1), (0, 0)))
        dx2 = sum(pad[2 - ky:26 - ky, 2 - kx:26 - kx] @ w2[:, ky, kx, :] for ky in range(3) for kx in range(3))
        want = (active1 * dx2).sum(axis=(0, 1))
        real = _bias_grad(model, plan, grads, 0)
        assert np.linalg.norm(real - want) <= 0.15 * np.linalg.norm(want) + 1e-12, (real, want)


@pytest.mark.twin
def test_convs_with_h_down_train_exactly_on_a_twin(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    x, y = rng.integers(-128, 128, (24, 24, 24, 2)).astype(np.int8), rng.integers(0, 10, 24)
    _exact_on_twin(wide_graph(), WIDE_TRAIN, x, y, 16, 3, tmp_path)
