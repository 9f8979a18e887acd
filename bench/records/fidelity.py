"""Fidelity: gradients streamed from the device against an independent host reference (numpy, float64).

The device reports which sample it drew at each step; the host replays those samples through ``bench.numerics.fp32``
(which shares no code with the firmware), applying the same SGD updates, and compares tensor by tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench.model.nn import Model
from bench.numerics import fp32 as reference
from bench.numerics import int8train, pepita
from bench.plan.fp32 import F_SEED, Plan, projection_bound
from bench.plan.int8 import QPlan
from bench.records.run import PARAM_NAMES, RunRecord

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
                    channels: reference.Channels | None = None, prox_mu: float = 0.0) -> list[GradientCheck]:
    """Compare every streamed gradient of ``record`` (which must stream every step) with the replay.

    ``channels`` (sparse update, ``Plan.channels``): the replay updates only those output channels, and a listed
    layer's weight gradient is compared on those channels' rows, in list order, as the device streams it.
    ``prox_mu``: the run had FedProx's proximal step (`bench.numerics.fp32.run_sgd`)."""
    samples = _device_samples(record, x_train)
    expected = reference.replay_sgd(model, x_train[samples], y_train[samples], lr, trainable, channels, prox_mu)
    return _compare(record, expected)


def _device_samples(record: RunRecord, x_train: np.ndarray) -> np.ndarray:
    """The training samples the device drew, checked against the host's training split."""
    if not record.steps:
        raise ValueError(f"{record.run_id}: no steps to check")
    samples = np.array([s.sample for s in record.steps])
    if samples.max() >= len(x_train):
        raise ValueError(f"{record.run_id}: device reported sample {samples.max()} of {len(x_train)}")
    return samples


# (step index, tensor key, device values, reference values) -> the check's relative error
ErrorFn = Callable[[int, tuple[int, str], np.ndarray, np.ndarray], float]


def _compare(record: RunRecord, expected: list[dict[tuple[int, str], np.ndarray]],
             error: ErrorFn | None = None) -> list[GradientCheck]:
    """Each step's streamed tensors against the reference's, by ``error`` (default `relative_error`)."""
    checks = []
    for k, (step, grads) in enumerate(zip((s.step for s in record.steps), expected, strict=True)):
        for (layer, param), ref in grads.items():
            dev = record.grads.get((step, layer, PARAM_CODES[param]))
            if dev is None:
                raise ValueError(f"{record.run_id}: device streamed no gradient for step {step} layer {layer} "
                                 f"{param}")
            ref_flat = np.asarray(ref, dtype=np.float64).ravel()
            if dev.size != ref_flat.size:
                raise ValueError(f"{record.run_id}: step {step} layer {layer} {param}: device streamed {dev.size} "
                                 f"values, the reference has {ref_flat.size}")
            rel = error(k, (layer, param), dev, ref_flat) if error else relative_error(dev, ref_flat)
            checks.append(GradientCheck(step, layer, param, rel, float(np.max(np.abs(dev - ref_flat)))))
    return checks


@dataclass(frozen=True)
class Int8Check:
    step: int
    layer: int
    param: str
    exact: bool
    rel_err: float  # of the real-valued gradients (accumulator · 2^E); 0 when exact
    mismatches: int


def check_int8_gradients(record: RunRecord, plan: QPlan, x_train: np.ndarray, y_train: np.ndarray) -> list[Int8Check]:
    """Every int8 gradient the device streamed (``record.qgrads``) against the replay, step by step, exactly."""
    if not record.steps:
        raise ValueError(f"{record.run_id}: no steps to check")
    samples = [s.sample for s in record.steps]
    if max(samples) >= len(x_train):
        raise ValueError(f"{record.run_id}: device reported sample {max(samples)} of {len(x_train)}")
    checks = []
    expected = int8train.replay(plan, x_train, y_train, samples)
    for step, grads in zip((s.step for s in record.steps), expected, strict=True):
        for (layer, param), ref in grads.items():
            dev = record.qgrads.get((step, layer, 0 if param == "w" else 1))
            if dev is None:
                raise ValueError(f"{record.run_id}: device streamed no int8 gradient for step {step} op {layer} "
                                 f"{param}")
            values, exponent = dev
            if values.size != ref.values.size:
                raise ValueError(f"{record.run_id}: step {step} op {layer} {param}: device streamed {values.size} "
                                 f"values, the reference has {ref.values.size}")
            exact = exponent == ref.exponent and bool(np.array_equal(values, ref.values))
            real_dev = values.astype(np.float64) * 2.0**exponent
            real_ref = ref.values.astype(np.float64) * 2.0**ref.exponent
            denom = float(np.linalg.norm(real_ref))
            diff = float(np.linalg.norm(real_dev - real_ref))
            rel = 0.0 if exact else (diff / denom if denom > 0 else math.inf)
            checks.append(Int8Check(step, layer, param, exact, rel, int(np.sum(values != ref.values))))
    return checks


FORWARD_ONLY_FLOOR = 0.02  # of max|h|·max|input|: below it a direction is float32 rounding of the two passes


def check_forward_only(record: RunRecord, plan: Plan, x_train: np.ndarray, y_train: np.ndarray, lr: float
                       ) -> list[GradientCheck]:
    """PEPITA / MEMPEPITA: every streamed update direction against `bench.numerics.pepita`'s replay of the device's
    samples (the same projection F, drawn from the plan's seed).

    A direction is the difference of two float32 forward passes times an input, and when the sample is already
    classified confidently the difference is below float32 rounding of h itself. Its error is therefore measured
    against max(max|direction|, FORWARD_ONLY_FLOOR · max|h|·max|input|): relative to the direction wherever it stands
    clear of that rounding, never below what the two passes' own rounding allows."""
    samples = _device_samples(record, x_train)
    expected, scales, _ = pepita.run_pepita(plan.model, x_train[samples], y_train[samples], lr, set(plan.trainable),
                                            F_SEED, projection_bound(plan.model))

    def floored(k: int, key: tuple[int, str], dev: np.ndarray, ref: np.ndarray) -> float:
        err = float(np.max(np.abs(dev - ref)))
        return err / max(float(np.max(np.abs(ref))), FORWARD_ONLY_FLOOR * scales[k][key], 1e-30)

    return _compare(record, expected, floored)


def check_plan(record: RunRecord, plan: Plan | QPlan, x_train: np.ndarray, y_train: np.ndarray, lr: float,
               prox_mu: float = 0.0) -> tuple[float, float]:
    """The records stage's one fidelity entry: every gradient of a check run (``record``) against the reference of
    the plan's numerics. Returns (worst relative error, exact), ``exact`` 1.0/0.0 for int8 plans (every accumulator
    equal to `bench.numerics.int8train`'s) and NaN for fp32 plans (float64 replay: only the error says anything)."""
    if isinstance(plan, QPlan):
        qchecks = check_int8_gradients(record, plan, x_train, y_train)
        exact = float(all(c.exact for c in qchecks)) if qchecks else math.nan
        return max((c.rel_err for c in qchecks), default=math.nan), exact
    if plan.fwd_mode:
        if prox_mu:
            raise ValueError(f"{record.run_id}: no replay of a forward-only run with FedProx's proximal step")
        checks = check_forward_only(record, plan, x_train, y_train, lr)
    else:
        checks = check_gradients(record, plan.model, x_train, y_train, lr, set(plan.trainable), plan.channels,
                                 prox_mu)
    return max((c.rel_err for c in checks), default=math.nan), math.nan
