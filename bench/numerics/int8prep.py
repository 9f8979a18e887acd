"""The per-op int8 *prepare* arithmetic: the constants a kernel derives from the graph before it runs.

Why public and apart: the host forward reference (`bench.numerics.int8ref`), the int8 training reference and the
plan compiler (`bench.plan.int8`, which bakes these constants into the blob the device runs) must compute them with
the very same functions, or the device and its references drift apart by one rounding.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from bench.model.qgraph import QModel, QOp, QTensor
from bench.numerics import quant


def qparams(t: QTensor) -> tuple[float, int]:
    """Per-tensor (scale, zero point) of an activation."""
    assert t.scale is not None and t.zero_point is not None
    return float(t.scale[0]), int(t.zero_point[0])


def out_size(size: int, k: int, stride: int, padding: str) -> int:
    return (size + stride - 1) // stride if padding == "SAME" else (size - k) // stride + 1


def pads(size: int, k: int, stride: int, padding: str) -> tuple[int, int]:
    """(before, after) padding; SAME puts the odd pixel after, as TFLite does."""
    if padding == "VALID":
        return 0, 0
    total = max((out_size(size, k, stride, padding) - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def windows(x: np.ndarray, k: tuple[int, ...], stride: tuple[int, ...], padding: str, fill: int = 0) -> np.ndarray:
    """Patches [n, oh, ow, c, kh, kw] of ``x`` [n, h, w, c] padded with ``fill``."""
    (ph0, ph1), (pw0, pw1) = pads(x.shape[1], k[0], stride[0], padding), pads(x.shape[2], k[1], stride[1], padding)
    xp = np.pad(x, ((0, 0), (ph0, ph1), (pw0, pw1), (0, 0)), constant_values=fill)
    win = sliding_window_view(xp, k, axis=(1, 2))
    return win[:, :: stride[0], :: stride[1]]


def multipliers(s_in: float, w: QTensor, s_out: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (or per-tensor) requantisation multipliers: s_in·s_w / s_out in double, as TFLM computes them."""
    assert w.scale is not None
    return quant.quantize_multipliers(np.float64(s_in) * w.scale.astype(np.float64) / np.float64(s_out))


def bias_codes(m: QModel, op: QOp, n: int) -> np.ndarray:
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        data = m.tensors[op.inputs[2]].data
        assert data is not None
        return data.astype(np.int64)
    return np.zeros(n, np.int64)


def mean_multiplier(s_in: float, s_out: float, n: int) -> tuple[int, int]:
    """s_in/s_out with 1/n folded into the multiplier (shifted up by ⌊log2 n⌋, at most 32 bits and shift+31)."""
    mult, shift = quant.quantize_multiplier(float(np.float64(s_in) / np.float64(s_out)))
    up = min(n.bit_length() - 1, 32, 31 + shift)
    return (mult << up) // n, shift - up


ADD_LEFT_SHIFT = 20


SCALED_DIFF_BITS = 5  # integer bits of the rescaled input difference (Q5.26)
ACCUM_BITS = 12  # integer bits of the sum of exponentials (Q12.19)


def softmax_params(beta: float, s_in: float) -> tuple[int, int, int]:
    """(multiplier, left shift, diff_min): the input difference scaled to Q5.26; smaller differences give 0."""
    real = min(float(beta) * float(s_in) * (1 << (31 - SCALED_DIFF_BITS)), 2.0**31 - 1.0)
    mult, shift = quant.quantize_multiplier(real)
    radius = ((1 << SCALED_DIFF_BITS) - 1) * (1 << (31 - SCALED_DIFF_BITS)) / (1 << shift)
    return mult, shift, -int(np.floor(radius))
