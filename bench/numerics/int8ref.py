"""Independent int8 forward of a `QModel` in numpy integer arithmetic, bit-exact with TFLite Micro's reference kernels.

Why: int8 on-device training needs a host reference for every activation the device computes, exactly as the fp32
path has `bench.numerics.fp32`. The kernels are written from the published quantised semantics (see
`bench.numerics.quant`);
the tests hold them to tflite-micro's Python interpreter output byte for byte, per operator.

Arrays are NHWC with any leading batch size (the graph's batch of 1 is not enforced), so a whole evaluation set
runs in one call. Accumulators are int64 holding int32 values.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

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
from bench.numerics import quant
from bench.numerics.int8prep import (
    ACCUM_BITS,
    ADD_LEFT_SHIFT,
    SCALED_DIFF_BITS,
    bias_codes,
    mean_multiplier,
    multipliers,
    qparams,
    softmax_params,
    windows,
)

Values = dict[int, np.ndarray]


# --------------------------------------------------------------------------------------------- helpers


def _finish(m: QModel, op: QOp, acc: np.ndarray, s_in: float, w: QTensor, activation: quant.Activation) -> np.ndarray:
    """Requantise an accumulator with the last axis as output channel and clamp to the fused activation."""
    s_out, zp_out = qparams(m.tensors[op.outputs[0]])
    mult, shift = multipliers(s_in, w, s_out)
    return quant.requantize(acc, mult, shift, zp_out, quant.activation_range(activation, s_out, zp_out))


# --------------------------------------------------------------------------------------------- operators


def conv_2d(m: QModel, op: QOp, v: Values) -> np.ndarray:
    """CONV_2D, per-channel: Σ (x - zp_in)·w + bias, requantised per output channel (padding contributes 0)."""
    o = op.options
    assert isinstance(o, ConvOptions)
    w = m.tensors[op.inputs[1]]
    assert w.data is not None
    s_in, zp_in = qparams(m.tensors[op.inputs[0]])
    x = v[op.inputs[0]].astype(np.int64) - zp_in
    patches = windows(x, w.shape[1:3], o.stride, o.padding)  # [n, oh, ow, ci, kh, kw]
    acc = np.einsum("nhwcij,oijc->nhwo", patches, w.data.astype(np.int64)) + bias_codes(m, op, w.shape[0])
    return _finish(m, op, acc, s_in, w, o.activation)


def depthwise_conv_2d(m: QModel, op: QOp, v: Values) -> np.ndarray:
    """DEPTHWISE_CONV_2D: output channel ic·dm + j filters input channel ic only."""
    o = op.options
    assert isinstance(o, ConvOptions)
    w = m.tensors[op.inputs[1]]
    assert w.data is not None
    s_in, zp_in = qparams(m.tensors[op.inputs[0]])
    x = v[op.inputs[0]].astype(np.int64) - zp_in
    patches = windows(x, w.shape[1:3], o.stride, o.padding)
    patches = np.repeat(patches, o.depth_multiplier, axis=3)  # [n, oh, ow, ci·dm, kh, kw]
    acc = np.einsum("nhwcij,ijc->nhwc", patches, w.data[0].astype(np.int64)) + bias_codes(m, op, w.shape[3])
    return _finish(m, op, acc, s_in, w, o.activation)


def fully_connected(m: QModel, op: QOp, v: Values) -> np.ndarray:
    """FULLY_CONNECTED over the input flattened to rows of the weights' input depth (per-channel or per-tensor)."""
    o, w = op.options, m.tensors[op.inputs[1]]
    assert isinstance(o, FullyConnectedOptions) and w.data is not None
    s_in, zp_in = qparams(m.tensors[op.inputs[0]])
    x = v[op.inputs[0]]
    rows = x.reshape(-1, w.shape[1]).astype(np.int64) - zp_in
    acc = rows @ w.data.astype(np.int64).T + bias_codes(m, op, w.shape[0])
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
    total = windows(x, o.filter, o.stride, o.padding).sum(axis=(4, 5))
    ones = np.ones((1, *x.shape[1:3], 1), np.int64)
    count = windows(ones, o.filter, o.stride, o.padding).sum(axis=(4, 5))
    s_out, zp_out = qparams(m.tensors[op.outputs[0]])
    lo, hi = quant.activation_range(o.activation, s_out, zp_out)
    return np.clip(_round_div(total, count), lo, hi).astype(np.int8)


def max_pool_2d(m: QModel, op: QOp, v: Values) -> np.ndarray:
    """MAX_POOL_2D: the largest in-bounds tap (padding taps are never candidates), clamped to the activation."""
    o = op.options
    assert isinstance(o, PoolOptions)
    x = v[op.inputs[0]].astype(np.int64)
    best = windows(x, o.filter, o.stride, o.padding, fill=-129).max(axis=(4, 5))
    s_out, zp_out = qparams(m.tensors[op.outputs[0]])
    lo, hi = quant.activation_range(o.activation, s_out, zp_out)
    return np.clip(best, lo, hi).astype(np.int8)


