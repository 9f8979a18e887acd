"""A rack misbehaves: failures of one run become that run's record and the bench goes on (real twins, real QEMU).

The fault here is the hardware edge we can make for real: kill -9 of one twin's QEMU mid-run is what an unplugged
board looks like to the host (its serial port vanishes).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from bench.app import runner
from bench.app.runner import Progress, load_profile
from bench.config.boards import load_catalogue, load_rack
from bench.image.firmware import ImageSet, build_firmware
from bench.image.symbols import decode_cfsr, decode_hfsr, symbols_for
from bench.link import session
from bench.link.link import Link
from bench.link.protocol import SelfTest, Step
from bench.records.recover import journal_messages
from bench.records.run import RunRecord
from bench.report.html import load_results, write_report
from bench.target.drivers import QemuTarget

pytestmark = pytest.mark.twin
VICTIM = "nucleo-f746zg"


def _qemu_pids(marker: str) -> list[int]:
    """QEMU processes whose command line names ``marker`` (this test's own out dir: never a neighbour's twin)."""
    out = subprocess.run(["pgrep", "-f", f"qemu-system-arm.*{marker}"], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


class KillTwinMidRun(Progress):
    """Kills the victim board's QEMU (SIGKILL) at step 20 of its first run."""

    def __init__(self, out: Path) -> None:
        self.out, self.done = out, False

    def step(self, label: str, technique: str, step: Step) -> None:
        if label == VICTIM and not self.done and step.step >= 20:
            self.done = True
            for pid in _qemu_pids(f"{self.out}/images/{VICTIM}.{technique}/"):
                os.kill(pid, signal.SIGKILL)


def test_killed_twin_is_a_disconnected_run_and_the_rest_goes_on(tmp_path: Path) -> None:
    profile = load_profile("quick").model_copy(update={"steps": 400})
    rack = load_rack(None, load_catalogue())
    rack = rack.model_copy(update={"boards": [e for e in rack.boards if e.board in (VICTIM, "nrf52840-dk")]})
    records = runner.run_profile(profile, rack, tmp_path, progress=KillTwinMidRun(tmp_path))
    by_id = {r.run_id: r for r in records}
    victim = by_id[f"{VICTIM}.full-fp32"]
    assert victim.status == "disconnected", victim.error
    assert "journal" in victim.error and 20 <= len(victim.steps) < 400  # its steps so far are kept
    others = [r for r in records if r is not victim]
    assert len(others) == 3 and all(r.status == "ok" for r in others), [(r.run_id, r.status, r.error) for r in others]
    runs = pd.read_parquet(tmp_path / "runs.parquet")
    assert set(runs["status"]) == {"ok", "disconnected"} and len(runs) == 4
    assert write_report(tmp_path).is_file()
    assert not _qemu_pids(str(tmp_path))  # nothing the bench started outlives its runs


def _record(**fields: object) -> RunRecord:
    board = load_catalogue()[VICTIM]
    record = RunRecord(run_id="r", board=board, target_kind="emulated", technique="full-fp32", model="m")
    for k, v in fields.items():
        setattr(record, k, v)
    return record


def test_a_run_over_its_fidelity_tolerance_is_fidelity_fail_not_ok() -> None:
    bad_fp32 = _record(fidelity_max_rel_err=6e4)
    runner._check_fidelity(bad_fp32, checked=True)
    assert bad_fp32.status == "fidelity-fail" and "6e+04" in bad_fp32.error
    bad_int8 = _record(fidelity_max_rel_err=0.5, fidelity_exact=0.0)
    runner._check_fidelity(bad_int8, checked=True)
    assert bad_int8.status == "fidelity-fail" and "integer reference" in bad_int8.error
    good = _record(fidelity_max_rel_err=1e-6)
    runner._check_fidelity(good, checked=True)
    exact = _record(fidelity_max_rel_err=0.0, fidelity_exact=1.0)
    runner._check_fidelity(exact, checked=True)
    unchecked = _record(fidelity_max_rel_err=math.nan)
    runner._check_fidelity(unchecked, checked=True)
    assert (good.status, exact.status, unchecked.status) == ("ok", "ok", "ok")


