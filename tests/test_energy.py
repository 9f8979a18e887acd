"""Energy: integration between marker edges checked against analytic energy on synthetic recordings, and each meter
driver at its vendor API boundary with a FAKE ppk2_api / FAKE joulescope module put into sys.modules. Two tests call
the REAL ppk2-api and joulescope scans on this machine (no meter here: "not found")."""

from __future__ import annotations

import sys
import threading
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from bench.config.boards import load_catalogue
from bench.energy import (
    Capture,
    JoulescopeMeter,
    MeterError,
    MeterNotFound,
    ModelMeter,
    Ppk2Meter,
    StepEnergies,
    board_energy_uj,
    energy_between,
    interval_energies,
    level_step_energies,
    marker_edges,
    measure_trials,
    model_energy_uj,
    step_energies,
    summarise,
)
from bench.records.run import RunRecord

FS = 100_000.0
V = 3.3
PHASE_A = {"forward": 0.080, "backward": 0.110, "update": 0.060}
PHASE_S = {"forward": 2e-3, "backward": 1.5e-3, "update": 1.2e-3}
BETWEEN_A, BETWEEN_S = 0.015, 3e-3
PAIRS = 3  # backward/update alternations per step (one per trained layer), as the firmware marks them


@dataclass
class Recording:
    """A synthetic meter recording: known current per phase, the marker driven at every boundary, noise."""

    current_a: np.ndarray
    digital: np.ndarray
    steps: int
    channel: int

    def capture(self, meter: str = "synthetic") -> Capture:
        return Capture(meter, FS, self.current_a, np.full(len(self.current_a), V), self.digital)

    @staticmethod
    def analytic_uj(phase: str) -> float:
        return PHASE_A[phase] * V * PHASE_S[phase] * 1e6


def _segments(scheme: str, last: bool) -> list[tuple[float, float, int | None]]:
    """(amps, seconds, marker level or None for "toggle") of one step."""
    if scheme == "toggle":
        segs: list[tuple[float, float, int | None]] = [(PHASE_A[p], PHASE_S[p], None) for p in PHASE_A]
        return segs if last else [*segs, (BETWEEN_A, BETWEEN_S, None)]
    segs = [(PHASE_A["forward"], PHASE_S["forward"], 1)]
    for _ in range(PAIRS):
        segs.append((PHASE_A["backward"], PHASE_S["backward"] / PAIRS, 0))
        segs.append((PHASE_A["update"], PHASE_S["update"] / PAIRS, 1))
    return segs if last else [*segs, (BETWEEN_A, BETWEEN_S, 0)]


def record(steps: int = 20, noise_a: float = 0.002, seed: int = 0, channel: int = 0, cut: int = 0,
           scheme: str = "levels") -> Recording:
    """Idle (marker low), ``steps`` steps, idle; the marker coded as the firmware does ("levels") or toggled."""
    rng = np.random.default_rng(seed)
    levels, marks = [np.full(50, BETWEEN_A)], [np.zeros(50, dtype=np.uint8)]
    mark = 0
    for k in range(steps):
        for amps, seconds, level in _segments(scheme, last=k == steps - 1):
            mark = mark ^ 1 if level is None else level
            n = round(seconds * FS)
            levels.append(np.full(n, amps))
            marks.append(np.full(n, mark, dtype=np.uint8))
    mark = mark ^ 1 if scheme == "toggle" else 0
    levels.append(np.full(50, BETWEEN_A))
    marks.append(np.full(50, mark, dtype=np.uint8))
    current = np.concatenate(levels)
    current = current + rng.normal(0, noise_a, current.size)
    digital = (np.concatenate(marks) << channel) | (rng.integers(0, 2, current.size, dtype=np.uint8) << 7)
    n = current.size - cut
    return Recording(current[:n], digital[:n].astype(np.uint8), steps, channel)


def decode_rec(rec: Recording, scheme: str) -> StepEnergies:
    if scheme == "toggle":
        return step_energies(rec.capture(), channel=rec.channel)
    return level_step_energies(rec.capture(), rec.steps, channel=rec.channel)


