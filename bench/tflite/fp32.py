"""An imported int8 graph as an fp32 `bench.model.nn.Model`: weights and biases dequantised, one layer per op.

Why: the point of quantised training is its comparison with fp32 on the *same* backbone, measured. The fp32 engine
trains chains of layers; a sequential int8 graph (MobileNetV1 / DS-CNN style: CONV_2D, DEPTHWISE_CONV_2D,
FULLY_CONNECTED, pools, RESHAPE, a final SOFTMAX) maps onto them one op to one layer, its fused ReLU / ReLU6 kept
on the layer, so an imported MobileNet fits the device's 32 layers. The input stays the model's real-valued input
(code − zero point)·scale; a graph with other branches, or an op the fp32 engine has no kernel for, is refused with
every such op named at once (`Fp32ImportError`), and its fp32 runs stay planned only (`bench.plan.fp32mem`). A
residual ADD (ResNet, MobileNetV2) is a layer too: it reads the previous op's output and the input of an earlier op,
where its branch starts, and the fp32 plan merges its skip gradient there (docs/plan-format.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.model import nn
from bench.model.qgraph import ConvOptions, PoolOptions, QModel, QOp, QTensor

MAX_LAYERS = 32
_ACT: dict[str, nn.Act] = {"NONE": "none", "RELU": "relu", "RELU6": "relu6"}
_DROPPED = ("RESHAPE",)  # HWC order is the flat order: a flatten is free


class Fp32ImportError(ValueError):
    """An imported graph the fp32 engine cannot train; the message names every op that stops it."""


@dataclass(frozen=True)
class Fp32Import:
    """The fp32 model and where each op of the graph went: ``op_layer[op index] = layer index`` (dropped ops —
    RESHAPE, the final SOFTMAX — have none). Profile schemes count op indices; plans count layers."""

    model: nn.Model
    op_layer: dict[int, int]


def _real(t: QTensor, axis: int) -> np.ndarray:
    """A constant's real values: (q − zero point)·scale, per channel along ``axis`` when per-channel."""
    assert t.data is not None and t.scale is not None
    q = np.asarray(t.data, np.float64)
    zp = np.zeros(1) if t.zero_point is None else np.asarray(t.zero_point, np.float64)
    scale = np.asarray(t.scale, np.float64)
    shape = [1] * q.ndim
    if len(scale) > 1:
        shape[axis] = len(scale)
    return ((q - zp.reshape(shape if len(zp) > 1 else [1] * q.ndim)) * scale.reshape(shape)).astype(np.float32)


def _hwc(shape: tuple[int, ...]) -> nn.Shape:
    dims = tuple(int(d) for d in shape[1:]) if len(shape) > 1 else (int(shape[0]),)
    if len(dims) == 3:
        return (dims[0], dims[1], dims[2])
    return (1, 1, int(np.prod(dims)))


def _bias(model: QModel, op: QOp, out_c: int) -> np.ndarray:
    if len(op.inputs) < 3 or op.inputs[2] < 0:
        return np.zeros(out_c, np.float32)
    return _real(model.tensors[op.inputs[2]], 0).reshape(out_c)


