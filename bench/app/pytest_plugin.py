"""pytest plugin (entry point ``bench``): rack options, a ``bench_board`` fixture over the rack, and a run factory.

Opt-in: only a test that names ``bench_board`` (or ``bench_dut``) is parametrized over the rack; a fixture of the
user's own called ``board`` or ``rack`` is left alone. The fixtures are thin shells over ``bench.app.runner.Bench``
(imported when a fixture is first used, so loading the plugin costs little in a pytest run that never uses it).
Every run's raw byte journal is kept; each test gets its own log directory (``bench_log_dir``) holding links to the
journals of the runs it made, and a failing test's report prints that directory and those journals.

Each pytest session writes into its own directory,
``<--bench-out>/<UTC time>-<pid>/`` (``latest`` links to the newest), so separate sessions never overwrite each other;
pytest-xdist workers write ``gwN/`` parts there, which the controller merges into one set of tables and one HTML
report at session end. With ``--bench-baseline DIR`` they are also compared with a stored baseline (see
``bench.report.compare``): each test's run figures and the verdicts become JUnit properties, and a regression fails the
session.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from bench.config.boards import ConfigError, Rack, RackEntry, filter_rack, load_catalogue, load_rack

if TYPE_CHECKING:  # the runner pulls in pandas, numpy and the planners: imported by the fixtures that need it
    import pandas as pd

    from bench.app.runner import Bench, Device, Prepared
    from bench.config.profile import Profile
    from bench.records.run import RunRecord

RUNS_KEY = pytest.StashKey["list[RunRecord]"]()
START_KEY = pytest.StashKey[int]()
COMPARISON_KEY = pytest.StashKey[Any]()
BASELINE_KEY = pytest.StashKey[Any]()
SESSION_DIR_KEY = pytest.StashKey[Path]()
DUT_KEY = pytest.StashKey[str]()
LOG_DIR_KEY = pytest.StashKey[Path]()
RACK_KEY = pytest.StashKey["Rack"]()
HELD_KEY = pytest.StashKey[dict[str, RackEntry]]()
HELD_STACK_KEY = pytest.StashKey[Any]()
SESSION_LOCK_KEY = pytest.StashKey[Any]()
RUN_FIGURES = ("peak_sram_bytes", "flash_bytes", "instr_per_step", "energy_per_step_uj", "acc_after",
               "fidelity_max_rel_err", "lost_frames", "wall_s", "journal")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bench", "on-device training bench")
    group.addoption("--rack", default=None, help="rack TOML file (default: the emulated rack of QEMU twins)")
    group.addoption("--board", action="append", default=[], help="only this board of the rack (repeatable)")
    group.addoption("--bench-out", default="reports/pytest",
                    help="where each session's results and report go (a new subdirectory per session, 'latest' "
                         "links to the newest)")
    group.addoption("--bench-keep", type=int, default=10,
                    help="session directories kept under --bench-out (older ones are deleted; 0 keeps all)")
    group.addoption("--bench-baseline", default=None, metavar="DIR",
                    help="results directory to compare the session's runs with; a regression fails the session")


def _rack(config: pytest.Config) -> Rack:
    """The session's rack as collection sees it: a labgrid rack's places are listed here (for parametrization) and
    acquired when the first test needs one (`_held`)."""
    if RACK_KEY not in config.stash:
        try:
            rack = filter_rack(load_rack(config.getoption("--rack"), load_catalogue()), config.getoption("--board"))
            if rack.labgrid is not None:
                from bench.app.lab import listed_rack

                rack = listed_rack(rack, load_catalogue())
        except (ConfigError, RuntimeError) as exc:  # a bad rack file, or a labgrid coordinator that does not answer
            raise pytest.UsageError(f"--rack {config.getoption('--rack')}: {exc}") from None
        config.stash[RACK_KEY] = rack
    return config.stash[RACK_KEY]


def _held(config: pytest.Config, entry: RackEntry) -> RackEntry:
    """``entry`` as the session holds it: on a labgrid rack its place is acquired when a test first needs it (held
    for the rest of the session, released at its end: each xdist worker holds only the places its tests use) and
    the entry gains its serial and control endpoints."""
    rack = _rack(config)
    if rack.labgrid is None:
        return entry
    if HELD_STACK_KEY not in config.stash:
        from contextlib import ExitStack

        config.stash[HELD_STACK_KEY] = ExitStack()
        config.stash[HELD_KEY] = {}
    held = config.stash[HELD_KEY]
    if entry.label not in held:
        from bench.app.lab import held_rack

        one = Rack(name=rack.name, boards=(entry,), labgrid=rack.labgrid)
        got = config.stash[HELD_STACK_KEY].enter_context(held_rack(one, load_catalogue(), _say(config)))
        held[entry.label] = got.boards[0]
    return held[entry.label]


def _say(config: pytest.Config) -> Any:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    return (lambda m: reporter.write_line(f"bench: {m}")) if reporter else (lambda m: None)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a labgrid rack, a place's tests form one xdist group (run with ``--dist loadgroup``), so one worker holds
    each place instead of two workers waiting for each other's."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        entry = callspec.params.get("bench_board") if callspec else None
        if isinstance(entry, RackEntry) and entry.place is not None:
            item.add_marker(pytest.mark.xdist_group(entry.label))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``bench_board`` (asked for directly or through ``bench_dut``) over the rack's boards."""
    if "bench_board" in metafunc.fixturenames:
        entries = list(_rack(metafunc.config).boards)
        metafunc.parametrize("bench_board", entries, ids=[e.label for e in entries], scope="session")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[RUNS_KEY] = []
    config.addinivalue_line("markers", "twin: runs the training firmware on QEMU twins (real QEMU processes)")
    config.addinivalue_line("markers", "hardware: needs a rack with real boards (--rack FILE)")
    if config.getoption("--rack", None):  # a rack asked for by name is checked now: a bad one is a usage error
        _rack(config)


