"""Post-training quantisation of a bench fp32 model into an int8 `QModel`, and its export as .tflite.

Why: int8 techniques train the quantised twin of the pretrained fp32 model, and it must enter the device through the
very importer a third-party model takes, so the export is written to a file and read back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.model import nn
from bench.model.qgraph import (
    Activation,
    AddOptions,
    ConvOptions,
    FullyConnectedOptions,
    Padding,
    PoolOptions,
    QModel,
    QOp,
    QTensor,
    SoftmaxOptions,
)
from bench.model.tasks import DeviceDataset
from bench.numerics import fp32 as reference
from bench.numerics.quant import round_half_away
from bench.tflite.io import validate, write_tflite


def activation_qparams(values: np.ndarray) -> tuple[float, int]:
    """Asymmetric int8 (scale, zero point) covering the calibration range, widened to contain 0 (TFLite rule)."""
    lo, hi = min(float(np.min(values)), 0.0), max(float(np.max(values)), 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    scale = float(np.float32((hi - lo) / 255.0))
    zero_point = int(np.clip(round_half_away(-128.0 - lo / scale), -128, 127))
    return scale, zero_point


def quantize_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8 (codes in [-127, 127], zero point 0) along axis 0."""
    flat = np.asarray(w, np.float64).reshape(len(w), -1)
    max_abs = np.abs(flat).max(axis=1)
    scale = np.where(max_abs > 0, max_abs / 127.0, 1.0).astype(np.float32)
    q = round_half_away(flat / scale[:, None].astype(np.float64))
    return np.clip(q, -127, 127).astype(np.int8).reshape(w.shape), scale


def _float_activations(model: nn.Model, x: np.ndarray) -> list[np.ndarray]:
    """Per-layer float activations over the calibration set, stacked [n, ...]."""
    per_sample = [reference.forward(model, xi) for xi in x]
    return [np.stack([acts[i] for acts in per_sample]) for i in range(len(model.layers))]


class _Graph:
    """Accumulates tensors and operators while a model is converted."""

    def __init__(self) -> None:
        self.tensors: list[QTensor] = []
        self.ops: list[QOp] = []

    def add(self, t: QTensor) -> int:
        self.tensors.append(t)
        return len(self.tensors) - 1

    def activation(self, name: str, shape: tuple[int, ...], qparams: tuple[float, int]) -> int:
        scale, zp = qparams
        return self.add(QTensor(name, shape, "int8", np.array([scale], np.float32), np.array([zp], np.int64)))


def _add_weighted(g: _Graph, layer: nn.Layer, name: str, x: int, out_q: tuple[float, int], relu: bool) -> int:
    """One conv2d/dense layer (+ fused ReLU) as CONV_2D / FULLY_CONNECTED; returns the output tensor id."""
    assert layer.weight is not None and layer.bias is not None
    w_q, s_w = quantize_weights(layer.weight)
    s_x = g.tensors[x].scale
    assert s_x is not None
    s_b = (np.float64(s_x[0]) * s_w.astype(np.float64)).astype(np.float32)
    b_q = np.clip(round_half_away(layer.bias / s_b.astype(np.float64)), -(2**31), 2**31 - 1).astype(np.int32)
    zeros = np.zeros(len(s_w), np.int64)
    w = g.add(QTensor(f"{name}/weights", w_q.shape, "int8", s_w, zeros, 0, w_q))
    b = g.add(QTensor(f"{name}/bias", b_q.shape, "int32", s_b, zeros, 0, b_q))
    act: Activation = "RELU" if relu else "NONE"
    if layer.op == "conv2d":
        out = g.activation(f"{name}/out", (1, *layer.out_shape), out_q)
        pad: Padding = "SAME" if layer.padding == "same" else "VALID"
        g.ops.append(QOp("CONV_2D", (x, w, b), (out,), ConvOptions(pad, (layer.stride, layer.stride), act)))
    else:
        out = g.activation(f"{name}/out", (1, layer.out_shape[-1]), out_q)
        g.ops.append(QOp("FULLY_CONNECTED", (x, w, b), (out,), FullyConnectedOptions(act)))
    return out


