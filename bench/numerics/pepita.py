"""Forward-only training references: PEPITA and MEMPEPITA (Dellaferrera & Kreiman 2022; Pau & Aymone 2023), as the
device runs them (docs/plan-format.md, "Forward-only training").

Per sample: a clean forward pass gives e = softmax(logits) − onehot; the input is modulated, x′ = x + F·e, with a
fixed projection F (d_in × classes) that the device draws from a seed instead of storing; a second forward pass
gives h′. Each trained layer j's update direction is (h_j − h′_j) ⊗ h′_{j−1} (h_j the output of its ReLU when one
follows), the last layer's e′ ⊗ h′_{L−1} with e′ the modulated pass's error; W_j ← W_j − lr·direction, layer by layer
as soon as h′_j exists (which gives the same result as updating after the pass: h′_{j+1} reads h′_j, not W_j).
MEMPEPITA computes the same numbers (it recomputes h_j instead of keeping it), so one reference serves both.
"""

from __future__ import annotations

import numpy as np

from bench.model import nn
from bench.numerics.fp32 import (
    Key,
    batch,
    conv_backward,
    conv_forward,
    forward_batch,
    loss_and_dlogits,
    params64,
    with_params,
)


def projection(seed: int, d_in: int, n_classes: int, bound: float) -> np.ndarray:
    """F [d_in, n_classes] exactly as the device draws it (float32): a murmur3 finaliser of seed and element index."""
    idx = np.arange(d_in * n_classes, dtype=np.uint64)
    x = (np.uint64(seed) + np.uint64(0x9E3779B9) * (idx + np.uint64(1))) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(13)
    x = (x * np.uint64(0xC2B2AE35)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(16)
    u = (x >> np.uint64(8)).astype(np.float32) * np.float32(1.0 / 16777216.0)
    return ((u * np.float32(2.0) - np.float32(1.0)) * np.float32(bound)).reshape(d_in, n_classes)


def _act_of(model: nn.Model, i: int) -> int:
    return i + 1 if i + 1 < len(model.layers) and model.layers[i + 1].op == "relu" else i


def _direction(layer: nn.Layer, delta: np.ndarray, x_in: np.ndarray) -> np.ndarray:
    """delta ⊗ input as a weight-shaped tensor: the dense outer product, or the conv weight gradient of delta."""
    if layer.op == "dense":
        return np.outer(delta.ravel(), x_in.ravel())
    w = np.zeros((layer.out_shape[2], layer.kernel, layer.kernel, layer.in_shape[2]))
    _, cols = conv_forward(x_in.reshape(1, *layer.in_shape), w, np.zeros(w.shape[0]), layer)
    dw, _, _ = conv_backward(delta.reshape(1, *layer.out_shape), cols, w, layer, False)
    return dw


def run_pepita(model: nn.Model, samples: np.ndarray, labels: np.ndarray, lr: float, trainable: set[Key],
               seed: int, bound: float) -> tuple[list[dict[Key, np.ndarray]], list[dict[Key, float]], nn.Model]:
    """Per step, the update direction of every trained weight (at the weights before its update) and its operands'
    scale max|h_j|·max|h′_{j−1}| (what float32 rounding of the two passes is relative to), and the final model;
    trained tensors are stored as float32 after each update, as on the device."""
    params = params64(model)
    f = projection(seed, int(np.prod(model.input_shape)), model.n_classes, bound).astype(np.float64)
    last = len(model.layers) - 1
    steps: list[dict[Key, np.ndarray]] = []
    scales: list[dict[Key, float]] = []
    for x, y in zip(batch(model, samples), np.asarray(labels).astype(np.int64), strict=True):
        clean, _ = forward_batch(model, params, x[None])
        _, e = loss_and_dlogits(clean[-1].reshape(1, -1), y[None])
        x_mod = (x.ravel() + f @ e[0]).reshape(1, *model.input_shape)
        mod, _ = forward_batch(model, params, x_mod)
        _, e_mod = loss_and_dlogits(mod[-1].reshape(1, -1), y[None])
        grads: dict[Key, np.ndarray] = {}
        scale: dict[Key, float] = {}
        for j, layer in enumerate(model.layers):
            if (j, "w") not in trainable:
                continue
            x_in = x_mod if j == 0 else mod[j - 1]
            delta = e_mod[0] if j == last else (clean[_act_of(model, j)] - mod[_act_of(model, j)])[0]
            grads[(j, "w")] = g = _direction(layer, delta, x_in[0] if x_in.ndim > 1 else x_in)
            h = e_mod[0] if j == last else clean[_act_of(model, j)][0]
            scale[(j, "w")] = float(np.abs(h).max() * np.abs(x_in).max())
            w, b = params[j]
            assert w is not None
            params[j] = ((w - lr * g.reshape(w.shape)).astype(np.float32).astype(np.float64), b)
        steps.append(grads)
        scales.append(scale)
    return steps, scales, with_params(model, params)
