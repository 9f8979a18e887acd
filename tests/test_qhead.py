"""Classifier head replacement and the person_detect training plan (host only; the twin run is
tests/test_twin_person_detect.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.model.tasks.digits96 import digits96
from bench.numerics import int8ref
from bench.plan.int8 import QPlanError, QTrainSpec, compile_qplan
from bench.plan.select import biased_ops, sparse_spec
from bench.tflite.head import head_index, replace_head
from bench.tflite.io import load_tflite


def test_replace_head_round_trips(shared_models: Path, tmp_path: Path):
    model = load_tflite(shared_models / "person_detect.tflite")
    assert head_index(model) == 28
    new = replace_head(model, 10, seed=3, path=tmp_path / "pd10.tflite")
    assert load_tflite(tmp_path / "pd10.tflite").tensors[new.outputs[0]].shape == (1, 10)
    w = new.tensors[new.ops[28].inputs[1]]
    assert w.shape == (10, 1, 1, 256) and w.per_channel and int(np.abs(w.data).max()) < 127
    assert not new.tensors[new.ops[28].inputs[2]].data.any()  # bias 0
    out = int8ref.forward(new, digits96(np.full((1, 8, 8, 1), 9, np.uint8)))[-1]
    assert out.shape == (1, 10)
    assert np.array_equal(replace_head(model, 10, seed=3).tensors[new.ops[28].inputs[1]].data, w.data)


def test_person_detect_training_plan(shared_models: Path):
    model = replace_head(load_tflite(shared_models / "person_detect.tflite"), 10)
    plan = compile_qplan(model, sparse_spec(model, 9, {28: 1.0, 26: 0.125}, 0.05))
    assert plan.train is not None and plan.train.first_bwd == 19
    assert plan.train.ops[27].kind == "AVERAGE_POOL_2D" and plan.train.ops[25].kind == "DEPTHWISE_CONV_2D"
    assert len(plan.train.ops[26].channels) == 32
    # a depthwise op trains in an arena copy of its whole tensor; residuals only for the listed channels
    dw = compile_qplan(model, QTrainSpec(frozenset({(25, "w")}), 0.05, channels=((25, (0, 7)),)))
    sizes = {b.name: b.size for b in dw.buffers}
    assert sizes["w25"] == -(-3 * 3 * 256 // 4) * 4 and sizes["wres25"] == 2 * 2 * 9
    # a bias low in the graph: a 28-op backward path fits the device's op tables now (they share one pool)
    low = compile_qplan(model, QTrainSpec(frozenset({(2, "b")}), 0.05))
    assert low.train is not None and low.train.first_bwd == 2
    biases = frozenset((i, "b") for i in biased_ops(model) if i >= 2)
    every = compile_qplan(model, QTrainSpec(biases, 0.05))  # 26 biases: one gradient-statistics slot each
    assert every.train is not None and {b.name: b.size for b in every.buffers}["gstat"] == 16 * len(biases) == 16 * 26


def test_plans_past_the_device_tables_are_refused_on_the_host() -> None:
    from bench.plan.int8 import _check_device_tables

    _check_device_tables(31, 30, 78)  # a MobileNet trained end to end fits
    with pytest.raises(QPlanError, match="the backward path has 60 ops: with 64 ops in the graph the device's op "
                                         "tables need 11,840 B of their 6,912 B"):
        _check_device_tables(64, 60, 2)
    with pytest.raises(QPlanError, match="85 trained tensors; one GSTAT message carries the gradient statistics of "
                                         "at most 78"):
        _check_device_tables(10, 9, 85)


def test_head_classes_on_a_graph_without_softmax_is_refused(shared_models: Path) -> None:
    """The anomaly-detection autoencoder ends in a 640-wide FULLY_CONNECTED: there is no classifier to replace,
    and silently swapping its last layer would make it something else."""
    from bench.tflite.head import HeadError

    ad = load_tflite(shared_models / "ad01_int8.tflite")
    with pytest.raises(HeadError, match=r"ends in FULLY_CONNECTED \(output \(1, 640\)\), not SOFTMAX: it is not a "
                                        r"classifier"):
        replace_head(ad, 2)


def test_a_class_count_the_device_refuses_is_named_on_the_host() -> None:
    from bench.model.qgraph import FullyConnectedOptions, QModel, QOp, QTensor, SoftmaxOptions

    def act(name: str, shape: tuple[int, ...], scale: float = 0.05, zp: int = 0) -> QTensor:
        return QTensor(name, shape, "int8", np.array([scale], np.float32), np.array([zp]), 0, None)

    w = QTensor("w", (300, 4), "int8", np.full(300, 0.01, np.float32), np.zeros(300, np.int64), 0,
                np.ones((300, 4), np.int8))
    model = QModel("wide", (act("x", (1, 4)), w, act("z", (1, 300)), act("p", (1, 300), 1 / 256, -128)),
                   (QOp("FULLY_CONNECTED", (0, 1, -1), (2,), FullyConnectedOptions()),
                    QOp("SOFTMAX", (2,), (3,), SoftmaxOptions())), (0,), (3,))
    with pytest.raises(QPlanError, match=r"300 output classes; on-device training supports 2\.\.256"):
        compile_qplan(model, QTrainSpec(frozenset({(0, "b")}), 0.05))
