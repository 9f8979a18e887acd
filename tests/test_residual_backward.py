"""Int8 training through residual ADDs (ResNet- and MobileNetV2-style graphs): a conv → [conv → conv] + skip → ADD
→ MEAN → FC → SOFTMAX graph written with the project's own exporter. The ADD passes its gradient to both inputs;
the op where the branch starts adds the skip's (docs/qplan-format.md, "ADD and residual merges"). On the host, the
integer reference's gradient of the lowest conv's bias, below the merge, is the real gradient of the dequantised
network; on a twin, every streamed accumulator equals the reference's exactly; the graph also round-trips through
a .tflite file and `bench plan` plans it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.config.profile import Profile
from bench.model.qgraph import AddOptions, ConvOptions, QModel, QOp
from bench.numerics import int8ref, int8train
from bench.plan.int8 import QPlanError, QTrainSpec, compile_qplan
from tests.test_int8ref import _Zoo
from tests.test_mean_backward import LR, _bias_grad, _exact_on_twin, _mean_head, _real, samples

TRAIN = frozenset({(0, "w"), (0, "b"), (1, "w"), (1, "b"), (2, "w"), (2, "b"), (5, "w"), (5, "b")})


def graph_profile(tmp_path: Path, graph: QModel, keys: str) -> Profile:
    """``graph`` written as ``<name>.tflite`` with the project's exporter and a digits-drift profile around it
    (``keys``: its other TOML lines), loaded as the CLI loads one: the way a user brings a model."""
    from bench.app.runner import load_profile
    from bench.tflite.io import write_tflite

    path = tmp_path / f"{graph.name}.tflite"
    path.write_bytes(write_tflite(graph))
    toml = tmp_path / f"{graph.name}.toml"
    toml.write_text(f'description = "{graph.name}"\ntask = "digits-drift"\nmodel = "{path}"\n{keys}')
    return load_profile(toml)


def residual_graph(seed: int = 6, skip_first: bool = False, act: str = "RELU") -> QModel:
    """x 6×6×3 → conv 3×3 (8, ReLU) = r → conv 3×3 (ReLU) → conv 1×1 → ADD(·, r) (ReLU) → MEAN → FC 10 → SOFTMAX.
    ``skip_first`` puts the skip as the ADD's first input (Keras writes either order)."""
    z = _Zoo(seed)
    x, s = _first_block(z, skip_first, act)
    return _mean_head(z, x, s, "residual")


def _first_block(z: _Zoo, skip_first: bool = False, act: str = "RELU") -> tuple[int, int]:
    """The graph input x and the ADD's output of conv 0 = r → [conv 1 → conv 2] + r, ops 0..3."""
    x = z.tensor((1, 6, 6, 3), 0.02, 5)
    r = z.tensor((1, 6, 6, 8), 0.03, -128)
    z.weighted("CONV_2D", x, (8, 3, 3, 3), r, ConvOptions("SAME", (1, 1), "RELU"), 0)
    b1 = z.tensor((1, 6, 6, 8), 0.03, -128)
    z.weighted("CONV_2D", r, (8, 3, 3, 8), b1, ConvOptions("SAME", (1, 1), "RELU"), 0)
    b2 = z.tensor((1, 6, 6, 8), 0.05, 3)
    z.weighted("CONV_2D", b1, (8, 1, 1, 8), b2, ConvOptions("VALID", (1, 1)), 0)
    s = z.tensor((1, 6, 6, 8), 0.05, -128 if act == "RELU" else 0)
    z.ops.append(QOp("ADD", (r, b2) if skip_first else (b2, r), (s,), AddOptions(act)))  # type: ignore[arg-type]
    return x, s


def two_block_graph(seed: int = 7) -> QModel:
    """Two residual blocks back to back, the second MobileNetV2's inverted one: conv 0 = r → [conv 1 → conv 2] + r
    → ADD 3 (ReLU) = s → [1×1 expand 8→16 (ReLU6) → depthwise 3×3 (ReLU6) → 1×1 project 16→8] + s → ADD 7 (linear,
    no mask) → MEAN → FC 10 → SOFTMAX. Branches start at ops 1 and 4; op 4 reads an ADD's output."""
    z = _Zoo(seed)
    x, s = _first_block(z)
    e = z.tensor((1, 6, 6, 16), 0.04, -128)
    z.weighted("CONV_2D", s, (16, 1, 1, 8), e, ConvOptions("VALID", (1, 1), "RELU6"), 0)
    d = z.tensor((1, 6, 6, 16), 0.04, -128)
    z.weighted("DEPTHWISE_CONV_2D", e, (1, 3, 3, 16), d, ConvOptions("SAME", (1, 1), "RELU6", 1), 3)
    p = z.tensor((1, 6, 6, 8), 0.06, 2)
    z.weighted("CONV_2D", d, (8, 1, 1, 16), p, ConvOptions("VALID", (1, 1)), 0)
    s2 = z.tensor((1, 6, 6, 8), 0.07, 0)
    z.ops.append(QOp("ADD", (s, p), (s2,), AddOptions()))
    return _mean_head(z, x, s2, "two-blocks")


