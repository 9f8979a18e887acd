"""Which tensors and channels an int8 technique trains, by operator index, and its TQPL plan.

Why in the plan stage: the choice (largest-norm channels, the last ops with a bias) decides the plan's memory, and
`bench.plan.int8` compiles it; the .tflite layer only reads and writes graphs.
"""

from __future__ import annotations

import numpy as np

from bench.config.profile import Technique
from bench.model.nn import Model
from bench.model.qgraph import QModel
from bench.numerics.int8train import channel_rows
from bench.plan.fp32 import sparse_channels
from bench.plan.int8 import TRAINABLE_OPS, QPlan, QPlanError, QTrainSpec, compile_qplan, planned_arena


def top_channels(model: QModel, i: int, ratio: float) -> tuple[int, ...]:
    """The ``ratio`` of op i's output channels with the largest L2 norm of pretrained weights (real values,
    per-channel scales applied), ascending; () for all of them (MCUNetV3's sparse channel pick)."""
    if not 0 <= i < len(model.ops) or model.ops[i].kind not in TRAINABLE_OPS:
        what = model.ops[i].kind if 0 <= i < len(model.ops) else f"not an op of this {len(model.ops)}-op graph"
        raise QPlanError(f"[sparse] layers: op {i} is {what}; only CONV_2D, DEPTHWISE_CONV_2D and "
                         f"FULLY_CONNECTED weights train")
    w = model.tensors[model.ops[i].inputs[1]]
    assert w.data is not None and w.scale is not None
    rows = channel_rows(model.ops[i].kind, w.data)
    out_c = len(rows)
    k = max(1, round(out_c * ratio))
    if k >= out_c:
        return ()
    norms = np.linalg.norm(rows.astype(np.float64), axis=1) * np.broadcast_to(
        w.scale.astype(np.float64), (out_c,))
    return tuple(sorted(int(c) for c in np.argsort(-norms, kind="stable")[:k]))


def sparse_spec(model: QModel, bias_k: int, layers: dict[int, float], lr: float, qas: bool = True) -> QTrainSpec:
    """A `QTrainSpec` on op indices: the biases of the last ``bias_k`` ops with a bias (CONV_2D, DEPTHWISE_CONV_2D,
    FULLY_CONNECTED) and the weights of the weighted ops in ``layers`` (op index → ratio of output channels, the
    largest-norm ones)."""
    biased = biased_ops(model)
    trainable = {(i, "b") for i in (biased[-bias_k:] if bias_k else [])} | {(i, "w") for i in layers}
    channels = tuple((i, ch) for i in sorted(layers) if (ch := top_channels(model, i, layers[i])))
    return QTrainSpec(frozenset(trainable), lr, qas, channels)


def biased_ops(model: QModel) -> list[int]:
    """Indices of the CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED ops that have a bias tensor."""
    return [i for i, op in enumerate(model.ops) if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
            and len(op.inputs) > 2 and op.inputs[2] >= 0]


def layer_ops(model: Model, qmodel: QModel) -> dict[int, int]:
    """The quantised graph's op of each fp32 layer with parameters: its CONV_2D / FULLY_CONNECTED ops in order
    (`quantize_model` fuses each ReLU into its layer)."""
    param_layers = model.param_layers()
    weighted = [k for k, op in enumerate(qmodel.ops) if op.kind in ("CONV_2D", "FULLY_CONNECTED")]
    if len(weighted) != len(param_layers):
        raise ValueError(f"{qmodel.name}: {len(weighted)} weighted ops for {len(param_layers)} layers with "
                         f"parameters")
    return dict(zip(param_layers, weighted, strict=True))


def compile_int8_plan(model: Model, qmodel: QModel, technique: Technique, lr: float) -> QPlan:
    """The TQPL training plan of an int8 technique on a zoo model's quantised graph (`layer_ops`): the technique's
    tensors and sparse channel lists (picked on the pretrained fp32 weights, as for fp32) map onto op indices."""
    param_layers = model.param_layers()
    op_of = layer_ops(model, qmodel)
    trainable = frozenset((op_of[i], p) for i, p in technique.trainable(param_layers))
    channels = tuple((op_of[i], ch) for i, ch in sorted(sparse_channels(model, technique).items()))
    return compile_qplan(qmodel, QTrainSpec(trainable, lr, technique.qas, channels), technique.name)


def imported_arena(qmodel: QModel, technique: Technique, lr: float) -> int:
    """`compile_imported_plan(...).arena_bytes`, refused alike, without writing the blob (the scheme search's)."""
    return planned_arena(qmodel, _imported_spec(qmodel, technique, lr))


def _imported_spec(qmodel: QModel, technique: Technique, lr: float) -> QTrainSpec:
    trainable = frozenset(technique.trainable(biased_ops(qmodel)))
    channels = tuple((i, ch) for i, ratio in technique.layers if (ch := top_channels(qmodel, i, ratio)))
    return QTrainSpec(trainable, lr, technique.qas, channels, technique.loss)


def compile_imported_plan(qmodel: QModel, technique: Technique, lr: float) -> QPlan:
    """The TQPL training plan of an int8 technique on an imported graph, by op index: the layers with parameters that
    ``bias_k`` / ``last_k`` count from the end are the ops with a bias (`bench.plan.select.biased_ops`), ``[sparse]``
    layers are op indices, and each one's channels are the largest-norm ones of the pretrained codes (as
    `sparse_spec`); the technique's loss (cross-entropy, or an autoencoder's reconstruction) goes with them."""
    return compile_qplan(qmodel, _imported_spec(qmodel, technique, lr), technique.name)
