"""Measured energy in run records: a meter capture around the training steps (the meter is a fake here)."""

from __future__ import annotations

import numpy as np

from bench.app import runner
from bench.config.boards import RackEntry, load_catalogue
from bench.energy import Capture, MeterBase
from bench.link import protocol as proto
from bench.records.run import RunRecord
from bench.target.drivers import Counting

RATE = 100_000.0
VOLTS = 3.0


def level_coded_capture(steps: int, amps: dict[str, float], samples: dict[str, int]) -> Capture:
    """What a meter sees for last-layer training: per step forward (high), backward (low), update (high), idle (low)."""
    current, marker = [amps["idle"]] * 10, [0] * 10  # the meter starts before the first step
    for _ in range(steps):
        for phase, level in (("fwd", 1), ("bwd", 0), ("upd", 1), ("idle", 0)):
            current += [amps[phase]] * samples[phase]
            marker += [level] * samples[phase]
    current += [amps["idle"]] * 10
    marker += [0] * 10
    n = len(current)
    return Capture("fake-meter", RATE, np.array(current), np.full(n, VOLTS), np.array(marker))


class FakeMeter(MeterBase):
    """Stands in for a PPK2 at the instrument edge: hands back a prepared capture."""

    name = "fake-meter"

    def __init__(self, capture: Capture) -> None:
        self.capture, self.calls = capture, []

    def arm(self) -> None:
        self.calls.append("arm")

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> Capture:
        self.calls.append("stop")
        return self.capture

    def close(self) -> None:
        self.calls.append("close")


def _record(steps: int) -> RunRecord:
    record = RunRecord(run_id="nrf-a.last-fp32", board=load_catalogue()["nrf52840-dk"], target_kind="hardware",
                       technique="last-fp32", model="digits-cnn", counting=Counting("cycles", 1.0))
    for k in range(steps):
        record.add(proto.Step(k, 0, 1, 1, 0.5, 100, 10, 20, 512, 1024, 9000))
    return record


def test_energy_per_step_is_measured_when_a_fake_meter_runs(monkeypatch):
    amps = {"fwd": 0.010, "bwd": 0.020, "upd": 0.030, "idle": 0.001}
    samples = {"fwd": 400, "bwd": 100, "upd": 200, "idle": 50}
    meter = FakeMeter(level_coded_capture(5, amps, samples))
    monkeypatch.setattr(runner, "make_meter", lambda entry, window: meter)
    record = _record(5)
    entry = RackEntry(board="nrf52840-dk", kind="hardware", port="/dev/ttyACM0", meter="ppk2")
    with runner.metering(entry, record, window_s=10):
        pass
    assert meter.calls == ["arm", "start", "stop", "close"]
    expected_uj = sum(amps[p] * VOLTS * samples[p] / RATE for p in ("fwd", "bwd", "upd")) * 1e6
    energy, source, spread = record.energy()
    assert source == "measured" and record.meter == "fake-meter" and abs(energy - expected_uj) / expected_uj < 0.01
    phases = record.measured_energy.mean_phase_uj()
    assert abs(phases["backward"] - amps["bwd"] * VOLTS * samples["bwd"] / RATE * 1e6) < 0.02 * phases["backward"]
    assert spread < 1.0
    row = record.run_row()
    assert (row["energy_source"], row["energy_meter"]) == ("measured", "fake-meter")


def test_without_a_meter_energy_stays_modelled():
    record = _record(3)
    with runner.metering(RackEntry(board="nrf52840-dk"), record, window_s=1):
        pass
    energy, source, _ = record.energy()
    assert source == "modelled" and record.measured_energy is None
    assert energy == record.energy_per_step_uj(sum(record.mean_counts()))