TWO_BLOCKS = frozenset({(i, k) for i in (0, 1, 2, 4, 5, 6, 9) for k in ("w", "b")})


def test_two_blocks_merge_at_both_branch_starts() -> None:
    plan = compile_qplan(two_block_graph(), QTrainSpec(TWO_BLOCKS, LR, True))
    assert plan.train is not None
    ops = plan.train.ops
    assert (ops[3].skip_to, ops[7].skip_to) == (1, 4) and (ops[1].merge_from, ops[4].merge_from) == (3, 7)
    assert ops[3].mask and not ops[7].mask  # the linear bottleneck's ADD passes every gradient
    grads, _ = int8train.Int8Trainer(plan).step(samples(1, seed=2)[0][0], 3)
    assert all(np.any(grads[(i, "b")].values) for i in (0, 1, 2, 4, 5, 6, 9))


def _float_bias_grad(model: QModel, x: np.ndarray, label: int) -> np.ndarray:
    """dL/db of conv 0 by the chain rule on the dequantised network, through both the branch and the skip."""
    outs = int8ref.forward(model, x[None])
    dz = (outs[-1][0].astype(np.float64) + 128) / 256 - np.eye(10)[label]
    fc, _ = _real(model, 5)
    w1, _ = _real(model, 1)
    w2, _ = _real(model, 2)
    active = [(o[0] > -128) & (o[0] < 127) for o in outs[:4]]  # a ReLU's real 0 is code -128
    ds = active[3] * (fc.T @ dz / 36)[None, None, :]  # through the MEAN and the ADD's ReLU
    db1 = active[1] * (ds @ w2[:, 0, 0, :])  # the 1×1 conv (no activation), then conv 1's ReLU
    pad = np.pad(db1, ((1, 1), (1, 1), (0, 0)))
    dr = sum(pad[2 - ky:8 - ky, 2 - kx:8 - kx] @ w1[:, ky, kx, :] for ky in range(3) for kx in range(3))
    dr = dr + ds  # the skip
    return (active[0] * dr).sum(axis=(0, 1))


@pytest.mark.parametrize("skip_first", [False, True])
def test_conv_bias_gradient_below_a_residual_is_the_real_gradient(skip_first: bool) -> None:
    """Without the skip's share (what a chain-only backward would give) conv 0's bias gradient is far off; with the
    merge it is the chain rule's, to the precision of the int8 gradient quantisations."""
    model = residual_graph(skip_first=skip_first)
    plan = compile_qplan(model, QTrainSpec(TRAIN, LR, True))
    assert plan.train is not None
    add, start = plan.train.ops[3], plan.train.ops[1]
    assert add.kind == "ADD" and add.skip_to == 1 and start.merge_from == 3 and start.merge[0] > 0
    x, y = samples(4, seed=12)
    for xi, label in zip(x, y, strict=True):
        grads, _ = int8train.Int8Trainer(plan).step(xi, int(label))
        want = _float_bias_grad(model, xi, int(label))
        real = _bias_grad(model, plan, grads, 0)
        assert np.linalg.norm(real - want) <= 0.12 * np.linalg.norm(want) + 1e-12, (real, want)


def test_merge_is_the_exact_sum_where_it_is_representable() -> None:
    """g_b + g_s at equal constants (mult·2^(shift−31) = 1) and exponents: the integer sum, requantised."""
    g, e = int8train.merge_grad(np.array([100, 3, -7]), 0, np.array([100, -5, 7]), 0, 2**30, 1)
    assert e == 1 and g.tolist() == [100, -1, 0]
    g, e = int8train.merge_grad(np.array([10, 0]), -3, np.array([0, 0]), -40, 2**30, 1)  # skip far below: no share
    assert (g * 2.0**e).tolist() == [10 * 2.0**-3, 0.0]


