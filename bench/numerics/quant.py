"""Integer arithmetic of int8 TFLite inference, written from the published semantics (gemmlowp / TFLite docs).

Everything here is vectorised numpy on int64 holding int32 values, so a whole tensor is requantised at once. The
functions mirror what TFLite Micro's reference kernels compute, so that `bench.numerics.int8ref` can match it bit for
bit:

- a real multiplier M is stored as a Q0.31 significand and a power-of-two exponent (``quantize_multiplier``);
- ``x·M`` is a *saturating rounding doubling high multiply* followed by a *rounding divide by a power of two*
  (two roundings, gemmlowp style: that is what the reference kernels do, not a single rounding);
- SOFTMAX uses gemmlowp's fixed-point ``exp`` on negative values and a Newton-Raphson reciprocal.
"""

from __future__ import annotations

import math

import numpy as np

from bench.model.qgraph import Activation

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT8_MIN, INT8_MAX = -128, 127


# --------------------------------------------------------------------------------------------- rounding


def round_half_away(x: np.ndarray | float) -> np.ndarray:
    """C's ``round``: halves go away from zero (numpy's ``rint`` goes to even, which TFLite never does)."""
    a = np.asarray(x)
    return np.sign(a) * np.floor(np.abs(a) + 0.5)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """(Q0.31 significand, exponent) with ``real ≈ m · 2^(shift-31)``; m in [2^30, 2^31) unless real is 0.

    Exponents below -31 would shift everything out, so such multipliers become exactly 0; above 30 saturate.
    """
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    m = math.floor(q * 2**31 + 0.5)  # q > 0 here; the product is exact in binary64
    if m == 2**31:
        m, shift = m // 2, shift + 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        return INT32_MAX, 30
    return m, shift


def quantize_multipliers(reals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``quantize_multiplier``: two int64 arrays."""
    pairs = [quantize_multiplier(float(r)) for r in np.ravel(reals)]
    return np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64)


# --------------------------------------------------------------------------------------------- gemmlowp core


def _trunc_div_pow2(x: np.ndarray, bits: int) -> np.ndarray:
    """C integer division by 2^bits (truncates toward zero)."""
    return np.where(x >= 0, x >> bits, -((-x) >> bits))


def srdhm(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Saturating rounding doubling high multiply: round(a·b / 2^31), the one overflow case saturated."""
    a64, b64 = np.asarray(a, np.int64), np.asarray(b, np.int64)
    ab = a64 * b64
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = _trunc_div_pow2(ab + nudge, 31)
    return np.where((a64 == INT32_MIN) & (b64 == INT32_MIN), INT32_MAX, high)


def rounding_divide_by_pot(x: np.ndarray | int, exponent: np.ndarray | int) -> np.ndarray:
    """x / 2^exponent rounded to nearest, ties away from zero (arithmetic shift plus a remainder test)."""
    x64, e = np.asarray(x, np.int64), np.asarray(exponent, np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x64 & mask
    threshold = (mask >> 1) + (x64 < 0)
    return (x64 >> e) + (remainder > threshold)


def multiply_by_quantized_multiplier(
    x: np.ndarray | int, multiplier: np.ndarray | int, shift: np.ndarray | int
) -> np.ndarray:
    """x · M for M = (multiplier, shift): left shift first for M ≥ 1, rounding right shift after for M < 1."""
    s = np.asarray(shift, np.int64)
    left, right = np.maximum(s, 0), np.maximum(-s, 0)
    return rounding_divide_by_pot(srdhm(np.asarray(x, np.int64) << left, multiplier), right)


def saturating_left_shift(x: np.ndarray, exponent: int) -> np.ndarray:
    """x · 2^exponent saturated to int32 (gemmlowp's SaturatingRoundingMultiplyByPOT for exponent > 0)."""
    threshold = (1 << (31 - exponent)) - 1
    shifted = np.asarray(x, np.int64) << exponent
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, shifted))


def multiply_by_pot(x: np.ndarray, exponent: int) -> np.ndarray:
    """x · 2^exponent with gemmlowp rounding (right shifts) or saturation (left shifts)."""
    if exponent > 0:
        return saturating_left_shift(x, exponent)
    return rounding_divide_by_pot(x, -exponent) if exponent < 0 else np.asarray(x, np.int64)


