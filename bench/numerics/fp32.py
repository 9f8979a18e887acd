"""Independent numpy reference for forward, backward and SGD on `bench.model.nn` models.

It shares no code with the firmware on purpose: gradients streamed from a device are checked against this,
so a bug common to both would go unnoticed. Everything runs in float64 on batches shaped [n, h, w, c]; the
single-sample functions are thin wrappers. Parameters are stored back as float32 after each SGD step, as on
the device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from bench.model import nn

Key = tuple[int, str]  # (layer index, "w" | "b")
Channels = Mapping[int, Sequence[int]]  # sparse update: layer -> output channels whose weights train
Params = list[tuple[np.ndarray | None, np.ndarray | None]]


# --------------------------------------------------------------------------------------------- parameters


def _params64(model: nn.Model) -> Params:
    return [
        (
            None if layer.weight is None else np.asarray(layer.weight, np.float64),
            None if layer.bias is None else np.asarray(layer.bias, np.float64),
        )
        for layer in model.layers
    ]


def _with_params(model: nn.Model, params: Params) -> nn.Model:
    """A copy of ``model`` carrying ``params`` as float32."""
    layers = tuple(
        dataclasses.replace(layer, weight=w.astype(np.float32), bias=b.astype(np.float32))
        if w is not None and b is not None
        else layer
        for layer, (w, b) in zip(model.layers, params, strict=True)
    )
    return dataclasses.replace(model, layers=layers)


def param_keys(model: nn.Model, layers: Iterable[int] | None = None) -> set[Key]:
    """All (layer, "w"/"b") keys of ``layers`` (default: every parameter layer) — a ``trainable`` set."""
    chosen = model.param_layers() if layers is None else list(layers)
    bad = sorted(set(chosen) - set(model.param_layers()))
    if bad:
        raise ValueError(f"layers {bad} have no parameters")
    return {(i, t) for i in chosen for t in ("w", "b")}


def last_layer_keys(model: nn.Model) -> set[Key]:
    """Keys of the last parameter layer only (the classic 'retrain the head' technique)."""
    return param_keys(model, [model.param_layers()[-1]])


# --------------------------------------------------------------------------------------------- conv2d


def _conv_pads(layer: nn.Layer) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding; SAME puts the odd pixel at the end, as TFLite does."""
    if layer.padding == "valid":
        return 0, 0, 0, 0
    (h, w, _), (oh, ow, _) = layer.in_shape, layer.out_shape
    kh, kw, s = layer.kernel, layer.kw, layer.stride
    th, tw = max((oh - 1) * s + kh - h, 0), max((ow - 1) * s + kw - w, 0)
    top, left = nn.same_padding(h, kh, s), nn.same_padding(w, kw, s)
    return top, th - top, left, tw - left


def _im2col(x: np.ndarray, layer: nn.Layer) -> np.ndarray:
    """Patches [n, oh, ow, k, kw, c] (OHWI order per patch) of the padded input."""
    top, bottom, left, right = _conv_pads(layer)
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    kh, kw, s = layer.kernel, layer.kw, layer.stride
    oh, ow, _ = layer.out_shape
    win = sliding_window_view(xp, (kh, kw), axis=(1, 2))[:, ::s, ::s][:, :oh, :ow]  # [n, oh, ow, c, k, kw]
    return np.ascontiguousarray(win.transpose(0, 1, 2, 4, 5, 3))


def _conv_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, layer: nn.Layer) -> tuple[np.ndarray, np.ndarray]:
    cols = _im2col(x, layer)
    n, oh, ow = cols.shape[:3]
    out = cols.reshape(n * oh * ow, -1) @ w.reshape(w.shape[0], -1).T + b
    return out.reshape(n, oh, ow, -1), cols


