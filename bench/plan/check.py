"""Checks of a profile against its model that need the model itself (its layers or its graph's operators).

Why in the plan stage: a profile is a passive description (`bench.config`); what its ``[sparse]`` table names can
only be judged against the network the plan will be compiled for."""

from __future__ import annotations

from pathlib import Path

from bench.config.boards import ConfigError
from bench.config.profile import Profile, TechniqueError, require_model_file
from bench.model.tasks import DatasetError, is_file_task, load_task, task_names
from bench.model.zoo import architecture, model_names
from bench.plan.int8 import TRAINABLE_OPS
from bench.tflite.io import load_tflite


def _check_file_task(profile: Profile, path: Path | str) -> None:
    """A task file is read (and its model built on it) before anything runs: a bad file or a sample shape the model
    cannot take is named here, not by the device."""
    try:
        ds = load_task(profile.task, profile.seed, profile.dataset)
        if profile.imported is None:
            architecture(profile.model, ds)
    except DatasetError as exc:
        raise ConfigError(f"{path}: key 'task': {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: model {profile.model!r} cannot take the samples of {profile.task!r} "
                          f"({ds.input_shape}, {ds.n_classes} classes): {exc}") from None


def check_sparse_layers(profile: Profile, path: Path | str) -> None:
    """The ``[sparse]`` layers must name layers of the profile's model that have weights."""
    assert profile.sparse is not None
    if profile.imported is not None:
        check_sparse_ops(profile, path)
        return
    model = architecture(profile.model, load_task(profile.task, profile.seed, profile.dataset))
    with_weights = model.param_layers()
    for i in profile.sparse.layers:
        where = f"{path}: key 'sparse.layers.{i}'"
        if i >= len(model.layers):
            raise TechniqueError(f"{where}: model '{model.name}' has no layer {i} (layers 0..{len(model.layers) - 1})")
        if i not in with_weights:
            raise TechniqueError(f"{where}: layer {i} of '{model.name}' is a {model.layers[i].op} and has no weights "
                                 f"(layers with weights: {', '.join(map(str, with_weights))})")


def check_sparse_ops(profile: Profile, path: Path | str) -> None:
    """For an imported model, the ``[sparse]`` layers must be op indices of ops whose weights train (CONV_2D,
    DEPTHWISE_CONV_2D, FULLY_CONNECTED)."""
    assert profile.sparse is not None
    ops = load_tflite(require_model_file(profile.model)).ops
    weighted = [k for k, op in enumerate(ops) if op.kind in TRAINABLE_OPS]
    for i in profile.sparse.layers:
        if i not in weighted:
            what = f"op {i} is a {ops[i].kind}" if i < len(ops) else f"the graph has ops 0..{len(ops) - 1}"
            raise TechniqueError(f"{path}: key 'sparse.layers.{i}': {what}; [sparse] of an imported model indexes "
                                 f"its operators, and weights train on CONV_2D / DEPTHWISE_CONV_2D / "
                                 f"FULLY_CONNECTED ops: {', '.join(map(str, weighted))}")


def check_profile(profile: Profile, path: Path | str) -> None:
    """Everything about ``profile`` that its model and task decide, before anything runs: a `ConfigError` or
    `TechniqueError` naming the file and key otherwise."""
    if profile.task not in task_names() and not is_file_task(profile.task):
        raise ConfigError(f"{path}: key 'task': unknown task {profile.task!r}; valid: {', '.join(task_names())}, "
                          f"or a .npz, .csv or image folder (docs/datasets.md)")
    if profile.dataset is not None and profile.task in task_names():
        raise ConfigError(f"{path}: key 'dataset': a [dataset] table is for a task file, not the built-in task "
                          f"{profile.task!r}")
    if is_file_task(profile.task) and profile.task not in task_names():
        _check_file_task(profile, path)
    if profile.imported is None and profile.model not in model_names():
        raise ConfigError(f"{path}: key 'model': unknown model {profile.model!r}; valid: {', '.join(model_names())} "
                          f"or a .tflite path")
    if profile.sparse is not None:
        check_sparse_layers(profile, path)
