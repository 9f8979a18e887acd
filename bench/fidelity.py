"""Fidelity: gradients streamed from the device against an independent host reference (numpy, float64).

The device reports which sample it drew at each step; the host replays those samples through ``bench.reference``
(which shares no code with the firmware), applying the same SGD updates, and compares tensor by tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench import reference
from bench.nn import Model
from bench.records import PARAM_NAMES, RunRecord

PARAM_CODES = {v: k for k, v in PARAM_NAMES.items()}


@dataclass(frozen=True)
class GradientCheck:
    step: int
    layer: int
    param: str
    rel_err: float  # ||g_device − g_ref|| / ||g_ref||
    max_abs_err: float


def relative_error(device: np.ndarray, ref: np.ndarray) -> float:
    denom = float(np.linalg.norm(ref))
    diff = float(np.linalg.norm(device.astype(np.float64) - ref))
    return diff / denom if denom > 0 else diff


def check_gradients(record: RunRecord, model: Model, x_train: np.ndarray, y_train: np.ndarray,
                    lr: float, trainable: set[tuple[int, str]],
                    channels: reference.Channels | None = None) -> list[GradientCheck]:
    """Compare every streamed gradient of ``record`` (which must stream every step) with the replay.

    ``channels`` (sparse update, ``Plan.channels``): the replay updates only those output channels, and a listed
    layer's weight gradient is compared on those channels' rows, in list order, as the device streams it."""
    if not record.steps:
        raise ValueError(f"{record.run_id}: no steps to check")
    samples = np.array([s.sample for s in record.steps])
    if samples.max() >= len(x_train):
        raise ValueError(f"{record.run_id}: device reported sample {samples.max()} of {len(x_train)}")
    expected = reference.replay_sgd(model, x_train[samples], y_train[samples], lr, trainable, channels)
    checks = []
    for step, grads in zip((s.step for s in record.steps), expected, strict=True):
        for (layer, param), ref in grads.items():
            dev = record.grads.get((step, layer, PARAM_CODES[param]))
            if dev is None:
                raise ValueError(f"{record.run_id}: device streamed no gradient for step {step} layer {layer} "
                                 f"{param}")
            ref_flat = np.asarray(ref, dtype=np.float64).ravel()
            if dev.size != ref_flat.size:
                raise ValueError(f"{record.run_id}: step {step} layer {layer} {param}: device streamed {dev.size} "
                                 f"values, the reference has {ref_flat.size}")
            checks.append(GradientCheck(step, layer, param, relative_error(dev, ref_flat),
                                        float(np.max(np.abs(dev - ref_flat)))))
    return checks
