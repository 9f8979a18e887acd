"""Int8 plan stage: compile an imported int8 graph (`QModel`) into a TQPL blob the firmware runs (docs/qplan-format.md).

The device executes the graph op by op with integer kernels bit-exact with `bench.numerics.int8ref` (hence
tflite-micro). Every
constant the kernels need is computed here once, with the very functions `bench.numerics.int8ref` uses: the
requantisation
multipliers (Q0.31 significand + shift per output channel), the input-zero-point correction folded into the bias
(``bias - zp_in * sum(w)`` per output channel, so the device's inner loops are plain int8 dot products), the MEAN,
ADD and SOFTMAX fixed-point parameters. Weights and biases stay in flash; int8 activations get arena offsets by
lifetime (a tensor lives from the op that writes it to the last op that reads it; RESHAPE aliases its input), so
the planned arena is the peak of simultaneously live activations.

Also here: the dataset blob for int8 inputs (the TDST header with its sample dtype byte set, docs/plan-format.md)
and the two int8 datasets the tests use (person_detect's BMPs plus resized digits; drifted digits quantised with a
digits model's input parameters).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import struct
from dataclasses import dataclass, field

import numpy as np

from bench.formats.blobs import TQPL_HEADER, TQPL_OP, TQPL_TENSOR, TQPL_TRAIN_HEADER, TQPL_TRAIN_RECORD
from bench.model.qgraph import (
    AddOptions,
    ConvOptions,
    FullyConnectedOptions,
    PoolOptions,
    QModel,
    QOp,
    QTensor,
    SoftmaxOptions,
)
from bench.numerics import int8prep, quant
from bench.numerics.int8train import (
    CROSS_ENTROPY,
    H_SHIFT,
    POOL_SHIFT,
    RECONSTRUCTION,
    RES_BITS,
    QTrainOp,
    QTrainPlan,
)
from bench.plan.blob import finish_blob
from bench.plan.buffers import arena_composition, place_buffers

QPLAN_MAGIC = 0x4C505154  # "TQPL"
QPLAN_HEADER = TQPL_HEADER.size
TENSOR_RECORD = TQPL_TENSOR.size
OP_RECORD = TQPL_OP.size
MAX_OPS = 64
SPARSE_GROUP = 4  # firmware QSPARSE_GROUP: a sparse CONV_2D recomputes its listed channels this many at a time
MAX_TENSORS = 512
NONE16 = 0xFFFF
NONE32 = 0xFFFFFFFF
ALIGN = 4
OP_CODES = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 3, "AVERAGE_POOL_2D": 4, "MEAN": 5, "ADD": 6,
            "RESHAPE": 7, "SOFTMAX": 8, "MAX_POOL_2D": 9}
OP_NAMES = {code: name for name, code in OP_CODES.items()}
KIND_ACTIVATION, KIND_CONST_I8, KIND_CONST_I32 = 1, 2, 3
ADD_LEFT_SHIFT = 20


class QPlanError(ValueError):
    """The graph uses something the int8 engine cannot run; the message names the operator index."""


@dataclass(frozen=True)
class QTechnique:
    """What an int8 run does (`bench.image.firmware` names plans by model and technique)."""

    name: str = "eval-int8"


@dataclass(frozen=True)
class QBuffer:
    """An arena range holding one activation (or several RESHAPE aliases), live from op ``start`` to ``end``."""

    name: str
    size: int
    start: int
    end: int
    offset: int = -1
    tensors: tuple[int, ...] = ()  # QModel tensor indices sharing it
    kind: str = "activations"  # activations, weights, optimizer (residuals), gradients (and backward scratch)


@dataclass
class QPlan:
    """A compiled int8 graph: tensor table, op records, constant data and the arena plan."""

    model: QModel
    tensor_ids: list[int]  # TQPL tensor index -> QModel tensor index
    buffers: tuple[QBuffer, ...]
    arena_bytes: int
    macs: list[int]  # per op
    technique: QTechnique = field(default_factory=QTechnique)
    train: QTrainPlan | None = None  # the training section, when the plan trains
    _body: bytes = b""  # header fields after dataset_addr are fixed; see blob()

    @property
    def plan_hash(self) -> int:
        return int.from_bytes(hashlib.sha256(self._body).digest()[:4], "little")

    @property
    def n_classes(self) -> int:
        return int(np.prod(self.model.tensors[self.model.outputs[0]].shape))

    def blob(self, dataset_addr: int) -> bytes:
        """The TQPL blob with the absolute flash address of the dataset blob."""
        body = bytearray(self._body)
        at = TQPL_HEADER.offsets()
        struct.pack_into("<I", body, at["plan_hash"][0], self.plan_hash)
        struct.pack_into("<I", body, at["arena_bytes"][0], self.arena_bytes)
        struct.pack_into("<I", body, at["dataset_addr"][0], dataset_addr)
        return finish_blob(bytes(body), crc_at=12)

    def offset_of(self, tensor: int) -> int:
        """Arena offset of a QModel activation tensor."""
        return next(b.offset for b in self.buffers if tensor in b.tensors)

    def buffer_table(self) -> list[dict[str, int | str]]:
        return [{"name": b.name, "bytes": b.size, "offset": b.offset, "live": f"{b.start}..{b.end}"}
                for b in self.buffers]

    def composition(self) -> dict[str, int]:
        """Planned arena bytes by kind at the moment the most bytes are live (optimizer = the Q16 residuals)."""
        return arena_composition(self.buffers, lambda b: b.kind)

    def layer_memory(self) -> list[dict[str, int]]:
        """Planned bytes per op: trained tensors in SRAM (codes, biases, bias_eff, residuals), activations kept
        for backward, the op's input-gradient buffers (an ADD's skip gradient too) and its backward scratch."""
        sizes = {b.name: b.size for b in self.buffers}
        rows = []
        for i in range(len(self.model.ops)):
            op = self.train.ops.get(i) if self.train else None
            rows.append({
                "layer": i,
                "weights_ram_bytes": sum(sizes.get(f"{k}{i}", 0) for k in ("w", "wres", "b", "bres", "eff")),
                "kept_act_bytes": op.kept_bytes if op else 0,
                "grad_bytes": (sizes.get(f"g{i - 1}", 0) if op and op.need_dx else 0) + sizes.get(f"skip{i}", 0),
                "scratch_bytes": sizes.get(f"scratch{i}", 0),
            })
        return rows


@dataclass(frozen=True)
class QTrainSpec:
    """What an int8 plan trains: (op index, "w"|"b") tensors, the channel lists of sparse weights (op → ascending
    output channels), the learning rate folded into the update multipliers, and whether QAS scales them."""

    trainable: frozenset[tuple[int, str]]
    lr: float
    qas: bool = True
    channels: tuple[tuple[int, tuple[int, ...]], ...] = ()
    loss: str = CROSS_ENTROPY  # or RECONSTRUCTION (an autoencoder: the profile's loss = "reconstruction")


# --------------------------------------------------------------------------------------------- checks


def _refuse(i: int, op: QOp, why: str) -> QPlanError:
    return QPlanError(f"operator {i}: {op.kind}: {why}")


def _check(model: QModel) -> None:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise QPlanError("only graphs with one input and one output are supported")
    if len(model.ops) > MAX_OPS:
        raise QPlanError(f"{len(model.ops)} operators; TQPL plans hold at most {MAX_OPS}")
    if model.ops[-1].outputs[0] != model.outputs[0]:
        raise QPlanError("the graph output must be the last operator's output")
    for i, op in enumerate(model.ops):
        if op.kind not in OP_CODES:
            raise _refuse(i, op, "not supported on the device (QUANTIZE/DEQUANTIZE: feed int8 inputs instead)")
        x = model.tensors[op.inputs[0]]
        if op.kind == "MEAN":
            axes = model.tensors[op.inputs[1]].data
            assert axes is not None
            if len(x.shape) != 4 or sorted({int(a) % 4 for a in np.ravel(axes)}) != [1, 2]:
                raise _refuse(i, op, "only the mean over height and width of an NHWC tensor is supported")
        if op.kind == "ADD" and model.tensors[op.inputs[1]].shape != x.shape:
            raise _refuse(i, op, "broadcasting is not supported (inputs must have equal shapes)")
        if op.kind == "SOFTMAX":
            _, zp = int8prep.qparams(model.tensors[op.outputs[0]])
            if zp != -128 or x.shape[-1] > 4095:
                raise _refuse(i, op, "needs output zero point -128 and depth < 4096")
        if isinstance(op.options, ConvOptions | PoolOptions) and len(x.shape) != 4:
            raise _refuse(i, op, "needs an NHWC input")
        if op.kind == "DEPTHWISE_CONV_2D":
            w = model.tensors[op.inputs[1]]
            if w.shape[1] * w.shape[2] > 64:
                raise _refuse(i, op, "kernels above 64 taps are not supported")


# --------------------------------------------------------------------------------------------- arena plan


def _data_inputs(op: QOp) -> tuple[int, ...]:
    return op.inputs[:2] if op.kind == "ADD" else op.inputs[:1]


def _activation_buffers(model: QModel) -> list[QBuffer]:
    """One buffer per activation (RESHAPE outputs join their input's), live from writer to last reader."""
    n = len(model.ops)
    owner: dict[int, int] = {model.inputs[0]: model.inputs[0]}
    span: dict[int, list[int]] = {model.inputs[0]: [-1, -1]}
    for i, op in enumerate(model.ops):
        for t in _data_inputs(op):
            span[owner[t]][1] = max(span[owner[t]][1], i)
        out = op.outputs[0]
        if op.kind == "RESHAPE":
            owner[out] = owner[op.inputs[0]]
        else:
            owner[out] = out
            span[out] = [i, i]
    span[owner[model.outputs[0]]][1] = n  # read by the host after the last op
    bufs = []
    for root, (start, end) in span.items():
        members = tuple(t for t, r in owner.items() if r == root)
        size = max(int(np.prod(model.tensors[t].shape)) for t in members)
        bufs.append(QBuffer(model.tensors[root].name or f"t{root}", -(-size // ALIGN) * ALIGN, start, end,
                            tensors=members))
    return bufs


# --------------------------------------------------------------------------------------------- serialisation


class _Blob:
    """Constant data appended after the records; offsets are from the blob start."""

    def __init__(self, base: int) -> None:
        self.base, self.data = base, bytearray()

    def add(self, raw: bytes) -> int:
        off = self.base + len(self.data)
        self.data += raw + b"\0" * (-len(raw) % 4)
        return off


def _dims(shape: tuple[int, ...]) -> tuple[int, ...]:
    if not 1 <= len(shape) <= 4 or any(not 0 < d <= 0xFFFF for d in shape):
        raise QPlanError(f"tensor shape {shape} is not 1..4 dimensions of 1..65535")
    return (1,) * (4 - len(shape)) + tuple(shape)


def _tensor_record(model: QModel, t: int, offset: int, consts: _Blob, trainable: bool = False) -> bytes:
    tensor = model.tensors[t]
    kind = KIND_ACTIVATION if tensor.data is None else KIND_CONST_I32 if tensor.dtype == "int32" else KIND_CONST_I8
    esize = 4 if kind == KIND_CONST_I32 else 1
    if tensor.data is not None:
        offset = consts.add(np.ascontiguousarray(tensor.data, "<i4" if esize == 4 else "i1").tobytes())
    scales_off = NONE32
    if tensor.data is not None and tensor.per_channel:
        assert tensor.scale is not None
        scales_off = consts.add(struct.pack("<I", len(tensor.scale)) + tensor.scale.astype("<f4").tobytes())
    scale = float(tensor.scale[0]) if tensor.scale is not None else 0.0
    zp = int(tensor.zero_point[0]) if tensor.zero_point is not None else 0
    count = int(np.prod(tensor.shape))
    dims = dict(zip(("dims0", "dims1", "dims2", "dims3"), _dims(tensor.shape), strict=True))
    return TQPL_TENSOR.pack({
        "kind": kind, "flags": int(trainable), "rank": len(tensor.shape), **dims, "offset": offset,
        "bytes": count * esize, "zero_point": zp if kind == KIND_ACTIVATION else 0, "scale": scale,
        "scales_offset": scales_off,
    })


def _rq_table(pairs: list[tuple[int, int]]) -> bytes:
    for m, s in pairs:
        if not (0 <= m <= quant.INT32_MAX and -31 <= s <= 30):
            raise QPlanError(f"requantisation multiplier {m} / shift {s} out of range")
    return b"".join(struct.pack("<ii", int(m), int(s)) for m, s in pairs)


def _folded_bias(model: QModel, op: QOp) -> np.ndarray:
    """bias - zp_in * sum(w) per output channel: the input zero point hoisted out of the device's inner loops."""
    w = model.tensors[op.inputs[1]].data
    assert w is not None
    _, zp_in = int8prep.qparams(model.tensors[op.inputs[0]])
    w64 = w.astype(np.int64)
    wsum = w64.sum(axis=(0, 1, 2)) if op.kind == "DEPTHWISE_CONV_2D" else w64.reshape(len(w64), -1).sum(axis=1)
    eff = int8prep.bias_codes(model, op, len(wsum)) - zp_in * wsum
    if eff.min() < quant.INT32_MIN or eff.max() > quant.INT32_MAX:
        raise QPlanError(f"{op.kind}: folded bias overflows int32")
    return eff


def _pads(x: QTensor, k: tuple[int, int], stride: tuple[int, int], padding: str) -> tuple[int, int]:
    return (int8prep.pads(x.shape[1], k[0], stride[0], padding)[0],
            int8prep.pads(x.shape[2], k[1], stride[1], padding)[0])


def _op_record(model: QModel, op: QOp, index_of: dict[int, int], consts: _Blob, train_flags: int = 0
               ) -> tuple[bytes, int]:
    """The 64-byte op record and the op's multiply-accumulate count."""
    tensors, o = model.tensors, op.options
    x, y = tensors[op.inputs[0]], tensors[op.outputs[0]]
    (s_in, _), (s_out, zp_out) = int8prep.qparams(x), int8prep.qparams(y)
    flags = stride_h = stride_w = k_h = k_w = dm = same = pad_t = pad_l = param0 = macs = 0
    in1 = in2 = NONE16
    lo, hi = -128, 127
    rq_off = bias_off = NONE32
    if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        w = tensors[op.inputs[1]]
        assert w.scale is not None and w.data is not None
        in1 = index_of[op.inputs[1]]
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            in2 = index_of[op.inputs[2]]
        mult, shift = int8prep.multipliers(s_in, w, s_out)
        flags |= 1 if len(mult) > 1 else 0
        rq_off = consts.add(_rq_table(list(zip(mult.tolist(), shift.tolist(), strict=True))))
        bias_off = consts.add(_folded_bias(model, op).astype("<i4").tobytes())
        assert isinstance(o, ConvOptions | FullyConnectedOptions)
        lo, hi = quant.activation_range(o.activation, s_out, zp_out)
        if isinstance(o, ConvOptions):
            stride_h, stride_w = o.stride
            k_h, k_w = w.shape[1], w.shape[2]
            dm, same = o.depth_multiplier, int(o.padding == "SAME")
            pad_t, pad_l = _pads(x, (k_h, k_w), o.stride, o.padding)
            taps = k_h * k_w * (1 if op.kind == "DEPTHWISE_CONV_2D" else x.shape[3])
            macs = int(np.prod(y.shape)) * taps
        else:
            macs = int(np.prod(y.shape)) * w.shape[1]
    elif op.kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        assert isinstance(o, PoolOptions)
        stride_h, stride_w = o.stride
        k_h, k_w = o.filter
        same = int(o.padding == "SAME")
        pad_t, pad_l = _pads(x, o.filter, o.stride, o.padding)
        lo, hi = quant.activation_range(o.activation, s_out, zp_out)
    elif op.kind == "MEAN":
        n = x.shape[1] * x.shape[2]
        rq_off = consts.add(_rq_table([int8prep.mean_multiplier(s_in, s_out, n)]))
    elif op.kind == "ADD":
        assert isinstance(o, AddOptions)
        in1 = index_of[op.inputs[1]]
        s2, _ = int8prep.qparams(tensors[op.inputs[1]])
        twice_max = 2.0 * max(s_in, s2)
        pairs = [quant.quantize_multiplier(s_in / twice_max), quant.quantize_multiplier(s2 / twice_max),
                 quant.quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * s_out))]
        rq_off = consts.add(_rq_table(pairs))
        param0 = ADD_LEFT_SHIFT
        lo, hi = quant.activation_range(o.activation, s_out, zp_out)
    elif op.kind == "SOFTMAX":
        assert isinstance(o, SoftmaxOptions)
        sm_mult, sm_shift, diff_min = int8prep.softmax_params(o.beta, s_in)
        rq_off = consts.add(_rq_table([(sm_mult, sm_shift)]))
        param0 = diff_min
    record = TQPL_OP.pack({
        "op": OP_CODES[op.kind], "flags": flags | train_flags, "stride_h": stride_h, "stride_w": stride_w,
        "k_h": k_h, "k_w": k_w, "dm": dm, "padding": same, "in0": index_of[op.inputs[0]], "in1": in1, "in2": in2,
        "out": index_of[op.outputs[0]], "pad_top": pad_t, "pad_left": pad_l, "act_min": lo, "act_max": hi,
        "rq_offset": rq_off, "bias_eff_offset": bias_off, "param0": param0, "macs": macs,
    })
    return record, macs