def _conv(model: QModel, i: int, op: QOp, shape_in: nn.Shape, shape_out: nn.Shape) -> nn.Layer | str:
    o = op.options
    assert isinstance(o, ConvOptions)
    if o.stride[0] != o.stride[1]:
        return f"op {i} {op.kind}: stride {o.stride} differs by axis (the fp32 kernels take one stride)"
    w_t = model.tensors[op.inputs[1]]
    kind: nn.Op
    if op.kind == "CONV_2D":
        weight = _real(w_t, 0)  # OHWI
        kind = "conv2d"
    elif shape_in[2] == 1:  # depth multiplier m on one input channel: a CONV_2D with in_c = 1
        weight = np.ascontiguousarray(_real(w_t, 3)[0].transpose(2, 0, 1)[..., None])
        kind = "conv2d"
    elif o.depth_multiplier == 1:
        weight = np.ascontiguousarray(_real(w_t, 3)[0].transpose(2, 0, 1))  # [1][k][kw][c] -> [c][k][kw]
        kind = "dwconv2d"
    else:
        return f"op {i} {op.kind}: depth multiplier {o.depth_multiplier} on {shape_in[2]} channels"
    kh, kw = int(w_t.shape[1]), int(w_t.shape[2])
    if kh > 255 or kw > 255:
        return f"op {i} {op.kind}: kernel {kh}x{kw} over 255"
    return nn.Layer(kind, shape_in, shape_out, weight, _bias(model, op, shape_out[2]), kernel=kh, stride=o.stride[0],
                    padding="same" if o.padding == "SAME" else "valid", kernel_w=kw if kw != kh else 0,
                    act=_ACT[o.activation])


def _pool(i: int, op: QOp, shape_in: nn.Shape, shape_out: nn.Shape) -> nn.Layer | str:
    o = op.options
    if op.kind == "MEAN" or (op.kind == "AVERAGE_POOL_2D" and shape_out[:2] == (1, 1)
                             and isinstance(o, PoolOptions) and o.filter[0] >= shape_in[0]
                             and o.filter[1] >= shape_in[1] and o.padding == "VALID"):
        return nn.Layer("gap", shape_in, (1, 1, shape_in[2]))
    assert isinstance(o, PoolOptions)
    if op.kind == "MAX_POOL_2D" and o.padding == "VALID" and o.filter[0] == o.filter[1] and o.stride[0] == o.stride[1] \
            and o.activation == "NONE":
        return nn.Layer("maxpool2d", shape_in, shape_out, kernel=o.filter[0], stride=o.stride[0])
    return (f"op {i} {op.kind}: only global average pools and square VALID max pools train in fp32 "
            f"(filter {o.filter}, stride {o.stride}, padding {o.padding})")


def _layer(model: QModel, i: int, op: QOp) -> nn.Layer | str | None:
    """The layer of op i, None for an op that is dropped, or why it cannot be one."""
    shape_in = _hwc(model.tensors[op.inputs[0]].shape)
    shape_out = _hwc(model.tensors[op.outputs[0]].shape)
    if op.kind in _DROPPED:
        return None
    if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return _conv(model, i, op, shape_in, shape_out)
    if op.kind == "FULLY_CONNECTED":
        w = _real(model.tensors[op.inputs[1]], 0)
        act = getattr(op.options, "activation", "NONE")
        return nn.Layer("dense", (1, 1, int(w.shape[1])), (1, 1, int(w.shape[0])), w, _bias(model, op, int(w.shape[0])),
                        act=_ACT[act])
    if op.kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN"):
        return _pool(i, op, shape_in, shape_out)
    if op.kind == "SOFTMAX":
        return None if i == len(model.ops) - 1 else f"op {i} SOFTMAX: only as the graph's last op"
    return f"op {i} {op.kind}: no fp32 kernel (the fp32 engine trains chains of conv, depthwise, dense and pools)"


def _residual(model: QModel, i: int, op: QOp, skip: int) -> nn.Layer | str:
    """ADD op i as a residual add whose skip is the input of layer ``skip``."""
    shape = _hwc(model.tensors[op.outputs[0]].shape)
    act = getattr(op.options, "activation", "NONE")
    if act not in _ACT:
        return f"op {i} ADD: fused activation {act}"
    return nn.Layer("add", shape, shape, act=_ACT[act], skip=skip)