# -- integration -------------------------------------------------------------------------------------------------


def test_energy_of_a_constant_level_is_exact() -> None:
    cap = Capture("c", 1000.0, np.full(1001, 0.05), np.full(1001, 3.0), np.zeros(1001, dtype=np.uint8))
    assert energy_between(cap, 0, 1000) == pytest.approx(0.05 * 3.0 * 1.0)
    with pytest.raises(ValueError, match="outside the capture"):
        energy_between(cap, 10, 2000)


def test_marker_edges_follow_one_channel_only() -> None:
    rec = record(steps=2, noise_a=0, channel=3)
    edges = marker_edges(rec.capture(), channel=3)
    assert len(edges) == 2 * 2 * (1 + PAIRS)  # per step: a rise for forward and each update, a fall after each
    assert len(marker_edges(rec.capture(), channel=0)) == 0  # bit 7 noise does not leak into other channels


@pytest.mark.parametrize("scheme", ["levels", "toggle"])
def test_per_phase_energy_matches_analytic_within_half_a_percent(scheme: str) -> None:
    result = decode_rec(record(steps=20, noise_a=0.002, scheme=scheme), scheme)
    assert result.steps == 20 and result.dropped == 0
    for phase, mean in result.mean_phase_uj().items():
        assert mean == pytest.approx(Recording.analytic_uj(phase), rel=5e-3), phase
    total = sum(Recording.analytic_uj(p) for p in PHASE_A)
    assert np.median(result.per_step_uj()) == pytest.approx(total, rel=5e-3)
    assert len(result.between_j) == 19
    assert result.between_j.mean() * 1e6 == pytest.approx(BETWEEN_A * V * BETWEEN_S * 1e6, rel=2e-2)


def test_intervals_add_up_to_the_whole_window() -> None:
    cap = record(steps=3, noise_a=0.01, seed=3).capture()
    edges = marker_edges(cap)
    assert interval_energies(cap).sum() == pytest.approx(energy_between(cap, edges[0], edges[-1]), rel=1e-12)