# --------------------------------------------------------------------------------------------- quantized domain


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: type = np.int8) -> np.ndarray:
    """Real → integer codes as TFLite's QUANTIZE: ``round(x / scale) + zp`` in float32, clamped to the type."""
    info = np.iinfo(dtype)
    q = round_half_away(np.asarray(x, np.float32) / np.float32(scale)).astype(np.int64) + int(zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer codes → float32 as TFLite's DEQUANTIZE (product in double, stored as float)."""
    return (float(scale) * (np.asarray(q, np.float64) - int(zero_point))).astype(np.float32)


def activation_range(activation: Activation, scale: float, zero_point: int) -> tuple[int, int]:
    """int8 clamp bounds of a fused activation: the real bounds 0 and 6 quantised with the output's parameters."""
    lo, hi = INT8_MIN, INT8_MAX
    if activation in ("RELU", "RELU6"):
        lo = max(lo, int(zero_point))
    if activation == "RELU6":
        hi = min(hi, int(zero_point) + int(round_half_away(float(np.float32(6.0) / np.float32(scale)))))
    return lo, hi


def requantize(acc: np.ndarray, multiplier: np.ndarray | int, shift: np.ndarray | int, zero_point: int,
               bounds: tuple[int, int]) -> np.ndarray:
    """int32 accumulator → int8: scale by the multiplier, add the output zero point, clamp to the activation."""
    out = multiply_by_quantized_multiplier(acc, multiplier, shift) + int(zero_point)
    return np.clip(out, bounds[0], bounds[1]).astype(np.int8)


# --------------------------------------------------------------------------------------------- fixed-point exp


def _q31(value: float) -> int:
    """A real in (-1, 1) as a Q0.31 raw integer."""
    return round(value * 2**31)


# exp(-2^k) for k = -2..4 in Q0.31: the "barrel shifter" that handles the integer part of the argument.
_EXP_OF_POWERS = tuple((k, _q31(math.exp(-(2.0**k)))) for k in range(-2, 5))


def _exp_on_quarter_interval(a: np.ndarray) -> np.ndarray:
    """exp(a) for a in [-1/4, 0) in Q0.31: 4th-order Taylor series around -1/8."""
    x = a + (1 << 28)  # a + 1/8
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4_over_4 = rounding_divide_by_pot(srdhm(x2, x2), 2)
    poly = rounding_divide_by_pot(srdhm(x4_over_4 + x3, _q31(1 / 3)) + x2, 1)  # x^4/24 + x^3/6 + x^2/2
    c = _q31(math.exp(-1 / 8))
    return c + srdhm(c, x + poly)


def exp_on_negative_values(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """exp(a) in Q0.31 for raw ``a`` ≤ 0 with ``integer_bits`` integer bits (gemmlowp semantics)."""
    frac_bits = 31 - integer_bits
    quarter = 1 << (frac_bits - 2)
    a = np.asarray(a, np.int64)
    a_mod_quarter_minus_quarter = (a & (quarter - 1)) - quarter
    result = _exp_on_quarter_interval(multiply_by_pot(a_mod_quarter_minus_quarter, integer_bits))
    remainder = a_mod_quarter_minus_quarter - a
    for k, mult in _EXP_OF_POWERS:
        if integer_bits > k:
            bit = 1 << (frac_bits + k)
            result = np.where(remainder & bit, srdhm(result, mult), result)
    if integer_bits > 5:
        result = np.where(a < -(1 << (frac_bits + 5)), 0, result)
    return np.where(a == 0, INT32_MAX, result)


def _one_over_one_plus_x(a: np.ndarray) -> np.ndarray:
    """1/(1+a) for a in [0, 1) (Q0.31 in, Q0.31 out): three Newton-Raphson steps in Q2.29."""
    s = np.asarray(a, np.int64) + INT32_MAX
    half_den = (s + np.where(s >= 0, 1, -1)) // 2  # rounding half sum; s ≥ 0 here
    x = _q31(48 / 17 / 4) + srdhm(half_den, -_q31(32 / 17 / 4))  # constants in Q2.29
    one_q229 = 1 << 29
    for _ in range(3):
        err = one_q229 - srdhm(half_den, x)
        x = x + saturating_left_shift(srdhm(x, err), 2)
    return saturating_left_shift(x, 1)  # x/2 in Q1.30 read as Q0.31


def reciprocal(x: np.ndarray, integer_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(scale, bits over unit) with 1/x ≈ scale · 2^-(31 + bits) for a positive raw ``x`` in Q(integer_bits)."""
    x = np.asarray(x, np.int64)
    headroom_plus_one = 32 - np.frexp(x.astype(np.float64))[1].astype(np.int64)  # leading zeros of a uint32
    shifted_minus_one = (x << headroom_plus_one) - (1 << 31)
    return _one_over_one_plus_x(shifted_minus_one), integer_bits - headroom_plus_one