def _chain(model: QModel) -> tuple[list[str], dict[int, int]]:
    """Ops not fed by the previous op's output, bar residual ADDs; and each ADD's skip as ``{ADD op: op index whose
    input it is}`` (where its branch starts: an ADD reads the previous op's output and one tensor lower down)."""
    problems: list[str] = []
    skips: dict[int, int] = {}
    reader = {model.inputs[0]: 0}  # activation tensor -> the op that reads it as its chain input
    prev = model.inputs[0]
    for i, op in enumerate(model.ops):
        data = [t for t in op.inputs if t >= 0 and not model.tensors[t].is_constant]
        other = [t for t in data if t != prev]
        if op.kind == "ADD" and len(data) == 2 and len(other) == 1 and other[0] in reader \
                and model.tensors[other[0]].shape == model.tensors[prev].shape:
            skips[i] = reader[other[0]]
        elif data != [prev]:
            problems.append(f"op {i} {op.kind}: reads {len(data)} activation(s) not the previous op's output "
                            f"(the fp32 engine trains chains and residual ADDs of one earlier op's input)")
        prev = op.outputs[0]
        reader.setdefault(prev, i + 1)
    for i in sorted(skips):
        if list(skips.values()).count(skips[i]) > 1:
            problems.append(f"op {i} ADD: its skip, the input of op {skips[i]}, feeds another ADD too (the fp32 plan "
                            f"merges one skip gradient per branch start)")
    return problems, skips


def to_fp32(model: QModel, loss: str = "cross-entropy") -> Fp32Import:
    """The dequantised fp32 chain of ``model``; `Fp32ImportError` naming every op that stops it. ``loss``
    "reconstruction": an autoencoder (no SOFTMAX, as many outputs as inputs) trained on its MSE against its input."""
    recon = loss == "reconstruction"
    problems, skips = _chain(model)
    layers: list[nn.Layer] = []
    op_layer: dict[int, int] = {}
    op_position: dict[int, int] = {}  # op index -> the layer position of its input (dropped ops share the next's)
    for i, op in enumerate(model.ops):
        op_position[i] = len(layers)
        got = _residual(model, i, op, op_position[skips[i]]) if i in skips else _layer(model, i, op)
        if isinstance(got, str):
            problems.append(got)
        elif got is not None:
            op_layer[i] = len(layers)
            layers.append(got)
    if not problems and len(layers) > MAX_LAYERS:
        problems.append(f"{len(layers)} layers; fp32 plans hold at most {MAX_LAYERS}")
    if not problems and not recon and (not layers or layers[-1].op not in ("dense", "conv2d")
                                       or layers[-1].act != "none"):
        problems.append("the graph does not end in logits (a dense or 1x1 conv without activation, then SOFTMAX)")
    if problems:
        raise Fp32ImportError(f"{model.name}: cannot train in fp32: " + "; ".join(problems))
    shape_in = _hwc(model.tensors[model.inputs[0]].shape)
    n_out = int(np.prod(layers[-1].out_shape))
    if recon and n_out != nn.numel(shape_in):
        raise Fp32ImportError(f"{model.name}: {n_out} outputs for {nn.numel(shape_in)} inputs; a reconstruction "
                              f"compares the output with the input")
    if not recon and not 2 <= n_out <= 256:
        raise Fp32ImportError(f"{model.name}: {n_out} outputs; fp32 classifiers have 2..256 classes (an autoencoder "
                              f"trains with the profile's loss = \"reconstruction\")")
    fp = nn.Model(name=model.name, input_shape=shape_in, n_classes=n_out, layers=tuple(layers),
                  meta={"source": "dequantised from the int8 .tflite graph"},
                  loss="reconstruction" if recon else "cross-entropy")
    return Fp32Import(fp, op_layer)


def layer_technique_map(imp: Fp32Import, layers: tuple[tuple[int, float], ...]) -> tuple[tuple[int, float], ...]:
    """A sparse scheme's (op index, ratio) pairs as (layer index, ratio)."""
    missing = [i for i, _ in layers if i not in imp.op_layer]
    if missing:
        raise Fp32ImportError(f"{imp.model.name}: sparse layers {missing} are not ops with weights")
    return tuple((imp.op_layer[i], r) for i, r in layers)


__all__ = ["Fp32Import", "Fp32ImportError", "layer_technique_map", "to_fp32"]