def compile_qplan(model: QModel, train: QTrainSpec | None = None, name: str = "eval-int8") -> QPlan:
    """The TQPL plan of an int8 graph: validated, arena planned, constants precomputed; with ``train`` also the
    training section (trainable arena copies, kept activations, gradient buffers, QAS update multipliers)."""
    tplan, placed, used = _planned(model, train)
    arena = max((b.offset + b.size for b in placed), default=0)
    act_off = {t: b.offset for b in placed for t in b.tensors}
    index_of = {t: i for i, t in enumerate(used)}
    trained_tensors: set[int] = set()
    if tplan is not None:
        for i, top in tplan.ops.items():
            op = model.ops[i]
            if top.train_w:
                trained_tensors.add(op.inputs[1])
            if top.train_b:
                trained_tensors.add(op.inputs[2])
    tensors_off = QPLAN_HEADER
    ops_off = tensors_off + TENSOR_RECORD * len(used)
    consts = _Blob(ops_off + OP_RECORD * len(model.ops))
    t_records = b"".join(_tensor_record(model, t, act_off.get(t, 0), consts, t in trained_tensors) for t in used)
    o_records, macs = bytearray(), []
    for i, op in enumerate(model.ops):
        train_op = tplan.ops.get(i) if tplan is not None else None
        tflags = (train_op.train_w << 4 | train_op.train_b << 5) if train_op is not None else 0
        rec, m = _op_record(model, op, index_of, consts, tflags)
        o_records += rec
        macs.append(m)
    flags = train_off = 0
    if tplan is not None:
        flags, train_off = 1, _train_section(model, tplan, {b.name: b.offset for b in placed}, consts)
    total = consts.base + len(consts.data)
    header = TQPL_HEADER.pack({
        "magic": QPLAN_MAGIC, "version": 1, "header_bytes": QPLAN_HEADER, "blob_bytes": total, "crc32": 0,
        "plan_hash": 0, "arena_bytes": arena, "dataset_addr": 0, "n_tensors": len(used), "n_ops": len(model.ops),
        "tensors_offset": tensors_off, "ops_offset": ops_off, "input": index_of[model.inputs[0]],
        "output": index_of[model.outputs[0]], "n_classes": int(np.prod(model.tensors[model.outputs[0]].shape)),
        "flags": flags, "train_offset": train_off,
    })
    body = header + t_records + bytes(o_records) + bytes(consts.data)
    assert len(body) == total
    return QPlan(model=model, tensor_ids=used, buffers=tuple(placed), arena_bytes=arena, macs=macs,
                 technique=QTechnique(name), train=tplan, _body=body)


