"""Independent int8 forward of a `QModel` in numpy integer arithmetic, bit-exact with TFLite Micro's reference kernels.

Why: int8 on-device training needs a host reference for every activation the device computes, exactly as the fp32
path has `bench.reference`. The kernels are written from the published quantised semantics (see `bench.quant`);
the tests hold them to tflite-micro's Python interpreter output byte for byte, per operator.

Arrays are NHWC with any leading batch size (the graph's batch of 1 is not enforced), so a whole evaluation set
runs in one call. Accumulators are int64 holding int32 values.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from bench import quant
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

Values = dict[int, np.ndarray]


# --------------------------------------------------------------------------------------------- helpers


def _qp(t: QTensor) -> tuple[float, int]:
    """Per-tensor (scale, zero point) of an activation."""
    assert t.scale is not None and t.zero_point is not None
    return float(t.scale[0]), int(t.zero_point[0])


def _out_size(size: int, k: int, stride: int, padding: str) -> int:
    return (size + stride - 1) // stride if padding == "SAME" else (size - k) // stride + 1


def _pads(size: int, k: int, stride: int, padding: str) -> tuple[int, int]:
    """(before, after) padding; SAME puts the odd pixel after, as TFLite does."""
    if padding == "VALID":
        return 0, 0
    total = max((_out_size(size, k, stride, padding) - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def _windows(x: np.ndarray, k: tuple[int, int], stride: tuple[int, int], padding: str, fill: int = 0) -> np.ndarray:
    """Patches [n, oh, ow, c, kh, kw] of ``x`` [n, h, w, c] padded with ``fill``."""
    (ph0, ph1), (pw0, pw1) = _pads(x.shape[1], k[0], stride[0], padding), _pads(x.shape[2], k[1], stride[1], padding)
    xp = np.pad(x, ((0, 0), (ph0, ph1), (pw0, pw1), (0, 0)), constant_values=fill)
    win = sliding_window_view(xp, k, axis=(1, 2))
    return win[:, :: stride[0], :: stride[1]]


def _multipliers(s_in: float, w: QTensor, s_out: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (or per-tensor) requantisation multipliers: s_in·s_w / s_out in double, as TFLM computes them."""
    assert w.scale is not None
    return quant.quantize_multipliers(np.float64(s_in) * w.scale.astype(np.float64) / np.float64(s_out))


def _bias(m: QModel, op: QOp, n: int) -> np.ndarray:
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        data = m.tensors[op.inputs[2]].data
        assert data is not None
        return data.astype(np.int64)
    return np.zeros(n, np.int64)


def _finish(m: QModel, op: QOp, acc: np.ndarray, s_in: float, w: QTensor, activation: quant.Activation) -> np.ndarray:
    """Requantise an accumulator with the last axis as output channel and clamp to the fused activation."""
    s_out, zp_out = _qp(m.tensors[op.outputs[0]])
    mult, shift = _multipliers(s_in, w, s_out)
    return quant.requantize(acc, mult, shift, zp_out, quant.activation_range(activation, s_out, zp_out))


# --------------------------------------------------------------------------------------------- operators


def conv_2d(m: QModel, op: QOp, v: Values) -> np.ndarray:
    """CONV_2D, per-channel: Σ (x - zp_in)·w + bias, requantised per output channel (padding contributes 0)."""
    o = op.options
    assert isinstance(o, ConvOptions)
    w = m.tensors[op.inputs[1]]
    assert w.data is not None
    s_in, zp_in = _qp(m.tensors[op.inputs[0]])
    x = v[op.inputs[0]].astype(np.int64) - zp_in
    patches = _windows(x, w.shape[1:3], o.stride, o.padding)  # [n, oh, ow, ci, kh, kw]
    acc = np.einsum("nhwcij,oijc->nhwo", patches, w.data.astype(np.int64)) + _bias(m, op, w.shape[0])
    return _finish(m, op, acc, s_in, w, o.activation)


def depthwise_conv_2d(m: QModel, op: QOp, v: Values) -> np.ndarray:
    """DEPTHWISE_CONV_2D: output channel ic·dm + j filters input channel ic only."""
    o = op.options
    assert isinstance(o, ConvOptions)
    w = m.tensors[op.inputs[1]]
    assert w.data is not None
    s_in, zp_in = _qp(m.tensors[op.inputs[0]])
    x = v[op.inputs[0]].astype(np.int64) - zp_in
    patches = _windows(x, w.shape[1:3], o.stride, o.padding)
    patches = np.repeat(patches, o.depth_multiplier, axis=3)  # [n, oh, ow, ci·dm, kh, kw]
    acc = np.einsum("nhwcij,ijc->nhwc", patches, w.data[0].astype(np.int64)) + _bias(m, op, w.shape[3])
    return _finish(m, op, acc, s_in, w, o.activation)


