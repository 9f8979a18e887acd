"""PyTorch autograd as an fp32 gradient oracle for the device (issue: "fp32 gradients from the device match PyTorch
autograd within 1e-4 relative error").

`bench.numerics.fp32` (numpy) is the bench's own fidelity check; this one shares nothing with it nor with the firmware:
the network is rebuilt in torch (float64, NCHW, conv weights OHWI → OIHW), the samples the device reports it drew are
replayed with plain SGD on the trainable tensors only, and every gradient tensor the device streamed is compared with
what autograd computes at the same weights. Torch is a test dependency only (the ``oracle`` extra, installed by
``make test``); the package never imports it.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.app.runner import CACHE_DIR
from bench.config.profile import Technique, load_profile
from bench.model import nn
from bench.model.tasks import load_task
from bench.numerics import fp32 as reference
from bench.numerics.pretrain import build_model
from bench.plan.fp32 import sparse_channels
from bench.records.run import PARAM_NAMES

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - make test installs it
    torch = None  # type: ignore[assignment]

STEPS = 4
TOLERANCE = 1e-4
TECHNIQUES = [("full-fp32", "quick"), ("last-fp32", "quick"), ("sparse-fp32", "techniques"), ("full-fp32", "aifes_cnn")]


def _need_torch() -> None:
    if torch is None:
        pytest.fail("PyTorch is not installed: it is the fp32 gradient oracle of these tests. `make test` installs it "
                    "(the 'oracle' extra: pip install -e '.[test,oracle]', torch==2.13.0, the CPU wheel)",
                    pytrace=False)


# --------------------------------------------------------------------------------------------- the torch network


class TorchNet:
    """A `bench.model.nn.Model` rebuilt in torch, float64; activations NCHW, dense layers read the HWC flattening."""

    def __init__(self, model: nn.Model) -> None:
        self.model = model
        self.params: dict[tuple[int, str], torch.Tensor] = {}
        for i, layer in enumerate(model.layers):
            if layer.weight is None or layer.bias is None:
                continue
            w = np.asarray(layer.weight, np.float64)
            if layer.op == "conv2d":
                w = w.transpose(0, 3, 1, 2)  # OHWI -> OIHW
            self.params[(i, "w")] = torch.tensor(np.ascontiguousarray(w), dtype=torch.float64)
            self.params[(i, "b")] = torch.tensor(np.asarray(layer.bias, np.float64), dtype=torch.float64)

    @staticmethod
    def _same_pads(size: int, k: int, s: int) -> tuple[int, int]:
        """TFLite SAME padding: total = max((out-1)*s + k - size, 0), the odd pixel at the end."""
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        return total // 2, total - total // 2

    def logits(self, x_hwc: np.ndarray) -> torch.Tensor:
        h = torch.tensor(np.asarray(x_hwc, np.float64).reshape(1, *self.model.input_shape), dtype=torch.float64)
        h = h.permute(0, 3, 1, 2)  # NHWC -> NCHW
        for i, layer in enumerate(self.model.layers):
            if layer.op == "conv2d":
                if layer.padding == "same":
                    top, bottom = self._same_pads(layer.in_shape[0], layer.kernel, layer.stride)
                    left, right = self._same_pads(layer.in_shape[1], layer.kernel, layer.stride)
                    h = F.pad(h, (left, right, top, bottom))
                h = F.conv2d(h, self.params[(i, "w")], self.params[(i, "b")], stride=layer.stride)
            elif layer.op == "dense":
                flat = h.permute(0, 2, 3, 1).reshape(1, -1) if h.dim() == 4 else h.reshape(1, -1)  # HWC order
                h = F.linear(flat, self.params[(i, "w")], self.params[(i, "b")])
            elif layer.op == "relu":
                h = F.relu(h)
            elif layer.op == "maxpool2d":
                h = F.max_pool2d(h, layer.kernel, layer.stride)
            else:
                raise ValueError(f"layer {i}: op {layer.op!r}")
        return h.reshape(1, -1)

    def grads(self, x_hwc: np.ndarray, label: int, keys: set[tuple[int, str]]) -> tuple[float, dict]:
        """Loss and autograd gradients of ``keys`` (in the device's layouts: conv weights back to OHWI)."""
        for k, p in self.params.items():
            p.requires_grad_(k in keys)
            p.grad = None
        loss = F.cross_entropy(self.logits(x_hwc), torch.tensor([int(label)]), reduction="sum")
        loss.backward()
        out = {}
        for k in keys:
            g = self.params[k].grad
            assert g is not None, k
            g = g.detach().numpy()
            if k[1] == "w" and self.model.layers[k[0]].op == "conv2d":
                g = g.transpose(0, 2, 3, 1)  # OIHW -> OHWI
            out[k] = np.ascontiguousarray(g)
        return float(loss.detach()), out

    def sgd(self, key: tuple[int, str], grad: np.ndarray, lr: float, rows: np.ndarray | None) -> None:
        """p -= lr * g on the trained rows only, stored back as float32 (the device keeps fp32 parameters)."""
        p = self.params[key]
        g = torch.tensor(grad, dtype=torch.float64)
        if key[1] == "w" and self.model.layers[key[0]].op == "conv2d":
            g = g.permute(0, 3, 1, 2)
        with torch.no_grad():
            if rows is None:
                p -= lr * g
            else:
                idx = torch.tensor(rows)
                p[idx] -= lr * g[idx]
            p.copy_(p.to(torch.float32).to(torch.float64))

    def top_rows(self, layer: int, count: int) -> np.ndarray:
        """The ``count`` output channels with the largest L2 weight norm (ties: lower index), ascending."""
        w = self.params[(layer, "w")].detach()
        norms = torch.linalg.vector_norm(w.reshape(w.shape[0], -1), dim=1).numpy()
        order = sorted(range(len(norms)), key=lambda c: (-norms[c], c))
        return np.array(sorted(order[:count]), np.int64)


def rel_err(device: np.ndarray, oracle: np.ndarray) -> float:
    denom = float(np.linalg.norm(oracle))
    return float(np.linalg.norm(device.astype(np.float64) - oracle)) / (denom if denom > 0 else 1.0)


# --------------------------------------------------------------------------------------------- host-only check


def test_torch_network_matches_the_numpy_reference():
    """The oracle's translation (layouts, SAME padding, HWC flattening) agrees with `bench.numerics.fp32` on a model
    with a strided SAME conv, so a disagreement on a twin means the device, not the translation."""
    _need_torch()
    rng = np.random.default_rng(3)
    conv = nn.Layer("conv2d", (7, 6, 2), (4, 3, 5), weight=rng.standard_normal((5, 3, 3, 2)).astype(np.float32),
                    bias=rng.standard_normal(5).astype(np.float32), kernel=3, stride=2, padding="same")
    dense = nn.Layer("dense", (1, 1, 60), (1, 1, 4), weight=rng.standard_normal((4, 60)).astype(np.float32),
                     bias=rng.standard_normal(4).astype(np.float32))
    model = nn.Model("t", (7, 6, 2), 4, (conv, nn.Layer("relu", (4, 3, 5), (4, 3, 5)), dense))
    x = rng.standard_normal((7, 6, 2))
    loss_ref, ref = reference.loss_and_grads(model, x, 2)
    loss, got = TorchNet(model).grads(x, 2, set(ref))
    assert loss == pytest.approx(loss_ref, rel=1e-12)
    for k, g in ref.items():
        assert rel_err(got[k], g) < 1e-12, k


def test_torch_maxpool_network_matches_the_numpy_reference():
    """The same for a maxpool network (strided 2×2 and overlapping 3×3 at stride 2), distinct values: no ties."""
    _need_torch()
    rng = np.random.default_rng(4)
    conv = nn.Layer("conv2d", (9, 9, 1), (7, 7, 3), weight=rng.standard_normal((3, 3, 3, 1)).astype(np.float32),
                    bias=rng.standard_normal(3).astype(np.float32), kernel=3)
    for k, out in ((2, 3), (3, 3)):
        pool = nn.Layer("maxpool2d", (7, 7, 3), (out, out, 3), kernel=k, stride=2)
        dense = nn.Layer("dense", (1, 1, out * out * 3), (1, 1, 4),
                         weight=rng.standard_normal((4, out * out * 3)).astype(np.float32),
                         bias=rng.standard_normal(4).astype(np.float32))
        model = nn.Model("t", (9, 9, 1), 4, (conv, nn.Layer("relu", (7, 7, 3), (7, 7, 3)), pool, dense))
        x = rng.standard_normal((9, 9, 1))
        loss_ref, ref = reference.loss_and_grads(model, x, 1)
        loss, got = TorchNet(model).grads(x, 1, set(ref))
        assert loss == pytest.approx(loss_ref, rel=1e-12)
        assert {k for k, g in ref.items() if np.abs(g).max() > 0} >= {(0, "w"), (3, "w")}
        for key, g in ref.items():
            assert rel_err(got[key], g) < 1e-12, (k, key)


# --------------------------------------------------------------------------------------------- on every twin


def _expected_rows(net: TorchNet, model: nn.Model, technique: Technique, streamed: dict) -> dict[int, np.ndarray]:
    """Sparse update: the trained channel rows of each listed layer, derived from the streamed tensor sizes and the
    weight norms, and checked against the plan compiler's own selection."""
    rows: dict[int, np.ndarray] = {}
    planned = sparse_channels(model, technique)
    for i, _ratio in technique.layers:
        w = model.layers[i].weight
        assert w is not None
        per_row = w.size // w.shape[0]
        size = streamed[(i, "w")].size
        assert size % per_row == 0, f"layer {i}: streamed {size} values, not whole rows of {per_row}"
        chosen = net.top_rows(i, size // per_row)
        assert tuple(chosen) == planned.get(i, tuple(range(w.shape[0]))), f"layer {i}: channel selection"
        if len(chosen) < w.shape[0]:
            rows[i] = chosen
    return rows


@pytest.mark.twin
@pytest.mark.parametrize(("technique", "profile"), TECHNIQUES, ids=[f"{t}-{p}" for t, p in TECHNIQUES])
def test_device_gradients_match_torch_autograd(bench_board, bench_run, technique, profile):
    _need_torch()
    run = bench_run(bench_board, technique, profile=profile, steps=STEPS, grad_every=1, check_steps=0, eval_samples=2)
    assert run.status == "ok", run.error
    prof = load_profile(profile)
    tech = prof.technique(technique)
    ds = load_task(prof.task, prof.seed)
    model = build_model(prof.model, ds, prof.seed, CACHE_DIR)  # the pretrained model the bench flashed
    x_train, y_train = ds.decode(ds.x_train), ds.y_train.astype(np.int64)
    trainable = tech.trainable(model.param_layers())
    codes = {v: k for k, v in PARAM_NAMES.items()}

    net = TorchNet(model)
    steps = run.record.steps
    assert [s.step for s in steps] == list(range(STEPS))
    step0 = {(layer, PARAM_NAMES[p]): g for (st, layer, p), g in run.record.grads.items() if st == 0}
    assert set(step0) == trainable, "the device streams exactly the trainable tensors"
    rows = _expected_rows(net, model, tech, step0) if tech.scheme == "sparse" else {}
    if tech.scheme == "sparse":
        assert rows, "the sparse profile trains some layer on a subset of its channels"

    worst = 0.0
    for s in steps:
        x, y = x_train[s.sample], int(y_train[s.sample])
        assert s.label == y
        loss, grads = net.grads(x, y, trainable)
        assert s.loss == pytest.approx(loss, rel=1e-4, abs=1e-6), f"step {s.step}: loss"
        for key in sorted(trainable):
            dev = run.record.grads.get((s.step, key[0], codes[key[1]]))
            assert dev is not None, f"step {s.step}: no gradient streamed for {key}"
            oracle = grads[key]
            r = rows.get(key[0]) if key[1] == "w" else None
            if r is not None:
                oracle = oracle[r]  # the device streams the trained rows only, in ascending order
            assert dev.size == oracle.size, f"step {s.step} {key}: {dev.size} values vs {oracle.size}"
            err = rel_err(dev, oracle.ravel())
            worst = max(worst, err)
            assert err <= TOLERANCE, f"step {s.step} layer {key[0]} {key[1]}: relative error {err:.3g}"
        for key in trainable:  # then the same SGD step the device took
            net.sgd(key, grads[key], prof.lr, rows.get(key[0]) if key[1] == "w" else None)
    print(f"{bench_board.label} {technique}: worst relative error vs torch {worst:.2e}")
    assert worst > 0  # the comparison ran on real values