def _worker(config: pytest.Config) -> str | None:
    return getattr(config, "workerinput", {}).get("workerid")


def session_dir(config: pytest.Config) -> Path:
    """This session's own results directory (shared by its xdist workers, named by the controller)."""
    if SESSION_DIR_KEY not in config.stash:
        given = getattr(config, "workerinput", {}).get("bench_session")
        now = time.time()
        name = given or f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}.{int(now % 1 * 1000):03d}-{os.getpid()}"
        config.stash[SESSION_DIR_KEY] = Path(config.getoption("--bench-out")) / name
    return config.stash[SESSION_DIR_KEY]


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist controller, once per worker: the worker writes its part into this session's directory."""
    node.workerinput["bench_session"] = session_dir(node.config).name


@dataclass(repr=False)
class Run:
    """A finished run as tests see it: every column of ``runs.parquet`` as an attribute (``run.acc_after``,
    ``run.final_loss``, ``run.peak_sram_bytes``...), its steps and gradients as DataFrames, and the record's methods
    (``run.accuracy(1)``) for anything else."""

    record: RunRecord
    steps: pd.DataFrame
    grads: pd.DataFrame

    @property
    def row(self) -> dict[str, Any]:
        """The run's row of ``runs.parquet``."""
        return self.record.run_row()

    @property
    def status(self) -> str:
        return self.record.status

    def __getattr__(self, name: str) -> Any:
        """The record's own field (exact types: byte counts stay ints), else the results column of that name (a
        derived figure such as ``acc_after``, or ``final_loss``, a method on the record), else the record's method."""
        from bench.records.run import RUN_COLUMNS

        value = getattr(self.record, name, None)
        if name in RUN_COLUMNS and (value is None or callable(value)):
            return self.record.run_row()[name]
        return getattr(self.record, name)

    def __repr__(self) -> str:  # short: assertion messages quote it
        r = self.record
        return (f"Run({r.run_id!r}, status={r.status!r}, steps={len(r.steps)}, acc {r.accuracy(0):.3f} -> "
                f"{r.accuracy(1):.3f}, journal={r.journal!r})")


@pytest.fixture(scope="session")
def bench_rack(pytestconfig: pytest.Config) -> Rack:
    """The rack this session runs on (``--rack``, filtered by ``--board``)."""
    return _rack(pytestconfig)


@pytest.fixture
def bench_log_dir(request: pytest.FixtureRequest) -> Path:
    """This test's own log directory: ``bench_dut``'s journal, and links to the journals of its ``bench_run`` runs."""
    return _log_dir(request.node)