def mean(m: QModel, op: QOp, v: Values) -> np.ndarray:
    """MEAN over constant axes: Σ(x) - zp_in·n scaled by s_in/(s_out·n) in one multiplier."""
    axis_data = m.tensors[op.inputs[1]].data
    assert axis_data is not None
    x = v[op.inputs[0]].astype(np.int64)
    axes = tuple(sorted({int(a) % x.ndim for a in np.ravel(axis_data)}))
    n = int(np.prod([x.shape[a] for a in axes]))
    (s_in, zp_in), (s_out, zp_out) = qparams(m.tensors[op.inputs[0]]), qparams(m.tensors[op.outputs[0]])
    mult, shift = mean_multiplier(s_in, s_out, n)
    acc = x.sum(axis=axes) - zp_in * n
    out = np.clip(quant.multiply_by_quantized_multiplier(acc, mult, shift) + zp_out, -128, 127).astype(np.int8)
    return out.reshape(len(x), *m.tensors[op.outputs[0]].shape[1:])


def add(m: QModel, op: QOp, v: Values) -> np.ndarray:
    """ADD: both inputs shifted left 20 bits, rescaled to twice the larger input scale, summed, requantised."""
    assert isinstance(op.options, AddOptions)
    (s1, zp1), (s2, zp2) = qparams(m.tensors[op.inputs[0]]), qparams(m.tensors[op.inputs[1]])
    s_out, zp_out = qparams(m.tensors[op.outputs[0]])
    twice_max = 2.0 * max(s1, s2)
    m1, sh1 = quant.quantize_multiplier(s1 / twice_max)
    m2, sh2 = quant.quantize_multiplier(s2 / twice_max)
    mo, sho = quant.quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * s_out))
    a = quant.multiply_by_quantized_multiplier((v[op.inputs[0]].astype(np.int64) - zp1) << ADD_LEFT_SHIFT, m1, sh1)
    b = quant.multiply_by_quantized_multiplier((v[op.inputs[1]].astype(np.int64) - zp2) << ADD_LEFT_SHIFT, m2, sh2)
    lo, hi = quant.activation_range(op.options.activation, s_out, zp_out)
    return np.clip(quant.multiply_by_quantized_multiplier(a + b, mo, sho) + zp_out, lo, hi).astype(np.int8)


def reshape(m: QModel, op: QOp, v: Values) -> np.ndarray:
    x = v[op.inputs[0]]
    return x.reshape(len(x), *m.tensors[op.outputs[0]].shape[1:])


def softmax(m: QModel, op: QOp, v: Values) -> np.ndarray:
    """int8 SOFTMAX on the last axis with gemmlowp fixed-point exp; output scale 1/256, zero point -128."""
    assert isinstance(op.options, SoftmaxOptions)
    s_in, _ = qparams(m.tensors[op.inputs[0]])
    mult, shift, diff_min = softmax_params(op.options.beta, s_in)
    x = v[op.inputs[0]].astype(np.int64)
    diff = x - x.max(axis=-1, keepdims=True)
    live = diff >= diff_min
    scaled = quant.multiply_by_quantized_multiplier(np.where(live, diff, 0), mult, shift)
    exps = np.where(live, quant.exp_on_negative_values(scaled, SCALED_DIFF_BITS), 0)
    total = quant.rounding_divide_by_pot(exps, ACCUM_BITS).sum(axis=-1, keepdims=True)
    recip, bits_over_unit = quant.reciprocal(total, ACCUM_BITS)
    unsat = quant.rounding_divide_by_pot(quant.srdhm(recip, exps), bits_over_unit + 31 - 8)
    return np.where(live, np.clip(unsat - 128, -128, 127), -128).astype(np.int8)


def quantize_op(m: QModel, op: QOp, v: Values) -> np.ndarray:
    """QUANTIZE at the graph input: float32 → int8."""
    scale, zp = qparams(m.tensors[op.outputs[0]])
    return quant.quantize(v[op.inputs[0]], scale, zp)


def dequantize_op(m: QModel, op: QOp, v: Values) -> np.ndarray:
    """DEQUANTIZE at the graph output: int8 → float32."""
    scale, zp = qparams(m.tensors[op.inputs[0]])
    return quant.dequantize(v[op.inputs[0]], scale, zp)


KERNELS: dict[str, Callable[[QModel, QOp, Values], np.ndarray]] = {
    "CONV_2D": conv_2d,
    "DEPTHWISE_CONV_2D": depthwise_conv_2d,
    "FULLY_CONNECTED": fully_connected,
    "AVERAGE_POOL_2D": average_pool_2d,
    "MAX_POOL_2D": max_pool_2d,
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
    scale, zp = qparams(model.tensors[model.inputs[0]])
    return quant.quantize(x, scale, zp)


def predict(model: QModel, x_int8: np.ndarray) -> np.ndarray:
    """Class index per sample (argmax of the final output)."""
    out = forward(model, x_int8)[-1]
    return out.reshape(len(out), -1).argmax(axis=1)


def quantized_inputs(model: QModel, x_float: np.ndarray) -> np.ndarray:
    """Real-valued inputs as the int8 codes of the graph's input tensor, shaped like it (without the batch)."""
    in_shape = model.tensors[model.inputs[0]].shape[1:]
    return quantize_input(model, x_float).reshape(-1, *in_shape)


def input_qparams(model: QModel) -> tuple[float, int]:
    return qparams(model.tensors[model.inputs[0]])
