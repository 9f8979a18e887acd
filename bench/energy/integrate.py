"""Energy from a capture: ∫ I·V dt (trapezoid) between consecutive marker edges, per step and per phase.

The method is MLPerf Tiny's: the DUT toggles a GPIO at boundaries and energy is integrated between consecutive
timestamps; several trials, median reported. Two marker schemes are decoded:

- ``levels`` — the firmware's (``firmware/port/port.h``): the marker is high in forward and update, low in backward
  and after the step; backward and update alternate once per trained layer (or channel), so a step is
  ``R F R F … R F`` and the number of rising edges per step follows from the rises in the capture and the step count.
- ``toggle`` — one edge at the start of every phase and one at the end of the step, a fixed number of phases.

The low stretch from the end of one step to the start of the next (STEP report over UART, loading the sample) is
kept apart as ``between``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from bench.energy.capture import Capture, Source

PHASES = ("forward", "backward", "update")
Scheme = Literal["levels", "toggle"]
MIN_TRIALS = 5


def marker_edges(capture: Capture, channel: int = 0) -> np.ndarray:
    """Sample indices where marker ``channel`` changes level (the first sample at the new level)."""
    return np.flatnonzero(np.diff(capture.marker(channel)) != 0) + 1


def energy_between(capture: Capture, start: int, stop: int) -> float:
    """Joules from sample ``start`` to sample ``stop`` (trapezoid over the samples in between, both ends)."""
    if not 0 <= start <= stop < capture.samples:
        raise ValueError(f"interval [{start}, {stop}] outside the capture's {capture.samples} samples")
    return float(np.trapezoid(capture.power_w[start:stop + 1], dx=1.0 / capture.sample_rate_hz))


def interval_energies(capture: Capture, channel: int = 0) -> np.ndarray:
    """Joules in each interval between consecutive marker edges."""
    edges = marker_edges(capture, channel)
    if len(edges) < 2:
        return np.zeros(0)
    return np.diff(_cumulative(capture)[edges])


@dataclass(frozen=True)
class StepEnergies:
    """Energy of every complete step of one capture, by phase: ``joules[step, phase]``."""

    phases: tuple[str, ...]
    joules: np.ndarray
    between_j: np.ndarray
    dropped: int  # intervals (toggle) or steps (levels) after the last complete step: a capture cut mid-step

    @property
    def steps(self) -> int:
        return self.joules.shape[0]

    def per_step_uj(self) -> np.ndarray:
        return self.joules.sum(axis=1) * 1e6

    def mean_phase_uj(self) -> dict[str, float]:
        return {p: float(self.joules[:, i].mean() * 1e6) for i, p in enumerate(self.phases)}


def step_energies(capture: Capture, phases: Sequence[str] = PHASES, channel: int = 0,
                  between: bool = True) -> StepEnergies:
    """Split the marker intervals into steps of ``phases`` (plus the between-steps interval when ``between``)."""
    intervals = interval_energies(capture, channel)
    n = len(phases)
    period = n + 1 if between else n
    steps = (len(intervals) - n) // period + 1 if len(intervals) >= n else 0
    table = intervals[np.arange(steps)[:, None] * period + np.arange(n)]
    gap_index = [k * period + n for k in range(steps) if between and k * period + n < len(intervals)]
    dropped = len(intervals) - steps * n - len(gap_index)
    return StepEnergies(tuple(phases), table.reshape(steps, n), intervals[gap_index], dropped)


def level_step_energies(capture: Capture, steps: int, channel: int = 0) -> StepEnergies:
    """Decode port.h's level-coded marker: per step, forward, then backward/update pairs, then the step's end.

    ``steps`` is how many steps the capture holds (the run's STEP count); every step must show the same number of
    rising edges, otherwise edges were missed and the capture is refused rather than misattributed.
    """
    level = capture.marker(channel)
    edges = marker_edges(capture, channel)
    edges = edges[np.argmax(level[edges] == 1):] if np.any(level[edges] == 1) else edges[:0]  # start at a rise
    rises = int(np.count_nonzero(level[edges] == 1))
    if steps <= 0 or rises == 0 or rises % steps:
        raise ValueError(f"{rises} rising marker edges on input {channel} do not split into {steps} equal steps "
                         "(missed edges, wrong input, or a capture that does not span the run)")
    per = rises // steps  # 1 forward + (per - 1) updates
    energy = _cumulative(capture)[edges]
    intervals = np.diff(energy)  # F/R alternate: forward, backward, update, …, backward-to-end, between, forward…
    rows, gaps = [], []
    for k in range(steps):
        first = k * 2 * per
        if first + 2 * per > len(edges):
            break
        own = intervals[first:first + 2 * per - 1]
        rows.append([own[0], own[1::2].sum(), own[2::2].sum()])
        if first + 2 * per < len(edges):
            gaps.append(intervals[first + 2 * per - 1])
    return StepEnergies(PHASES, np.array(rows).reshape(len(rows), 3), np.array(gaps), steps - len(rows))


def _cumulative(capture: Capture) -> np.ndarray:
    """Trapezoid energy from sample 0 to every sample, so any interval is a difference of two entries."""
    power = capture.power_w
    dt = 1.0 / capture.sample_rate_hz
    return np.concatenate(([0.0], np.cumsum((power[1:] + power[:-1]) * dt / 2)))


@dataclass(frozen=True)
class Spread:
    """Median and range of one figure over trials (MLPerf Tiny reports the median of 5)."""

    median: float
    low: float
    high: float
    n: int

    @property
    def spread_pct(self) -> float:
        """(max - min) / median, in percent: how repeatable the figure is."""
        return (self.high - self.low) / self.median * 100 if self.median else float("nan")


def spread(values: Sequence[float]) -> Spread:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("no values to summarise")
    return Spread(float(np.median(arr)), float(arr.min()), float(arr.max()), int(arr.size))


@dataclass(frozen=True)
class EnergyResult:
    """Energy per step and per phase over trials, labelled with how it was obtained and by which meter."""

    source: Source
    meter: str
    per_step_uj: Spread
    per_phase_uj: dict[str, Spread]
    steps_per_trial: tuple[int, ...]

    @property
    def label(self) -> str:
        """The results tables' ``energy_source``: e.g. "measured (ppk2)" or "modelled (model)"."""
        return f"{self.source} ({self.meter})"


def decode(capture: Capture, scheme: Scheme = "levels", steps: int | None = None, phases: Sequence[str] = PHASES,
           channel: int = 0) -> StepEnergies:
    """Per-step energies with the given marker scheme (``levels`` needs the step count)."""
    if scheme == "levels":
        if steps is None:
            raise ValueError("the levels marker scheme needs the number of steps in the capture")
        return level_step_energies(capture, steps, channel)
    return step_energies(capture, phases, channel)


def summarise(captures: Sequence[Capture], scheme: Scheme = "levels", steps: int | None = None,
              phases: Sequence[str] = PHASES, channel: int = 0, min_trials: int = MIN_TRIALS) -> EnergyResult:
    """Per-trial mean energy per step and phase, then median and range over the trials."""
    if len(captures) < min_trials:
        raise ValueError(f"{len(captures)} trials; at least {min_trials} are needed for a repeatability figure")
    per_trial = [decode(c, scheme, steps, phases, channel) for c in captures]
    empty = [i for i, t in enumerate(per_trial) if t.steps == 0]
    if empty:
        raise ValueError(f"trials {empty} have no complete step between marker edges (is the marker wired to "
                         f"digital input {channel}?)")
    first = per_trial[0]
    return EnergyResult(
        source=captures[0].source, meter=captures[0].meter,
        per_step_uj=spread([float(t.per_step_uj().mean()) for t in per_trial]),
        per_phase_uj={p: spread([t.mean_phase_uj()[p] for t in per_trial]) for p in first.phases},
        steps_per_trial=tuple(t.steps for t in per_trial))


def measure_trials(trial: Callable[[], Capture], trials: int = MIN_TRIALS, scheme: Scheme = "levels",
                   steps: int | None = None, phases: Sequence[str] = PHASES, channel: int = 0) -> EnergyResult:
    """Run ``trial`` (start the meter, run ``steps`` steps on the DUT, stop) ``trials`` times and summarise."""
    return summarise([trial() for _ in range(trials)], scheme, steps, phases, channel)
