"""The runner on a hardware rack entry, with the board replaced by a fake target (no board is attached here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.app import runner
from bench.app.runner import Bench
from bench.config.boards import RackEntry, load_catalogue, load_rack
from bench.config.profile import load_profile, parse_technique
from bench.link.link import DeviceFault, LinkError, LinkTimeout
from bench.link.protocol import Fault
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
    monkeypatch.setenv("BENCH_LOCK_DIR", str(tmp_path / "locks"))
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


def test_locks_are_per_user_and_keyed_by_the_physical_board(tmp_path, monkeypatch):
    from bench.config.boards import lock_dir, lock_key

    monkeypatch.delenv("BENCH_LOCK_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert lock_dir() == tmp_path / "bench-locks"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert lock_dir().name == f"bench-locks-{__import__('os').getuid()}"
    one = RackEntry(board="nucleo-f746zg", kind="hardware", name="f7-a", probe_uid="066D", port="/dev/ttyACM0")
    other_name = RackEntry(board="nucleo-f746zg", kind="hardware", name="bench-2", probe_uid="066D")
    assert lock_key(one) == lock_key(other_name) == "board-066D"  # one probe, one lock, whatever the rack calls it
    assert lock_key(RackEntry(board="rpi-pico", kind="hardware", port="/dev/serial/by-id/usb-X")) == \
        "board-_dev_serial_by-id_usb-X"
    assert lock_key(RackEntry(board="rpi-pico")) == "twin-rpi-pico"


def test_a_run_that_waits_for_a_board_says_so(tmp_path, monkeypatch):
    import threading

    from bench.app.runner import board_lock, hold

    monkeypatch.setenv("BENCH_LOCK_DIR", str(tmp_path))
    held = board_lock("twin-x")
    held.acquire()
    said: list[str] = []
    entered = threading.Event()

    def other() -> None:
        with hold(board_lock("twin-x"), said.append):
            entered.set()

    thread = threading.Thread(target=other)
    thread.start()
    assert not entered.wait(0.5)  # it waits while the lock is held
    assert said and "twin-x" in said[0] and str(tmp_path) in said[0]
    held.release()
    assert entered.wait(5)
    thread.join()


def test_a_second_session_into_the_same_out_dir_is_refused(tmp_path):
    from bench.app.runner import OutDirBusy, session_lock

    first = session_lock(tmp_path)
    with pytest.raises(OutDirBusy, match="another bench session is writing here"):
        runner.run_profile(load_profile("quick"), load_rack(None, load_catalogue()), tmp_path)
    first.release()
    session_lock(tmp_path).release()  # free again once the first session ends


@pytest.mark.parametrize(("error", "status", "words"), [
    (LinkTimeout("silent for 15 s"), "hang", "silent"),
    (LinkError("read failed: port vanished"), "disconnected", "port vanished"),
    (DeviceFault(Fault(2, 0, 0, 0, 7, 9, "plan: bad magic"), "FAULT"), "fault",
     "bad plan blob (arg0=7 (0x7), arg1=9 (0x9)) plan: bad magic"),
])
def test_link_failures_get_their_own_status_with_fake_target(tmp_path: Path, monkeypatch, error, status, words):
    """A stall, a vanished port and a FAULT while waiting are told apart (the fake stands in for the board)."""
    fake = FakeTargetThatFails(error)
    monkeypatch.setattr(runner, "make_target", lambda entry, board, log_dir, identify=None: fake)
    monkeypatch.setenv("BENCH_LOCK_DIR", str(tmp_path / "locks"))
    bench = runner.Bench(tmp_path / "out")
    prepared = bench.prepare(load_profile("quick").model_copy(update={"steps": 2}))
    entry = RackEntry(board="nrf52840-dk", kind="hardware", name="nrf-a", port="/dev/ttyACM0")
    record = bench.run(prepared, entry, parse_technique("last-fp32"))
    assert record.status == status and words in record.error, record.error
    assert fake.closed
