"""The numpy reference against finite differences and a naive conv written independently here."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bench.model import nn
from bench.numerics import fp32 as reference

# ------------------------------------------------------------------------------------------ tiny float64 nets


def _conv(rng: np.random.Generator, in_shape: nn.Shape, out_c: int, k: int, stride: int, padding: str) -> nn.Layer:
    h, w, c = in_shape
    oh, ow = nn.conv_out_size(h, k, stride, padding), nn.conv_out_size(w, k, stride, padding)
    return nn.Layer(
        "conv2d",
        in_shape,
        (oh, ow, out_c),
        weight=rng.normal(0, 1.5 / np.sqrt(k * k * c), (out_c, k, k, c)),
        bias=rng.normal(0, 0.1, out_c),
        kernel=k,
        stride=stride,
        padding=padding,  # type: ignore[arg-type]
    )


def _dense(rng: np.random.Generator, in_shape: nn.Shape, out: int) -> nn.Layer:
    n = nn.numel(in_shape)
    return nn.Layer(
        "dense",
        (1, 1, n),
        (1, 1, out),
        weight=rng.normal(0, 1.5 / np.sqrt(n), (out, n)),
        bias=rng.normal(0, 0.1, out),
    )


def _relu(shape: nn.Shape) -> nn.Layer:
    return nn.Layer("relu", shape, shape)


def _net(kind: str, seed: int = 0) -> nn.Model:
    """Small nets with float64 weights, so finite differences are exact enough for 1e-6."""
    rng = np.random.default_rng(seed)
    if kind == "dense":
        layers = [_dense(rng, (1, 1, 6), 5)]
        shape: nn.Shape = (1, 1, 6)
    elif kind == "mlp-relu":
        shape = (2, 2, 3)
        layers = [_dense(rng, shape, 7), _relu((1, 1, 7)), _dense(rng, (1, 1, 7), 4)]
    else:
        spec = {
            "conv-valid": (6, 3, 1, "valid"),
            "conv-same": (6, 3, 1, "same"),
            "conv-stride2": (7, 3, 2, "same"),
            "conv-same-even": (8, 4, 2, "same"),
            "conv-valid-stride2": (8, 3, 2, "valid"),
        }[kind]
        size, k, s, pad = spec
        shape = (size, size, 2)
        c1 = _conv(rng, shape, 3, k, s, pad)
        c2 = _conv(rng, c1.out_shape, 4, 2, 1, "same")  # a second conv exercises the conv input gradient
        layers = [c1, _relu(c1.out_shape), c2, _relu(c2.out_shape), _dense(rng, c2.out_shape, 4)]
    return nn.Model(kind, shape, 4 if kind != "dense" else 5, tuple(layers))


KINDS = [
    "dense",
    "mlp-relu",
    "conv-valid",
    "conv-same",
    "conv-stride2",
    "conv-same-even",
    "conv-valid-stride2",
]


def _loss(model: nn.Model, x: np.ndarray, label: int) -> float:
    logits = reference.forward(model, x)[-1].ravel()
    z = logits - logits.max()
    return float(np.log(np.exp(z).sum()) - z[label])


# ------------------------------------------------------------------------------------------ gradients


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_central_differences(kind: str) -> None:
    model = _net(kind)
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, model.input_shape)
    label = 2
    loss, grads = reference.loss_and_grads(model, x, label)
    assert loss == pytest.approx(_loss(model, x, label), rel=1e-12)
    assert set(grads) == reference.param_keys(model)
    eps = 1e-5
    for (i, t), g in grads.items():
        layer = model.layers[i]
        tensor = layer.weight if t == "w" else layer.bias
        assert tensor is not None and g.shape == tensor.shape
        flat = tensor.reshape(-1)  # a view: perturb in place, then restore
        fd = np.empty(flat.size)
        for j in range(flat.size):
            keep = flat[j]
            flat[j] = keep + eps
            up = _loss(model, x, label)
            flat[j] = keep - eps
            down = _loss(model, x, label)
            flat[j] = keep
            fd[j] = (up - down) / (2 * eps)
        err = np.abs(g.reshape(-1) - fd).max() / max(np.abs(fd).max(), 1e-12)
        assert err < 1e-6, f"layer {i} {t}: relative error {err:.2e}"


def test_relu_gradient_masks_by_output() -> None:
    """A hidden unit that is off must get no weight gradient (the device masks by out > 0)."""
    model = _net("mlp-relu")
    x = np.random.default_rng(3).normal(0, 1, model.input_shape)
    acts = reference.forward(model, x)
    off = acts[1].ravel() <= 0
    assert off.any()
    _, grads = reference.loss_and_grads(model, x, 0)
    assert np.all(grads[(0, "w")][off] == 0) and np.all(grads[(0, "b")][off] == 0)


# -------------------------------------------------------------------------------------- conv vs naive loops


def _naive_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, padding: str) -> np.ndarray:
    h, wd, c = x.shape
    o, k = w.shape[0], w.shape[1]
    if padding == "same":
        oh, ow = -(-h // stride), -(-wd // stride)
        pad_h, pad_w = max((oh - 1) * stride + k - h, 0), max((ow - 1) * stride + k - wd, 0)
        top, left = pad_h // 2, pad_w // 2
    else:
        oh, ow = (h - k) // stride + 1, (wd - k) // stride + 1
        top = left = 0
    out = np.zeros((oh, ow, o))
    for y in range(oh):
        for xx in range(ow):
            for f in range(o):
                acc = b[f]
                for i in range(k):
                    for j in range(k):
                        r, col = y * stride + i - top, xx * stride + j - left
                        if 0 <= r < h and 0 <= col < wd:
                            for ch in range(c):
                                acc += x[r, col, ch] * w[f, i, j, ch]
                out[y, xx, f] = acc
    return out


@pytest.mark.parametrize(
    ("size", "k", "stride", "padding"),
    [
        (6, 3, 1, "valid"),
        (6, 3, 1, "same"),
        (7, 3, 2, "same"),
        (8, 3, 2, "same"),
        (6, 4, 1, "same"),
        (8, 3, 2, "valid"),
        (5, 5, 1, "valid"),
        (5, 2, 2, "same"),
    ],
)
def test_conv_matches_naive_loops(size: int, k: int, stride: int, padding: str) -> None:
    rng = np.random.default_rng(size * 100 + k * 10 + stride)
    layer = _conv(rng, (size, size + 1, 3), 4, k, stride, padding)
    model = nn.Model("c", layer.in_shape, 4, (layer,))
    x = rng.normal(0, 1, layer.in_shape)
    assert layer.weight is not None and layer.bias is not None
    want = _naive_conv(x, layer.weight, layer.bias, stride, padding)
    got = reference.forward(model, x)[0]
    assert got.shape == layer.out_shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_batch_logits_match_single_forward() -> None:
    model = _net("conv-stride2")
    xs = np.random.default_rng(4).normal(0, 1, (5, *model.input_shape))
    batch = reference.logits(model, xs)
    for x, row in zip(xs, batch, strict=True):
        acts = reference.forward(model, x)
        assert [a.shape for a in acts] == [layer.out_shape for layer in model.layers]
        np.testing.assert_allclose(acts[-1].ravel(), row, rtol=1e-12)


# ------------------------------------------------------------------------------------------ replay_sgd


def _as_f32(model: nn.Model) -> nn.Model:
    """Device-like copy: float32 weights (the float64 nets above are for finite differences only)."""
    layers = tuple(
        layer
        if layer.weight is None or layer.bias is None
        else dataclasses.replace(layer, weight=layer.weight.astype(np.float32), bias=layer.bias.astype(np.float32))
        for layer in model.layers
    )
    return dataclasses.replace(model, layers=layers)


@pytest.mark.parametrize("which", ["last", "all", "first-bias"])
def test_replay_updates_only_trainable(which: str) -> None:
    model = _as_f32(_net("conv-same"))
    keys = {
        "last": reference.last_layer_keys(model),
        "all": reference.param_keys(model),
        "first-bias": {(0, "b")},
    }
    trainable = keys[which]
    rng = np.random.default_rng(5)
    xs, ys = rng.normal(0, 1, (6, *model.input_shape)), rng.integers(0, 4, 6)
    lr = 0.05
    steps, after = reference.run_sgd(model, xs, ys, lr, trainable)
    assert len(steps) == 6 and all(set(s) == trainable for s in steps)
    for mine, replayed in zip(steps, reference.replay_sgd(model, xs, ys, lr, trainable), strict=True):
        assert all(np.array_equal(mine[k], replayed[k]) for k in trainable)
    # replicate step by step with loss_and_grads on the model as it stands before each step
    current = model
    for x, y, step in zip(xs, ys, steps, strict=True):
        _, full = reference.loss_and_grads(current, x, int(y))
        for key in trainable:
            np.testing.assert_allclose(step[key], full[key], rtol=1e-10, atol=1e-12)
        current = reference.run_sgd(current, x[None], np.array([y]), lr, trainable)[1]
    for i in model.param_layers():
        for t in ("w", "b"):
            before, end = (getattr(m.layers[i], "weight" if t == "w" else "bias") for m in (model, after))
            assert end.dtype == np.float32
            if (i, t) in trainable:
                assert not np.array_equal(before, end)
            else:
                assert np.array_equal(before, end)
            np.testing.assert_array_equal(end, getattr(current.layers[i], "weight" if t == "w" else "bias"))


def test_replay_applies_sgd_rule() -> None:
    model = _as_f32(_net("dense"))
    x, y = np.random.default_rng(6).normal(0, 1, (1, 6)), np.array([3])
    lr = 0.1
    (g,), after = reference.run_sgd(model, x, y, lr, {(0, "w"), (0, "b")})
    w0, w1 = model.layers[0].weight, after.layers[0].weight
    assert w0 is not None and w1 is not None
    np.testing.assert_allclose(w1, (w0 - lr * g[(0, "w")]).astype(np.float32), rtol=0, atol=0)


def test_replay_rejects_unknown_tensors() -> None:
    model = _net("mlp-relu")
    with pytest.raises(ValueError, match="not parameter tensors"):
        reference.replay_sgd(model, np.zeros((1, 12)), np.zeros(1), 0.1, {(1, "w")})
    with pytest.raises(ValueError, match="no parameters"):
        reference.param_keys(model, [1])


def test_train_host_fits_a_separable_problem() -> None:
    rng = np.random.default_rng(7)
    model = _as_f32(_net("mlp-relu"))
    centers = rng.normal(0, 2, (4, 12))
    y = rng.integers(0, 4, 400)
    x = centers[y] + rng.normal(0, 0.3, (400, 12))
    assert reference.accuracy(model, x, y) < 0.9
    trained = reference.train_host(model, x, y, epochs=20, lr=0.05, batch=16, seed=0)
    assert reference.accuracy(trained, x, y) > 0.97
    assert all(layer.weight is None or layer.weight.dtype == np.float32 for layer in trained.layers)
