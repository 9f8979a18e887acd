"""TFLite flatbuffers in and out: a typed int8 graph (`QModel`) read and written with the `tflite` schema package.

Why our own graph type: the bench plans, trains and checks int8 networks on the host without TensorFlow, and a
third-party model (TFLM's person_detect) must enter the very same path as the project's own digits models. So a
.tflite file becomes plain data here (tensors with their quantisation and constant contents, operators in execution
order with their options), and anything the int8 engine cannot run is refused on import with the operator index,
its name and the feature, never discovered later on a board.

QUANTIZE and DEQUANTIZE are accepted only at the graph edges (float32 graph input → int8, int8 → float32 graph
output); they are kept as operators and `bench.numerics.int8ref` runs them. Everything in between must be int8.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import flatbuffers
import numpy as np
import tflite
from tflite.utils import BUILTIN_OPCODE2NAME

from bench.model.qgraph import (
    Activation,
    AddOptions,
    ConvOptions,
    FullyConnectedOptions,
    MeanOptions,
    NoOptions,
    Options,
    Padding,
    PoolOptions,
    QModel,
    QOp,
    QTensor,
    ReshapeOptions,
    SoftmaxOptions,
)

_T = TypeVar("_T")
_R = TypeVar("_R")
SUPPORTED_OPS = (
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "AVERAGE_POOL_2D",
    "MAX_POOL_2D",
    "MEAN",
    "ADD",
    "RESHAPE",
    "SOFTMAX",
    "QUANTIZE",
    "DEQUANTIZE",
)
_OPCODE = {name: code for code, name in BUILTIN_OPCODE2NAME.items()}
_DTYPES = {
    tflite.TensorType.FLOAT32: "float32",
    tflite.TensorType.FLOAT16: "float16",
    tflite.TensorType.INT32: "int32",
    tflite.TensorType.UINT8: "uint8",
    tflite.TensorType.INT64: "int64",
    tflite.TensorType.BOOL: "bool",
    tflite.TensorType.INT16: "int16",
    tflite.TensorType.INT8: "int8",
}
_TYPE_OF = {name: code for code, name in _DTYPES.items()}
_TYPE_NAMES = {code: name for name, code in vars(tflite.TensorType).items() if name.isupper()}
MAX_LISTED_PROBLEMS = 40
_ACTIVATIONS: dict[int, Activation] = {
    tflite.ActivationFunctionType.NONE: "NONE",
    tflite.ActivationFunctionType.RELU: "RELU",
    tflite.ActivationFunctionType.RELU6: "RELU6",
}
_ACT_NAMES = {v: k for k, v in vars(tflite.ActivationFunctionType).items() if not k.startswith("_")}
_ACT_CODE = {name: code for code, name in _ACT_NAMES.items()}  # all of them, so tests can write refused ones
_PADDING: dict[int, Padding] = {tflite.Padding.SAME: "SAME", tflite.Padding.VALID: "VALID"}
_PAD_CODE = {name: code for code, name in _PADDING.items()}


class TFLiteImportError(ValueError):
    """The file uses an operator or a feature the int8 engine does not support (the message names both)."""


def _unsupported_op(index: int, kind: str) -> TFLiteImportError:
    return TFLiteImportError(f"operator {index}: {kind} is not supported (supported: {', '.join(SUPPORTED_OPS)})")


# --------------------------------------------------------------------------------------------- reading


def _options_table(fb_op: tflite.Operator, cls: type[_T]) -> _T | None:
    table = fb_op.BuiltinOptions()
    if table is None:
        return None
    opts = cls()
    opts.Init(table.Bytes, table.Pos)  # type: ignore[attr-defined]
    return opts


def _activation(where: str, code: int) -> Activation:
    if code not in _ACTIVATIONS:
        name = _ACT_NAMES.get(code, str(code))
        raise TFLiteImportError(f"{where}: fused activation {name} is not supported (supported: NONE, RELU, RELU6)")
    return _ACTIVATIONS[code]


def _read_conv(where: str, fb_op: tflite.Operator, depthwise: bool) -> ConvOptions:
    opts = _options_table(fb_op, tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions)
    if opts is None:
        raise TFLiteImportError(f"{where}: missing options")
    return ConvOptions(
        padding=_PADDING[opts.Padding()],
        stride=(opts.StrideH(), opts.StrideW()),
        activation=_activation(where, opts.FusedActivationFunction()),
        depth_multiplier=opts.DepthMultiplier() if depthwise else 1,
        dilation=(opts.DilationHFactor(), opts.DilationWFactor()),
    )


def _read_pool(where: str, fb_op: tflite.Operator) -> PoolOptions:
    opts = _options_table(fb_op, tflite.Pool2DOptions)
    if opts is None:
        raise TFLiteImportError(f"{where}: missing options")
    return PoolOptions(
        padding=_PADDING[opts.Padding()],
        stride=(opts.StrideH(), opts.StrideW()),
        filter=(opts.FilterHeight(), opts.FilterWidth()),
        activation=_activation(where, opts.FusedActivationFunction()),
    )


def _read_fc(where: str, fb_op: tflite.Operator) -> FullyConnectedOptions:
    opts = _options_table(fb_op, tflite.FullyConnectedOptions)
    if opts is None:
        return FullyConnectedOptions()
    if opts.WeightsFormat() != tflite.FullyConnectedOptionsWeightsFormat.DEFAULT:
        raise TFLiteImportError(f"{where}: shuffled weights format is not supported")
    act = _activation(where, opts.FusedActivationFunction())
    return FullyConnectedOptions(act, bool(opts.KeepNumDims()))


def _read_reshape(fb_op: tflite.Operator) -> ReshapeOptions:
    opts = _options_table(fb_op, tflite.ReshapeOptions)
    if opts is None or opts.NewShapeIsNone():
        return ReshapeOptions(None)
    return ReshapeOptions(tuple(int(d) for d in opts.NewShapeAsNumpy()))


def _read_options(where: str, kind: str, fb_op: tflite.Operator) -> Options:
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return _read_conv(where, fb_op, kind == "DEPTHWISE_CONV_2D")
    if kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        return _read_pool(where, fb_op)
    if kind == "FULLY_CONNECTED":
        return _read_fc(where, fb_op)
    if kind == "RESHAPE":
        return _read_reshape(fb_op)
    if kind == "MEAN":
        opts = _options_table(fb_op, tflite.ReducerOptions)
        return MeanOptions(bool(opts.KeepDims()) if opts is not None else False)
    if kind == "ADD":
        opts = _options_table(fb_op, tflite.AddOptions)
        code = opts.FusedActivationFunction() if opts is not None else 0
        return AddOptions(_activation(where, code))
    if kind == "SOFTMAX":
        opts = _options_table(fb_op, tflite.SoftmaxOptions)
        return SoftmaxOptions(float(opts.Beta()) if opts is not None else 1.0)
    return NoOptions()


def _op_name(fb_model: tflite.Model, fb_op: tflite.Operator) -> str:
    code = fb_model.OperatorCodes(fb_op.OpcodeIndex())
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if builtin == tflite.BuiltinOperator.CUSTOM:
        return f"CUSTOM({(code.CustomCode() or b'').decode()})"
    return BUILTIN_OPCODE2NAME.get(builtin, f"builtin {builtin}")


def _read_op(fb_model: tflite.Model, fb_op: tflite.Operator, index: int, problems: list[str]) -> QOp:
    """The operator; one whose kind is unsupported or whose options cannot be used is read without options, its
    problem added to ``problems`` (`validate` lists them all with the rest)."""
    kind = _op_name(fb_model, fb_op)
    ins = tuple(int(i) for i in fb_op.InputsAsNumpy()) if fb_op.InputsLength() else ()
    outs = tuple(int(i) for i in fb_op.OutputsAsNumpy()) if fb_op.OutputsLength() else ()
    if kind not in SUPPORTED_OPS:
        problems.append(str(_unsupported_op(index, kind)))
        return QOp(kind, ins, outs, NoOptions())
    options = _collect(problems, _read_options, f"operator {index}: {kind}", kind, fb_op)
    return QOp(kind, ins, outs, options if options is not None else NoOptions())


def _read_tensor(fb_model: tflite.Model, fb_t: tflite.Tensor, index: int) -> QTensor:
    name = (fb_t.Name() or b"").decode()
    if fb_t.Type() not in _DTYPES:
        kind = _TYPE_NAMES.get(fb_t.Type(), f"code {fb_t.Type()}")
        raise TFLiteImportError(f"tensor {index} ({name!r}): tensor type {kind} is not supported "
                                f"(supported: {', '.join(_TYPE_NAMES[c] for c in _DTYPES)})")
    dtype = _DTYPES[fb_t.Type()]
    shape = tuple(int(d) for d in fb_t.ShapeAsNumpy()) if fb_t.ShapeLength() else ()
    q = fb_t.Quantization()
    scale = zp = None
    qdim = 0
    if q is not None and not q.ScaleIsNone():
        scale = q.ScaleAsNumpy().astype(np.float32)
        zp = q.ZeroPointAsNumpy().astype(np.int64) if not q.ZeroPointIsNone() else np.zeros(len(scale), np.int64)
        qdim = q.QuantizedDimension()
    buf = fb_model.Buffers(fb_t.Buffer())
    data = None
    if buf is not None and buf.DataLength() > 0:
        data = np.frombuffer(buf.DataAsNumpy().tobytes(), np.dtype(dtype).newbyteorder("<")).astype(dtype)
        data = data.reshape(shape)
        data.flags.writeable = False
    return QTensor(name, shape, dtype, scale, zp, qdim, data)


def load_tflite(source: str | Path | bytes | bytearray) -> QModel:
    """Read a .tflite file (path or bytes) into a QModel, refusing unsupported operators and features. A file that
    is not a TFLite flatbuffer (wrong identifier, truncated, offsets out of bounds) is a `TFLiteImportError` naming
    it, never a struct error from deep inside the flatbuffer reader."""
    where = "the .tflite bytes" if isinstance(source, bytes | bytearray) else str(source)
    try:
        buf = bytes(source) if isinstance(source, bytes | bytearray) else Path(source).read_bytes()
    except OSError as exc:
        raise TFLiteImportError(f"{where}: cannot read: {exc.strerror or exc}") from None
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise TFLiteImportError(f"{where}: not a TFLite flatbuffer ({len(buf)} bytes, file identifier "
                                f"{buf[4:8]!r}, expected b'TFL3')")
    try:
        return _read_model(buf)
    except TFLiteImportError as exc:
        if isinstance(source, bytes | bytearray):
            raise
        raise TFLiteImportError(f"{where}: {exc}") from None
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as exc:
        raise TFLiteImportError(f"{where}: corrupt TFLite flatbuffer ({type(exc).__name__}: {exc})") from None


def _read_model(buf: bytes) -> QModel:
    fb_model = tflite.Model.GetRootAsModel(buf, 0)
    if fb_model.SubgraphsLength() != 1:
        raise TFLiteImportError(f"{fb_model.SubgraphsLength()} subgraphs: only single-subgraph models are supported")
    sg = fb_model.Subgraphs(0)
    problems: list[str] = []
    tensors = tuple(_collect(problems, _read_tensor, fb_model, sg.Tensors(i), i) for i in range(sg.TensorsLength()))
    ops = tuple(_read_op(fb_model, sg.Operators(i), i, problems) for i in range(sg.OperatorsLength()))
    if any(t is None for t in tensors):  # operators cannot be checked against tensors that could not be read
        raise _all(problems)
    model = QModel(
        name=(fb_model.Description() or b"").decode(),
        tensors=tuple(t for t in tensors if t is not None),
        ops=ops,
        inputs=tuple(int(i) for i in sg.InputsAsNumpy()),
        outputs=tuple(int(i) for i in sg.OutputsAsNumpy()),
    )
    validate(model, problems)
    return model


# --------------------------------------------------------------------------------------------- validation

_WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def _tensor_label(model: QModel, t: int) -> str:
    return f"tensor {t} ({model.tensors[t].name!r})"


def _check_int8_activation(model: QModel, where: str, role: str, t: int) -> None:
    tensor = model.tensors[t]
    if tensor.dtype != "int8":
        raise TFLiteImportError(
            f"{where}: {role} {_tensor_label(model, t)} is {tensor.dtype}; only int8 activations are supported"
        )
    if tensor.scale is None or tensor.per_channel:
        raise TFLiteImportError(f"{where}: {role} {_tensor_label(model, t)} needs per-tensor quantization")


def _check_weights(model: QModel, where: str, op: QOp) -> None:
    w, label = model.tensors[op.inputs[1]], _tensor_label(model, op.inputs[1])
    if w.dtype != "int8" or not w.is_constant:
        kind = "float weights" if w.dtype.startswith("float") else f"{w.dtype} weights"
        raise TFLiteImportError(f"{where}: {kind} ({label}) are not supported (constant int8 only)")
    if w.zero_point is None or np.any(w.zero_point != 0):
        raise TFLiteImportError(f"{where}: weights {label} must be symmetric (zero point 0)")
    if len(op.inputs) > 2 and op.inputs[2] >= 0 and model.tensors[op.inputs[2]].dtype != "int32":
        b = model.tensors[op.inputs[2]]
        label = _tensor_label(model, op.inputs[2])
        raise TFLiteImportError(f"{where}: {b.dtype} bias ({label}) is not supported (int32 only)")


def _check_edge_op(model: QModel, where: str, op: QOp) -> None:
    """QUANTIZE only from a float32 graph input, DEQUANTIZE only to a float32 graph output."""
    if op.kind == "QUANTIZE":
        src = model.tensors[op.inputs[0]]
        if op.inputs[0] not in model.inputs or src.dtype != "float32":
            raise TFLiteImportError(f"{where} is only supported from a float32 graph input")
        _check_int8_activation(model, where, "output", op.outputs[0])
    else:
        if op.outputs[0] not in model.outputs or model.tensors[op.outputs[0]].dtype != "float32":
            raise TFLiteImportError(f"{where} is only supported to a float32 graph output")
        _check_int8_activation(model, where, "input", op.inputs[0])


def _collect(problems: list[str], read: Callable[..., _R], *args: Any) -> _R | None:
    try:
        return read(*args)
    except TFLiteImportError as exc:
        problems.append(str(exc))
        return None


def _problem_order(problem: str) -> tuple[int, int]:
    """Tensors first, then operators, each by index."""
    kind, _, rest = problem.partition(" ")
    index = rest.split(":", 1)[0].split(" ", 1)[0]
    return (0 if kind == "tensor" else 1, int(index) if index.isdigit() else 0)


def _all(problems: list[str]) -> TFLiteImportError:
    if len(problems) == 1:
        return TFLiteImportError(problems[0])
    shown = problems[:MAX_LISTED_PROBLEMS]
    more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    return TFLiteImportError(f"{len(problems)} problems:\n  " + "\n  ".join(shown) + more)


def validate(model: QModel, known: list[str] | None = None) -> None:
    """Refuse what `bench.numerics.int8ref` and the int8 engine cannot run: every problem of every operator at
    once (after ``known``, those reading found), each naming the operator index and kind (and the tensor by name)."""
    problems = list(known or [])
    listed = {p.split(":", 1)[0] for p in problems}
    for i, op in enumerate(model.ops):
        if f"operator {i}" in listed:
            continue  # unsupported, or its options unreadable: listed already
        _collect(problems, _validate_op, model, i, op)
    if problems:
        raise _all(sorted(problems, key=_problem_order))


def _validate_op(model: QModel, i: int, op: QOp) -> None:
    where = f"operator {i}: {op.kind}"
    if op.kind not in SUPPORTED_OPS:
        raise _unsupported_op(i, op.kind)
    if op.kind in ("QUANTIZE", "DEQUANTIZE"):
        _check_edge_op(model, where, op)
        return
    data_inputs = op.inputs[:2] if op.kind == "ADD" else op.inputs[:1]
    for t in data_inputs:
        _check_int8_activation(model, where, "input", t)
    _check_int8_activation(model, where, "output", op.outputs[0])
    if op.kind in _WEIGHTED:
        _check_weights(model, where, op)
    if op.kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        t_in, t_out = model.tensors[op.inputs[0]], model.tensors[op.outputs[0]]
        same = (t_in.scale is not None and t_out.scale is not None and t_in.zero_point is not None
                and t_out.zero_point is not None and np.allclose(t_in.scale, t_out.scale)
                and np.array_equal(t_in.zero_point, t_out.zero_point))
        if not same:
            raise TFLiteImportError(f"{where}: input {t_in.name!r} and output {t_out.name!r} must share scale and "
                                    "zero point (TFLite's pool kernels do not requantise)")
    if isinstance(op.options, ConvOptions) and op.options.dilation != (1, 1):
        dh, dw = op.options.dilation
        raise TFLiteImportError(f"{where}: dilation {dh}x{dw} is not supported (only 1x1)")


# --------------------------------------------------------------------------------------------- writing


def _int_vector(b: flatbuffers.Builder, values: tuple[int, ...] | np.ndarray, dtype: str = "int32") -> int:
    return b.CreateNumpyVector(np.asarray(values, dtype))


def _write_quant(b: flatbuffers.Builder, t: QTensor) -> int | None:
    if t.scale is None:
        return None
    scale = b.CreateNumpyVector(np.asarray(t.scale, np.float32))
    zero_point = b.CreateNumpyVector(np.asarray(t.zero_point, np.int64))
    tflite.QuantizationParametersStart(b)
    tflite.QuantizationParametersAddScale(b, scale)
    tflite.QuantizationParametersAddZeroPoint(b, zero_point)
    tflite.QuantizationParametersAddQuantizedDimension(b, t.quantized_dimension)
    return tflite.QuantizationParametersEnd(b)


def _write_tensor(b: flatbuffers.Builder, t: QTensor, buffer: int) -> int:
    name = b.CreateString(t.name)
    shape = _int_vector(b, t.shape)
    quant = _write_quant(b, t)
    tflite.TensorStart(b)
    tflite.TensorAddShape(b, shape)
    tflite.TensorAddType(b, _TYPE_OF[t.dtype])
    tflite.TensorAddBuffer(b, buffer)
    tflite.TensorAddName(b, name)
    if quant is not None:
        tflite.TensorAddQuantization(b, quant)
    return tflite.TensorEnd(b)


def _write_buffer(b: flatbuffers.Builder, data: np.ndarray | None) -> int:
    raw = None
    if data is not None:
        payload = np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<")).tobytes()
        b.StartVector(1, len(payload), 16)  # 16-byte aligned so kernels may read int32/int64 in place
        b.head -= len(payload)
        b.Bytes[b.head : b.head + len(payload)] = payload
        raw = b.EndVector()
    tflite.BufferStart(b)
    if raw is not None:
        tflite.BufferAddData(b, raw)
    return tflite.BufferEnd(b)


def _write_conv_options(b: flatbuffers.Builder, kind: str, o: ConvOptions) -> tuple[int, int]:
    if kind == "CONV_2D":
        tflite.Conv2DOptionsStart(b)
        tflite.Conv2DOptionsAddPadding(b, _PAD_CODE[o.padding])
        tflite.Conv2DOptionsAddStrideH(b, o.stride[0])
        tflite.Conv2DOptionsAddStrideW(b, o.stride[1])
        tflite.Conv2DOptionsAddFusedActivationFunction(b, _ACT_CODE[o.activation])
        tflite.Conv2DOptionsAddDilationHFactor(b, o.dilation[0])
        tflite.Conv2DOptionsAddDilationWFactor(b, o.dilation[1])
        return tflite.BuiltinOptions.Conv2DOptions, tflite.Conv2DOptionsEnd(b)
    tflite.DepthwiseConv2DOptionsStart(b)
    tflite.DepthwiseConv2DOptionsAddPadding(b, _PAD_CODE[o.padding])
    tflite.DepthwiseConv2DOptionsAddStrideH(b, o.stride[0])
    tflite.DepthwiseConv2DOptionsAddStrideW(b, o.stride[1])
    tflite.DepthwiseConv2DOptionsAddDepthMultiplier(b, o.depth_multiplier)
    tflite.DepthwiseConv2DOptionsAddFusedActivationFunction(b, _ACT_CODE[o.activation])
    tflite.DepthwiseConv2DOptionsAddDilationHFactor(b, o.dilation[0])
    tflite.DepthwiseConv2DOptionsAddDilationWFactor(b, o.dilation[1])
    return tflite.BuiltinOptions.DepthwiseConv2DOptions, tflite.DepthwiseConv2DOptionsEnd(b)


def _write_pool_options(b: flatbuffers.Builder, o: PoolOptions) -> tuple[int, int]:
    tflite.Pool2DOptionsStart(b)
    tflite.Pool2DOptionsAddPadding(b, _PAD_CODE[o.padding])
    tflite.Pool2DOptionsAddStrideH(b, o.stride[0])
    tflite.Pool2DOptionsAddStrideW(b, o.stride[1])
    tflite.Pool2DOptionsAddFilterHeight(b, o.filter[0])
    tflite.Pool2DOptionsAddFilterWidth(b, o.filter[1])
    tflite.Pool2DOptionsAddFusedActivationFunction(b, _ACT_CODE[o.activation])
    return tflite.BuiltinOptions.Pool2DOptions, tflite.Pool2DOptionsEnd(b)


def _write_reshape_options(b: flatbuffers.Builder, o: ReshapeOptions) -> tuple[int, int]:
    new_shape = _int_vector(b, o.new_shape) if o.new_shape is not None else None
    tflite.ReshapeOptionsStart(b)
    if new_shape is not None:
        tflite.ReshapeOptionsAddNewShape(b, new_shape)
    return tflite.BuiltinOptions.ReshapeOptions, tflite.ReshapeOptionsEnd(b)


def _write_options(b: flatbuffers.Builder, kind: str, o: Options) -> tuple[int, int | None]:
    """(BuiltinOptions union type, table offset); built before the operator table starts."""
    if isinstance(o, ConvOptions):
        return _write_conv_options(b, kind, o)
    if isinstance(o, PoolOptions):
        return _write_pool_options(b, o)
    if isinstance(o, ReshapeOptions):
        return _write_reshape_options(b, o)
    if isinstance(o, FullyConnectedOptions):
        tflite.FullyConnectedOptionsStart(b)
        tflite.FullyConnectedOptionsAddFusedActivationFunction(b, _ACT_CODE[o.activation])
        tflite.FullyConnectedOptionsAddKeepNumDims(b, o.keep_num_dims)
        return tflite.BuiltinOptions.FullyConnectedOptions, tflite.FullyConnectedOptionsEnd(b)
    if isinstance(o, MeanOptions):
        tflite.ReducerOptionsStart(b)
        tflite.ReducerOptionsAddKeepDims(b, o.keep_dims)
        return tflite.BuiltinOptions.ReducerOptions, tflite.ReducerOptionsEnd(b)
    if isinstance(o, AddOptions):
        tflite.AddOptionsStart(b)
        tflite.AddOptionsAddFusedActivationFunction(b, _ACT_CODE[o.activation])
        return tflite.BuiltinOptions.AddOptions, tflite.AddOptionsEnd(b)
    if isinstance(o, SoftmaxOptions):
        tflite.SoftmaxOptionsStart(b)
        tflite.SoftmaxOptionsAddBeta(b, o.beta)
        return tflite.BuiltinOptions.SoftmaxOptions, tflite.SoftmaxOptionsEnd(b)
    return tflite.BuiltinOptions.NONE, None


def _write_op(b: flatbuffers.Builder, op: QOp, opcode_index: int) -> int:
    inputs, outputs = _int_vector(b, op.inputs), _int_vector(b, op.outputs)
    opt_type, opt = _write_options(b, op.kind, op.options)
    tflite.OperatorStart(b)
    tflite.OperatorAddOpcodeIndex(b, opcode_index)
    tflite.OperatorAddInputs(b, inputs)
    tflite.OperatorAddOutputs(b, outputs)
    if opt is not None:
        tflite.OperatorAddBuiltinOptionsType(b, opt_type)
        tflite.OperatorAddBuiltinOptions(b, opt)
    return tflite.OperatorEnd(b)


def _write_opcode(b: flatbuffers.Builder, kind: str) -> int:
    code = _OPCODE[kind]
    tflite.OperatorCodeStart(b)
    tflite.OperatorCodeAddBuiltinCode(b, code)
    tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))  # the int8 field readers before v2.4 use
    tflite.OperatorCodeAddVersion(b, 1)
    return tflite.OperatorCodeEnd(b)


def _offset_vector(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _write_subgraph(b: flatbuffers.Builder, model: QModel, buffer_of: list[int], opcode_of: dict[str, int]) -> int:
    tensors = _offset_vector(b, [_write_tensor(b, t, buffer_of[i]) for i, t in enumerate(model.tensors)])
    ops = _offset_vector(b, [_write_op(b, op, opcode_of[op.kind]) for op in model.ops])
    inputs, outputs = _int_vector(b, model.inputs), _int_vector(b, model.outputs)
    name = b.CreateString("main")
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, tensors)
    tflite.SubGraphAddInputs(b, inputs)
    tflite.SubGraphAddOutputs(b, outputs)
    tflite.SubGraphAddOperators(b, ops)
    tflite.SubGraphAddName(b, name)
    return tflite.SubGraphEnd(b)


def write_tflite(model: QModel, *, check: bool = True) -> bytes:
    """Serialise a QModel as a .tflite flatbuffer (schema v3; buffer 0 is the empty placeholder).

    ``check=False`` skips `validate`, to write graphs the importer must refuse (its tests use that).
    """
    if check:
        validate(model)
    b = flatbuffers.Builder(1 << 16)
    constants = [i for i, t in enumerate(model.tensors) if t.is_constant]
    buffer_of = [0] * len(model.tensors)
    for n, i in enumerate(constants, start=1):
        buffer_of[i] = n
    buffers = _offset_vector(b, [_write_buffer(b, None)] + [_write_buffer(b, model.tensors[i].data) for i in constants])
    kinds = list(dict.fromkeys(model.kinds()))
    opcode_of = {k: n for n, k in enumerate(kinds)}
    opcodes = _offset_vector(b, [_write_opcode(b, k) for k in kinds])
    subgraph = _offset_vector(b, [_write_subgraph(b, model, buffer_of, opcode_of)])
    description = b.CreateString(model.name)
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddOperatorCodes(b, opcodes)
    tflite.ModelAddSubgraphs(b, subgraph)
    tflite.ModelAddDescription(b, description)
    tflite.ModelAddBuffers(b, buffers)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())