def _log_dir(item: pytest.Item) -> Path:
    if LOG_DIR_KEY not in item.stash:
        name = re.sub(r"[^\w.\[\]-]+", "_", item.nodeid)[-150:]
        path = session_dir(item.config) / "tests" / name
        path.mkdir(parents=True, exist_ok=True)
        item.stash[LOG_DIR_KEY] = path
    return item.stash[LOG_DIR_KEY]


@pytest.fixture(scope="session")
def bench_session(pytestconfig: pytest.Config) -> Bench:
    from bench.app.runner import Bench, session_lock

    worker = _worker(pytestconfig)
    out = session_dir(pytestconfig) / worker if worker else session_dir(pytestconfig)
    pytestconfig.stash[SESSION_LOCK_KEY] = session_lock(out)  # held to the end: a pruning session skips it
    return Bench(out)


@pytest.fixture
def bench_dut(bench_board: RackEntry, bench_log_dir: Path, request: pytest.FixtureRequest) -> Iterator[Device]:
    """A live, journaled Link to ``bench_board`` running the bench firmware with no plan (``dut.link``,
    ``dut.hello``), for tests that talk to the firmware directly; its journal is in this test's log directory."""
    from bench.app.runner import device

    entry = _held(request.config, bench_board)
    with device(entry, load_catalogue()[entry.board], bench_log_dir, "dut") as dut:
        request.node.stash[DUT_KEY] = str(dut.link.journal_path)
        yield dut


@pytest.fixture(scope="session")
def bench_run(bench_session: Bench, pytestconfig: pytest.Config):
    """Factory: ``bench_run(bench_board, "full-fp32", profile="quick", steps=50)`` flashes, trains and returns a
    Run; overrides are checked like a profile file."""
    import pandas as pd

    from bench.app.runner import load_profile
    from bench.config.profile import Profile

    prepared: dict[str, Prepared] = {}  # by the profile's JSON: profiles hold tables, so are not hashable

    def run(board: RackEntry, technique: str, profile: str | Profile = "quick", **overrides: Any) -> Run:
        base = profile if isinstance(profile, Profile) else load_profile(profile)
        prof = _overridden(base, overrides) if overrides else base
        key = prof.model_dump_json()
        if key not in prepared:
            prepared[key] = bench_session.prepare(prof)
        record = bench_session.run(prepared[key], _held(pytestconfig, board), prof.technique(technique))
        pytestconfig.stash[RUNS_KEY].append(record)
        return Run(record, pd.DataFrame(record.step_rows()), pd.DataFrame(record.grad_rows()))

    return run


@pytest.fixture
def bench_federate(bench_rack: Rack, bench_log_dir: Path):
    """Factory: ``bench_federate(profile="quick", rounds=3, local_steps=20, alpha=0.5)`` runs federated rounds on the
    session's rack (`bench.app.federate`; ``flower=True`` through a Flower server) and returns the `Federation`:
    ``fed.writer.rows`` are rounds.parquet's rows, ``fed.global_tensors`` the final global model. Its results and
    journals are in this test's log directory."""
    from bench.app.federate import FedSettings, run_federation
    from bench.app.runner import load_profile
    from bench.config.profile import Profile

    def federate(profile: str | Profile = "quick", flower: bool = False, **settings: Any) -> Any:
        base = profile if isinstance(profile, Profile) else load_profile(profile)
        out, fed_settings = bench_log_dir / "federation", FedSettings(**settings)
        if flower:
            from bench.app.flower import run_flower_federation

            return run_flower_federation(base, bench_rack, out, fed_settings)
        return run_federation(base, bench_rack, out, fed_settings)

    return federate


def _overridden(base: Profile, overrides: dict[str, Any]) -> Profile:
    """``base`` with ``overrides`` checked like a profile file (`bench.app.runner.with_overrides`): an unknown key
    or a bad value fails the test with a message naming it, instead of being ignored or reaching the device."""
    from bench.app.runner import with_overrides

    try:
        return with_overrides(base, overrides)
    except ConfigError as exc:
        raise pytest.UsageError(f"bench_run: {exc}") from None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[START_KEY] = len(item.config.stash[RUNS_KEY])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    if call.when == "teardown":  # junitxml reads the properties off the teardown report
        item.user_properties.extend(_run_properties(item))
    report = yield
    own = item.config.stash[RUNS_KEY][item.stash.get(START_KEY, 0):]  # this test's runs, not its neighbours'
    if call.when == "call" and own:
        _link_journals(_log_dir(item), own)
    if report.failed:
        journals = [f"{r.run_id} ({r.status}): {r.journal}" for r in own if r.journal]
        if DUT_KEY in item.stash:
            journals.append(f"bench_dut: {item.stash[DUT_KEY]}")
        if journals:
            journals.insert(0, f"log directory of this test: {_log_dir(item)}")
            report.sections.append(("bench journals (raw device bytes)", "\n".join(journals)))
    return report