def test_a_plan_the_host_did_not_compile_is_refused() -> None:
    record = _record(plan_hash=0x1234)
    runner._check_plan_hash(record, 0x1234)  # the same plan: fine
    with pytest.raises(runner.PlanMismatch, match="device ran plan 00005678 but the host compiled 00001234"):
        runner._check_plan_hash(record, 0x5678)


def _steps_in_journal(out: Path, run_id: str) -> int:
    path = out / "journal" / f"{run_id}.rx.bin"
    return sum(isinstance(m, Step) for m in journal_messages(path, 0)[0]) if path.is_file() else 0


def test_a_killed_bench_leaves_no_twin_and_bench_recover_brings_back_every_step(tmp_path: Path) -> None:
    """kill -9 of the bench during its second run: its QEMU children die with it (parent-death signal), the first
    run is in the tables, and `bench recover` rebuilds the second from its journal, every step it had sent."""
    import sys
    import time

    profile = tmp_path / "long.toml"
    profile.write_text('task = "digits-drift"\nmodel = "digits-cnn"\ntechniques = ["last-fp32", "full-fp32"]\n'
                       'steps = 3000\nlr = 0.02\nseed = 1\neval_samples = 50\ncheck_steps = 2\n')
    out = tmp_path / "out"
    cli = [sys.executable, "-c", "from bench.app.cli import entry; entry()"]
    bench = subprocess.Popen([*cli, "run", str(profile), "--board", VICTIM, "--out", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    in_flight = f"{VICTIM}.full-fp32"
    try:
        deadline = time.monotonic() + 240
        while _steps_in_journal(out, in_flight) < 30 and time.monotonic() < deadline and bench.poll() is None:
            time.sleep(0.2)
        assert _steps_in_journal(out, in_flight) >= 30, "the second run never got going"
        bench.kill()
        bench.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _qemu_pids(str(out)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _qemu_pids(str(out)), "a twin outlived the killed bench"
    finally:
        if bench.poll() is None:
            bench.kill()
        for pid in _qemu_pids(str(out)):
            os.kill(pid, signal.SIGKILL)

    runs = pd.read_parquet(out / "runs.parquet")
    assert list(runs["run_id"]) == [f"{VICTIM}.last-fp32"] and list(runs["status"]) == ["ok"]
    assert load_results(out).unrecorded == [in_flight]  # the report says a run is missing before recovery
    sent = _steps_in_journal(out, in_flight) - 2  # the journal also holds the 2 fidelity-check steps
    done = subprocess.run([*cli, "recover", str(out), "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 run(s) recovered, 1 already recorded" in done.stderr  # --json: the table on stderr, rows on stdout
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert row["run_id"] == in_flight and row["status"] == "unfinished" and row["steps"] > 0
    runs = pd.read_parquet(out / "runs.parquet").set_index("run_id")
    assert runs.loc[in_flight, "status"] == "unfinished" and runs.loc[in_flight, "steps"] == sent
    assert "bench recover" in runs.loc[in_flight, "error"] and runs.loc[f"{VICTIM}.last-fp32", "status"] == "ok"
    steps = pd.read_parquet(out / "steps.parquet")
    mine = steps[steps["run_id"] == in_flight]
    assert list(mine["step"]) == list(range(sent)) and mine["instr_fwd"].gt(0).all()  # counted, in order, none lost
    assert len(steps[steps["run_id"] == f"{VICTIM}.last-fp32"]) == 3000
    again = subprocess.run([*cli, "recover", str(out), "--no-report"], capture_output=True, text=True, timeout=60)
    assert "nothing to recover" in again.stdout and len(pd.read_parquet(out / "runs.parquet")) == 2
    assert load_results(out).unrecorded == []


class StopTwinMidRun(Progress):
    """SIGSTOPs the victim's QEMU at step 20 of its first run (a hung device: the port stays open, nothing comes)."""

    def __init__(self, out: Path) -> None:
        self.out, self.stopped_at, self.finished_at = out, 0.0, 0.0

    def step(self, label: str, technique: str, step: Step) -> None:
        if label == VICTIM and not self.stopped_at and step.step >= 20:
            for pid in _qemu_pids(f"{self.out}/images/{VICTIM}.{technique}/"):
                os.kill(pid, signal.SIGSTOP)
            self.stopped_at = __import__("time").monotonic()

    def run_finished(self, label: str, record: RunRecord) -> None:
        if label == VICTIM and not self.finished_at:
            self.finished_at = __import__("time").monotonic()


def test_a_stopped_twin_is_a_hang_within_the_stall_timeout_and_the_next_run_is_ok(tmp_path: Path) -> None:
    stall = 2.0
    profile = load_profile("quick").model_copy(update={"steps": 400, "stall_timeout_s": stall})
    rack = load_rack(None, load_catalogue())
    rack = rack.model_copy(update={"boards": [e for e in rack.boards if e.board == VICTIM]})
    watch = StopTwinMidRun(tmp_path)
    records = runner.run_profile(profile, rack, tmp_path, progress=watch)
    first, second = records
    assert first.status == "hang", first.error
    assert "silent for 2 s" in first.error
    detected = watch.finished_at - watch.stopped_at
    print(f"hang detected and the twin released {detected:.2f} s after SIGSTOP (stall timeout {stall:g} s)")
    assert stall <= detected <= stall + 1.0
    assert second.status == "ok", second.error  # a fresh twin: the next run on that board trains normally
    assert not _qemu_pids(str(tmp_path))


SELFTEST_SOURCE = Path(__file__).resolve().parents[1] / "firmware" / "ports" / "cortexm" / "selftest.c"


def _marked_line(marker: str) -> int:
    """The line of selftest.c that carries ``FAULT-HERE <marker>``: where the stacked pc must point."""
    lines = SELFTEST_SOURCE.read_text().splitlines()
    return next(i for i, text in enumerate(lines, 1) if f"FAULT-HERE {marker}" in text)


@pytest.mark.parametrize("kind,marker", [(SelfTest.UNDEFINED, "undefined"), (SelfTest.BAD_LOAD, "bad-load")])
@pytest.mark.parametrize("board_name", ["nrf52840-dk", "nucleo-f746zg", "rpi-pico"])
def test_a_deliberate_fault_on_every_twin_is_decoded_to_its_function_and_line(
        tmp_path: Path, board_name: str, kind: int, marker: str) -> None:
    board = load_catalogue()[board_name]
    fw = build_firmware(board, "twin")
    target = QemuTarget(board, tmp_path / "qemu.log")
    target.load(ImageSet(board=board, kind="emulated", firmware=fw, blobs=(), plan_hash=0, arena_bytes=0))
    target.reset()
    try:
        with Link.open(target.url, board.serial.baudrate, tmp_path, name="selftest") as link:
            session.hello(link)
            fault = session.selftest_fault(link, kind)
    finally:
        target.close()
    syms = symbols_for(fw.elf)
    assert syms is not None
    text = session.describe_fault(fault, syms.describe, decode_cfsr, decode_hfsr)
    assert f"pc=0x{fault.pc:08x} in port_selftest_fault selftest.c:{_marked_line(marker)}" in text, text
    if board.core != "cortex-m0plus":  # ARMv7-M: configurable faults escalate to HardFault, CFSR says which
        cause = "UNDEFINSTR" if kind == SelfTest.UNDEFINED else "PRECISERR"
        assert "HardFault" in text and cause in text and "hfsr=0x40000000 = FORCED" in text, text
    else:  # ARMv6-M: HardFault only, and no status registers to show
        assert "HardFault" in text and "cfsr" not in text and "hfsr" not in text, text
