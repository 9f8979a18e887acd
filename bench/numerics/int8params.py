"""Real values ↔ an int8 plan's trainable state on the wire (docs/protocol.md, "Parameters over the wire").

Why here: a federation averages real values (float64), and an int8 client holds codes with Q16 residuals at its own
fixed scales, so every trip between the two is a quantisation step that must be written once and tested.

- Weights: a word V = 65536·code + r (r in [−32768, 32767]) is the real value V/65536 · s_W[o]; encoding rounds
  value/s_W[o] to 1/65536 of a code, half away from zero, and clamps to the codes' range [−128, 127] (the update's
  own clamp).
- Biases: two words per channel, the int32 code and its residual: real (code + r/65536) · s_b[o] (s_b = s_in·s_W[o],
  the bias tensor's own scale); codes are clamped to ±2^30 as the update clamps them, with residual 0 there.
"""

from __future__ import annotations

import numpy as np

from bench.numerics.quant import round_half_away

RES = 65536
W_LO = -128 * RES - RES // 2  # the smallest word whose code rounds to −128
W_HI = 127 * RES + RES // 2 - 1
BIAS_MAX = 2**30


def encode_weights(real: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Words of weight rows ``real`` [rows, row] at per-row scales ``scale`` [rows]: int64 [rows·row]."""
    v = round_half_away(np.asarray(real, np.float64) / np.asarray(scale, np.float64)[:, None] * RES)
    return np.clip(v, W_LO, W_HI).astype(np.int64).ravel()


def decode_weights(words: np.ndarray, scale: np.ndarray, row: int) -> np.ndarray:
    """Real weight rows [rows, row] of words [rows·row] at per-row scales ``scale`` [rows]."""
    v = np.asarray(words, np.int64).reshape(len(scale), row)
    return v / RES * np.asarray(scale, np.float64)[:, None]


def encode_biases(real: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Words (code, residual) per channel of biases ``real`` [out] at scales ``scale`` [out]: int64 [2·out]."""
    v = round_half_away(np.asarray(real, np.float64).ravel() / np.asarray(scale, np.float64) * RES).astype(np.int64)
    code = (v + RES // 2) // RES  # floor: the residual lands in [−32768, 32767]
    res = v - code * RES
    clamped = np.abs(code) > BIAS_MAX
    code, res = np.where(clamped, np.sign(code) * BIAS_MAX, code), np.where(clamped, 0, res)
    return np.stack([code, res], axis=1).ravel()


def decode_biases(words: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Real biases [out] of (code, residual) words [2·out] at scales ``scale`` [out]."""
    pairs = np.asarray(words, np.int64).reshape(-1, 2)
    return (pairs[:, 0] + pairs[:, 1] / RES) * np.asarray(scale, np.float64)


def check_words(words: np.ndarray, bias: bool) -> str | None:
    """What is out of range in words a device sent (None when all are in range): the device never sends them, so
    a word outside is a corrupted or lying answer."""
    w = np.asarray(words, np.int64)
    if not bias:
        bad = (w < W_LO) | (w > W_HI)
        return f"{int(bad.sum())} weight words outside [{W_LO}, {W_HI}]" if bad.any() else None
    if w.size % 2:
        return f"{w.size} bias words: not (code, residual) pairs"
    pairs = w.reshape(-1, 2)
    bad = (np.abs(pairs[:, 0]) > BIAS_MAX) | (pairs[:, 1] < -RES // 2) | (pairs[:, 1] >= RES // 2)
    return f"{int(bad.sum())} bias pairs outside ±2^30 / int16 residual" if bad.any() else None