def planned_arena(model: QModel, train: QTrainSpec | None = None) -> int:
    """`compile_qplan(model, train).arena_bytes` with the same checks and refusals, without writing the blob: a
    scheme search plans thousands of schemes and needs only their memory."""
    return max((b.offset + b.size for b in _planned(model, train)[1]), default=0)


def _planned(model: QModel, train: QTrainSpec | None) -> tuple[QTrainPlan | None, list[QBuffer], list[int]]:
    """The checked graph's training plan, placed buffers and the tensors the blob lists (graph order)."""
    _check(model)
    tplan = _train_plan(model, train) if train is not None else None
    buffers = _activation_buffers(model)
    if tplan is not None:
        buffers = _train_buffers(model, tplan, buffers)
    placed = place_buffers(buffers)  # the fp32 planner's greedy first fit by lifetime
    used: list[int] = [model.inputs[0]]
    for op in model.ops:
        ins = op.inputs if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") else _data_inputs(op)
        for t in (*ins, *op.outputs):
            if t >= 0 and t not in used:
                used.append(t)
    if len(used) > MAX_TENSORS:
        raise QPlanError(f"{len(used)} tensors; TQPL plans hold at most {MAX_TENSORS}")
    return tplan, placed, used


# --------------------------------------------------------------------------------------------- training section

