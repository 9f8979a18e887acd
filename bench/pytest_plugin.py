"""pytest plugin (entry point ``bench``): rack options, a ``board`` fixture over the rack, and a run factory.

The fixtures are thin shells over ``bench.runner.Bench``. Every run's raw byte journal is kept and its path is
printed with a failing test's report. At session end the runs made through the fixtures are written as results
tables and an HTML report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench.boards import Rack, RackEntry, filter_rack, load_catalogue, load_rack
from bench.profile import Profile, load_profile, parse_technique
from bench.records import ResultsWriter, RunRecord
from bench.runner import Bench, Prepared, run_meta

RUNS_KEY = pytest.StashKey[list[RunRecord]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bench", "on-device training bench")
    group.addoption("--rack", default=None, help="rack TOML file (default: the emulated rack of QEMU twins)")
    group.addoption("--board", action="append", default=[], help="only this board of the rack (repeatable)")
    group.addoption("--bench-out", default="reports/pytest", help="results and report of fixture runs")


def _rack(config: pytest.Config) -> Rack:
    return filter_rack(load_rack(config.getoption("--rack"), load_catalogue()), config.getoption("--board"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "board" in metafunc.fixturenames:
        entries = list(_rack(metafunc.config).boards)
        metafunc.parametrize("board", entries, ids=[e.label for e in entries], scope="session")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[RUNS_KEY] = []


@dataclass
class Run:
    """A finished run as tests see it: the record plus its steps and gradients as DataFrames."""

    record: RunRecord
    steps: pd.DataFrame
    grads: pd.DataFrame

    @property
    def status(self) -> str:
        return self.record.status

    def __getattr__(self, name: str) -> Any:
        return getattr(self.record, name)


@pytest.fixture(scope="session")
def rack(pytestconfig: pytest.Config) -> Rack:
    return _rack(pytestconfig)


@pytest.fixture(scope="session")
def bench_session(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Bench:
    out = Path(pytestconfig.getoption("--bench-out"))
    worker = getattr(pytestconfig, "workerinput", {}).get("workerid")
    return Bench(out / worker if worker else out)


@pytest.fixture(scope="session")
def bench_run(bench_session: Bench, pytestconfig: pytest.Config, request: pytest.FixtureRequest):
    """Factory: ``bench_run(board, "full-fp32", profile="quick", steps=50)`` flashes, trains and returns a Run."""
    prepared: dict[Profile, Prepared] = {}

    def run(board: RackEntry, technique: str, profile: str | Profile = "quick", **overrides: Any) -> Run:
        base = profile if isinstance(profile, Profile) else load_profile(profile)
        prof = base.model_copy(update=overrides) if overrides else base
        if prof not in prepared:
            prepared[prof] = bench_session.prepare(prof)
        record = bench_session.run(prepared[prof], board, parse_technique(technique, prof.last_k))
        pytestconfig.stash[RUNS_KEY].append(record)
        return Run(record, pd.DataFrame(record.step_rows()), pd.DataFrame(record.grad_rows()))

    return run


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed:
        journals = [r.journal for r in item.config.stash[RUNS_KEY] if r.journal]
        if journals:
            report.sections.append(("bench journals (raw device bytes)", "\n".join(journals[-5:])))
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    records = session.config.stash.get(RUNS_KEY, [])
    if not records:
        return
    out = Path(session.config.getoption("--bench-out"))
    worker = getattr(session.config, "workerinput", {}).get("workerid")
    out = out / worker if worker else out
    writer = ResultsWriter(out, run_meta("pytest session", _rack(session.config)))
    for record in records:
        writer.add(record)
    from bench.report import write_report

    write_report(out)