def _add_unweighted(g: _Graph, model: nn.Model, i: int, cur: int, at: dict[int, int], out_values: np.ndarray) -> int:
    """Layer i, a maxpool2d (MAX_POOL_2D keeps its input's scale and zero point: it does not requantise) or a
    residual add (ADD of the branch ``cur`` and the tensor at its skip position, requantised to its output's range,
    its ReLU fused); returns the output tensor id."""
    layer = model.layers[i]
    name = f"layer{i}_{layer.op}/out"
    if layer.op == "add":
        if layer.skip not in at:
            raise ValueError(f"layer {i}: add's skip position {layer.skip} is inside a fused conv + relu")
        out = g.activation(name, (1, *layer.out_shape), activation_qparams(out_values))
        act: Activation = "RELU" if layer.act == "relu" else "RELU6" if layer.act == "relu6" else "NONE"
        g.ops.append(QOp("ADD", (cur, at[layer.skip]), (out,), AddOptions(act)))
        return out
    t_in = g.tensors[cur]
    assert t_in.scale is not None and t_in.zero_point is not None
    out = g.activation(name, (1, *layer.out_shape), (float(t_in.scale[0]), int(t_in.zero_point[0])))
    opts = PoolOptions("VALID", (layer.stride, layer.stride), (layer.kernel, layer.kernel))
    g.ops.append(QOp("MAX_POOL_2D", (cur,), (out,), opts))
    return out


def quantize_model(model: nn.Model, calib_x: np.ndarray, name: str | None = None) -> QModel:
    """Post-training int8 quantisation of a `bench.model.nn` model, ending in an int8 SOFTMAX (scale 1/256, zp -128).

    Weights are per-channel symmetric, biases int32 at s_in·s_w[c], activations asymmetric from the calibration
    min/max of ``calib_x`` (float inputs [n, h, w, c]); a ReLU following a layer is fused into it, a residual add
    becomes an ADD.
    """
    x = np.asarray(calib_x, np.float64).reshape(-1, *model.input_shape)
    acts = _float_activations(model, x)
    g = _Graph()
    cur = g.activation("input", (1, *model.input_shape), activation_qparams(x))
    at: dict[int, int] = {0: cur}  # activation position (the input of layer p) -> its tensor; a residual add reads one
    i = 0
    while i < len(model.layers):
        layer = model.layers[i]
        if layer.op == "relu":
            raise ValueError(f"layer {i}: a relu must follow a conv2d or dense layer to be fused")
        if layer.op in ("maxpool2d", "add"):
            cur = _add_unweighted(g, model, i, cur, at, acts[i])
            i += 1
        else:
            relu = i + 1 < len(model.layers) and model.layers[i + 1].op == "relu"
            out_i = i + 1 if relu else i
            cur = _add_weighted(g, layer, f"layer{i}_{layer.op}", cur, activation_qparams(acts[out_i]), relu)
            i = out_i + 1
        at[i] = cur
    probs = g.activation("probabilities", (1, model.n_classes), (1.0 / 256.0, -128))
    g.ops.append(QOp("SOFTMAX", (cur,), (probs,), SoftmaxOptions(1.0)))
    qmodel = QModel(name or model.name, tuple(g.tensors), tuple(g.ops), (0,), (probs,))
    validate(qmodel)
    return qmodel


def digits_calibration(task: DeviceDataset) -> np.ndarray:
    """Calibration inputs for a digits model: the clean pretraining images plus the drifted device-train split.

    The drifted *eval* split is never used, so accuracy measured on it stays held out.
    """
    return np.concatenate([np.asarray(task.x_pretrain, np.float64), task.decode(task.x_train).astype(np.float64)])


def export_digits_tflite(model: nn.Model, task: DeviceDataset, path: str | Path) -> QModel:
    """Quantise a pretrained digits model and write it as an int8 .tflite file; returns the written graph."""
    qmodel = quantize_model(model, digits_calibration(task), name=model.name)
    Path(path).write_bytes(write_tflite(qmodel))
    return qmodel
