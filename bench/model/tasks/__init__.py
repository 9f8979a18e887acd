"""Task registry: a task name and seed give the device dataset plus the host's clean pretraining data."""

from __future__ import annotations

from collections.abc import Callable

from bench.config.profile import DatasetSpec
from bench.model.tasks import digits, digits16, digits96, machine, tabular
from bench.model.tasks.digits import DeviceDataset
from bench.model.tasks.files import DatasetError, is_file_task, load_file_task

_TASKS: dict[str, Callable[[int], DeviceDataset]] = {digits.NAME: digits.load, digits16.NAME: digits16.load,
                                                     digits96.NAME: digits96.load, tabular.NAME: tabular.load,
                                                     machine.NAME: machine.load}


def task_names() -> list[str]:
    return sorted(_TASKS)


def load_task(name: str, seed: int, spec: DatasetSpec | None = None) -> DeviceDataset:
    """Build task ``name`` (a built-in one, or a file or folder: `bench.model.tasks.files`) deterministically from
    ``seed``."""
    if name not in _TASKS and is_file_task(name):
        return load_file_task(name, seed, spec)
    try:
        loader = _TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(task_names())}") from None
    return loader(seed)


__all__ = ["DatasetError", "DeviceDataset", "is_file_task", "load_task", "task_names"]