def test_capture_cut_mid_step_drops_the_partial_step() -> None:
    last_update = round(PHASE_S["update"] / PAIRS * FS)
    levels = level_step_energies(record(steps=5, noise_a=0, cut=50 + last_update // 2).capture(), 5)
    assert levels.steps == 4 and levels.dropped == 1
    toggle = step_energies(record(steps=5, noise_a=0, cut=50 + round(PHASE_S["update"] * FS) // 2,
                                  scheme="toggle").capture())
    assert toggle.steps == 4 and toggle.dropped == 2  # the cut step's forward and backward intervals


def test_missed_edges_are_refused_not_misattributed() -> None:
    rec = record(steps=4, noise_a=0)
    with pytest.raises(ValueError, match="rising marker edges on input 0 do not split into 3 equal steps"):
        level_step_energies(rec.capture(), 3)


def test_trials_give_median_and_spread_labelled_measured() -> None:
    trials = iter(record(steps=10, seed=s).capture("ppk2") for s in range(5))
    result = measure_trials(lambda: next(trials), trials=5, steps=10)
    total = sum(Recording.analytic_uj(p) for p in PHASE_A)
    assert result.label == "measured (ppk2)" and result.per_step_uj.n == 5
    assert result.per_step_uj.median == pytest.approx(total, rel=5e-3)
    assert 0 < result.per_step_uj.spread_pct < 1.0
    assert result.per_phase_uj["backward"].median == pytest.approx(Recording.analytic_uj("backward"), rel=5e-3)
    assert result.steps_per_trial == (10,) * 5


def test_too_few_trials_or_no_markers_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="at least 5 are needed"):
        summarise([record(steps=2).capture()] * 3, steps=2)
    flat = Capture("ppk2", FS, np.ones(100), np.ones(100), np.zeros(100, dtype=np.uint8))
    with pytest.raises(ValueError, match="0 rising marker edges on input 0"):
        summarise([flat] * 5, steps=1)
    with pytest.raises(ValueError, match=r"no complete step between marker edges .* digital input 0"):
        summarise([flat] * 5, scheme="toggle")
    with pytest.raises(ValueError, match="needs the number of steps"):
        summarise([flat] * 5)


def test_capture_rejects_arrays_of_different_length() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        Capture("x", FS, np.ones(3), np.ones(2), np.zeros(3, dtype=np.uint8))


# -- the model -----------------------------------------------------------------------------------------------------


def test_model_formula_is_the_one_the_records_use() -> None:
    board = load_catalogue()["nrf52840-dk"]
    rec = RunRecord(run_id="r", board=board, target_kind="emulated", technique="full-fp32", model="m")
    assert board_energy_uj(board, 122_869) == pytest.approx(rec.energy_per_step_uj(122_869), rel=1e-12)
    assert model_energy_uj(64e6, 64e6, 3.3, 3.0) == pytest.approx(3.3 * 3.0 * 1e3)  # 1 s at 3.3 mA, 3 V = 9.9 mJ


def test_model_meter_capture_integrates_to_the_formula() -> None:
    board = load_catalogue()["nucleo-f746zg"]
    counts = (8_907, 1_540, 9_619)
    with ModelMeter(board, sample_rate_hz=board.cpu_hz / 4) as meter:
        meter.start()
        for _ in range(5):
            meter.record_step(*counts)
        cap = meter.stop()
    result = summarise([cap] * 5, steps=5)
    assert result.label == "modelled (model)"
    assert result.per_step_uj.median == pytest.approx(board_energy_uj(board, sum(counts)), rel=1e-3)
    for phase, c in zip(("forward", "backward", "update"), counts, strict=True):
        assert result.per_phase_uj[phase].median == pytest.approx(board_energy_uj(board, c), rel=1e-3)


# -- PPK2 through a FAKE ppk2_api module -----------------------------------------------------------------------------


@dataclass
class FakePpk2World:
    devices: list[Any]
    chunks: list[tuple[list[float], list[int]]]
    calls: list[tuple[str, tuple]] = field(default_factory=list)
    delivered: threading.Event = field(default_factory=threading.Event)
    closed: bool = False

    def module(self) -> types.ModuleType:
        world = self

        class FakeSerial:
            def close(self) -> None:
                world.closed = True

        class FakePPK2_API:  # the vendor's class name
            @staticmethod
            def list_devices() -> list[Any]:
                return world.devices

            def __init__(self, port: str, **kwargs: Any) -> None:
                world.calls.append(("__init__", (port, kwargs)))
                self.ser = FakeSerial()
                self._pending = list(world.chunks)

            def __getattr__(self, name: str) -> Any:
                return lambda *args: world.calls.append((name, args))

            def get_data(self) -> bytes:
                if not self._pending:
                    world.delivered.set()
                    return b""
                return b"\x01" * 4  # raw ADC words; the fake get_samples knows what they mean

            def get_samples(self, raw: bytes) -> tuple[list[float], list[int]]:
                return self._pending.pop(0)

        module = types.ModuleType("ppk2_api.ppk2_api")
        module.PPK2_API = FakePPK2_API  # type: ignore[attr-defined]
        return module


def ppk2_chunks(rec: Recording, size: int = 4096) -> list[tuple[list[float], list[int]]]:
    micro_amps = (rec.current_a * 1e6).tolist()
    bits = rec.digital.tolist()
    return [(micro_amps[i:i + size], bits[i:i + size]) for i in range(0, len(bits), size)]


@pytest.fixture
def fake_ppk2(monkeypatch: pytest.MonkeyPatch) -> FakePpk2World:
    world = FakePpk2World(devices=["/dev/ttyACM3"], chunks=[])
    monkeypatch.setitem(sys.modules, "ppk2_api", types.ModuleType("ppk2_api"))
    monkeypatch.setitem(sys.modules, "ppk2_api.ppk2_api", world.module())
    return world


def test_ppk2_source_mode_capture_and_integration_with_fake_ppk2_api(fake_ppk2: FakePpk2World) -> None:
    rec = record(steps=8)
    fake_ppk2.chunks = ppk2_chunks(rec)
    with Ppk2Meter(source_mv=3300) as meter:
        meter.start()
        assert fake_ppk2.delivered.wait(5)
        cap = meter.stop()
    names = [name for name, _ in fake_ppk2.calls]
    assert names == ["__init__", "get_modifiers", "use_source_meter", "set_source_voltage", "toggle_DUT_power",
                     "start_measuring", "stop_measuring"]
    assert ("set_source_voltage", (3300,)) in fake_ppk2.calls and ("toggle_DUT_power", ("ON",)) in fake_ppk2.calls
    assert fake_ppk2.calls[0][1][0] == "/dev/ttyACM3" and fake_ppk2.closed
    assert cap.meter == "ppk2" and cap.sample_rate_hz == 100_000 and cap.samples == rec.current_a.size
    np.testing.assert_allclose(cap.current_a, rec.current_a, rtol=1e-12)
    assert set(np.unique(cap.voltage_v)) == {3.3}
    result = level_step_energies(cap, 8)
    assert result.steps == 8
    assert result.mean_phase_uj()["forward"] == pytest.approx(Recording.analytic_uj("forward"), rel=5e-3)


def test_ppk2_ampere_mode_uses_given_supply_with_fake_ppk2_api(fake_ppk2: FakePpk2World) -> None:
    fake_ppk2.devices = [("/dev/ttyACM4", "C5A1B2")]  # newer ppk2-api lists (port, serial) pairs
    fake_ppk2.chunks = ppk2_chunks(record(steps=1, noise_a=0))
    with Ppk2Meter(mode="ampere", supply_v=1.8) as meter:
        meter.start()
        assert fake_ppk2.delivered.wait(5)
        cap = meter.stop()
    assert ("use_ampere_meter", ()) in fake_ppk2.calls and cap.voltage_v[0] == 1.8
    assert fake_ppk2.calls[0][1][0] == "/dev/ttyACM4"
    with pytest.raises(MeterError, match="give supply_v"):
        Ppk2Meter(mode="ampere")


def test_ppk2_not_found_and_ambiguous_with_fake_ppk2_api(fake_ppk2: FakePpk2World) -> None:
    fake_ppk2.devices = []
    with pytest.raises(MeterNotFound, match=r"no PPK2 found \(PPK2_API.list_devices\(\) lists none\)"):
        Ppk2Meter().arm()
    fake_ppk2.devices = ["/dev/ttyACM3", "/dev/ttyACM5"]
    with pytest.raises(MeterError, match=r"2 PPK2s found .*choose one with port="):
        Ppk2Meter().arm()


def test_real_ppk2_api_finds_no_meter_on_this_machine() -> None:
    pytest.importorskip("ppk2_api.ppk2_api")
    from ppk2_api.ppk2_api import PPK2_API

    if PPK2_API.list_devices():
        pytest.skip("a PPK2 is attached")
    with pytest.raises(MeterNotFound):
        Ppk2Meter().arm()


# -- Joulescope through a FAKE joulescope module ---------------------------------------------------------------------


class FakeJoulescope:
    def __init__(self, rec: Recording, gpi_routing: bool = True, block: bool = False) -> None:
        self.rec, self.gpi_routing, self.block = rec, gpi_routing, block
        self.output_sampling_frequency = FS
        self.params: dict[str, Any] = {}
        self.calls: list[str] = []
        self.stopped = threading.Event()

    def open(self) -> None:
        self.calls.append("open")

    def parameter_set(self, name: str, value: Any) -> None:
        if name.endswith("_lsb") and not self.gpi_routing:
            raise KeyError(name)  # a JS220 has no such parameter
        self.params[name] = value

    def read(self, duration: float, out_format: str, fields: list[str]) -> dict[str, Any]:
        self.calls.append(f"read({duration}, {out_format})")
        if self.block:
            self.stopped.wait(5)
        d = self.rec.digital
        values = {"current": self.rec.current_a.astype(np.float32), "voltage": np.full(d.size, V, np.float32),
                  "current_lsb": d & 1, "voltage_lsb": (d >> 1) & 1}
        return {"time": {}, "signals": {f: {"value": values[f], "units": ""} for f in fields}}

    def stop(self) -> None:
        self.calls.append("stop")
        self.stopped.set()

    def close(self) -> None:
        self.calls.append("close")


def fake_joulescope_module(found: list[FakeJoulescope]) -> types.ModuleType:
    module = types.ModuleType("joulescope")

    def scan_require_one(name: str | None = None, config: str | None = None) -> FakeJoulescope:
        assert config == "auto"
        if not found:
            raise RuntimeError("no devices found")
        if len(found) > 1:
            raise RuntimeError("multiple devices found")
        return found[0]

    module.scan_require_one = scan_require_one  # type: ignore[attr-defined]
    return module


@pytest.mark.parametrize("gpi_routing", [True, False], ids=["js110", "js220"])
def test_joulescope_window_and_gpi_markers_with_fake_joulescope(monkeypatch: pytest.MonkeyPatch,
                                                               gpi_routing: bool) -> None:
    device = FakeJoulescope(record(steps=6, channel=1), gpi_routing=gpi_routing)
    monkeypatch.setitem(sys.modules, "joulescope", fake_joulescope_module([device]))
    with JoulescopeMeter(duration_s=10.0, sample_rate_hz=FS) as meter:
        meter.start()
        cap = meter.stop()
    assert device.calls[0] == "open" and device.calls[-1] == "close" and "read(10.0, samples_get)" in device.calls
    assert device.params["sampling_frequency"] == int(FS)
    if gpi_routing:
        assert device.params["current_lsb"] == "gpi0" and device.params["voltage_lsb"] == "gpi1"
    assert cap.sample_rate_hz == FS and cap.current_a.dtype == np.float64
    result = level_step_energies(cap, 6, channel=1)  # the marker on GPI1 arrives as voltage_lsb
    assert result.steps == 6
    assert result.mean_phase_uj()["update"] == pytest.approx(Recording.analytic_uj("update"), rel=5e-3)


def test_joulescope_stop_ends_the_window_early_with_fake_joulescope() -> None:
    device = FakeJoulescope(record(steps=2), block=True)
    with JoulescopeMeter(duration_s=30.0, module=fake_joulescope_module([device])) as meter:
        meter.start()
        cap = meter.stop()
    assert "stop" in device.calls and cap.samples > 0


def test_joulescope_not_found_and_several_with_fake_joulescope() -> None:
    with pytest.raises(MeterNotFound, match="no Joulescope found"):
        JoulescopeMeter(module=fake_joulescope_module([])).arm()
    rec = record(steps=1)
    with pytest.raises(MeterError, match="multiple devices found: unplug all but one"):
        JoulescopeMeter(module=fake_joulescope_module([FakeJoulescope(rec), FakeJoulescope(rec)])).arm()


def test_real_joulescope_scan_finds_no_meter_on_this_machine() -> None:
    joulescope = pytest.importorskip("joulescope")
    if joulescope.scan():
        pytest.skip("a Joulescope is attached")
    with pytest.raises(MeterNotFound):
        JoulescopeMeter().arm()


def test_meter_is_closed_when_arming_fails_with_fake_joulescope() -> None:
    device = FakeJoulescope(record(steps=1))

    def broken(name: str, value: Any) -> None:
        raise RuntimeError("USB stall")

    device.parameter_set = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="USB stall"), JoulescopeMeter(sample_rate_hz=FS,
                                                                        module=fake_joulescope_module([device])):
        pass
    assert device.calls[-1] == "close"