def _link_journals(log_dir: Path, records: list[RunRecord]) -> None:
    """``<log dir>/<run id>.rx.bin`` -> the run's journal, for every run the test made."""
    for record in records:
        if record.journal and Path(record.journal).is_file():
            link = log_dir / Path(record.journal).name
            link.unlink(missing_ok=True)
            link.symlink_to(os.path.relpath(Path(record.journal).resolve(), log_dir.resolve()))


@pytest.hookimpl(tryfirst=True)  # before junitxml writes its file, so the global properties make it in
def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    records = config.stash.get(RUNS_KEY, [])
    worker = _worker(config)
    out = session_dir(config)
    if records or out.is_dir():  # else no bench run anywhere in this session (the plugin was merely loaded)
        _write_results(config, records, out / worker if worker else out, merge=not worker)
    if not worker and config.getoption("--bench-baseline"):
        _gate(session)


def _write_results(config: pytest.Config, records: list[RunRecord], out: Path, merge: bool) -> None:
    """This process's runs into ``out``; the controller (``merge``) also merges the workers' parts, writes the
    report, points ``latest`` at it and prunes old sessions."""
    from bench.app.runner import run_meta
    from bench.records.run import ResultsWriter, merge_results

    meta = run_meta("pytest session", _rack(config))
    if records:
        writer = ResultsWriter(out, meta)
        for record in records:
            writer.add(record)
    if not merge:
        return
    parts = sorted(p for p in out.glob("gw*") if p.is_dir()) if out.is_dir() else []
    if parts:
        merge_results(parts, out, meta)
    if (out / "runs.parquet").is_file():
        from bench.report.html import write_report

        write_report(out)
        _link_latest(out)
        _prune(out.parent, config.getoption("--bench-keep"), keep=out)


def _link_latest(out: Path) -> None:
    """``<bench-out>/latest`` -> this session's directory, replaced in one rename."""
    latest = out.parent / "latest"
    if latest.exists() and not latest.is_symlink():
        return  # a real directory of that name is someone's: leave it
    tmp = out.parent / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(out.name)
    os.replace(tmp, latest)


def _prune(base: Path, keep_n: int, keep: Path) -> None:
    """Delete all but the newest ``keep_n`` session directories; one another session still writes in stays."""
    if keep_n <= 0:
        return
    sessions = sorted((p for p in base.glob("2*-*") if p.is_dir() and not p.is_symlink()), key=lambda p: p.name)
    for old in sessions[:-keep_n]:
        if old != keep and not _in_use(old):
            shutil.rmtree(old, ignore_errors=True)


def _in_use(directory: Path) -> bool:
    """Whether a live session (or one of its workers) holds the lock of ``directory`` or of one of its parts."""
    from bench.app.runner import OutDirBusy, session_lock

    for part in [directory, *(p for p in directory.glob("gw*") if p.is_dir())]:
        if not (part / ".bench-session.lock").exists():
            continue
        try:
            session_lock(part).release()
        except OutDirBusy:
            return True
    return False


def pytest_unconfigure(config: pytest.Config) -> None:
    stack = config.stash.get(HELD_STACK_KEY, None)
    if stack is not None:  # the session's labgrid places
        stack.close()
    lock = config.stash.get(SESSION_LOCK_KEY, None)
    if lock is not None:
        lock.release()


# ----------------------------------------------------------------------------------------------------
# Regression gate against --bench-baseline


def _baseline(config: pytest.Config) -> pd.DataFrame:
    """The baseline's runs, read once per process (a worker's tests need them too)."""
    if BASELINE_KEY not in config.stash:
        from bench.report.compare import load_runs

        config.stash[BASELINE_KEY] = load_runs(Path(config.getoption("--bench-baseline")))
    return config.stash[BASELINE_KEY]