def _scatter_cols(dcols: np.ndarray, layer: nn.Layer) -> np.ndarray:
    """The adjoint of `_im2col`: patch gradients [n, oh, ow, k, kw, c] summed back onto the (unpadded) input."""
    n, oh, ow = dcols.shape[:3]
    kh, kw, s = layer.kernel, layer.kw, layer.stride
    h, wd, c = layer.in_shape
    top, bottom, left, right = _conv_pads(layer)
    dxp = np.zeros((n, h + top + bottom, wd + left + right, c))
    for i in range(kh):
        for j in range(kw):
            dxp[:, i : i + s * (oh - 1) + 1 : s, j : j + s * (ow - 1) + 1 : s, :] += dcols[:, :, :, i, j, :]
    return dxp[:, top : top + h, left : left + wd, :]


def _conv_backward(
    dy: np.ndarray, cols: np.ndarray, w: np.ndarray, layer: nn.Layer, need_dx: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    n, oh, ow, o = dy.shape
    dy2 = dy.reshape(-1, o)
    dw = (dy2.T @ cols.reshape(dy2.shape[0], -1)).reshape(w.shape)
    db = dy2.sum(axis=0)
    if not need_dx:
        return dw, db, None
    dcols = (dy2 @ w.reshape(o, -1)).reshape(n, oh, ow, layer.kernel, layer.kw, layer.in_shape[2])
    return dw, db, _scatter_cols(dcols, layer)


# --------------------------------------------------------------------------------------------- dwconv2d, gap


def _dwconv_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, layer: nn.Layer) -> tuple[np.ndarray, np.ndarray]:
    """Depthwise (multiplier 1), weights channel-major [c][k][kw]."""
    cols = _im2col(x, layer)  # [n, oh, ow, k, kw, c]
    return np.einsum("nhwabc,cab->nhwc", cols, w) + b, cols


def _dwconv_backward(
    dy: np.ndarray, cols: np.ndarray, w: np.ndarray, layer: nn.Layer, need_dx: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    dw = np.einsum("nhwc,nhwabc->cab", dy, cols)
    db = dy.sum(axis=(0, 1, 2))
    if not need_dx:
        return dw, db, None
    dcols = dy[:, :, :, None, None, :] * w.transpose(1, 2, 0)[None, None, None]
    return dw, db, _scatter_cols(dcols, layer)


def _activate(out: np.ndarray, act: str) -> np.ndarray:
    if act == "relu":
        return np.maximum(out, 0.0)
    if act == "relu6":
        return np.clip(out, 0.0, 6.0)
    return out


def _act_mask(dy: np.ndarray, y: np.ndarray, act: str) -> np.ndarray:
    """A fused activation's backward by its output, the device's rule: ReLU y > 0, ReLU6 0 < y < 6."""
    if act == "relu":
        return dy * (y > 0)
    if act == "relu6":
        return dy * ((y > 0) & (y < 6.0))
    return dy


# --------------------------------------------------------------------------------------------- maxpool2d


def _pool_windows(x: np.ndarray, layer: nn.Layer) -> np.ndarray:
    """Windows [n, oh, ow, c, k·k] in row-major (ky, kx) order (valid padding)."""
    k, s = layer.kernel, layer.stride
    oh, ow, _ = layer.out_shape
    win = sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s][:, :oh, :ow]  # [n, oh, ow, c, k, k]
    return win.reshape(*win.shape[:4], k * k)


