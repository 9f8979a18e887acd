"""Int8 plan stage: compile an imported int8 graph (`QModel`) into a TQPL blob the firmware runs (docs/qplan-format.md).

The device executes the graph op by op with integer kernels bit-exact with `bench.int8ref` (hence tflite-micro). Every
constant the kernels need is computed here once, with the very functions `bench.int8ref` uses: the requantisation
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

import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench import int8ref, quant
from bench.plan import DATASET_HEADER, DATASET_MAGIC, _finish
from bench.tflite_io import (
    AddOptions,
    ConvOptions,
    FullyConnectedOptions,
    PoolOptions,
    QModel,
    QOp,
    QTensor,
    SoftmaxOptions,
)

QPLAN_MAGIC = 0x4C505154  # "TQPL"
QPLAN_HEADER = 64
TENSOR_RECORD = 32
OP_RECORD = 64
MAX_OPS = 64
MAX_TENSORS = 512
NONE16 = 0xFFFF
NONE32 = 0xFFFFFFFF
ALIGN = 4
OP_CODES = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 3, "AVERAGE_POOL_2D": 4, "MEAN": 5, "ADD": 6,
            "RESHAPE": 7, "SOFTMAX": 8}
OP_NAMES = {code: name for name, code in OP_CODES.items()}
KIND_ACTIVATION, KIND_CONST_I8, KIND_CONST_I32 = 1, 2, 3
DTYPE_U8, DTYPE_I8 = 0, 1  # dataset header byte 44
ADD_LEFT_SHIFT = 20


class QPlanError(ValueError):
    """The graph uses something the int8 engine cannot run; the message names the operator index."""


@dataclass(frozen=True)
class QTechnique:
    """What an int8 run does (`bench.image` names plans by model and technique)."""

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


@dataclass
class QPlan:
    """A compiled int8 graph: tensor table, op records, constant data and the arena plan."""

    model: QModel
    tensor_ids: list[int]  # TQPL tensor index -> QModel tensor index
    buffers: tuple[QBuffer, ...]
    arena_bytes: int
    macs: list[int]  # per op
    technique: QTechnique = field(default_factory=QTechnique)
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
        struct.pack_into("<II", body, 16, self.plan_hash, self.arena_bytes)
        struct.pack_into("<I", body, 24, dataset_addr)
        return _finish(bytes(body), crc_at=12)

    def offset_of(self, tensor: int) -> int:
        """Arena offset of a QModel activation tensor."""
        return next(b.offset for b in self.buffers if tensor in b.tensors)

    def buffer_table(self) -> list[dict[str, int | str]]:
        return [{"name": b.name, "bytes": b.size, "offset": b.offset, "live": f"{b.start}..{b.end}"}
                for b in self.buffers]


# --------------------------------------------------------------------------------------------- checks


def _qp(t: QTensor) -> tuple[float, int]:
    assert t.scale is not None and t.zero_point is not None
    return float(t.scale[0]), int(t.zero_point[0])


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
            _, zp = _qp(model.tensors[op.outputs[0]])
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


def place(buffers: list[QBuffer]) -> list[QBuffer]:
    """Greedy first fit, largest first, among buffers whose lifetimes overlap (as bench.plan places fp32 buffers)."""
    placed: list[QBuffer] = []
    for b in sorted(buffers, key=lambda b: (-b.size, b.start, b.name)):
        clashes = sorted((p.offset, p.offset + p.size) for p in placed if p.start <= b.end and b.start <= p.end)
        offset = 0
        for lo, hi in clashes:
            if offset + b.size <= lo:
                break
            offset = max(offset, hi)
        placed.append(QBuffer(b.name, b.size, b.start, b.end, offset, b.tensors))
    return sorted(placed, key=lambda b: b.offset)


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


def _tensor_record(model: QModel, t: int, offset: int, consts: _Blob) -> bytes:
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
    return struct.pack("<BBBB4HIIifI", kind, 0, len(tensor.shape), 0, *_dims(tensor.shape), offset,
                       count * esize, zp if kind == KIND_ACTIVATION else 0, scale, scales_off)


def _rq_table(pairs: list[tuple[int, int]]) -> bytes:
    for m, s in pairs:
        if not (0 <= m <= quant.INT32_MAX and -31 <= s <= 30):
            raise QPlanError(f"requantisation multiplier {m} / shift {s} out of range")
    return b"".join(struct.pack("<ii", int(m), int(s)) for m, s in pairs)


def _folded_bias(model: QModel, op: QOp) -> np.ndarray:
    """bias - zp_in * sum(w) per output channel: the input zero point hoisted out of the device's inner loops."""
    w = model.tensors[op.inputs[1]].data
    assert w is not None
    _, zp_in = _qp(model.tensors[op.inputs[0]])
    w64 = w.astype(np.int64)
    wsum = w64.sum(axis=(0, 1, 2)) if op.kind == "DEPTHWISE_CONV_2D" else w64.reshape(len(w64), -1).sum(axis=1)
    eff = int8ref._bias(model, op, len(wsum)) - zp_in * wsum
    if eff.min() < quant.INT32_MIN or eff.max() > quant.INT32_MAX:
        raise QPlanError(f"{op.kind}: folded bias overflows int32")
    return eff