def _run_properties(item: pytest.Item) -> list[tuple[str, object]]:
    """The figures of the runs this test made, and their verdict against the baseline when there is one."""
    records = item.config.stash[RUNS_KEY][item.stash.get(START_KEY, 0):]
    props: list[tuple[str, object]] = []
    for record in records:
        row = record.run_row()
        name = f"bench.{row['board']}.{row['technique']}"
        props.append((f"{name}.status", row["status"]))
        props += [(f"{name}.{col}", _figure(row[col])) for col in RUN_FIGURES]
        if item.config.getoption("--bench-baseline"):
            props.append((f"{name}.verdict", _verdict(item.config, row)))
    return props


def _thresholds(config: pytest.Config) -> Any:
    """The thresholds of the profile the baseline was made with (a fixture session has no single profile)."""
    from bench.report.compare import load_thresholds, profile_of, stored_thresholds

    baseline = Path(config.getoption("--bench-baseline"))
    return load_thresholds(profile_of(baseline), stored=stored_thresholds(baseline))


def _figure(value: object) -> object:
    """Whole numbers without '.0', and nothing for a figure the run did not produce."""
    if isinstance(value, float):
        return "" if value != value else int(value) if value.is_integer() else f"{value:.6g}"
    return value


def _verdict(config: pytest.Config, row: dict[str, object]) -> str:
    import pandas as pd

    from bench.report.compare import compare_runs

    th, _ = _thresholds(config)
    base = _baseline(config)
    base = base[(base["board"] == row["board"]) & (base["technique"] == row["technique"])]
    pair = compare_runs(base, pd.DataFrame([row]), th)[0]
    worse = [f"{d.label} {d.change}" for d in pair.deltas if d.verdict == "regression"]
    return ": ".join([pair.verdict, ", ".join(worse) or pair.note]).rstrip(": ")


def _gate(session: pytest.Session) -> None:
    """Compare this session's runs (its directory, workers' parts merged) with the baseline; write the comparison
    beside them and re-render their report with it."""
    import pandas as pd

    from bench.report.compare import Comparison, compare_runs, fingerprint, write_comparison

    config = session.config
    out = session_dir(config)
    runs_path = out / "runs.parquet"
    if not runs_path.is_file():
        config.stash[COMPARISON_KEY] = "no bench runs in this session: nothing compared with the baseline"
        return
    th, source = _thresholds(config)
    baseline = config.getoption("--bench-baseline")
    pairs = compare_runs(_baseline(config), pd.read_parquet(runs_path), th)
    comp = Comparison(baseline, str(out), th.model_dump(), source, pairs, fingerprint(out))
    write_comparison(comp, out)
    from bench.report.html import write_report

    write_report(out)
    _global_properties(config, comp)
    config.stash[COMPARISON_KEY] = comp
    if comp.regressed and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _global_properties(config: pytest.Config, comp: Any) -> None:
    """Session-level JUnit properties, for CI dashboards that chart them."""
    from _pytest.junitxml import xml_key

    xml = config.stash.get(xml_key, None)
    if xml is None:
        return
    for key, value in comp.summary().items():
        xml.add_global_property(f"bench.compare.{key}", value)
    for pair in comp.pairs:
        name = f"bench.compare.{pair.board}.{pair.technique}"
        xml.add_global_property(f"{name}.verdict", pair.verdict)
        for d in pair.deltas:
            xml.add_global_property(f"{name}.{d.metric}", f"{d.baseline} -> {d.current} ({d.change or d.note})")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    comp = config.stash.get(COMPARISON_KEY, None)
    if comp is None:
        return
    terminalreporter.section("bench: comparison with the baseline")
    if isinstance(comp, str):
        terminalreporter.write_line(comp)
        return
    from bench.app.cli_report import verdict_line

    for pair in comp.pairs:
        if pair.verdict != "unchanged":
            worse = ", ".join(f"{d.label} {d.change}" for d in pair.deltas if d.verdict != "within" and d.change)
            terminalreporter.write_line(f"{pair.verdict:12} {pair.board} · {pair.technique}: {worse or pair.note}")
    terminalreporter.write_line(verdict_line(comp), red=comp.regressed, green=not comp.regressed, bold=True)
