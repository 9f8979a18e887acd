"""Independent numpy reference of int8 training with Quantization-Aware Scaling (docs/qplan-format.md, "Training").

The device's backward and update are integer arithmetic, so the reference must agree *exactly*: every streamed int32
gradient accumulator and its exponent, every step, while replaying the samples the device reports. It shares no code
with the firmware: the forward pass is `bench.numerics.int8ref` (itself bit-exact with tflite-micro) run on the
current codes,
the backward pass is written here from the definitions with vectorised numpy (int64 holding int32 values), and the
only inputs taken from the compiled plan are its constants (channel factors m, update multipliers, channel lists),
whose derivation `tests/test_int8train.py` checks against the real-valued QAS formula.

Definitions (one step, batch 1):

- logits gradient: e = p + 128 − 256·onehot (p the int8 softmax output), g = rdbp(e, k) with the smallest k ≥ 0
  giving |g| ≤ 127, E = k (rdbp: divide by 2^k rounding half away from zero); an autoencoder (no SOFTMAX, as many
  outputs as inputs) trains on its reconstruction's mean squared error instead: g = rdbp(d, k) for
  d = (y − zp_y) − (x − zp_x)·M at the graph output, M the multiplier of s_x/s_y (`recon_grad`);
- per weighted op with output gradient (g, E): g' = 0 where the op's output sits at a bound of its fused activation
  (y ≤ act_min or y ≥ act_max, whatever those codes are: a ReLU with zp −128 has act_min −128),
  h = floor((g'·m[o] + 128) / 256);
  input gradient acc = Σ h·W̄ (the transposed op; depthwise: per channel), g_in = rdbp(acc, k), E_in = E − 7 + k;
- ADD (a residual's join): both inputs get the output gradient as it is (masked by its fused activation); where
  the branch from the skip input starts, the branch's input gradient and the skip's are summed (`merge_grad`);
- AVERAGE_POOL_2D (no parameters): acc = Σ over the windows covering an input of g·round(2^16 / count), g_in =
  rdbp(acc, k), E_in = E − 16 + k; MEAN over h and w likewise, one window of h·w positions (the real mean's
  derivative is 1/(h·w) whatever its scales); MAX_POOL_2D: acc = Σ of the g of the windows whose first in-bounds maximum
  (row-major taps) an input is, g_in = rdbp(acc, k), E_in = E + k; RESHAPE passes (g, E) on;
  bias accumulator a_b[o] = Σ_positions h[., o]; weight accumulator a[o] = Σ_positions h[., o]·(x − zp_x)
  (depthwise: at input channel o // dm only, one accumulator per tap);
- update: Δ = round_half_up(a·M·2^(s + E − 31)) clamped to ±2^30 (FULLY_CONNECTED: the row step h·M rounded once,
  `fc_row_delta`); weights V = 65536·W̄ + r − Δ clamped so W̄ = floor((V + 32768) / 65536) stays in [−128, 127],
  r = V − 65536·W̄; biases likewise in int64, codes clamped to ±2^30 (residual 0 when clamped). The op's input
  gradient uses the weights before its own update.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from bench.model.qgraph import AddOptions, ConvOptions, FullyConnectedOptions, PoolOptions, QModel
from bench.numerics import int8prep, int8ref, quant

Key = tuple[int, str]  # (op index, "w" | "b")

@dataclass(frozen=True)
class QTrainOp:
    """The host's view of one op on the backward path (docs/qplan-format.md, "Training section")."""

    index: int
    kind: str
    train_w: bool
    train_b: bool
    need_dx: bool
    mask: bool
    channels: tuple[int, ...]  # trained weight rows (empty: all, when train_w)
    m: np.ndarray  # int64 [out_c]: round(32768 · 2^-h_down · s_W[o] / max s_W)
    w_upd: np.ndarray  # int64 [out_c, 2]: (multiplier, shift) of the weight update
    b_upd: np.ndarray  # int64 [out_c, 2]: of the bias update
    grad_scale: float  # C: dL/dW̄ = C·2^E·a and dL/db̄ = C·2^E·a_b for the streamed accumulators a
    c_out: float  # the output gradient's constant c (real = c·2^E·g)
    kept_bytes: int = 0
    h_down: int = 0  # h carries 2^(H_SHIFT - h_down)·g·s_W/max s_W: ops with many pixels keep int32 accumulators
    skip_to: int = -1  # ADD: the op where the branch from its skip input starts, which merges the skip's gradient
    merge_from: int = -1  # the op where a residual branch starts: the ADD whose skip gradient it adds
    merge: tuple[int, int] = (0, 0)  # with merge_from: (mult, shift), c_skip / c = mult·2^(shift − 31)