def _pool_backward(dy: np.ndarray, x: np.ndarray, layer: nn.Layer) -> np.ndarray:
    """Each output gradient goes to its window's first maximum in (ky, kx) order (the device's rule)."""
    k, s = layer.kernel, layer.stride
    n, oh, ow, c = dy.shape
    first = _pool_windows(x, layer).argmax(axis=-1)  # argmax returns the first of equal maxima
    b, oy, ox, ch = np.indices((n, oh, ow, c))
    dx = np.zeros(x.shape)
    np.add.at(dx, (b, oy * s + first // k, ox * s + first % k, ch), dy)
    return dx


# --------------------------------------------------------------------------------------------- batch core


def _forward(model: nn.Model, params: Params, x: np.ndarray) -> tuple[list[np.ndarray], list[object]]:
    """Activations (one per layer, [n, *out_shape]) and what backward needs per layer."""
    acts: list[np.ndarray] = []
    caches: list[object] = []
    h = x
    for layer, (w, b) in zip(model.layers, params, strict=True):
        if layer.op == "dense":
            assert w is not None and b is not None
            flat = h.reshape(len(h), -1)
            out, cache = (flat @ w.T + b).reshape(len(h), *layer.out_shape), flat
        elif layer.op == "conv2d":
            assert w is not None and b is not None
            out, cache = _conv_forward(h, w, b, layer)
        elif layer.op == "relu":
            out, cache = np.maximum(h, 0.0), None
        elif layer.op == "maxpool2d":
            out, cache = _pool_windows(h, layer).max(axis=-1), h
        elif layer.op == "dwconv2d":
            assert w is not None and b is not None
            out, cache = _dwconv_forward(h, w, b, layer)
        elif layer.op == "gap":
            out, cache = h.mean(axis=(1, 2), keepdims=True), None
        elif layer.op == "add":
            out, cache = h + (x if layer.skip == 0 else acts[layer.skip - 1]), None
        else:
            raise ValueError(f"unknown op {layer.op!r}")
        out = _activate(out, layer.act)
        acts.append(out)
        caches.append(cache)
        h = out
    return acts, caches


def _batch(model: nn.Model, x: np.ndarray) -> np.ndarray:
    """Input as float64 [n, h, w, c]; accepts flat [n, h*w*c] too."""
    x = np.asarray(x, np.float64)
    return x.reshape(-1, *model.input_shape)


def _loss_and_dlogits(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample softmax cross-entropy and d(loss)/d(logits) = softmax - onehot."""
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    d = np.exp(logp)
    d[rows, labels] -= 1.0
    return -logp[rows, labels], d


def _recon_loss(out: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample reconstruction MSE of the output against the input, and its gradient 2(y − x)/n (the device's)."""
    e = out.reshape(len(out), -1) - x.reshape(len(x), -1)
    return (e * e).mean(axis=1), 2.0 * e / e.shape[1]


def _model_loss(model: nn.Model, out: np.ndarray, x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The model's own loss at its output: softmax cross-entropy, or an autoencoder's reconstruction MSE."""
    if model.loss == "reconstruction":
        return _recon_loss(out, x)
    return _loss_and_dlogits(out.reshape(len(out), -1), labels)


def _backward(
    model: nn.Model,
    params: Params,
    acts: list[np.ndarray],
    caches: list[object],
    dlogits: np.ndarray,
    keys: set[Key] | None,
) -> dict[Key, np.ndarray]:
    """Gradients (summed over the batch) for ``keys`` (None = all); stops below the lowest layer needed."""
    wanted = param_keys(model) if keys is None else keys
    lowest = min((i for i, _ in wanted), default=len(model.layers))
    grads: dict[Key, np.ndarray] = {}
    skips: dict[int, np.ndarray] = {}  # a residual add's gradient for the input of layer skip, where its branch starts
    dy = dlogits.reshape(acts[-1].shape)
    for i in range(len(model.layers) - 1, lowest - 1, -1):
        layer, (w, _) = model.layers[i], params[i]
        need_dx = i > lowest
        dx: np.ndarray | None = None
        dy = _act_mask(dy, acts[i], layer.act)
        if layer.op == "dense":
            assert w is not None
            flat = caches[i]
            assert isinstance(flat, np.ndarray)
            dy2 = dy.reshape(len(dy), -1)
            grads[(i, "w")], grads[(i, "b")] = dy2.T @ flat, dy2.sum(axis=0)
            if need_dx:
                dx = (dy2 @ w).reshape(len(dy), *model.layers[i].in_shape)
        elif layer.op == "conv2d":
            cols = caches[i]
            assert w is not None and isinstance(cols, np.ndarray)
            grads[(i, "w")], grads[(i, "b")], dx = _conv_backward(dy, cols, w, layer, need_dx)
        elif layer.op == "maxpool2d":
            x_in = caches[i]
            assert isinstance(x_in, np.ndarray)
            dx = _pool_backward(dy, x_in, layer) if need_dx else None
        elif layer.op == "dwconv2d":
            cols = caches[i]
            assert w is not None and isinstance(cols, np.ndarray)
            grads[(i, "w")], grads[(i, "b")], dx = _dwconv_backward(dy, cols, w, layer, need_dx)
        elif layer.op == "gap":
            h, wd, _ = layer.in_shape
            dx = np.broadcast_to(dy, (len(dy), *layer.in_shape)) / (h * wd) if need_dx else None
        elif layer.op == "add":  # both inputs get dy: the branch now, the skip where the branch starts
            if layer.skip > lowest:
                skips[layer.skip] = skips.get(layer.skip, 0.0) + dy
            dx = dy if need_dx else None
        else:  # relu: mask by output > 0, as the device does
            dx = dy * (acts[i] > 0)
        if dx is not None:
            prev_shape = (len(dy), *model.input_shape) if i == 0 else acts[i - 1].shape
            dy = dx.reshape(prev_shape) + skips.pop(i, 0.0)
    return {k: v for k, v in grads.items() if k in wanted}


# --------------------------------------------------------------------------------------------- public API


def forward(model: nn.Model, x: np.ndarray) -> list[np.ndarray]:
    """Activations of one sample, one per layer (shape ``layer.out_shape``); the last one is the logits."""
    acts, _ = _forward(model, _params64(model), _batch(model, x)[:1])
    return [a[0] for a in acts]


def logits(model: nn.Model, x: np.ndarray) -> np.ndarray:
    """Logits [n, n_classes] of a batch."""
    acts, _ = _forward(model, _params64(model), _batch(model, x))
    return acts[-1].reshape(len(acts[-1]), -1)


def loss_and_grads(model: nn.Model, x: np.ndarray, label: int) -> tuple[float, dict[Key, np.ndarray]]:
    """The loss of one sample (softmax cross-entropy, or the model's reconstruction MSE) and the gradient of every
    parameter tensor."""
    params = _params64(model)
    xb = _batch(model, x)[:1]
    acts, caches = _forward(model, params, xb)
    loss, dlogits = _model_loss(model, acts[-1], xb, np.array([int(label)]))
    return float(loss[0]), _backward(model, params, acts, caches, dlogits, None)


def run_sgd(
    model: nn.Model, samples: np.ndarray, labels: np.ndarray, lr: float, trainable: set[Key],
    channels: Channels | None = None, prox_mu: float = 0.0,
) -> tuple[list[dict[Key, np.ndarray]], nn.Model]:
    """Batch-1 SGD as the device runs it: per-step gradients of ``trainable`` and the final model.

    Each step's gradient is taken at the weights before that step; trainable tensors are then updated and
    stored as float32; every other tensor stays bit-identical. With ``channels`` (sparse update), a listed layer's
    weight gradient is only its listed output channels' rows, in list order, and only those rows update. With
    ``prox_mu`` (FedProx), each step then moves every trained value toward its value at the start:
    w ← w − lr·mu·(w − w₀), stored as float32 (the device's decoupled proximal step).
    """
    valid = param_keys(model)
    if not trainable <= valid:
        raise ValueError(f"not parameter tensors of this model: {sorted(trainable - valid)}")
    rows = {i: np.asarray(c, np.int64) for i, c in (channels or {}).items()}
    if not all((i, "w") in trainable for i in rows):
        raise ValueError(f"channel lists for untrained weights: {sorted(i for i in rows if (i, 'w') not in trainable)}")
    params = _params64(model)
    anchor = _params64(model)
    x = _batch(model, samples)
    y = np.asarray(labels).astype(np.int64)
    steps: list[dict[Key, np.ndarray]] = []
    for xi, yi in zip(x, y, strict=True):
        acts, caches = _forward(model, params, xi[None])
        _, dlogits = _model_loss(model, acts[-1], xi[None], yi[None])
        grads = _backward(model, params, acts, caches, dlogits, trainable)
        for (i, t), g in grads.items():
            w, b = params[i]
            assert w is not None and b is not None
            if t == "w" and i in rows:
                g = grads[(i, t)] = g[rows[i]]
                new = w.copy()
                new[rows[i]] = (w[rows[i]] - lr * g).astype(np.float32).astype(np.float64)
            else:
                new = ((w if t == "w" else b) - lr * g).astype(np.float32).astype(np.float64)
            params[i] = (new, b) if t == "w" else (w, new)
        if prox_mu:
            _prox_step(params, anchor, lr * prox_mu, trainable, rows)
        steps.append(grads)
    return steps, _with_params(model, params)


def _prox_step(params: Params, anchor: Params, lm: float, trainable: set[Key], rows: dict[int, np.ndarray]) -> None:
    """FedProx's pull of the trained values (a sparse layer's weights: its listed rows) toward ``anchor``."""
    for i, t in trainable:
        k = 0 if t == "w" else 1
        cur, a = params[i][k], anchor[i][k]
        assert cur is not None and a is not None
        sel = rows[i] if t == "w" and i in rows else slice(None)
        new = cur.copy()
        new[sel] = (cur[sel] - lm * (cur[sel] - a[sel])).astype(np.float32).astype(np.float64)
        params[i] = (new, params[i][1]) if k == 0 else (params[i][0], new)


def replay_sgd(
    model: nn.Model, samples: np.ndarray, labels: np.ndarray, lr: float, trainable: set[Key],
    channels: Channels | None = None, prox_mu: float = 0.0,
) -> list[dict[Key, np.ndarray]]:
    """Per-step gradients of ``trainable`` over a batch-1 SGD run (see `run_sgd`)."""
    return run_sgd(model, samples, labels, lr, trainable, channels, prox_mu)[0]


def predict(model: nn.Model, x: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Predicted class per sample."""
    x = _batch(model, x)
    return np.concatenate([logits(model, x[i : i + chunk]).argmax(axis=1) for i in range(0, len(x), chunk)])


def accuracy(model: nn.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of samples classified correctly."""
    return float(np.mean(predict(model, x) == np.asarray(y)))


def train_host(
    model: nn.Model,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    lr: float,
    batch: int,
    seed: int,
    momentum: float = 0.9,
) -> nn.Model:
    """Minibatch SGD (mean-gradient, heavy-ball momentum) on the host; used for pretraining only."""
    params = _params64(model)
    xb, yb = _batch(model, x), np.asarray(y).astype(np.int64)
    keys = param_keys(model)
    velocity: dict[Key, np.ndarray | float] = {k: 0.0 for k in keys}
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(xb))
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            acts, caches = _forward(model, params, xb[idx])
            _, dlogits = _model_loss(model, acts[-1], xb[idx], yb[idx])
            grads = _backward(model, params, acts, caches, dlogits / len(idx), keys)
            for (i, t), g in grads.items():
                velocity[(i, t)] = momentum * velocity[(i, t)] + g
                w, b = params[i]
                assert w is not None and b is not None
                params[i] = (w - lr * velocity[(i, t)], b) if t == "w" else (w, b - lr * velocity[(i, t)])
    return _with_params(model, params)


# the pieces the forward-only reference (bench.numerics.pepita) builds on
params64 = _params64
with_params = _with_params
batch = _batch
forward_batch = _forward
loss_and_dlogits = _loss_and_dlogits
conv_forward = _conv_forward
conv_backward = _conv_backward
