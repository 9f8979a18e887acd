"""Model zoo for the demo tasks: architectures and He init (pretraining: `bench.numerics.pretrain`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from bench.model import nn
from bench.model.tasks import DeviceDataset

VERSION = "1"  # bump when architectures, init or pretraining recipe change: invalidates caches


# --------------------------------------------------------------------------------------------- builders


def _he(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def _dense(rng: np.random.Generator, in_shape: nn.Shape, out: int) -> nn.Layer:
    """Dense over the flattened (HWC) input; stored with the plan's dense shapes (h = w = 1)."""
    n_in = nn.numel(in_shape)
    return nn.Layer(
        "dense", (1, 1, n_in), (1, 1, out), weight=_he(rng, (out, n_in), n_in), bias=np.zeros(out, np.float32)
    )


def _conv(
    rng: np.random.Generator, in_shape: nn.Shape, out_c: int, k: int, stride: int = 1, padding: str = "valid"
) -> nn.Layer:
    h, w, c = in_shape
    oh, ow = nn.conv_out_size(h, k, stride, padding), nn.conv_out_size(w, k, stride, padding)
    return nn.Layer(
        "conv2d",
        in_shape,
        (oh, ow, out_c),
        weight=_he(rng, (out_c, k, k, c), k * k * c),
        bias=np.zeros(out_c, np.float32),
        kernel=k,
        stride=stride,
        padding=padding,  # type: ignore[arg-type]
    )


def _relu(shape: nn.Shape) -> nn.Layer:
    return nn.Layer("relu", shape, shape)


def _maxpool(in_shape: nn.Shape, k: int = 2) -> nn.Layer:
    h, w, c = in_shape
    return nn.Layer("maxpool2d", in_shape, ((h - k) // k + 1, (w - k) // k + 1, c), kernel=k, stride=k)


def _mlp(rng: np.random.Generator, in_shape: nn.Shape, hidden: list[int], n_classes: int) -> list[nn.Layer]:
    layers: list[nn.Layer] = []
    shape = in_shape
    for width in hidden:
        layers += [_dense(rng, shape, width), _relu((1, 1, width))]
        shape = (1, 1, width)
    return [*layers, _dense(rng, shape, n_classes)]


def _digits_mlp(rng: np.random.Generator, task: DeviceDataset) -> list[nn.Layer]:
    return _mlp(rng, task.input_shape, [32], task.n_classes)


def _digits_cnn(rng: np.random.Generator, task: DeviceDataset) -> list[nn.Layer]:
    conv = _conv(rng, task.input_shape, 8, 3)
    return [conv, _relu(conv.out_shape), *_mlp(rng, conv.out_shape, [32], task.n_classes)]


def _aifes_cnn(rng: np.random.Generator, task: DeviceDataset) -> list[nn.Layer]:
    """AIfES's CNN workload (../shared/ANCHORS.md): conv 3×3×8 valid + ReLU, maxpool 2, dense to the classes."""
    conv = _conv(rng, task.input_shape, 8, 3)
    pool = _maxpool(conv.out_shape)
    return [conv, _relu(conv.out_shape), pool, _dense(rng, pool.out_shape, task.n_classes)]


def _digits_resnet(rng: np.random.Generator, task: DeviceDataset) -> list[nn.Layer]:
    """A ResNet basic block on the digits: conv 3×3 SAME 8 + ReLU = r, [conv 3×3 SAME + ReLU, conv 3×3 SAME] + r →
    ADD (ReLU), maxpool 2, dense to the classes. The graph to train through a residual ADD, fp32 and int8."""
    stem = _conv(rng, task.input_shape, 8, 3, padding="same")
    shape = stem.out_shape
    a = _conv(rng, shape, 8, 3, padding="same")
    b = _conv(rng, shape, 8, 3, padding="same")
    assert b.weight is not None
    b = dataclasses.replace(b, weight=b.weight * np.float32(0.5))  # the branch starts small beside the skip
    add = nn.Layer("add", shape, shape, act="relu", skip=2)  # the input of layer 2, where the branch starts
    pool = _maxpool(shape)
    return [stem, _relu(shape), a, _relu(shape), b, add, pool, _dense(rng, pool.out_shape, task.n_classes)]


def _digits_mlp_wide(rng: np.random.Generator, task: DeviceDataset) -> list[nn.Layer]:
    return _mlp(rng, task.input_shape, [384, 384], task.n_classes)


# name -> (builder, pretrain?). The wide model exists to overflow device SRAM when every layer trains (~177k params,
# 707 KB fp32: it fits a board's flash, not its SRAM); it is left at its random init because only its size matters.
_ZOO: dict[str, tuple[Callable[[np.random.Generator, DeviceDataset], list[nn.Layer]], bool]] = {
    "digits-mlp": (_digits_mlp, True),
    "digits-cnn": (_digits_cnn, True),
    "digits-mlp-wide": (_digits_mlp_wide, False),
    "aifes-cnn": (_aifes_cnn, True),
    "digits-resnet": (_digits_resnet, True),
}


def model_names() -> list[str]:
    return sorted(_ZOO)


# --------------------------------------------------------------------------------------------- public API


def architecture(name: str, task: DeviceDataset, seed: int = 0) -> nn.Model:
    """Model ``name`` for ``task`` at its He initialisation from ``seed``, not pretrained (shapes, layer kinds)."""
    if name not in _ZOO:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(model_names())}")
    builder, pretrain = _ZOO[name]
    layers = builder(np.random.default_rng(seed), task)
    meta = {
        "task": task.name,
        "seed": str(seed),
        "version": VERSION,
        "pretrained": "clean" if pretrain else "no",
    }
    return nn.Model(name, task.input_shape, task.n_classes, tuple(layers), meta)


