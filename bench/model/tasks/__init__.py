"""Task registry: a task name and seed give the device dataset plus the host's clean pretraining data."""

from __future__ import annotations

from collections.abc import Callable

from bench.model.tasks import digits, digits96
from bench.model.tasks.digits import DeviceDataset

_TASKS: dict[str, Callable[[int], DeviceDataset]] = {digits.NAME: digits.load, digits96.NAME: digits96.load}


def task_names() -> list[str]:
    return sorted(_TASKS)


def load_task(name: str, seed: int) -> DeviceDataset:
    """Build task ``name`` deterministically from ``seed``."""
    try:
        loader = _TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(task_names())}") from None
    return loader(seed)


__all__ = ["DeviceDataset", "load_task", "task_names"]
