"""The rack on labgrid, all of it real: a labgrid coordinator on 127.0.0.1, two `bench twin-host` processes (two
simulated lab hosts, each with its own labgrid exporter) serving QEMU twins, and the bench reserving, acquiring,
using and releasing their places. Every process a test starts, the test stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from bench.app.lab_local import BENCH, LocalLab, coordinator_binary, local_lab, stop
from bench.config.boards import ConfigError, LabSpec, load_catalogue, load_rack
from bench.target.lab import LabClient, Place
from bench.target.twinhost import free_port

pytestmark = pytest.mark.twin


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalLab]:
    if not coordinator_binary().exists():
        pytest.skip("labgrid is not installed (the [labgrid] extra; `make test` installs it)")
    work = tmp_path_factory.mktemp("lab")
    with local_lab(work, {"hostA": ["rpi-pico", "nrf52840-dk"], "hostB": ["nucleo-f746zg"]}) as started:
        yield started
        procs = list(started.hosts.values())
    assert all(p.poll() is not None for p in procs)  # every process the fixture started is stopped


def _run(lab: LocalLab, *args: str, owner: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BENCH_LAB_OWNER": owner}
    return subprocess.run([*BENCH, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


def test_places_of_both_hosts_are_listed_with_their_tags(lab: LocalLab) -> None:
    places = {p.name: p for p in lab.client("lister").places()}
    assert set(places) >= {"hostA-rpi-pico-0", "hostA-nrf52840-dk-0", "hostB-nucleo-f746zg-0"}
    pico = places["hostA-rpi-pico-0"]
    assert pico.tags == {"board": "rpi-pico", "kind": "emulated", "host": "hostA"} and pico.exporter == "hostA"
    assert pico.acquired is None


def test_bench_run_trains_on_places_of_two_hosts_and_releases_them(lab: LocalLab, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _run(lab, "run", "quick", "--rack", f"labgrid://{lab.address}?kind=emulated", "--technique", "last-fp32",
                "--steps", "20", "--out", str(out), "--json", owner="job-run")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert {r["place"] for r in rows} == {"hostA-rpi-pico-0", "hostA-nrf52840-dk-0", "hostB-nucleo-f746zg-0"}
    assert {r["exporter"] for r in rows} == {"hostA", "hostB"} and {r["status"] for r in rows} == {"ok"}
    assert all(r["fidelity_max_rel_err"] < 1e-4 and r["steps"] == 20 for r in rows)
    runs = pd.read_parquet(out / "runs.parquet")
    assert set(runs["place"].astype(str)) == {r["place"] for r in rows}
    assert "holding 3 place(s) as" in " ".join(done.stderr.split())
    assert [p.name for p in lab.client("x").places() if p.acquired] == []  # all released


def test_a_place_someone_else_holds_is_waited_for_then_refused_with_the_holder_named(lab: LocalLab,
                                                                                      tmp_path: Path) -> None:
    other = lab.client("someone-else")
    token = other.reserve("hostB-nucleo-f746zg-0", 10, lambda m: None)
    other.acquire("hostB-nucleo-f746zg-0", token)
    try:
        done = _run(lab, "run", "quick", "--rack",
                    f"labgrid://{lab.address}?places=hostB-nucleo-f746zg-0&wait_s=3", "--technique", "last-fp32",
                    "--steps", "5", "--out", str(tmp_path / "o"), owner="job-waits")
        text = " ".join(done.stderr.split())
        assert done.returncode == 2, done.stderr[-2000:]
        assert f"is held by {other.holder}; waiting up to 3 s" in text
        assert f"still held by {other.holder} after 3 s" in text and "Traceback" not in text
    finally:
        other.release("hostB-nucleo-f746zg-0")
        other.cancel(token)
    held = [p for p in other.places() if p.acquired]
    assert held == []


def _holding(lab: LocalLab, tmp_path: Path, owner: str, board: str) -> tuple[subprocess.Popen[str], LabClient, str]:
    """A long `bench run` on ``board``'s place as ``owner``, once it holds the place: (process, client, holder)."""
    env = {**os.environ, "BENCH_LAB_OWNER": owner}
    proc = subprocess.Popen([*BENCH, "run", "quick", "--rack", f"labgrid://{lab.address}?board={board}",
                             "--technique", "full-fp32", "--steps", "2000", "--out", str(tmp_path / "o")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    client = lab.client("watcher")
    holder = f"{client.host}/{owner}"
    deadline = time.monotonic() + 60
    while not client.held_by(holder):
        assert proc.poll() is None and time.monotonic() < deadline, "the bench never acquired its place"
        time.sleep(0.3)
    return proc, client, holder


def test_a_killed_bench_leaves_its_places_held_until_the_janitor_releases_them(lab: LocalLab, tmp_path: Path) -> None:
    proc, client, holder = _holding(lab, tmp_path, "job-killed", "rpi-pico")
    time.sleep(2)  # mid-run
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert client.held_by(holder) == ["hostA-rpi-pico-0"]  # SIGKILL: nothing could release it
    done = subprocess.run([*BENCH, "rack", "release", "--coordinator", lab.address, "--owner", holder],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and "released 1 place(s)" in done.stderr, done.stderr
    assert client.held_by(holder) == []


def test_sigterm_releases_the_places(lab: LocalLab, tmp_path: Path) -> None:
    """A cancelled CI job gets SIGTERM: the bench unwinds and releases what it holds."""
    proc, client, holder = _holding(lab, tmp_path, "job-cancelled", "nrf52840-dk")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert client.held_by(holder) == []


def test_a_host_that_dies_mid_run_is_a_recorded_failed_run(lab: LocalLab, tmp_path: Path) -> None:
    """hostC (its exporter, control endpoint and twin) is killed while the bench trains on its place: that run is
    recorded as failed, the place is released, and the run on hostA's place is ok."""
    host = lab.add_host("hostC", ["nucleo-f746zg"])
    out = tmp_path / "out"
    env = {**os.environ, "BENCH_LAB_OWNER": "job-host-dies"}
    try:
        proc = subprocess.Popen([*BENCH, "run", "quick", "--rack",
                                 f"labgrid://{lab.address}?places=hostC-nucleo-f746zg-0,hostA-rpi-pico-0",
                                 "--technique", "full-fp32", "--steps", "3000", "--out", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        client = lab.client("watcher")
        deadline = time.monotonic() + 60

        def training() -> bool:  # past HELLO and the fidelity check: steps are streaming (3000 take ~15 s)
            journals = list((out / "journal").glob("hostC*.rx.bin")) if (out / "journal").is_dir() else []
            return bool(journals) and journals[0].stat().st_size > 20_000

        while not training():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(host.pid, signal.SIGKILL)  # the whole simulated host: exporter, control endpoint, QEMU
        host.wait()
        _, err = proc.communicate(timeout=240)
    finally:
        stop(host)
        lab.client("cleanup").run("-p", "hostC-nucleo-f746zg-0", "delete")  # leave the lab as the test found it
    assert proc.returncode == 1, err[-3000:]
    runs = pd.read_parquet(out / "runs.parquet").set_index("place")
    assert runs.loc["hostC-nucleo-f746zg-0", "status"] in ("disconnected", "hang", "error")
    assert runs.loc["hostA-rpi-pico-0", "status"] == "ok"
    assert client.held_by(f"{client.host}/job-host-dies") == []


def test_a_coordinator_restart_mid_run_drops_the_lock_and_the_run_still_finishes(tmp_path: Path) -> None:
    """labgrid forgets every lock when its coordinator restarts: the run (its data never passes the coordinator)
    goes on, the release at the end is a warning instead of a failure, and nothing is left acquired."""
    with local_lab(tmp_path, {"hostR": ["rpi-pico"]}) as lab:
        lab.wait_saved()  # so the restart keeps the place
        env = {**os.environ, "BENCH_LAB_OWNER": "job-restart"}
        proc = subprocess.Popen([*BENCH, "run", "quick", "--rack", f"labgrid://{lab.address}", "--technique",
                                 "full-fp32", "--steps", "2000", "--out", str(tmp_path / "o")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        client = lab.client("watcher")
        deadline = time.monotonic() + 60
        journal = tmp_path / "o" / "journal"
        while not (journal.is_dir() and any(journal.glob("*.rx.bin"))):  # training has begun
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        assert client.held_by(f"{client.host}/job-restart") == ["hostR-rpi-pico-0"]
        lab.restart_coordinator()
        assert proc.poll() is None  # mid-run (2000 steps of the M0+ twin take ~20 s)
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
        assert "could not release hostR-rpi-pico-0" in " ".join(err.split())
        assert [p.name for p in client.places() if p.acquired] == [] and "hostR-rpi-pico-0" in {
            p.name for p in client.places()}  # the place survived the restart, unlocked
        runs = pd.read_parquet(tmp_path / "o" / "runs.parquet")
        assert list(runs["status"].astype(str)) == ["ok"]


def test_pytest_session_on_labgrid_parametrizes_over_the_places_and_records_them(lab: LocalLab,
                                                                                 pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
def test_trains(bench_board, bench_run):
    run = bench_run(bench_board, "last-fp32", steps=10, check_steps=0, eval_samples=10)
    assert run.status == "ok", run.error
    assert run.place == bench_board.label and run.exporter in ("hostA", "hostB")
""")
    out = pytester.path / "out"
    result = pytester.runpytest_subprocess("--rack", f"labgrid://{lab.address}?kind=emulated", "--board",
                                           "hostA-rpi-pico-0", "--board", "hostB-nucleo-f746zg-0", "--bench-out",
                                           str(out), "-p", "no:labgrid", "-v", "-n", "2", "--dist", "loadgroup")
    result.assert_outcomes(passed=2)
    text = result.stdout.str()  # -n 2 --dist loadgroup: each worker holds the one place its group of tests uses
    assert "test_trains[hostA-rpi-pico-0@hostA-rpi-pico-0]" in text or "test_trains[hostA-rpi-pico-0]" in text
    assert "hostB-nucleo-f746zg-0" in text
    runs = pd.read_parquet(out / "latest" / "runs.parquet")
    assert set(runs["exporter"].astype(str)) == {"hostA", "hostB"}
    assert [p.name for p in lab.client("x").places() if p.acquired] == []


pytest_plugins = ["pytester"]


def test_an_unreachable_coordinator_is_a_clear_error(tmp_path: Path, pytester: pytest.Pytester) -> None:
    if not coordinator_binary().exists():
        pytest.skip("labgrid is not installed")
    nowhere = f"labgrid://127.0.0.1:{free_port()}"
    done = subprocess.run([*BENCH, "run", "quick", "--rack", nowhere, "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2 and "is unreachable" in done.stderr and "Traceback" not in done.stderr
    pytester.makepyfile("def test_x(bench_board):\n    pass\n")
    result = pytester.runpytest_subprocess("--rack", nowhere, "-p", "no:labgrid")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--rack {nowhere}: labgrid coordinator * is unreachable*"])


def test_bench_boards_lists_the_places_of_a_labgrid_rack(lab: LocalLab) -> None:
    done = subprocess.run([*BENCH, "boards", "--rack", f"labgrid://{lab.address}?kind=emulated", "--json"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    entries = {e["place"]: e for e in json.loads(done.stdout)["rack"]["boards"]}
    assert {"hostA-rpi-pico-0", "hostB-nucleo-f746zg-0"} <= set(entries)
    assert entries["hostB-nucleo-f746zg-0"]["exporter"] == "hostB" and entries["hostB-nucleo-f746zg-0"]["kind"] == (
        "emulated")


def test_lab_rack_urls_and_files_are_checked() -> None:
    rack = load_rack("labgrid://lab.example:20408?board=rpi-pico&wait_s=30", load_catalogue())
    assert rack.labgrid == LabSpec(coordinator="lab.example:20408", tags={"board": "rpi-pico"}, wait_s=30)
    assert load_rack("labgrid://h:1?places=a,b", load_catalogue()).labgrid.places == ("a", "b")  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="coordinator"):
        load_rack("labgrid://no-port", load_catalogue())


def test_places_are_selected_by_tags_and_must_name_a_board() -> None:
    from bench.app.lab import select_places

    cat = load_catalogue()
    places = [Place("a", {"board": "rpi-pico", "kind": "emulated"}), Place("b", {"board": "nucleo-f746zg"}),
              Place("c", {"board": "esp32"}), Place("d", {})]
    spec = LabSpec(coordinator="h:1", tags={"kind": "emulated"})
    assert [p.name for p in select_places(places, spec, cat)] == ["a"]
    with pytest.raises(ConfigError, match="no board tag naming a board"):
        select_places(places, LabSpec(coordinator="h:1", places=("c",)), cat)
    with pytest.raises(ConfigError, match="no labgrid place on h:1 matches board=x"):
        select_places(places, LabSpec(coordinator="h:1", tags={"board": "x"}), cat)


def test_a_board_place_becomes_a_remote_pyocd_probe_and_an_rfc2217_port() -> None:
    """A real board behind an exporter: ser2net's RFC2217 port and `pyocd server`; pyocd's own API takes the remote
    probe id (vendor API boundary: no probe or server needed to choose it)."""
    from bench.app.lab import entry_for
    from bench.target.drivers import PyocdTarget

    place = Place("lab1-f746-0", {"board": "nucleo-f746zg", "kind": "hardware"}, matches=("lab1/f746/*",))
    entry = entry_for(place, {"NetworkSerialPort": {"host": "lab1", "port": 3001, "protocol": "rfc2217"},
                              "BenchPyocdServer": {"host": "lab1", "port": 5555}})
    assert (entry.kind, entry.port, entry.probe_uid, entry.exporter) == ("hardware", "rfc2217://lab1:3001",
                                                                         "remote:lab1:5555", "lab1")
    target = PyocdTarget(load_catalogue()["nucleo-f746zg"], entry)
    assert target.choose_probe() == "remote:lab1:5555"