CROSS_ENTROPY, RECONSTRUCTION = "cross-entropy", "reconstruction"  # the loss kinds (training header byte 3: 0, 1)


@dataclass(frozen=True)
class QTrainPlan:
    first_bwd: int
    lr: float
    qas: bool
    ops: dict[int, QTrainOp]
    loss: str = CROSS_ENTROPY  # RECONSTRUCTION: an autoencoder's MSE of its output against its input
    recon: tuple[int, int] = (0, 0)  # RECONSTRUCTION: (multiplier, shift) of s_x / s_y

    @property
    def top(self) -> int:
        """The highest op of the backward path (below the SOFTMAX, or the last op for a reconstruction)."""
        return max(self.ops)


H_SHIFT = 7  # h = (g·m + 128) >> 8 carries 2^(7 - h_down) · g · s_W[o] / max s_W


RES_BITS = 16  # Q16 residual per trained weight and bias


POOL_SHIFT = 16  # average pool backward: Q16 reciprocal of each window's tap count


MERGE_BITS = 22  # a residual merge sums both gradients at 2^-22 of the larger one's exponent (below 2^30 in int32)


class TrainablePlan(Protocol):
    """What the replay needs of an int8 plan (`bench.plan.int8.QPlan` is one): the graph and its training records."""

    @property
    def model(self) -> QModel: ...

    @property
    def train(self) -> QTrainPlan | None: ...
DELTA_MAX = 2**30
BIAS_MAX = 2**30
RES = 65536


@dataclass(frozen=True)
class QGrad:
    """Integer gradient accumulators of one tensor and the exponent of the op's output gradient."""

    values: np.ndarray  # int64, streamed order: the trained rows (channel list order), flattened
    exponent: int


# --------------------------------------------------------------------------------------------- arithmetic


def rdbp(x: np.ndarray, k: int) -> np.ndarray:
    """x / 2^k rounded to nearest, ties away from zero."""
    x = np.asarray(x, np.int64)
    if k == 0:
        return x
    q = (np.abs(x) + (1 << (k - 1))) >> k
    return np.sign(x) * q


def requant_shift(acc: np.ndarray) -> int:
    """The smallest k >= 0 with every |rdbp(acc, k)| <= 127."""
    m = int(np.max(np.abs(acc))) if np.size(acc) else 0
    k = 0
    while int(rdbp(np.array([m]), k)[0]) > 127:
        k += 1
    return k


