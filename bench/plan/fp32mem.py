"""What fp32 training of an imported graph (`QModel`) would need in SRAM: an analytic planner, no device involved.

The fp32 engine trains `bench.model.nn` models only, so for a third-party network (TFLM's person_detect) this module
answers "would it fit" with the engine's own memory design applied to the whole graph (every operator the int8
import accepts: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, AVERAGE_POOL_2D, MAX_POOL_2D, MEAN, ADD, RESHAPE, SOFTMAX,
and QUANTIZE/DEQUANTIZE at the edges, which are identities in fp32):

* trainable parameters are copied to SRAM as fp32 (sparse update: only the trained output channels' rows); frozen ones
  are read from flash;
* an activation is kept past its forward use only if backward needs it: the input of an operator whose weights train
  (for dW), the output of an operator with a fused RELU/RELU6 on the backward path (its mask) and the input of a
  MAX_POOL_2D whose input gradient is needed (its maxima are found again); average pooling, MEAN, ADD and RESHAPE
  need none;
* backward visits only operators whose output depends on a trained tensor, and computes an input gradient only where
  that input does; a trailing SOFTMAX is the softmax cross-entropy loss (d logits = softmax − one-hot);
* updates are applied as soon as each gradient is known (operator reordering, MCUNetV3): a dense layer's update is
  fused into its gradient loop, a convolution's weight gradient is produced one output channel at a time in a scratch
  row, so parameter-gradient buffers never coexist;
* every buffer gets an arena offset by lifetime with the fp32 plan compiler's placement (`bench.plan.fp32`), on its time
  line at double resolution: -1 before the forward pass, 2t = forward of op t, 2n = loss, 2(2n − t) = backward of
  op t, 2(2n + 1) after the step. A fused RELU/RELU6 is backpropagated just before its op, at 2(2n − t) − 1, as the
  engine's separate ReLU layer is, so its output (the mask) is dead by the time the op's input is read for dW.
  On a `bench.model.nn` model converted by `bench.tflite.io.quantize_model` the figures equal `bench.plan.fp32`'s.

The *naive* figure is what a framework without these optimisations holds at once: every activation kept, a gradient
buffer for every activation on the backward path and for every trained parameter tensor, nothing shared.

All figures are *planned* (host analysis); none is measured. RESHAPE and the edge QUANTIZE/DEQUANTIZE alias their
input (one buffer per alias group, like `bench.plan.int8`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.config.profile import Technique
from bench.model.qgraph import ConvOptions, FullyConnectedOptions, PoolOptions, QModel, QOp
from bench.plan.buffers import Buffer, aligned, arena_composition, buffer_kind, channel_count, peak_time, place_buffers

WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
ALIASES = ("RESHAPE", "QUANTIZE", "DEQUANTIZE")
TRAINABLE_OPS = (*WEIGHTED, "AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN", "ADD", *ALIASES, "SOFTMAX")
F32 = 4


class Fp32MemError(ValueError):
    """The graph or the technique cannot be planned (the message names the operator or the layer)."""


@dataclass(frozen=True)
class OpMemory:
    """Planned bytes of one operator for one technique."""

    index: int
    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    train_w: bool
    train_b: bool
    channels: int  # output channels whose weights train (0: weights frozen)
    out_channels: int  # all output channels (0: no weights)
    weights_ram_bytes: int  # trainable parameters copied to SRAM
    kept_act_bytes: int  # activation bytes this op keeps alive for backward (its input for dW, its output's mask)
    grad_bytes: int  # input-gradient buffer this op writes in backward
    scratch_bytes: int  # conv weight-gradient row
    visited: bool  # backward visits this op


@dataclass(frozen=True)
class Fp32Memory:
    """The planned fp32 training memory of (graph, technique), with the naive figure for comparison."""

    model: str
    technique: Technique
    ops: tuple[OpMemory, ...]
    buffers: tuple[Buffer, ...]
    arena_bytes: int  # placed arena (lifetime sharing, bench.plan.fp32's first fit)
    peak_live_bytes: int  # the most bytes live at one time: a lower bound the placement reaches or exceeds
    naive_bytes: int
    naive_parts: dict[str, int]
    first_bwd: int  # lowest op index backward visits (n: none)

    def composition(self) -> dict[str, int]:
        """Bytes by kind at the moment the most bytes are live (SGD keeps no optimizer state)."""
        return arena_composition(self.buffers, lambda b: buffer_kind(b.name))

    def buffer_table(self) -> list[dict[str, int | str]]:
        return [{"name": b.name, "bytes": b.size, "offset": b.offset, "live": f"{b.start}..{b.end}"}
                for b in self.buffers]


def _live_at(buffers: tuple[Buffer, ...] | list[Buffer], t: int) -> int:
    return sum(b.size for b in buffers if b.start <= t <= b.end)


# --------------------------------------------------------------------------------------------- graph helpers


def param_ops(model: QModel) -> list[int]:
    """Indices of the operators with weights (the graph's 'layers with parameters')."""
    return [i for i, op in enumerate(model.ops) if op.kind in WEIGHTED]


def _has_bias(op: QOp) -> bool:
    return len(op.inputs) > 2 and op.inputs[2] >= 0


def _data_inputs(op: QOp) -> tuple[int, ...]:
    return op.inputs[:2] if op.kind == "ADD" else op.inputs[:1]


def _numel(model: QModel, t: int) -> int:
    return int(np.prod(model.tensors[t].shape))


def weight_rows(model: QModel, op: QOp) -> tuple[int, int]:
    """(output channels, values per channel) of a weighted op's weight tensor (OHWI, 1HW(C·m) or [O][I])."""
    shape = model.tensors[op.inputs[1]].shape
    if op.kind == "DEPTHWISE_CONV_2D":
        return shape[3], shape[1] * shape[2]
    return shape[0], int(np.prod(shape[1:]))


def _fused(op: QOp) -> bool:
    act = getattr(op.options, "activation", "NONE")
    return act != "NONE"


def _training_ops(model: QModel) -> tuple[int, int]:
    """(number of ops the training step runs, the logits tensor): a trailing SOFTMAX (and a DEQUANTIZE after it)
    becomes the loss."""
    n = len(model.ops)
    while n and model.ops[n - 1].kind == "DEQUANTIZE":
        n -= 1
    if n and model.ops[n - 1].kind == "SOFTMAX":
        return n - 1, model.ops[n - 1].inputs[0]
    return n, model.ops[n - 1].outputs[0]


def check_graph(model: QModel) -> None:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise Fp32MemError("only graphs with one input and one output are planned")
    n, _ = _training_ops(model)
    for i, op in enumerate(model.ops[:n]):
        if op.kind not in TRAINABLE_OPS:
            raise Fp32MemError(f"operator {i}: {op.kind} has no fp32 backward in this planner")
        if op.kind == "SOFTMAX":
            raise Fp32MemError(f"operator {i}: SOFTMAX is only supported as the last operator (the loss)")


# --------------------------------------------------------------------------------------------- the planner


def trainable_keys(model: QModel, technique: Technique) -> frozenset[tuple[int, str]]:
    """(op index, "w"|"b") tensors the technique updates; a sparse technique's layers must be weighted ops."""
    weighted = param_ops(model)
    for i, _ in technique.layers:
        if i not in weighted:
            kind = model.ops[i].kind if 0 <= i < len(model.ops) else "no operator"
            raise Fp32MemError(f"sparse layer {i}: {kind} has no weights (weighted ops: "
                               f"{', '.join(map(str, weighted))})")
    keys = technique.trainable(weighted)
    return frozenset(k for k in keys if k[1] == "w" or _has_bias(model.ops[k[0]]))


def plan_fp32(model: QModel, technique: Technique) -> Fp32Memory:
    """The fp32 training memory of ``model`` under ``technique`` (full / last-k / bias-k / sparse)."""
    check_graph(model)
    n, logits = _training_ops(model)
    ops = model.ops[:n]
    trainable = trainable_keys(model, technique)
    ratios = dict(technique.layers) if technique.scheme == "sparse" else {}

    # alias groups: RESHAPE / QUANTIZE / DEQUANTIZE outputs share their input's buffer
    root: dict[int, int] = {model.inputs[0]: model.inputs[0]}
    producer: dict[int, int] = {}
    for i, op in enumerate(ops):
        out = op.outputs[0]
        root[out] = root[op.inputs[0]] if op.kind in ALIASES else out
        if op.kind not in ALIASES:
            producer[out] = i
    consumers: dict[int, list[int]] = {}
    for i, op in enumerate(ops):
        if op.kind not in ALIASES:
            for t in _data_inputs(op):
                consumers.setdefault(root[t], []).append(i)

    # which tensors depend on a trained parameter (only those need gradients)
    depends: dict[int, bool] = {model.inputs[0]: False}
    for i, op in enumerate(ops):
        own = (i, "w") in trainable or (i, "b") in trainable
        depends[op.outputs[0]] = own or any(depends[t] for t in _data_inputs(op))
    visited = [op.kind not in ALIASES and depends[op.outputs[0]] for op in ops]
    first_bwd = min((i for i, v in enumerate(visited) if v), default=n)

    end = 2 * (2 * n + 1)
    life: dict[str, list[int]] = {}
    sizes: dict[str, int] = {}

    def use(name: str, size: int, t: int) -> None:
        sizes[name] = max(sizes.get(name, 0), aligned(size))
        span = life.setdefault(name, [t, t])
        span[0], span[1] = min(span[0], t), max(span[1], t)

    def act(t: int) -> str:
        return f"a{root[t]}"

    def grad(t: int) -> str:
        return f"d{root[t]}"

    rows: list[OpMemory] = []
    use(act(model.inputs[0]), F32 * _numel(model, model.inputs[0]), -1)  # the sample, decoded before the forward pass
    for i, op in enumerate(ops):
        for t in (*_data_inputs(op), op.outputs[0]):
            use(act(t), F32 * _numel(model, t), 2 * i)
    use(act(logits), F32 * _numel(model, logits), 2 * n)
    use(grad(logits), F32 * _numel(model, logits), 2 * n)

    for i, op in enumerate(ops):
        tb = 2 * (2 * n - i)
        x, y = op.inputs[0], op.outputs[0]
        train_w, train_b = (i, "w") in trainable, (i, "b") in trainable
        w_ram = b_ram = kept = dx = scratch = chans = out_c = 0
        if op.kind in WEIGHTED:
            out_c, per_row = weight_rows(model, op)
            if train_w:
                chans = channel_count(out_c, ratios[i]) if i in ratios else out_c
                w_ram = aligned(F32 * chans * per_row)
                use(f"w{i}", w_ram, -1)
                use(f"w{i}", w_ram, end)
            if train_b:
                b_ram = aligned(F32 * out_c)
                use(f"b{i}", b_ram, -1)
                use(f"b{i}", b_ram, end)
        if visited[i]:
            use(grad(y), F32 * _numel(model, y), tb)  # read: this op's output gradient
            if train_w:
                use(act(x), F32 * _numel(model, x), tb)  # dW needs the input
                kept += aligned(F32 * _numel(model, x))
            if _fused(op):  # RELU/RELU6 mask, applied to dy in place just before the op's own backward
                use(act(y), F32 * _numel(model, y), tb - 1)
                use(grad(y), F32 * _numel(model, y), tb - 1)
                kept += aligned(F32 * _numel(model, y))
            for t in _data_inputs(op):
                if depends[t]:
                    use(grad(t), F32 * _numel(model, t), tb)  # written: the input gradient
                    dx += aligned(F32 * _numel(model, t))
            if op.kind == "MAX_POOL_2D" and depends[x]:
                use(act(x), F32 * _numel(model, x), tb)  # the window maxima are found again in the input
                kept += aligned(F32 * _numel(model, x))
            if train_w and op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                scratch = aligned(F32 * weight_rows(model, op)[1])  # one output channel's dW, applied at once
                use(f"scratch{i}", scratch, tb)
        rows.append(OpMemory(i, op.kind, model.tensors[x].shape, model.tensors[y].shape, train_w, train_b, chans,
                             out_c, w_ram + b_ram, kept, dx, scratch, visited[i]))

    buffers = [Buffer(name, sizes[name], span[0], span[1]) for name, span in life.items()]
    placed = tuple(place_buffers(buffers))
    arena = max((b.offset + b.size for b in placed), default=0)
    peak = _live_at(placed, peak_time(placed))
    naive, parts = _naive(model, ops, trainable, rows, visited, depends, root, logits)
    return Fp32Memory(model.name, technique, tuple(rows), placed, arena, peak, naive, parts, first_bwd)


def _naive(model: QModel, ops: tuple[QOp, ...], trainable: frozenset, rows: list[OpMemory], visited: list[bool],
           depends: dict[int, bool], root: dict[int, int], logits: int) -> tuple[int, dict[str, int]]:
    """Every activation kept for the whole step, an activation-gradient buffer for every tensor backward writes and a
    full gradient buffer per trained parameter tensor, all coexisting with the trained parameters."""
    acts = {root[model.inputs[0]]: _numel(model, model.inputs[0])}
    grads: dict[int, int] = {root[logits]: _numel(model, logits)}
    for i, op in enumerate(ops):
        acts[root[op.outputs[0]]] = max(acts.get(root[op.outputs[0]], 0), _numel(model, op.outputs[0]))
        if visited[i]:
            for t in _data_inputs(op):
                if depends[t]:
                    grads[root[t]] = max(grads.get(root[t], 0), _numel(model, t))
    params = sum(r.weights_ram_bytes for r in rows)
    parts = {"weights": params,
             "activations": sum(aligned(F32 * v) for v in acts.values()),
             "activation gradients": sum(aligned(F32 * v) for v in grads.values()),
             "parameter gradients": params}
    return sum(parts.values()), parts


def fp32_weight_bytes(model: QModel) -> int:
    """Every weight and bias of the graph as fp32 (what the frozen part would occupy in flash)."""
    total = 0
    for op in model.ops:
        if op.kind in WEIGHTED:
            total += F32 * _numel(model, op.inputs[1])
            if _has_bias(op):
                total += F32 * _numel(model, op.inputs[2])
    return total


def op_geometry(op: QOp) -> str:
    """A short description of an op's options for tables (kernel stride, fused activation)."""
    o = op.options
    parts = []
    if isinstance(o, ConvOptions):
        parts.append(f"s{o.stride[0]}" + (f" ×{o.depth_multiplier}" if o.depth_multiplier > 1 else ""))
    if isinstance(o, PoolOptions):
        parts.append(f"{o.filter[0]}×{o.filter[1]} s{o.stride[0]}")
    if isinstance(o, ConvOptions | PoolOptions | FullyConnectedOptions) and o.activation != "NONE":
        parts.append(o.activation)
    return " ".join(parts)