def _pads(x: QTensor, k: tuple[int, int], stride: tuple[int, int], padding: str) -> tuple[int, int]:
    return (int8ref._pads(x.shape[1], k[0], stride[0], padding)[0],
            int8ref._pads(x.shape[2], k[1], stride[1], padding)[0])


def _op_record(model: QModel, op: QOp, index_of: dict[int, int], consts: _Blob) -> tuple[bytes, int]:
    """The 64-byte op record and the op's multiply-accumulate count."""
    tensors, o = model.tensors, op.options
    x, y = tensors[op.inputs[0]], tensors[op.outputs[0]]
    (s_in, _), (s_out, zp_out) = _qp(x), _qp(y)
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
        mult, shift = int8ref._multipliers(s_in, w, s_out)
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
    elif op.kind == "AVERAGE_POOL_2D":
        assert isinstance(o, PoolOptions)
        stride_h, stride_w = o.stride
        k_h, k_w = o.filter
        same = int(o.padding == "SAME")
        pad_t, pad_l = _pads(x, o.filter, o.stride, o.padding)
        lo, hi = quant.activation_range(o.activation, s_out, zp_out)
    elif op.kind == "MEAN":
        n = x.shape[1] * x.shape[2]
        rq_off = consts.add(_rq_table([int8ref._mean_multiplier(s_in, s_out, n)]))
    elif op.kind == "ADD":
        assert isinstance(o, AddOptions)
        in1 = index_of[op.inputs[1]]
        s2, _ = _qp(tensors[op.inputs[1]])
        twice_max = 2.0 * max(s_in, s2)
        pairs = [quant.quantize_multiplier(s_in / twice_max), quant.quantize_multiplier(s2 / twice_max),
                 quant.quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * s_out))]
        rq_off = consts.add(_rq_table(pairs))
        param0 = ADD_LEFT_SHIFT
        lo, hi = quant.activation_range(o.activation, s_out, zp_out)
    elif op.kind == "SOFTMAX":
        assert isinstance(o, SoftmaxOptions)
        mult, shift, diff_min = int8ref._softmax_params(o.beta, s_in)
        rq_off = consts.add(_rq_table([(mult, shift)]))
        param0 = diff_min
    record = struct.pack("<8B4H2H2hIIiI24x", OP_CODES[op.kind], flags, stride_h, stride_w, k_h, k_w, dm, same,
                         index_of[op.inputs[0]], in1, in2, index_of[op.outputs[0]], pad_t, pad_l, lo, hi, rq_off,
                         bias_off, param0, macs)
    return record, macs


def compile_qplan(model: QModel) -> QPlan:
    """The TQPL plan of an int8 graph: validated, arena planned, constants precomputed."""
    _check(model)
    placed = place(_activation_buffers(model))
    arena = max((b.offset + b.size for b in placed), default=0)
    act_off = {t: b.offset for b in placed for t in b.tensors}
    used: list[int] = [model.inputs[0]]
    for op in model.ops:
        ins = op.inputs if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") else _data_inputs(op)
        for t in (*ins, *op.outputs):
            if t >= 0 and t not in used:
                used.append(t)
    if len(used) > MAX_TENSORS:
        raise QPlanError(f"{len(used)} tensors; TQPL plans hold at most {MAX_TENSORS}")
    index_of = {t: i for i, t in enumerate(used)}
    tensors_off = QPLAN_HEADER
    ops_off = tensors_off + TENSOR_RECORD * len(used)
    consts = _Blob(ops_off + OP_RECORD * len(model.ops))
    t_records = b"".join(_tensor_record(model, t, act_off.get(t, 0), consts) for t in used)
    o_records, macs = bytearray(), []
    for op in model.ops:
        rec, m = _op_record(model, op, index_of, consts)
        o_records += rec
        macs.append(m)
    total = consts.base + len(consts.data)
    header = struct.pack("<IHHIIIIIHHIIHHHHI12x", QPLAN_MAGIC, 1, QPLAN_HEADER, total, 0, 0, arena, 0, len(used),
                         len(model.ops), tensors_off, ops_off, index_of[model.inputs[0]],
                         index_of[model.outputs[0]], int(np.prod(model.tensors[model.outputs[0]].shape)), 0, 0)
    body = header + t_records + bytes(o_records) + bytes(consts.data)
    assert len(body) == total
    return QPlan(model=model, tensor_ids=used, buffers=tuple(placed), arena_bytes=arena, macs=macs, _body=body)