MAX_SHIFT, MIN_SHIFT = 60, -160  # update multiplier exponents the device accepts
I32_MAX = 2**31 - 1
H_MAX = 16256  # |h| <= (127·32768 + 128) >> 8, and H_MAX >> h_down with m <= 32768 >> h_down
H_DOWN_MAX = 7  # m = 32768 >> 7 = 256 still resolves the channel factors to 1/256
TRAINABLE_OPS = ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D")
BACKWARD_OPS = (*TRAINABLE_OPS, "AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN", "ADD", "RESHAPE")
POOLS = ("AVERAGE_POOL_2D", "MAX_POOL_2D")
PARAMLESS = (*POOLS, "MEAN")  # backward records with a scratch and no parameters
MERGING = (*TRAINABLE_OPS, *PARAMLESS)  # a residual branch may start at these (their int32 scratch sums the two)
TF_TRAIN_W, TF_TRAIN_B, TF_NEED_DX, TF_MASK, TF_MERGE = 1, 2, 4, 8, 16
MERGE_SHIFT_MAX = 60  # the device's bound on a merge multiplier's shift
# The device's op tables (firmware/engine/qplan.h, its qplan_tables): a node per op and a record per backward op
# share a pool of 64 nodes and 16 records; a step's gradient statistics (GSTAT_SLOT bytes per trained tensor, in the
# arena) go out in one GSTAT message, which bounds the trained tensors. Sizes on the 32-bit ARM targets
# (tests/test_twin_kernels.py compiles qplan.c for each board's core and compares).
NODE_BYTES, BACKWARD_RECORD_BYTES, TABLE_POOL_BYTES, MAX_TRAINED_TENSORS = 80, 112, 6912, 78
GSTAT_SLOT = 16
TRAIN_HEADER, TRAIN_RECORD = TQPL_TRAIN_HEADER.size, TQPL_TRAIN_RECORD.size


