"""The runner on a hardware rack entry, with the board replaced by a fake target (no board is attached here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.app import runner
from bench.app.runner import Bench
from bench.config.boards import RackEntry
from bench.config.profile import load_profile, parse_technique
from bench.target.drivers import FlashError, PortError


class FakeTargetThatFails:
    """Stands in for PyocdTarget at the hardware edge: loading fails the way a flaky probe or port does."""

    kind = "hardware"

    def __init__(self, error: Exception) -> None:
        self.error, self.closed = error, False

    def load(self, images) -> None:
        raise self.error

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("error", [FlashError("programming failed after 4 attempts", attempts=4),
                                   PortError("/dev/ttyACM0 is busy")])
def test_probe_and_port_failures_are_rack_faults_with_fake_target(tmp_path: Path, monkeypatch, error):
    fake = FakeTargetThatFails(error)
    monkeypatch.setattr(runner, "make_target", lambda entry, board, log_dir, identify=None: fake)
    monkeypatch.setattr(runner, "LOCK_DIR", tmp_path / "locks")
    bench = runner.Bench(tmp_path / "out")
    prepared = bench.prepare(load_profile("quick").model_copy(update={"steps": 2}))
    entry = RackEntry(board="nrf52840-dk", kind="hardware", name="nrf-a", port="/dev/ttyACM0")
    record = bench.run(prepared, entry, parse_technique("last-fp32"))
    assert record.status == "rack-fault" and type(error).__name__ in record.error
    assert fake.closed  # the target is released even though loading failed
    assert record.target_kind == "hardware" and record.build_id  # the hardware image was really built


def test_the_image_cache_keeps_a_twin_and_a_real_board_of_one_kind_apart(tmp_path):
    """A rack listing one board as twin and as hardware never flashes the board with the twin image or the reverse."""
    bench = Bench(tmp_path)
    prepared = bench.prepare(load_profile("quick").model_copy(update={"steps": 2}))
    board = bench.catalogue["nucleo-f746zg"]
    twin = bench.firmware(prepared, board, "emulated")
    real = bench.firmware(prepared, board, "hardware")
    assert twin.variant == "twin" and real.variant == "hardware" and twin.build_id != real.build_id
    assert bench.firmware(prepared, board, "emulated") is twin and bench.firmware(prepared, board, "hardware") is real