def fully_connected(m: QModel, op: QOp, v: Values) -> np.ndarray:
    """FULLY_CONNECTED over the input flattened to rows of the weights' input depth (per-channel or per-tensor)."""
    o, w = op.options, m.tensors[op.inputs[1]]
    assert isinstance(o, FullyConnectedOptions) and w.data is not None
    s_in, zp_in = _qp(m.tensors[op.inputs[0]])
    x = v[op.inputs[0]]
    rows = x.reshape(-1, w.shape[1]).astype(np.int64) - zp_in
    acc = rows @ w.data.astype(np.int64).T + _bias(m, op, w.shape[0])
    out = _finish(m, op, acc, s_in, w, o.activation)
    return out.reshape(len(x), *m.tensors[op.outputs[0]].shape[1:])


def _round_div(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    """total / count to nearest, ties away from zero, with C truncating division (TFLM's average rounding)."""
    half = count // 2
    num = np.where(total > 0, total + half, total - half)
    return np.sign(num) * (np.abs(num) // count)


def average_pool_2d(m: QModel, op: QOp, v: Values) -> np.ndarray:
    """AVERAGE_POOL_2D: mean of the in-bounds taps only (padding is not counted), no requantisation."""
    o = op.options
    assert isinstance(o, PoolOptions)
    x = v[op.inputs[0]].astype(np.int64)
    total = _windows(x, o.filter, o.stride, o.padding).sum(axis=(4, 5))
    ones = np.ones((1, *x.shape[1:3], 1), np.int64)
    count = _windows(ones, o.filter, o.stride, o.padding).sum(axis=(4, 5))
    s_out, zp_out = _qp(m.tensors[op.outputs[0]])
    lo, hi = quant.activation_range(o.activation, s_out, zp_out)
    return np.clip(_round_div(total, count), lo, hi).astype(np.int8)


def _mean_multiplier(s_in: float, s_out: float, n: int) -> tuple[int, int]:
    """s_in/s_out with 1/n folded into the multiplier (shifted up by ⌊log2 n⌋, at most 32 bits and shift+31)."""
    mult, shift = quant.quantize_multiplier(float(np.float64(s_in) / np.float64(s_out)))
    up = min(n.bit_length() - 1, 32, 31 + shift)
    return (mult << up) // n, shift - up


def mean(m: QModel, op: QOp, v: Values) -> np.ndarray:
    """MEAN over constant axes: Σ(x) - zp_in·n scaled by s_in/(s_out·n) in one multiplier."""
    axis_data = m.tensors[op.inputs[1]].data
    assert axis_data is not None
    x = v[op.inputs[0]].astype(np.int64)
    axes = tuple(sorted({int(a) % x.ndim for a in np.ravel(axis_data)}))
    n = int(np.prod([x.shape[a] for a in axes]))
    (s_in, zp_in), (s_out, zp_out) = _qp(m.tensors[op.inputs[0]]), _qp(m.tensors[op.outputs[0]])
    mult, shift = _mean_multiplier(s_in, s_out, n)
    acc = x.sum(axis=axes) - zp_in * n
    out = np.clip(quant.multiply_by_quantized_multiplier(acc, mult, shift) + zp_out, -128, 127).astype(np.int8)
    return out.reshape(len(x), *m.tensors[op.outputs[0]].shape[1:])


_ADD_LEFT_SHIFT = 20


def add(m: QModel, op: QOp, v: Values) -> np.ndarray:
    """ADD: both inputs shifted left 20 bits, rescaled to twice the larger input scale, summed, requantised."""
    assert isinstance(op.options, AddOptions)
    (s1, zp1), (s2, zp2) = _qp(m.tensors[op.inputs[0]]), _qp(m.tensors[op.inputs[1]])
    s_out, zp_out = _qp(m.tensors[op.outputs[0]])
    twice_max = 2.0 * max(s1, s2)
    m1, sh1 = quant.quantize_multiplier(s1 / twice_max)
    m2, sh2 = quant.quantize_multiplier(s2 / twice_max)
    mo, sho = quant.quantize_multiplier(twice_max / ((1 << _ADD_LEFT_SHIFT) * s_out))
    a = quant.multiply_by_quantized_multiplier((v[op.inputs[0]].astype(np.int64) - zp1) << _ADD_LEFT_SHIFT, m1, sh1)
    b = quant.multiply_by_quantized_multiplier((v[op.inputs[1]].astype(np.int64) - zp2) << _ADD_LEFT_SHIFT, m2, sh2)
    lo, hi = quant.activation_range(op.options.activation, s_out, zp_out)
    return np.clip(quant.multiply_by_quantized_multiplier(a + b, mo, sho) + zp_out, lo, hi).astype(np.int8)


def reshape(m: QModel, op: QOp, v: Values) -> np.ndarray:
    x = v[op.inputs[0]]
    return x.reshape(len(x), *m.tensors[op.outputs[0]].shape[1:])


_SCALED_DIFF_BITS = 5  # integer bits of the rescaled input difference (Q5.26)
_ACCUM_BITS = 12  # integer bits of the sum of exponentials (Q12.19)


def _softmax_params(beta: float, s_in: float) -> tuple[int, int, int]:
    """(multiplier, left shift, diff_min): the input difference scaled to Q5.26; smaller differences give 0."""
    real = min(float(beta) * float(s_in) * (1 << (31 - _SCALED_DIFF_BITS)), 2.0**31 - 1.0)
    mult, shift = quant.quantize_multiplier(real)
    radius = ((1 << _SCALED_DIFF_BITS) - 1) * (1 << (31 - _SCALED_DIFF_BITS)) / (1 << shift)
    return mult, shift, -int(np.floor(radius))


def softmax(m: QModel, op: QOp, v: Values) -> np.ndarray:
    """int8 SOFTMAX on the last axis with gemmlowp fixed-point exp; output scale 1/256, zero point -128."""
    assert isinstance(op.options, SoftmaxOptions)
    s_in, _ = _qp(m.tensors[op.inputs[0]])
    mult, shift, diff_min = _softmax_params(op.options.beta, s_in)
    x = v[op.inputs[0]].astype(np.int64)
    diff = x - x.max(axis=-1, keepdims=True)
    live = diff >= diff_min
    scaled = quant.multiply_by_quantized_multiplier(np.where(live, diff, 0), mult, shift)
    exps = np.where(live, quant.exp_on_negative_values(scaled, _SCALED_DIFF_BITS), 0)
    total = quant.rounding_divide_by_pot(exps, _ACCUM_BITS).sum(axis=-1, keepdims=True)
    recip, bits_over_unit = quant.reciprocal(total, _ACCUM_BITS)
    unsat = quant.rounding_divide_by_pot(quant.srdhm(recip, exps), bits_over_unit + 31 - 8)
    return np.where(live, np.clip(unsat - 128, -128, 127), -128).astype(np.int8)


def quantize_op(m: QModel, op: QOp, v: Values) -> np.ndarray:
    """QUANTIZE at the graph input: float32 → int8."""
    scale, zp = _qp(m.tensors[op.outputs[0]])
    return quant.quantize(v[op.inputs[0]], scale, zp)


def dequantize_op(m: QModel, op: QOp, v: Values) -> np.ndarray:
    """DEQUANTIZE at the graph output: int8 → float32."""
    scale, zp = _qp(m.tensors[op.inputs[0]])
    return quant.dequantize(v[op.inputs[0]], scale, zp)


KERNELS: dict[str, Callable[[QModel, QOp, Values], np.ndarray]] = {
    "CONV_2D": conv_2d,
    "DEPTHWISE_CONV_2D": depthwise_conv_2d,
    "FULLY_CONNECTED": fully_connected,
    "AVERAGE_POOL_2D": average_pool_2d,
    "MEAN": mean,
    "ADD": add,
    "RESHAPE": reshape,
    "SOFTMAX": softmax,
    "QUANTIZE": quantize_op,
    "DEQUANTIZE": dequantize_op,
}


# --------------------------------------------------------------------------------------------- graph


def forward(model: QModel, x: np.ndarray) -> list[np.ndarray]:
    """Outputs of every operator in order for input ``x`` (int8, or float32 when the graph starts with QUANTIZE).

    ``x`` may carry any batch size in front of the graph's input shape (a single sample without it is accepted).
    All outputs are int8 except a trailing DEQUANTIZE's float32.
    """
    in_t = model.tensors[model.inputs[0]]
    x = np.asarray(x, in_t.dtype)
    if x.ndim == len(in_t.shape) - 1:
        x = x[None]
    values: Values = {i: t.data for i, t in enumerate(model.tensors) if t.data is not None}
    values[model.inputs[0]] = x
    outs = []
    for op in model.ops:
        values[op.outputs[0]] = KERNELS[op.kind](model, op, values)
        outs.append(values[op.outputs[0]])
    return outs


def quantize_input(model: QModel, x: np.ndarray) -> np.ndarray:
    """Real-valued inputs as the int8 codes of the graph's input tensor."""
    scale, zp = _qp(model.tensors[model.inputs[0]])
    return quant.quantize(x, scale, zp)


def predict(model: QModel, x_int8: np.ndarray) -> np.ndarray:
    """Class index per sample (argmax of the final output)."""
    out = forward(model, x_int8)[-1]
    return out.reshape(len(out), -1).argmax(axis=1)