def delta(a: np.ndarray, mult: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """round(a·mult·2^(shift − 31)) half up, clamped to ±2^30 (shift already includes E); exact integer arithmetic."""
    a, mult, shift = np.broadcast_arrays(np.asarray(a, np.int64), np.asarray(mult, np.int64),
                                         np.asarray(shift, np.int64))
    out = np.zeros(a.shape, np.int64)
    for idx in np.ndindex(a.shape):  # Python integers: no overflow whatever the shift
        p, t = int(a[idx]) * int(mult[idx]), 31 - int(shift[idx])
        if p == 0 or t >= 63:
            continue
        v = (p + (1 << (t - 1))) >> t if t > 0 else p << -t
        out[idx] = max(-DELTA_MAX, min(DELTA_MAX, v))
    return out


def update_codes(w: np.ndarray, r: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes and signed Q16 residuals after subtracting Δ (in 2^-16 code units).

    V = 65536·w + r − Δ is clamped so the rounded code stays in [−128, 127]: the device stores r + 2^15 and saturates
    65536·w + r + 2^15 − Δ to 24 bits with one SSAT (docs/qplan-format.md, "Update")."""
    v = np.clip(w.astype(np.int64) * RES + r - d, -128 * RES - RES // 2, 127 * RES + RES // 2 - 1)
    q = (v + RES // 2) // RES  # floor division: round half up
    return q, v - q * RES


ROW_M_BITS = 22  # fused FULLY_CONNECTED update: |M| <= 2^22, so |z·M| < 2^30 for |z| <= 255


def fc_row_delta(h: int, z: np.ndarray, mult: int, shift: int) -> np.ndarray:
    """Δ of one FULLY_CONNECTED row with the gradient h·z folded in (the device's fc_i8_update_row).

    The row step P = h·mult is rounded once to M = round(P / 2^k) with |M| <= 2^22 (k >= 0 as small as allows it),
    s = 31 − shift − k (shift includes E); Δ = (z·M + 2^(s−1)) >> s for s >= 1, z·M·2^−s clamped to ±2^30 below."""
    p = int(h) * int(mult)
    z = np.asarray(z, np.int64)
    if p == 0:
        return np.zeros(z.shape, np.int64)
    k = max(0, abs(p).bit_length() - ROW_M_BITS)
    m = (p + (1 << (k - 1))) >> k if k else p
    s = 31 - int(shift) - k
    if s >= 1:
        return (z * m + (1 << (s - 1))) >> s if s < 62 else np.zeros(z.shape, np.int64)
    v = z * m  # |v| < 2^30: below 2^31 the shifted value stays inside int64
    if -s >= 31:
        return np.sign(v) * DELTA_MAX
    return np.clip(v * (1 << -s), -DELTA_MAX, DELTA_MAX)


def update_bias(b: np.ndarray, r: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = b.astype(np.int64) * RES + r - d
    q = (v + RES // 2) // RES
    clamped = np.abs(q) > BIAS_MAX
    return np.where(clamped, np.sign(q) * BIAS_MAX, q), np.where(clamped, 0, v - q * RES)


# --------------------------------------------------------------------------------------------- backward pieces


def logits_grad(p: np.ndarray, label: int) -> tuple[np.ndarray, int]:
    e = np.asarray(p, np.int64).ravel() + 128
    e[label] -= 256
    k = requant_shift(e)
    return rdbp(e, k), k


def recon_grad(model: QModel, recon: tuple[int, int], y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, int]:
    """An autoencoder's loss gradient in output codes: d = (y − zp_y) − (x − zp_x)·M, M = ``recon`` (s_x/s_y),
    g = rdbp(d, k) with the smallest k giving |g| <= 127, E = k (real dL/dy = c·2^E·g, c = 2·s_y/N)."""
    _, zp_y = int8prep.qparams(model.tensors[model.outputs[0]])
    _, zp_x = int8prep.qparams(model.tensors[model.inputs[0]])
    xz = np.asarray(x, np.int64).ravel() - zp_x
    d = np.asarray(y, np.int64).ravel() - zp_y - quant.multiply_by_quantized_multiplier(xz, *recon)
    k = requant_shift(d)
    return rdbp(d, k), k


def merge_grad(g_b: np.ndarray, e_b: int, g_s: np.ndarray, e_s: int, mult: int, shift: int
               ) -> tuple[np.ndarray, int]:
    """The gradient of a tensor that feeds a residual branch and its ADD's skip: g_b·c·2^e_b + g_s·c_s·2^e_s with
    c_s / c = mult·2^(shift − 31), both terms as integers at E0 = max(e_b, e_s + shift) − MERGE_BITS (each rounded
    half away from zero), then requantised by the max-|g| rule: (codes, E0 + k), constant c."""
    e0 = max(e_b, e_s + shift) - MERGE_BITS
    b = np.asarray(g_b, np.int64)
    b = b << (e_b - e0) if e_b >= e0 else _rdbp_wide(b, e0 - e_b)
    acc = b + _rdbp_wide(np.asarray(g_s, np.int64) * mult, e0 - (shift - 31 + e_s))
    k = requant_shift(acc)
    return rdbp(acc, k), e0 + k


def _rdbp_wide(x: np.ndarray, k: int) -> np.ndarray:
    """rdbp for any k >= 0 (|x| < 2^62): beyond 62 bits everything rounds to 0."""
    return np.zeros_like(x) if k > 62 else rdbp(x, k)


def _mask(model: QModel, i: int, y: np.ndarray) -> np.ndarray:
    op = model.ops[i]
    o = op.options
    assert isinstance(o, ConvOptions | FullyConnectedOptions | AddOptions)
    s_y, zp_y = int8prep.qparams(model.tensors[op.outputs[0]])
    lo, hi = quant.activation_range(o.activation, s_y, zp_y)
    return (y > lo) & (y < hi)  # at a bound the activation's derivative is 0 (ReLU's lo: its zero, often code -128)


def _pads(model: QModel, i: int) -> tuple[int, int, int, int]:
    op = model.ops[i]
    o = op.options
    assert isinstance(o, ConvOptions)
    x, w = model.tensors[op.inputs[0]], model.tensors[op.inputs[1]]
    (t, b), (left, right) = (int8prep.pads(x.shape[1], w.shape[1], o.stride[0], o.padding),
                             int8prep.pads(x.shape[2], w.shape[2], o.stride[1], o.padding))
    return t, b, left, right


def _conv_patches(model: QModel, i: int, xz: np.ndarray) -> np.ndarray:
    """Windows [oh, ow, kh, kw, c] of the zero-padded (x − zp) input of conv op i."""
    op = model.ops[i]
    o = op.options
    assert isinstance(o, ConvOptions)
    kh, kw = model.tensors[op.inputs[1]].shape[1:3]
    t, b, left, right = _pads(model, i)
    xp = np.pad(xz, ((t, b), (left, right), (0, 0)))
    win = sliding_window_view(xp, (kh, kw), axis=(0, 1))[:: o.stride[0], :: o.stride[1]]  # [oh, ow, c, kh, kw]
    oh, ow = model.tensors[op.outputs[0]].shape[1:3]
    return win[:oh, :ow].transpose(0, 1, 3, 4, 2)


def _conv_input_grad(model: QModel, i: int, h: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Σ h·W̄ scattered back through conv op i: [ih, iw, c] (h [oh, ow, out_c], w [out_c, kh, kw, c])."""
    op = model.ops[i]
    o = op.options
    assert isinstance(o, ConvOptions)
    x = model.tensors[op.inputs[0]]
    ih, iw, c = x.shape[1:]
    kh, kw = w.shape[1:3]
    t, b, left, right = _pads(model, i)
    cols = np.einsum("yxo,oijc->yxijc", h, w)  # each output pixel's contribution to its window
    acc = np.zeros((ih + t + b, iw + left + right, c), np.int64)
    oh, ow = h.shape[:2]
    sh, sw = o.stride
    for ky in range(kh):
        for kx in range(kw):
            acc[ky: ky + sh * (oh - 1) + 1: sh, kx: kx + sw * (ow - 1) + 1: sw] += cols[:, :, ky, kx]
    return acc[t: t + ih, left: left + iw]


def _dw_input_grad(model: QModel, i: int, h: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Σ h·W̄ scattered back through depthwise op i: [ih, iw, c] (h [oh, ow, c·dm], w [1, kh, kw, c·dm]); output
    channel ic·dm + d reads input channel ic."""
    op = model.ops[i]
    o = op.options
    assert isinstance(o, ConvOptions)
    ih, iw, c = model.tensors[op.inputs[0]].shape[1:]
    kh, kw, out_c = w.shape[1:]
    dm = out_c // c
    t, b, left, right = _pads(model, i)
    acc = np.zeros((ih + t + b, iw + left + right, out_c), np.int64)
    oh, ow = h.shape[:2]
    sh, sw = o.stride
    for ky in range(kh):
        for kx in range(kw):
            acc[ky: ky + sh * (oh - 1) + 1: sh, kx: kx + sw * (ow - 1) + 1: sw] += h * w[0, ky, kx]
    return acc[t: t + ih, left: left + iw].reshape(ih, iw, c, dm).sum(axis=3)


def _pool_input_grad(model: QModel, i: int, g: np.ndarray) -> np.ndarray:
    """The average pool's output gradient spread over each window's in-bounds taps, weighted by round(2^16 / count)
    (count: the window's in-bounds taps, as the forward pass averages them): [ih, iw, c]."""
    op = model.ops[i]
    o = op.options
    assert isinstance(o, PoolOptions)
    ih, iw, c = model.tensors[op.inputs[0]].shape[1:]
    (kh, kw), (sh, sw) = o.filter, o.stride
    pt = int8prep.pads(ih, kh, sh, o.padding)[0]
    pl = int8prep.pads(iw, kw, sw, o.padding)[0]
    acc = np.zeros((ih, iw, c), np.int64)
    oh, ow = g.shape[:2]
    for oy in range(oh):
        for ox in range(ow):
            y0, x0 = oy * sh - pt, ox * sw - pl
            ys, xs = slice(max(y0, 0), min(y0 + kh, ih)), slice(max(x0, 0), min(x0 + kw, iw))
            count = (ys.stop - ys.start) * (xs.stop - xs.start)
            if count > 0:
                acc[ys, xs] += g[oy, ox] * ((2**POOL_SHIFT + count // 2) // count)
    return acc


def _mean_input_grad(shape: tuple[int, ...], g: np.ndarray) -> np.ndarray:
    """MEAN over h and w: every input position gets its channel's g·round(2^16 / (h·w)); [h, w, c] int64."""
    h, w, c = shape
    count = h * w
    return np.broadcast_to(g * ((2**POOL_SHIFT + count // 2) // count), (h, w, c)).astype(np.int64)


def _maxpool_input_grad(model: QModel, i: int, x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Each output gradient routed to its window's first in-bounds maximum of the input x (padding never wins):
    [ih, iw, c], summed where windows overlap."""
    op = model.ops[i]
    o = op.options
    assert isinstance(o, PoolOptions)
    ih, iw, c = x.shape
    (kh, kw), (sh, sw) = o.filter, o.stride
    pt, pl = int8prep.pads(ih, kh, sh, o.padding)[0], int8prep.pads(iw, kw, sw, o.padding)[0]
    oh, ow = g.shape[:2]
    win = int8prep.windows(x[None].astype(np.int64), o.filter, o.stride, o.padding, fill=-129)[0, :oh, :ow]
    first = win.reshape(oh, ow, c, kh * kw).argmax(axis=-1)  # the first of equal maxima
    oy, ox, ch = np.indices((oh, ow, c))
    acc = np.zeros((ih, iw, c), np.int64)
    np.add.at(acc, (oy * sh - pt + first // kw, ox * sw - pl + first % kw, ch), np.asarray(g, np.int64))
    return acc


def channel_rows(kind: str, a: np.ndarray) -> np.ndarray:
    """A view of a weight-shaped array with one row per output channel (depthwise [1, kh, kw, c] transposed), so
    writes through it land in the array."""
    if kind == "DEPTHWISE_CONV_2D":
        return a.reshape(-1, a.shape[-1]).T
    return a.reshape(len(a), -1)


# --------------------------------------------------------------------------------------------- replay


class Int8Trainer:
    """The host's copy of the device's trainable state, stepped with the reference arithmetic."""

    def __init__(self, plan: TrainablePlan) -> None:
        if plan.train is None:
            raise ValueError("the plan has no training section")
        self.plan, self.model, self.train = plan, plan.model, plan.train
        self.w: dict[int, np.ndarray] = {}
        self.wres: dict[int, np.ndarray] = {}
        self.b: dict[int, np.ndarray] = {}
        self.bres: dict[int, np.ndarray] = {}
        for i, top in self.train.ops.items():
            op = self.model.ops[i]
            if top.train_w:
                data = self.model.tensors[op.inputs[1]].data
                assert data is not None
                self.w[i] = data.astype(np.int64).copy()
                self.wres[i] = np.zeros(self.w[i].shape, np.int64)
            if top.train_b:
                data = self.model.tensors[op.inputs[2]].data
                assert data is not None
                self.b[i] = data.astype(np.int64).copy()
                self.bres[i] = np.zeros(self.b[i].shape, np.int64)

    def current_model(self) -> QModel:
        """The graph with the trained codes (int32 biases, int8 weights) in place of the pretrained ones."""
        tensors = list(self.model.tensors)
        for i, w in self.w.items():
            t = self.model.ops[i].inputs[1]
            tensors[t] = dataclasses.replace(tensors[t], data=w.astype(np.int8))
        for i, b in self.b.items():
            t = self.model.ops[i].inputs[2]
            tensors[t] = dataclasses.replace(tensors[t], data=b.astype(np.int32))
        return dataclasses.replace(self.model, tensors=tuple(tensors))

    def weights(self, i: int) -> np.ndarray:
        """The codes op i computes with (trained or pretrained), int64."""
        if i in self.w:
            return self.w[i]
        data = self.model.tensors[self.model.ops[i].inputs[1]].data
        assert data is not None
        return data.astype(np.int64)

    def step(self, x: np.ndarray, label: int) -> tuple[dict[Key, QGrad], np.ndarray]:
        """One training step on int8 sample ``x``: the streamed accumulators and the graph output before it."""
        model = self.model
        outs = int8ref.forward(self.current_model(), np.asarray(x, np.int8)[None])
        acts = [np.asarray(x, np.int64)] + [o[0].astype(np.int64) for o in outs]  # acts[i] = input of op i
        if self.train.loss == RECONSTRUCTION:
            g, e = recon_grad(model, self.train.recon, outs[-1][0], x)
        else:
            g, e = logits_grad(outs[-1][0], label)
        grads: dict[Key, QGrad] = {}
        skips: dict[int, tuple[np.ndarray, int]] = {}  # branch start → the skip gradient an ADD above left for it
        for i in range(self.train.top, self.train.first_bwd - 1, -1):
            top = self.train.ops[i]
            g, e = self._backward(i, top, acts, np.asarray(g, np.int64), e, grads)
            if top.kind == "ADD" and top.skip_to >= 0:
                skips[top.skip_to] = (g, e)
            if top.merge_from >= 0:
                g_s, e_s = skips.pop(i)
                g, e = merge_grad(g, e, g_s, e_s, *top.merge)
        return grads, outs[-1][0]

    def _backward(self, i: int, top: QTrainOp, acts: list[np.ndarray], g: np.ndarray, e: int,
                  grads: dict[Key, QGrad]) -> tuple[np.ndarray, int]:
        """Op i's input gradient (codes, exponent) from its output gradient; trained ops also step their state.
        acts[i] is op i's chain input (an ADD's other input is its skip), acts[i + 1] its output."""
        model = self.model
        if top.kind == "RESHAPE":
            return g, e
        if top.kind == "ADD":  # y = x1 + x2: the (masked) output gradient goes to both inputs as it is
            y = acts[i + 1].ravel()
            return (np.where(_mask(model, i, y), g.ravel(), 0) if top.mask else g.ravel()), e
        if top.kind == "MAX_POOL_2D":
            acc = _maxpool_input_grad(model, i, acts[i].reshape(acts[i].shape[-3:]), g.reshape(acts[i + 1].shape[-3:]))
            k = requant_shift(acc)
            return rdbp(acc, k).ravel(), e + k
        if top.kind == "AVERAGE_POOL_2D":
            acc = _pool_input_grad(model, i, g.reshape(acts[i + 1].shape[-3:]))
            k = requant_shift(acc)
            return rdbp(acc, k).ravel(), e - POOL_SHIFT + k
        if top.kind == "MEAN":
            acc = _mean_input_grad(acts[i].shape[-3:], g.ravel())
            k = requant_shift(acc)
            return rdbp(acc, k).ravel(), e - POOL_SHIFT + k
        return self._op(i, top, acts[i], acts[i + 1], g, e, grads)

    def _op(self, i: int, top: QTrainOp, x: np.ndarray, y: np.ndarray, g: np.ndarray, e: int,
            grads: dict[Key, QGrad]) -> tuple[np.ndarray, int]:
        model, op = self.model, self.model.ops[i]
        out_c = len(top.m)
        g = np.asarray(g, np.int64).reshape(y.shape)
        if top.mask:
            g = np.where(_mask(model, i, y), g, 0)
        h = (g.reshape(-1, out_c) * top.m + 128) // 256  # floor
        _, zp_x = int8prep.qparams(model.tensors[op.inputs[0]])
        w = self.weights(i)
        g_in, e_in = np.zeros(0, np.int64), e
        if top.need_dx:
            if op.kind == "FULLY_CONNECTED":
                acc = h[0] @ w
            elif op.kind == "DEPTHWISE_CONV_2D":
                oh, ow = y.shape[-3:-1]
                acc = _dw_input_grad(model, i, h.reshape(oh, ow, out_c), w).ravel()
            else:
                oh, ow = y.shape[-3:-1]
                acc = _conv_input_grad(model, i, h.reshape(oh, ow, out_c), w).ravel()
            k = requant_shift(acc)
            g_in, e_in = rdbp(acc, k), e - H_SHIFT + top.h_down + k
        xz = x.reshape(-1) - zp_x if op.kind == "FULLY_CONNECTED" else x.reshape(x.shape[-3:]) - zp_x
        if top.train_b:
            a_b = h.sum(axis=0)
            grads[(i, "b")] = QGrad(a_b, e)
            d = delta(a_b, top.b_upd[:, 0], top.b_upd[:, 1] + e)
            self.b[i], self.bres[i] = update_bias(self.b[i], self.bres[i], d)
        if top.train_w:
            rows = np.array(top.channels or range(out_c), np.int64)
            if op.kind == "FULLY_CONNECTED":
                a = h[0][rows, None] * xz[None, :]
            elif op.kind == "DEPTHWISE_CONV_2D":  # channel o filters input channel o // dm only
                oh, ow = y.shape[-3:-1]
                ic = rows // (out_c // model.tensors[op.inputs[0]].shape[3])
                patches = np.take(_conv_patches(model, i, xz), ic, axis=-1)  # [oh, ow, kh, kw, rows]
                a = np.einsum("yxo,yxijo->oij", h.reshape(oh, ow, out_c)[:, :, rows], patches)
            else:
                oh, ow = y.shape[-3:-1]
                patches = _conv_patches(model, i, xz)  # [oh, ow, kh, kw, c]
                a = np.einsum("yxo,yxijc->oijc", h.reshape(oh, ow, out_c)[:, :, rows], patches)
            a = a.reshape(len(rows), -1)
            grads[(i, "w")] = QGrad(a.ravel(), e)
            if op.kind == "FULLY_CONNECTED":  # the device fuses the outer-product gradient into the update
                d = np.stack([fc_row_delta(int(h[0][o]), xz, int(top.w_upd[o, 0]), int(top.w_upd[o, 1]) + e)
                              for o in rows])
            else:
                d = delta(a, top.w_upd[rows, 0][:, None], top.w_upd[rows, 1][:, None] + e)
            flat, res = channel_rows(op.kind, self.w[i]), channel_rows(op.kind, self.wres[i])
            flat[rows], res[rows] = update_codes(flat[rows], res[rows], d)
        return g_in, e_in


def replay(plan: TrainablePlan, x_train: np.ndarray, y_train: np.ndarray, samples: list[int]
           ) -> list[dict[Key, QGrad]]:
    """The streamed gradients of each step when training on ``samples`` (indices into the int8 train split)."""
    trainer = Int8Trainer(plan)
    return [trainer.step(x_train[s], int(y_train[s]))[0] for s in samples]
