"""Host pretraining of a zoo model on its task's clean data with the fp32 reference, cached as .npz.

Pretraining happens on the host because the device experiment is about *adapting* a deployed network to drift,
not learning from scratch; the cache makes repeated bench runs start instantly."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from bench.model import nn
from bench.model.tasks.digits import DeviceDataset
from bench.model.zoo import VERSION, architecture
from bench.numerics import fp32 as reference

PRETRAIN_EPOCHS, PRETRAIN_LR, PRETRAIN_BATCH = 40, 0.05, 32  # ~0.1-0.7 s, >= 96% clean accuracy


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
            np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types the kwargs as allow_pickle
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