def test_a_branch_reading_its_skip_again_is_refused_naming_the_op() -> None:
    model = residual_graph()
    ops = list(model.ops)
    conv2 = ops[2]
    ops[2] = QOp(conv2.kind, (ops[0].outputs[0], *conv2.inputs[1:]), conv2.outputs, conv2.options)
    bad = QModel("bad", model.tensors, tuple(ops), model.inputs, model.outputs)
    with pytest.raises(QPlanError, match="operator 2"):
        compile_qplan(bad, QTrainSpec(TRAIN, LR, True))


def test_training_above_the_skip_needs_no_merge() -> None:
    """With conv 0 frozen and nothing below the ADD's skip producer on the path, the skip gradient is not kept."""
    plan = compile_qplan(residual_graph(), QTrainSpec(frozenset({(1, "b"), (2, "w"), (5, "w")}), LR, True))
    assert plan.train is not None and plan.train.ops[3].skip_to == -1
    assert not any(b.name.startswith("skip") for b in plan.buffers)


@pytest.mark.twin
@pytest.mark.parametrize("skip_first", [False, True])
def test_int8_training_through_a_residual_is_exact_on_a_twin(tmp_path: Path, skip_first: bool) -> None:
    x, y = samples(40, seed=13)
    _exact_on_twin(residual_graph(skip_first=skip_first), TRAIN, x, y, 30, 4, tmp_path)


@pytest.mark.twin
def test_a_residual_tflite_trains_through_bench_run(tmp_path: Path, rack_entry, bench_run) -> None:
    """The graph as a .tflite file in a profile, as a user brings it: full-int8 on the M7 twin through the bench,
    every streamed accumulator exactly the host reference's, and the eval loss falls."""
    profile = graph_profile(tmp_path, residual_graph(), 'techniques = ["full-int8"]\nsteps = 40\nlr = 0.01\nseed = 1\n'
                            'eval_samples = 50\ngrad_every = 0\ncheck_steps = 2\ntimeout_s = 300\n')
    run = bench_run(rack_entry("nucleo-f746zg"), "full-int8", profile=profile)
    assert run.status == "ok", run.error
    assert run.fidelity_exact == 1.0 and run.fidelity_max_rel_err == 0.0
    row = run.record.run_row()
    assert row["loss_after"] < row["loss_before"]


@pytest.mark.twin
@pytest.mark.parametrize(("field", "text"), [("merge", "skip or merge set without the merge flag"),
                                              ("all", "the skip gradient must be what the op where the branch")])
def test_the_device_refuses_a_merge_no_add_feeds(tmp_path: Path, field: str, text: str) -> None:
    """The branch start's merge flag cleared (its skip buffer still named), or its whole merge cleared (the ADD's
    skip gradient then feeds nothing): the device refuses the plan at START naming the check, before any ACK."""
    import dataclasses

    from bench.config.boards import load_catalogue
    from bench.formats.blobs import TQPL_HEADER, TQPL_TRAIN_HEADER, TQPL_TRAIN_RECORD
    from bench.link import protocol as proto
    from bench.numerics import int8prep
    from bench.plan.blob import int8_dataset_blob
    from tests.twin_session import plan_on_twin

    model = residual_graph()
    plan = compile_qplan(model, QTrainSpec(TRAIN, LR, True), "full-int8")
    body = bytearray(plan._body)
    head = TQPL_TRAIN_HEADER.unpack_from(body, TQPL_HEADER.unpack_from(body)["train_offset"])
    at = head["records"] + TQPL_TRAIN_RECORD.size * 1  # op 1: where the branch starts
    rec = TQPL_TRAIN_RECORD.unpack_from(body, at)
    rec["flags"] &= ~16
    if field == "all":
        rec["skip"] = rec["merge"] = 0
    body[at: at + TQPL_TRAIN_RECORD.size] = TQPL_TRAIN_RECORD.pack(rec)
    bad = dataclasses.replace(plan, _body=bytes(body))
    x, y = samples(12, seed=3)
    scale, zp = int8prep.qparams(model.tensors[model.inputs[0]])
    data = int8_dataset_blob(x[:8], y[:8], x[8:], y[8:], 10, scale, zp)
    with plan_on_twin(load_catalogue()["nucleo-f746zg"], bad, data, tmp_path, "bad-merge") as link:
        link.send(proto.Start(steps=1, lr=LR, seed=1))
        fault = link.expect(proto.Fault, timeout=20, what="FAULT for a broken merge")
    assert fault.code == 2 and text in fault.text and fault.arg0 in (1, 3), fault


@pytest.mark.twin
def test_two_residual_blocks_train_exactly_on_a_twin(tmp_path: Path) -> None:
    x, y = samples(40, seed=14)
    _exact_on_twin(two_block_graph(), TWO_BLOCKS, x, y, 30, 4, tmp_path)
