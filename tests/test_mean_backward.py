"""Int8 training through MEAN (Keras' GlobalAveragePooling2D, the head of MobileNetV2- and MCUNet-style graphs):
a small CONV_2D → MEAN → FULLY_CONNECTED → SOFTMAX graph. On the host, the integer reference's conv bias gradient
below the MEAN is the real gradient of the dequantised network; on a twin, every streamed accumulator equals the
reference's exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.config.boards import load_catalogue
from bench.link import session
from bench.model.qgraph import ConvOptions, FullyConnectedOptions, MeanOptions, QModel, QOp, SoftmaxOptions
from bench.numerics import int8prep, int8ref, int8train
from bench.plan.blob import int8_dataset_blob
from bench.plan.int8 import QTrainSpec, compile_qplan
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
    axis = z.tensor((2,), dtype="int32", data=np.array([1, 2], np.int32))
    mean = z.tensor((1, 8), 0.02, -100)
    z.ops.append(QOp("MEAN", (conv, axis), (mean,), MeanOptions(False)))
    logits = z.tensor((1, 10), 0.08, 3)
    z.weighted("FULLY_CONNECTED", mean, (10, 8), logits, FullyConnectedOptions(), None)  # type: ignore[arg-type]
    probs = z.tensor((1, 10), 1 / 256, -128)
    z.ops.append(QOp("SOFTMAX", (logits,), (probs,), SoftmaxOptions(1.0)))
    return QModel("mean-head", tuple(z.tensors), tuple(z.ops), (x,), (probs,))


def samples(n: int, seed: int = 9) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, (n, 6, 6, 3)).astype(np.int8), rng.integers(0, 10, n)


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
        bias = model.tensors[model.ops[0].inputs[2]]
        assert bias.scale is not None
        g = grads[(0, "b")]
        real = plan.train.ops[0].grad_scale * 2.0**g.exponent * g.values / bias.scale.astype(np.float64)
        # three 7-bit gradient quantisations (logits, FC input, MEAN input): within 10%; unmasked ReLUs were 100% off
        assert np.linalg.norm(real - want) <= 0.1 * np.linalg.norm(want) + 1e-9, (real, want)


@pytest.mark.twin
def test_int8_training_through_a_mean_is_exact_on_a_twin(tmp_path: Path) -> None:
    model = mean_graph()
    plan = compile_qplan(model, QTrainSpec(TRAIN, LR, True), "full-int8")
    x, y = samples(40)
    scale, zp = int8prep.qparams(model.tensors[model.inputs[0]])
    data = int8_dataset_blob(x[:30], y[:30], x[30:], y[30:], 10, scale, zp)
    board = load_catalogue()["nucleo-f746zg"]
    rec = RunRecord(run_id="mean", board=board, target_kind="emulated", technique="full-int8", model=model.name)
    with plan_on_twin(board, plan, data, tmp_path, "mean") as link:
        session.train(link, rec, session.TrainSettings(4, LR, 3, 1, 5), idle_timeout=30, name="mean")
    checks = fidelity.check_int8_gradients(rec, plan, x[:30], y[:30])
    assert len(checks) == 4 * 4 and all(c.exact for c in checks), [c for c in checks if not c.exact]
