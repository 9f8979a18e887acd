"""The twin's energy model as a meter: counts ÷ clock × datasheet run current × supply voltage.

``model_energy_uj`` is the single place the formula lives (bench/records/run.py computes the same figure and can call
it). ``ModelMeter`` renders the model as a capture — constant current and voltage, a marker edge at every phase
boundary — so modelled and measured energy go through the same decoding and integration and the same tables.
"""

from __future__ import annotations

import numpy as np

from bench.config.boards import Board
from bench.energy.capture import Capture, MeterBase, Source


def model_energy_uj(counts: float, cpu_hz: float, run_current_ma: float, supply_v: float) -> float:
    """µJ for ``counts`` cycles at ``cpu_hz``, drawing the datasheet run current (one cycle per count assumed)."""
    return counts / cpu_hz * run_current_ma * supply_v * 1e3


def board_energy_uj(board: Board, counts: float) -> float:
    """``model_energy_uj`` with the board's clock and its ``[power]`` figures."""
    return model_energy_uj(counts, board.cpu_hz, board.power.run_current_ma, board.power.supply_v)


class ModelMeter(MeterBase):
    """A meter that never touches hardware: it synthesises the capture the model predicts for given counts."""

    name = "model"
    source: Source = "modelled"

    def __init__(self, board: Board, sample_rate_hz: float = 10e6, gap_counts: int = 0) -> None:
        self.board, self.sample_rate_hz, self.gap_counts = board, sample_rate_hz, gap_counts
        self._steps: list[tuple[float, float, float]] = []

    def arm(self) -> None:
        """Nothing to connect."""

    def start(self) -> None:
        self._steps = []

    def record_step(self, fwd: float, bwd: float, upd: float) -> None:
        """Counts of each phase of one step, as the firmware reports them (STEP t_fwd, t_bwd, t_upd converted)."""
        self._steps.append((fwd, bwd, upd))

    def stop(self) -> Capture:
        """Constant model current; the marker as the firmware drives it (port.h): high in forward and update."""
        seconds_per_sample = 1.0 / self.sample_rate_hz
        levels: list[np.ndarray] = [np.zeros(1, dtype=np.uint8)]  # one idle sample before the first edge
        for fwd, bwd, upd in self._steps:
            for counts, level in ((fwd, 1), (bwd, 0), (upd, 1), (self.gap_counts, 0)):
                levels.append(np.full(self._samples(counts, seconds_per_sample), level, dtype=np.uint8))
        digital = np.concatenate(levels)
        current = np.full(digital.shape, self.board.power.run_current_ma * 1e-3)
        voltage = np.full(digital.shape, self.board.power.supply_v)
        return Capture(self.name, self.sample_rate_hz, current, voltage, digital, source=self.source)

    def _samples(self, counts: float, seconds_per_sample: float) -> int:
        return max(round(counts / self.board.cpu_hz / seconds_per_sample), 1)

    def close(self) -> None:
        """Nothing to release."""