# --------------------------------------------------------------------------------------------- datasets


def int8_dataset_blob(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray,
                      n_classes: int, scale: float, zero_point: int) -> bytes:
    """A TDST dataset blob of int8 samples (dtype byte 1): the device copies them into the input tensor as is.

    ``scale``/``offset`` describe the real value of a code (``q·scale + offset``, offset = -zp·scale); the device
    does not use them.
    """
    x_train = np.asarray(x_train, np.int8).reshape(len(y_train), *np.shape(x_eval)[1:])
    h, w, c = x_eval.shape[1:]
    parts = [np.ascontiguousarray(a).view(np.uint8).tobytes() for a in (x_train, np.asarray(y_train, np.uint8),
                                                                         np.asarray(x_eval, np.int8),
                                                                         np.asarray(y_eval, np.uint8))]
    body = bytearray()
    for part in parts:
        body += part + b"\0" * (-len(part) % 4)
    header = struct.pack("<IHHIIIIHHHHffIBBh", DATASET_MAGIC, 1, DATASET_HEADER, DATASET_HEADER + len(body), 0,
                         len(y_train), len(y_eval), h, w, c, n_classes, scale, -zero_point * scale, DATASET_HEADER,
                         DTYPE_I8, 0, 0)
    return _finish(header + bytes(body), crc_at=12)


def grayscale_bmp(path: str | Path) -> np.ndarray:
    """An 8-bit palettised grayscale BMP as [h, w] uint8, top row first."""
    raw = Path(path).read_bytes()
    if raw[:2] != b"BM" or int.from_bytes(raw[28:30], "little") != 8:
        raise ValueError(f"{path}: not an 8-bit BMP")
    offset, width, height = (int.from_bytes(raw[a:b], "little", signed=True) for a, b in ((10, 14), (18, 22), (22, 26)))
    stride = (width + 3) // 4 * 4
    rows = np.frombuffer(raw[offset: offset + stride * abs(height)], np.uint8).reshape(abs(height), stride)[:, :width]
    return rows[::-1] if height > 0 else rows


def person_detect_samples(models_dir: str | Path, digits_u8: np.ndarray, n_digits: int = 4
                          ) -> tuple[np.ndarray, np.ndarray]:
    """person.bmp (label 1), no_person.bmp (0), then ``n_digits`` digits scaled up to 96x96 (label 0).

    TFLM's person_detection example feeds the image bytes reinterpreted as int8 (its generated arrays declare the
    0..255 pixels int8_t); the digits (u8, stretched to 0..255) get the same treatment.
    """
    d = Path(models_dir)
    images = [grayscale_bmp(d / "person.bmp"), grayscale_bmp(d / "no_person.bmp")]
    for digit in np.asarray(digits_u8)[:n_digits]:
        img = digit.reshape(digit.shape[0], digit.shape[1]).astype(np.float64)
        img = np.kron(img * (255.0 / max(float(img.max()), 1.0)), np.ones((12, 12)))
        images.append(np.clip(np.rint(img), 0, 255).astype(np.uint8))
    x = np.stack(images).view(np.int8).reshape(-1, 96, 96, 1)
    y = np.array([1, 0] + [0] * (len(images) - 2), np.uint8)
    return x, y


def quantized_inputs(model: QModel, x_float: np.ndarray) -> np.ndarray:
    """Real-valued inputs as the int8 codes of the graph's input tensor, shaped like it (without the batch)."""
    in_shape = model.tensors[model.inputs[0]].shape[1:]
    return int8ref.quantize_input(model, x_float).reshape(-1, *in_shape)


def input_qparams(model: QModel) -> tuple[float, int]:
    return _qp(model.tensors[model.inputs[0]])
