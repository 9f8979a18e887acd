"""Classifier head replacement and the person_detect training plan (host only; the twin run is
tests/test_twin_person_detect.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.model.tasks.digits96 import digits96
from bench.numerics import int8ref
from bench.plan.int8 import QPlanError, QTrainSpec, compile_qplan
from bench.plan.select import sparse_spec
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
    with pytest.raises(QPlanError, match="depthwise weights do not train"):
        compile_qplan(model, QTrainSpec(frozenset({(25, "w")}), 0.05))
    with pytest.raises(QPlanError, match="at most 16"):
        compile_qplan(model, QTrainSpec(frozenset({(2, "b")}), 0.05))