def _check_device_tables(n_ops: int, n_backward: int, n_tensors: int) -> None:
    """The refusals the device would make at load (qplan_load), made here first: the op tables and the trained
    tensors must fit the device's fixed tables."""
    need = -(-n_ops * NODE_BYTES // 8) * 8 + n_backward * BACKWARD_RECORD_BYTES
    if need > TABLE_POOL_BYTES:
        raise QPlanError(f"the backward path has {n_backward} ops: with {n_ops} ops in the graph the device's op "
                         f"tables need {need:,} B of their {TABLE_POOL_BYTES:,} B (train fewer of the lowest ops)")
    if n_tensors > MAX_TRAINED_TENSORS:
        raise QPlanError(f"{n_tensors} trained tensors; one GSTAT message carries the gradient statistics of at "
                         f"most {MAX_TRAINED_TENSORS} (weights and biases count one each)")


def update_multiplier(real: float) -> tuple[int, int]:
    """A positive real as (Q0.31 significand in [2^30, 2^31), exponent) with real = m·2^(shift−31); (0, 0) for 0 or
    anything below 2^MIN_SHIFT. Unlike requantisation multipliers the exponent may be far from 0."""
    if real <= 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    m = math.floor(q * 2**31 + 0.5)
    if m == 2**31:
        m, shift = m // 2, shift + 1
    if shift < MIN_SHIFT:
        return 0, 0
    if shift > MAX_SHIFT:
        raise QPlanError(f"update multiplier {real:g} too large (learning rate?)")
    return m, shift


def update_multipliers(real: np.ndarray) -> np.ndarray:
    """`update_multiplier` of every value at once, [n, 2] int64 (a scheme search plans thousands of channels)."""
    real = np.asarray(real, np.float64)
    q, shift = np.frexp(real)
    m = np.floor(q * 2.0**31 + 0.5)
    over = m == 2.0**31
    m, shift = np.where(over, m / 2, m), np.where(over, shift + 1, shift)
    zero = (real <= 0.0) | (shift < MIN_SHIFT)
    if np.any(~zero & (shift > MAX_SHIFT)):
        raise QPlanError(f"update multiplier {float(real[~zero & (shift > MAX_SHIFT)][0]):g} too large "
                         f"(learning rate?)")
    return np.stack([np.where(zero, 0, m), np.where(zero, 0, shift)], axis=1).astype(np.int64)


def _weight_scales(model: QModel, op: QOp) -> np.ndarray:
    w = model.tensors[op.inputs[1]]
    assert w.scale is not None
    out_c = w.shape[3] if op.kind == "DEPTHWISE_CONV_2D" else w.shape[0]
    return np.broadcast_to(w.scale.astype(np.float64), (out_c,)).copy()


def _bias_scales(model: QModel, op: QOp, s_x: float, s_w: np.ndarray) -> np.ndarray:
    """The int32 bias codes' real scale per channel: the bias tensor's, else s_x·s_W (the TFLite rule)."""
    if len(op.inputs) > 2 and op.inputs[2] >= 0 and model.tensors[op.inputs[2]].scale is not None:
        sb = model.tensors[op.inputs[2]].scale
        assert sb is not None
        return np.broadcast_to(sb.astype(np.float64), s_w.shape).copy()
    return s_x * s_w


MAX_CLASSES = 256  # firmware/engine/plan.c: n_classes in 2..256


def _train_plan(model: QModel, spec: QTrainSpec) -> QTrainPlan:
    """Checks the graph can train as asked and derives each backward op's constants (docs/qplan-format.md).

    Gradient constants: the loss gradient is c·2^E·g (cross-entropy: c = 1/256, see `_loss`); an op's input
    gradient has c_in = c_out·max s_W. Streamed accumulators: dL/dW̄ = C·2^E·a, dL/db̄ = C·2^E·a_b with
    C = c_out·max s_W·s_x·2^-7. SGD on the codes with QAS: ΔW̄ = −lr·s_W^-2·dL/dW̄ (that is ΔW = −lr·dL/dW in
    real terms), Δb̄ = −lr·s_b^-2·dL/db̄ with s_b = s_x·s_W; without QAS the s^-2 factors are dropped. The
    multipliers carry lr·C·2^16 (residual units).
    """
    n = len(model.ops)
    loss, recon, c = _loss(model, spec.loss)
    top = n - 2 if loss == CROSS_ENTROPY else n - 1
    if not spec.trainable:
        raise QPlanError("nothing to train")
    channels = dict(spec.channels)
    for i, p in spec.trainable:
        if not 0 <= i <= top or model.ops[i].kind not in TRAINABLE_OPS or p not in ("w", "b"):
            raise QPlanError(f"op {i}: only the weights and biases of CONV_2D, DEPTHWISE_CONV_2D and "
                             f"FULLY_CONNECTED ops train")
        if p == "b" and not (len(model.ops[i].inputs) > 2 and model.ops[i].inputs[2] >= 0):
            raise QPlanError(f"op {i}: {model.ops[i].kind} has no bias to train")
    first = min(i for i, _ in spec.trainable)
    _check_device_tables(n, top + 1 - first, len(spec.trainable))
    ops: dict[int, QTrainOp] = {}
    merges: dict[int, tuple[int, float]] = {}  # branch start → (its ADD, the constant c of the ADD's gradient)
    for i in range(top, first - 1, -1):
        if i + 1 in merges:  # c is now the constant of op i + 1's input gradient, where a branch starts
            ops[i + 1] = _merging(model, ops[i + 1], *merges.pop(i + 1), c)
        op = model.ops[i]
        if op.kind not in BACKWARD_OPS:
            raise _refuse(i, op, "backward is not supported for this op (CONV_2D, DEPTHWISE_CONV_2D, "
                                 "FULLY_CONNECTED, AVERAGE_POOL_2D, MAX_POOL_2D, MEAN, ADD, RESHAPE)")
        chain_in = op.inputs[:2] if op.kind == "ADD" else op.inputs[:1]
        if i > first and model.ops[i - 1].outputs[0] not in chain_in:
            raise _refuse(i, op, "the backward path must be a chain (each op reads the previous op's output)")
        need_dx = i > first
        if op.kind == "ADD":
            ops[i] = _add_backward(model, i, first, c, merges)
            continue
        if op.kind in POOLS:
            po = op.options
            assert isinstance(po, PoolOptions)
            s_y, zp_y = int8prep.qparams(model.tensors[op.outputs[0]])
            if quant.activation_range(po.activation, s_y, zp_y) != (-128, 127):
                raise _refuse(i, op, "backward needs no fused activation")
            if po.filter[0] * po.filter[1] * 127 * 2**POOL_SHIFT > I32_MAX:
                raise _refuse(i, op, "window too large for int32 gradient accumulators")
            # MAX_POOL_2D keeps its input (the backward finds the maxima again); g passes unscaled (E, c unchanged).
            # AVERAGE_POOL_2D keeps nothing; the real gradient keeps c while E drops by POOL_SHIFT.
            kept = int(np.prod(model.tensors[op.inputs[0]].shape)) if op.kind == "MAX_POOL_2D" and need_dx else 0
            ops[i] = QTrainOp(i, op.kind, False, False, need_dx, False, (), np.zeros(0, np.int64),
                              np.zeros((0, 2), np.int64), np.zeros((0, 2), np.int64), 0.0, c, kept)
            continue
        if op.kind in ("RESHAPE", "MEAN"):  # MEAN: as AVERAGE_POOL_2D, c kept and E down by POOL_SHIFT
            ops[i] = QTrainOp(i, op.kind, False, False, need_dx, False, (), np.zeros(0, np.int64),
                              np.zeros((0, 2), np.int64), np.zeros((0, 2), np.int64), 0.0, c)
            continue
        x, y = model.tensors[op.inputs[0]], model.tensors[op.outputs[0]]
        s_x, _ = int8prep.qparams(x)
        s_w = _weight_scales(model, op)
        out_c = len(s_w)
        o = op.options
        assert isinstance(o, ConvOptions | FullyConnectedOptions)
        mask = o.activation != "NONE"  # a fused activation: no gradient where it holds the output at a bound
        if op.kind == "FULLY_CONNECTED" and int(np.prod(x.shape)) != model.tensors[op.inputs[1]].shape[1]:
            raise _refuse(i, op, "training needs one input row")
        train_w, train_b = (i, "w") in spec.trainable, (i, "b") in spec.trainable
        h_down = _h_down(model, i, op, need_dx, train_w)
        sel = tuple(channels.get(i, ())) if train_w else ()
        if sel and (list(sel) != sorted(set(sel)) or sel[-1] >= out_c or len(sel) >= out_c):
            raise _refuse(i, op, f"channel list {sel} is not ascending, distinct and below {out_c}")
        s_wmax = float(s_w.max())
        m = quant.round_half_away(32768.0 * 2.0**-h_down * s_w / s_wmax).astype(np.int64)
        grad_scale = c * s_wmax * s_x * 2.0**(h_down - H_SHIFT)
        base = spec.lr * grad_scale * 2.0**RES_BITS
        s_b = _bias_scales(model, op, s_x, s_w)
        w_upd = update_multipliers(base / (s_w * s_w) if spec.qas else np.full(len(s_w), base))
        b_upd = update_multipliers(base / (s_b * s_b) if spec.qas else np.full(len(s_b), base))
        kept = (int(np.prod(x.shape)) if train_w else 0) + (int(np.prod(y.shape)) if mask else 0)
        ops[i] = QTrainOp(i, op.kind, train_w, train_b, need_dx, mask, sel, m, w_upd, b_upd, grad_scale, c, kept,
                          h_down)
        c = c * s_wmax
    return QTrainPlan(first_bwd=first, lr=spec.lr, qas=spec.qas, ops=dict(sorted(ops.items())), loss=loss,
                      recon=recon)


def _add_backward(model: QModel, i: int, first: int, c: float, merges: dict[int, tuple[int, float]]) -> QTrainOp:
    """A residual ADD on the backward path: its gradient goes to both inputs unscaled (c and E unchanged). When the
    skip input is made on the path, the op where its branch starts (the op after its producer) will add the skip's
    gradient to its own input gradient: recorded in ``merges``."""
    op = model.ops[i]
    o = op.options
    assert isinstance(o, AddOptions)
    x1, x2 = op.inputs[:2]
    if x1 == x2:
        raise _refuse(i, op, "backward needs two different inputs (x + x)")
    skip = x2 if model.ops[i - 1].outputs[0] == x1 else x1
    producer = next((j for j in range(i) if model.ops[j].outputs[0] == skip), -1)
    skip_to = producer + 1 if producer >= first else -1
    if skip_to >= 0:
        start = model.ops[skip_to]
        if start.kind not in MERGING:
            raise _refuse(i, op, f"the residual branch starts at operator {skip_to} ({start.kind}); a branch may start "
                                 f"at {', '.join(MERGING)}")
        readers = [j for j in range(skip_to + 1, i) if skip in _data_inputs(model.ops[j])]
        if readers:
            raise _refuse(i, op, f"its skip input is read again by operator {readers[0]} inside the branch")
        merges[skip_to] = (i, c)
    none, mask = np.zeros((0, 2), np.int64), o.activation != "NONE"  # a fused activation: its output is kept
    return QTrainOp(i, op.kind, False, False, True, mask, (), np.zeros(0, np.int64), none, none, 0.0, c,
                    int(np.prod(model.tensors[op.outputs[0]].shape)) if mask else 0, skip_to=skip_to)


def _merging(model: QModel, top: QTrainOp, add: int, c_skip: float, c: float) -> QTrainOp:
    """Op ``top`` with the merge of ADD ``add``'s skip gradient: the multiplier of c_skip / c, the two constants."""
    mult, shift = update_multiplier(c_skip / c)
    if mult == 0 or abs(shift) > MERGE_SHIFT_MAX:
        raise _refuse(add, model.ops[add], f"the skip and branch gradients' scales are 2^{shift} apart (the device "
                                           f"merges within 2^{MERGE_SHIFT_MAX})")
    return dataclasses.replace(top, merge_from=add, merge=(mult, shift))


RECON_SHIFT_MAX = 16  # the device rescales input codes by x·2^shift first: |x − zp| ≤ 255 stays inside int32


def _loss(model: QModel, kind: str) -> tuple[str, tuple[int, int], float]:
    """The loss's multiplier (a reconstruction's) and the loss gradient's constant c, checking the graph allows it.

    Cross-entropy needs a graph ending in SOFTMAX: the gradient is taken at its input, c = 1/256. A reconstruction
    (an autoencoder, the profile's ``loss = "reconstruction"``) needs a graph without SOFTMAX and with as many
    outputs as inputs: the gradient of the mean squared error, 2·(y − x)/N, is taken in output codes, c = 2·s_y/N,
    the input rescaled by the multiplier of s_x/s_y."""
    n = len(model.ops)
    out, inp = model.tensors[model.outputs[0]], model.tensors[model.inputs[0]]
    size, n_in = int(np.prod(out.shape)), int(np.prod(inp.shape))
    softmax = n >= 2 and model.ops[-1].kind == "SOFTMAX"
    if kind == CROSS_ENTROPY:
        if not softmax:
            hint = ' (an autoencoder? set loss = "reconstruction" in the profile)' if size == n_in else ""
            raise QPlanError(f"training with the cross-entropy loss needs a graph ending in SOFTMAX; this one ends "
                             f"in {model.ops[-1].kind if n else 'nothing'}{hint}")
        if not 2 <= size <= MAX_CLASSES:  # the device refuses such a plan at load; say so before anything is flashed
            raise QPlanError(f"the graph has {size} output classes; on-device training supports 2..{MAX_CLASSES}")
        return CROSS_ENTROPY, (0, 0), 1.0 / 256.0
    if kind != RECONSTRUCTION:
        raise QPlanError(f"unknown loss {kind!r}: {CROSS_ENTROPY} or {RECONSTRUCTION}")
    if softmax or size != n_in:
        raise QPlanError(f"the reconstruction loss needs an autoencoder, without SOFTMAX and with as many outputs as "
                         f"inputs; this graph ends in {model.ops[-1].kind} with {size} outputs for {n_in} inputs")
    (s_y, _), (s_x, _) = int8prep.qparams(out), int8prep.qparams(inp)
    mult, shift = quant.quantize_multiplier(s_x / s_y)
    if mult == 0 or shift > RECON_SHIFT_MAX:
        raise QPlanError(f"input scale {s_x:.6g} and output scale {s_y:.6g} are too far apart (at most a factor "
                         f"2^{RECON_SHIFT_MAX}) to compare the reconstruction's codes in int32")
    return RECONSTRUCTION, (int(mult), int(shift)), 2.0 * s_y / size


def _h_down(model: QModel, i: int, op: QOp, need_dx: bool, train_w: bool) -> int:
    """The fewest bits h gives up (h_down, 0..H_DOWN_MAX) so that the op's int32 gradient accumulators cannot
    overflow: an op with many output pixels (VWW's 24×24 convs) scales its output gradient down instead of being
    refused. Each bit costs one bit of h's precision (15 at h_down 0)."""
    for h_down in range(H_DOWN_MAX + 1):
        if _accumulator_bounds(model, op, need_dx, train_w, h_down) is None:
            return h_down
    raise _refuse(i, op, str(_accumulator_bounds(model, op, need_dx, train_w, H_DOWN_MAX)))


def _accumulator_bounds(model: QModel, op: QOp, need_dx: bool, train_w: bool, h_down: int = 0) -> str | None:
    """Why a weighted op's int32 gradient accumulators could overflow, or None (the device checks the same): its input
    gradient sums ``fan`` products |h|·|W̄| <= (16,256 >> h_down)·127, its bias gradient one h per output pixel, its
    weight gradient one h·(x − zp) (|x − zp| <= 255) per output pixel."""
    w, y = model.tensors[op.inputs[1]], model.tensors[op.outputs[0]]
    if op.kind == "FULLY_CONNECTED":
        fan, pixels = w.shape[0], 1
    elif op.kind == "DEPTHWISE_CONV_2D":  # an input feeds dm channels at each tap
        dm = w.shape[3] // model.tensors[op.inputs[0]].shape[3]
        fan, pixels = w.shape[1] * w.shape[2] * dm, y.shape[1] * y.shape[2]
    else:
        fan, pixels = w.shape[0] * w.shape[1] * w.shape[2], y.shape[1] * y.shape[2]
    h_max = H_MAX >> h_down
    if need_dx and fan * h_max * 127 > I32_MAX:
        return f"{fan} products per input are too many for int32 input-gradient accumulators"
    if pixels * h_max * (255 if train_w else 1) > I32_MAX:
        return (f"{pixels} output pixels are too many for int32 {'weight' if train_w else 'bias'}-gradient "
                f"accumulators")
    return None


def _row(model: QModel, op: QOp) -> int:
    """Weights per output channel (depthwise: the taps); 0 for ops without weights."""
    if op.kind not in TRAINABLE_OPS:
        return 0
    w = model.tensors[op.inputs[1]]
    if op.kind == "DEPTHWISE_CONV_2D":
        return int(w.shape[1] * w.shape[2])
    return int(np.prod(w.shape[1:]))


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _train_buffers(model: QModel, tplan: QTrainPlan, acts: list[QBuffer]) -> list[QBuffer]:
    """Forward buffers with lifetimes extended for backward, plus trained copies, residuals, gradients, scratch.

    Times: op i runs forward at i and backward at 2n − i (n ops; the loss gradient at n + 1); persistent buffers
    span the whole run."""
    n, highest = len(model.ops), tplan.top
    keep: dict[int, int] = {model.outputs[0]: n + 1}  # the softmax output feeds the logits gradient
    if tplan.loss == RECONSTRUCTION:  # and the input is the reconstruction's target
        keep[model.inputs[0]] = n + 1
    for i, top in tplan.ops.items():
        op = model.ops[i]
        if top.train_w:
            keep[op.inputs[0]] = max(keep.get(op.inputs[0], 0), 2 * n - i)
        if top.mask:
            keep[op.outputs[0]] = max(keep.get(op.outputs[0], 0), 2 * n - i)
        if top.kind == "MAX_POOL_2D" and top.need_dx:
            keep[op.inputs[0]] = max(keep.get(op.inputs[0], 0), 2 * n - i)
    out = [QBuffer(b.name, b.size, b.start, max([b.end, *(keep[t] for t in b.tensors if t in keep)]),
                   tensors=b.tensors) for b in acts]
    first, always = tplan.first_bwd, (-2, 2 * n + 1)
    grad_name = {i: f"g{i}" for i in range(first, highest + 1)}
    for i in range(highest, first, -1):  # a reshape's input gradient is its output gradient
        if model.ops[i].kind == "RESHAPE":
            grad_name[i - 1] = grad_name[i]
    grad_span: dict[str, list[int]] = {}
    grad_size: dict[str, int] = {}
    for i in range(first, highest + 1):
        name = grad_name[i]
        span = grad_span.setdefault(name, [2 * n - (i + 1), 2 * n - i])
        span[0], span[1] = min(span[0], 2 * n - (i + 1)), max(span[1], 2 * n - i)
        grad_size[name] = max(grad_size.get(name, 0), int(np.prod(model.tensors[model.ops[i].outputs[0]].shape)))
    out += [QBuffer(name, _align(grad_size[name]), a, b, kind="gradients") for name, (a, b) in grad_span.items()]
    tensors = sum(top.train_w + top.train_b for top in tplan.ops.values())
    out.append(QBuffer("gstat", GSTAT_SLOT * tensors, *always, kind="gradients"))  # the step's gradient statistics
    for i, top in tplan.ops.items():
        if top.kind == "RESHAPE":
            continue
        op = model.ops[i]
        if top.kind == "ADD":  # its skip input's gradient waits for the branch start: exponent (int32), then codes
            if top.skip_to >= 0:
                n_skip = int(np.prod(model.tensors[op.outputs[0]].shape))
                out.append(QBuffer(f"skip{i}", _align(4 + n_skip), 2 * n - i, 2 * n - top.skip_to, kind="gradients"))
            continue
        out_c, row = len(top.m), _row(model, op)
        n_out = int(np.prod(model.tensors[op.outputs[0]].shape))
        n_in = int(np.prod(model.tensors[op.inputs[0]].shape))
        if top.kind in PARAMLESS:
            out.append(QBuffer(f"scratch{i}", _scratch_bytes(top, n_out, n_in, 0), 2 * n - i, 2 * n - i,
                               kind="gradients"))
            continue
        rows = len(top.channels) or out_c
        if top.train_w:  # a depthwise op trains in a copy of its whole tensor (docs/qplan-format.md)
            copied = out_c if op.kind == "DEPTHWISE_CONV_2D" else rows
            out += [QBuffer(f"w{i}", _align(copied * row), *always, kind="weights"),
                    QBuffer(f"wres{i}", _align(2 * rows * row), *always, kind="optimizer")]
        if top.train_b:
            out += [QBuffer(f"b{i}", 4 * out_c, *always, kind="weights"),
                    QBuffer(f"bres{i}", _align(2 * out_c), *always, kind="optimizer")]
        if top.train_w or top.train_b:
            out.append(QBuffer(f"eff{i}", 4 * out_c, *always, kind="weights"))
        out.append(QBuffer(f"scratch{i}", _scratch_bytes(top, n_out, n_in, row), 2 * n - i, 2 * n - i,
                           kind="gradients"))
        if top.channels and op.kind == "CONV_2D":
            y = model.tensors[op.outputs[0]]
            group = min(len(top.channels), SPARSE_GROUP)  # the device recomputes this many listed channels at once
            out.append(QBuffer(f"fwdtmp{i}", _align(y.shape[1] * y.shape[2] * group), i, i, kind="gradients"))
    return out


def _scratch_bytes(top: QTrainOp, n_out: int, n_in: int, row: int) -> int:
    need = max(n_in if top.need_dx else 0, row if top.train_w else 0)
    return _align(2 * n_out) + 4 * need


def _train_section(model: QModel, tplan: QTrainPlan, off: dict[str, int], consts: _Blob) -> int:
    """Appends the training section (header, one record per op, tables) to the constants; returns its offset."""
    n = len(model.ops)
    records = bytearray(TRAIN_RECORD * n)
    grad_off: dict[int, int] = {}
    highest = tplan.top
    for i in range(highest, tplan.first_bwd - 1, -1):
        name = f"g{i}"
        j = i
        while name not in off:  # a reshape above shares its output gradient
            j += 1
            name = f"g{j}"
        grad_off[i] = off[name]
    for i, top in tplan.ops.items():
        op = model.ops[i]
        flags = (top.train_w * TF_TRAIN_W | top.train_b * TF_TRAIN_B | top.need_dx * TF_NEED_DX |
                 top.mask * TF_MASK)
        dout = grad_off[i]
        din = grad_off[i - 1] if top.need_dx else 0
        rec = dict.fromkeys(TQPL_TRAIN_RECORD.offsets(), 0) | {"flags": flags, "dout": dout, "din": din}
        if top.kind == "ADD" and top.skip_to >= 0:
            rec["skip"] = off[f"skip{i}"]
        if top.merge_from >= 0:  # a residual branch starts here: the ADD's skip gradient and the constants' ratio
            rec |= {"flags": flags | TF_MERGE, "skip": off[f"skip{top.merge_from}"],
                    "merge": consts.add(np.array(top.merge, "<i4").tobytes())}
        if top.kind in ("RESHAPE", "ADD"):
            records[TRAIN_RECORD * i: TRAIN_RECORD * (i + 1)] = TQPL_TRAIN_RECORD.pack(rec)
            continue
        if top.kind in PARAMLESS:
            rec |= {"scratch": off[f"scratch{i}"],
                    "scratch_bytes": _scratch_bytes(top, int(np.prod(model.tensors[op.outputs[0]].shape)),
                                                    int(np.prod(model.tensors[op.inputs[0]].shape)), 0)}
            records[TRAIN_RECORD * i: TRAIN_RECORD * (i + 1)] = TQPL_TRAIN_RECORD.pack(rec)
            continue
        ch_off = consts.add(np.asarray(top.channels, "<u2").tobytes()) if top.channels else 0
        m_off = consts.add(top.m.astype("<i4").tobytes())
        upd_off = 0
        if top.train_w or top.train_b:
            upd_off = consts.add(np.concatenate([top.w_upd, top.b_upd]).astype("<i4").tobytes())
        rec |= {"h_down": top.h_down, "ch_count": len(top.channels), "ch_off": ch_off, "w_ram": off.get(f"w{i}", 0),
                "wres_ram": off.get(f"wres{i}", 0), "b_ram": off.get(f"b{i}", 0), "bres_ram": off.get(f"bres{i}", 0),
                "eff_ram": off.get(f"eff{i}", 0), "scratch": off[f"scratch{i}"],
                "scratch_bytes": _scratch_bytes(top, int(np.prod(model.tensors[op.outputs[0]].shape)),
                                                int(np.prod(model.tensors[op.inputs[0]].shape)), _row(model, op)),
                "m_off": m_off, "upd_off": upd_off, "fwd_tmp": off.get(f"fwdtmp{i}", 0)}
        records[TRAIN_RECORD * i: TRAIN_RECORD * (i + 1)] = TQPL_TRAIN_RECORD.pack(rec)
    recs_off = consts.add(bytes(records))
    head = TQPL_TRAIN_HEADER.pack({"first_bwd": tplan.first_bwd, "qas": int(tplan.qas), "lr": tplan.lr,
                                   "loss": int(tplan.loss == RECONSTRUCTION), "dlogits": grad_off[highest],
                                   "records": recs_off, "gstat": off["gstat"], "recon_mult": tplan.recon[0],
                                   "recon_shift": tplan.recon[1]})
    return consts.add(head)


# --------------------------------------------------------------------------------------------- datasets


