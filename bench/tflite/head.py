"""A new classifier head for an imported int8 model, and the 96×96 digits downstream task of person_detect.

`replace_head` swaps the model's last weighted op (the 1×1 CONV_2D or FULLY_CONNECTED feeding RESHAPE/SOFTMAX) for a
fresh one with ``n_classes`` outputs: per-channel symmetric int8 weights drawn from a seeded normal, int32 bias 0 at
s_x·s_W, and an output scale wide enough for the logits the head can produce (±``LOGIT_RANGE``). Each channel's
weight scale is set by ``W_RANGE`` (the largest |w| an int8 code can reach), not by the small initial weights:
int8 training cannot grow a code past ±127 (docs/qplan-format.md), so the head needs headroom. The new graph is
written to .tflite and read back through the importer, the path every third-party model takes.

`digits96` is the downstream task: sklearn's digits (the drifted device splits of ``digits-drift``) stretched to
0..255 and scaled up 12× to 96×96×1, fed as TFLM's person_detection example feeds its images (the u8 pixels
reinterpreted as int8).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from bench.model.qgraph import ConvOptions, FullyConnectedOptions, QModel, QOp, QTensor, ReshapeOptions
from bench.numerics import quant
from bench.tflite.io import load_tflite, write_tflite

W_RANGE = 0.5  # real weight magnitude code ±127 stands for
INIT_STD = 0.05  # initial weights ~ N(0, INIT_STD²)
LOGIT_RANGE = 16.0  # the head's int8 output covers about ±LOGIT_RANGE


class HeadError(ValueError):
    """The graph has no weighted op followed only by RESHAPE/SOFTMAX."""


def head_index(model: QModel) -> int:
    """The last CONV_2D (1×1 kernel) or FULLY_CONNECTED op, when only RESHAPE/SOFTMAX follow it and the graph ends
    in SOFTMAX: a classifier's last layer. A graph without SOFTMAX (an autoencoder, a regressor) has no classifier
    to replace, and replacing its last layer would silently change what it computes."""
    if not model.ops or model.ops[-1].kind != "SOFTMAX":
        last = model.ops[-1].kind if model.ops else "nothing"
        shape = model.tensors[model.outputs[0]].shape if model.outputs else ()
        raise HeadError(f"the graph ends in {last} (output {tuple(shape)}), not SOFTMAX: it is not a classifier, so "
                        f"head_classes has no classifier head to replace")
    for i in range(len(model.ops) - 1, -1, -1):
        op = model.ops[i]
        if op.kind in ("CONV_2D", "FULLY_CONNECTED"):
            if op.kind == "CONV_2D" and model.tensors[op.inputs[1]].shape[1:3] != (1, 1):
                raise HeadError(f"operator {i}: the last CONV_2D is not 1×1")
            return i
        if op.kind not in ("RESHAPE", "SOFTMAX"):
            break
    raise HeadError("no CONV_2D/FULLY_CONNECTED op followed only by RESHAPE/SOFTMAX")


def replace_head(model: QModel, n_classes: int, seed: int = 0, path: str | Path | None = None) -> QModel:
    """``model`` with a new ``n_classes`` head; written to ``path`` (when given) and read back through the importer."""
    if not 2 <= n_classes <= 255:
        raise HeadError(f"n_classes {n_classes}: 2..255 supported")
    h = head_index(model)
    op = model.ops[h]
    tensors = list(model.tensors)
    x, w_old, y_old = tensors[op.inputs[0]], tensors[op.inputs[1]], tensors[op.outputs[0]]
    assert x.scale is not None
    in_c = int(w_old.shape[-1])
    rng = np.random.default_rng(seed)
    w = np.clip(rng.normal(0.0, INIT_STD, (n_classes, in_c)), -W_RANGE, W_RANGE)
    s_w = np.full(n_classes, W_RANGE / 127.0, np.float32)
    codes = np.clip(quant.round_half_away(w / s_w[:, None].astype(np.float64)), -127, 127).astype(np.int8)
    w_shape = (n_classes, 1, 1, in_c) if op.kind == "CONV_2D" else (n_classes, in_c)
    s_x = float(x.scale[0])
    s_out = float(np.float32(2.0 * LOGIT_RANGE / 255.0))
    tensors[op.inputs[1]] = QTensor(f"{w_old.name or 'head'}_new", w_shape, "int8", s_w,
                                    np.zeros(n_classes, np.int64), 0, codes.reshape(w_shape))
    bias = QTensor("head_bias", (n_classes,), "int32", (s_x * s_w.astype(np.float64)).astype(np.float32),
                   np.zeros(n_classes, np.int64), 0, np.zeros(n_classes, np.int32))
    bias_id = len(tensors)
    tensors.append(bias)
    out_shape = (*y_old.shape[:-1], n_classes)
    tensors[op.outputs[0]] = dataclasses.replace(y_old, shape=out_shape, scale=np.array([s_out], np.float32),
                                                 zero_point=np.array([0], np.int64))
    o = op.options
    assert isinstance(o, ConvOptions | FullyConnectedOptions)
    ops = list(model.ops)
    ops[h] = QOp(op.kind, (op.inputs[0], op.inputs[1], bias_id), op.outputs, dataclasses.replace(o, activation="NONE"))
    for j in range(h + 1, len(ops)):  # RESHAPE / SOFTMAX: the class dimension follows
        later = ops[j]
        out = tensors[later.outputs[0]]
        tensors[later.outputs[0]] = dataclasses.replace(out, shape=(*out.shape[:-1], n_classes))
        if later.kind == "RESHAPE":  # an alias: the input's quantisation
            src = tensors[later.inputs[0]]
            tensors[later.outputs[0]] = dataclasses.replace(tensors[later.outputs[0]], scale=src.scale,
                                                            zero_point=src.zero_point)
            if len(later.inputs) > 1 and later.inputs[1] >= 0:
                shape_t = tensors[later.inputs[1]]
                assert shape_t.data is not None
                new = np.array(shape_t.data).copy()
                new[-1] = n_classes
                tensors[later.inputs[1]] = dataclasses.replace(shape_t, data=new)
            ro = later.options
            if isinstance(ro, ReshapeOptions) and ro.new_shape is not None:
                ops[j] = dataclasses.replace(later, options=ReshapeOptions((*ro.new_shape[:-1], n_classes)))
    new_model = QModel(f"{model.name}-head{n_classes}", tuple(tensors), tuple(ops), model.inputs, model.outputs)
    raw = write_tflite(new_model)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(raw)
    return load_tflite(raw)
