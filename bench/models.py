"""Model zoo for the demo task: architectures, He init, and host pretraining on the clean data (cached).

Pretraining happens on the host because the device experiment is about *adapting* a deployed network to
drift, not learning from scratch. Trained weights are cached as .npz so repeated bench runs start instantly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench import nn, reference
from bench.tasks import DeviceDataset

VERSION = "1"  # bump when architectures, init or pretraining recipe change: invalidates caches
PRETRAIN_EPOCHS, PRETRAIN_LR, PRETRAIN_BATCH = 40, 0.05, 32  # ~0.1-0.7 s, >= 96% clean accuracy


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


def _digits_mlp_wide(rng: np.random.Generator, task: DeviceDataset) -> list[nn.Layer]:
    return _mlp(rng, task.input_shape, [384, 384], task.n_classes)


# name -> (builder, pretrain?). The wide model exists to overflow device SRAM when every layer trains (~177k params,
# 707 KB fp32: it fits a board's flash, not its SRAM); it is left at its random init because only its size matters.
_ZOO: dict[str, tuple[Callable[[np.random.Generator, DeviceDataset], list[nn.Layer]], bool]] = {
    "digits-mlp": (_digits_mlp, True),
    "digits-cnn": (_digits_cnn, True),
    "digits-mlp-wide": (_digits_mlp_wide, False),
}


def model_names() -> list[str]:
    return sorted(_ZOO)


# --------------------------------------------------------------------------------------------- cache


def _data_digest(task: DeviceDataset) -> str:
    """Fingerprint of the pretraining data, so a changed split or task seed never hits a stale cache entry."""
    h = hashlib.sha256()
    for a in (task.x_pretrain, task.y_pretrain):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:12]


def _cache_path(cache_dir: Path, name: str, task: DeviceDataset, seed: int) -> Path:
    return cache_dir / f"{name}__{task.name}__s{seed}__v{VERSION}__{_data_digest(task)}.npz"


def _save(path: Path, model: nn.Model) -> None:
    """Atomic write (temp file + rename) so concurrent runs never read a half-written cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for i, layer in enumerate(model.layers):
        if layer.weight is not None and layer.bias is not None:
            arrays[f"w{i}"], arrays[f"b{i}"] = layer.weight, layer.bias
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load(path: Path, model: nn.Model) -> nn.Model | None:
    """``model`` with cached weights, or None if the file is missing, unreadable or shaped differently."""
    try:
        with np.load(path) as z:
            cached = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    layers = []
    for i, layer in enumerate(model.layers):
        if layer.weight is not None and layer.bias is not None:
            w, b = cached.get(f"w{i}"), cached.get(f"b{i}")
            if w is None or b is None or w.shape != layer.weight.shape or b.shape != layer.bias.shape:
                return None
            layer = dataclasses.replace(layer, weight=w.astype(np.float32), bias=b.astype(np.float32))
        layers.append(layer)
    return dataclasses.replace(model, layers=tuple(layers))


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


def build_model(name: str, task: DeviceDataset, seed: int, cache_dir: Path | None) -> nn.Model:
    """Model ``name`` for ``task``, He-initialised from ``seed`` and pretrained on the task's clean data.

    With ``cache_dir`` the pretrained weights are reused when (name, seed, task, VERSION, data) match.
    """
    model = architecture(name, task, seed)
    if model.meta["pretrained"] == "no":
        return model
    path = _cache_path(Path(cache_dir), name, task, seed) if cache_dir is not None else None
    if path is not None and (hit := _load(path, model)) is not None:
        return hit
    model = reference.train_host(
        model, task.x_pretrain, task.y_pretrain, PRETRAIN_EPOCHS, PRETRAIN_LR, PRETRAIN_BATCH, seed
    )
    if path is not None:
        _save(path, model)
    return model
