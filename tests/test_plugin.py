"""The pytest plugin's options and the board parametrization, seen from a user's test session."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

USER_TEST = """
def test_sees_board(bench_board, bench_rack):
    assert bench_board in bench_rack.boards
"""


def test_board_fixture_covers_the_default_rack(pytester):
    pytester.makepyfile(USER_TEST)
    result = pytester.runpytest("-p", "bench", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_sees_board[[]nrf52840-dk[]]*", "*test_sees_board[[]nucleo-f746zg[]]*",
                                 "*test_sees_board[[]rpi-pico[]]*"])


def test_parametrization_is_opt_in_and_leaves_a_users_own_board_fixture_alone(pytester):
    pytester.makepyfile("""
import pytest

@pytest.fixture(params=["mine-a", "mine-b"])
def board(request):
    return request.param

@pytest.fixture
def rack():
    return "my rack"

def test_own_board(board, rack):
    assert board.startswith("mine-") and rack == "my rack"

def test_no_bench_fixture():
    pass
""")
    result = pytester.runpytest("-p", "bench", "-q")
    result.assert_outcomes(passed=3)  # two of the user's boards, one plain test: nothing from the rack


def test_loading_the_plugin_imports_neither_pandas_nor_the_runner():
    """Every pytest run in the environment loads the plugin: it must not pay for the bench's heavy imports."""
    import subprocess
    import sys

    code = ("import sys, bench.app.pytest_plugin; heavy = sorted({'pandas', 'numpy', 'bench.app.runner', "
            "'matplotlib', 'scipy'} & set(sys.modules)); print(heavy); sys.exit(1 if heavy else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_board_option_filters_and_rack_option_reads_a_file(pytester):
    pytester.makepyfile(USER_TEST)
    rack = pytester.makefile(".toml", myrack='[[boards]]\nboard = "rpi-pico"\nname = "pico-a"\n'
                                             '[[boards]]\nboard = "rpi-pico"\nname = "pico-b"\n')
    result = pytester.runpytest("--rack", str(rack), "--board", "pico-b", "-q")
    result.assert_outcomes(passed=1)
    result = pytester.runpytest("--board", "rpi-pico", "-q")
    result.assert_outcomes(passed=1)


TRAINING_TEST = """
import pytest


def test_trains_twice(bench_board, bench_run):
    first = bench_run(bench_board, "last-fp32", steps=20, check_steps=0, eval_samples=20)
    second = bench_run(bench_board, "last-fp32", steps=20, check_steps=0, eval_samples=20)
    assert first.status == second.status == "ok", (first.error, second.error)
    assert first.run_id != second.run_id and first.journal != second.journal


def test_fails_after_its_run(bench_board, bench_run):
    if bench_board.board == "rpi-pico":
        bench_run(bench_board, "full-fp32", steps=5, check_steps=0, eval_samples=10)
        assert False, "deliberate"
"""


def _sessions(out) -> list:
    return sorted(p for p in out.iterdir() if p.is_dir() and not p.is_symlink())


@pytest.mark.twin
def test_xdist_workers_and_separate_sessions_never_overwrite_each_others_results(pytester):
    """Two sessions into one --bench-out, the first with two xdist workers: each session keeps its own directory, the
    workers' parts are merged into one table and report, and a failing test names only its own journals."""
    import pandas as pd

    pytester.makepyfile(TRAINING_TEST)
    out = pytester.path / "out"
    boards = ["--board", "nrf52840-dk", "--board", "rpi-pico", "--bench-out", str(out)]
    first = pytester.runpytest_subprocess("-n", "2", *boards, "-p", "no:cacheprovider")
    first.assert_outcomes(passed=3, failed=1)
    text = first.stdout.str()
    journals = text[text.index("bench journals"):].split("=====")[0]
    assert "rpi-pico.full-fp32 (ok):" in journals and "last-fp32" not in journals  # its own run, nobody else's
    log_dir = Path(journals.split("log directory of this test: ")[1].split()[0])
    assert [p.name for p in log_dir.iterdir()] == ["rpi-pico.full-fp32.rx.bin"] and log_dir.parent.name == "tests"
    assert (log_dir / "rpi-pico.full-fp32.rx.bin").read_bytes()  # a link to the run's journal, which holds bytes
    (one,) = _sessions(out)
    runs = pd.read_parquet(one / "runs.parquet")
    assert len(runs) == 5 and runs["run_id"].is_unique, runs["run_id"].tolist()
    assert {p.name for p in one.glob("gw*")} == {"gw0", "gw1"} and (one / "index.html").is_file()
    steps = pd.read_parquet(one / "steps.parquet")
    assert steps.groupby("run_id").size().to_dict() == dict(zip(runs["run_id"], runs["steps"], strict=True))

    second = pytester.runpytest_subprocess(*boards, "-k", "trains_twice", "-p", "no:cacheprovider")
    second.assert_outcomes(passed=2)
    sessions = _sessions(out)
    assert len(sessions) == 2 and len(pd.read_parquet(sessions[0] / "runs.parquet")) == 5  # the first is intact
    assert (out / "latest").resolve() == sessions[1].resolve()
    assert len(pd.read_parquet(out / "latest" / "runs.parquet")) == 4


def test_bench_run_overrides_are_validated_like_a_profile(pytester):
    pytester.makepyfile("""
def test_typo(bench_board, bench_run):
    bench_run(bench_board, "last-fp32", stepz=10)

def test_bad_type(bench_board, bench_run):
    bench_run(bench_board, "last-fp32", steps="ten")
""")
    result = pytester.runpytest_subprocess("--board", "rpi-pico", "--bench-out", str(pytester.path / "out"))
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*bench_run: profile quick: overrides *: stepz: Extra inputs are not permitted*",
                                 "*bench_run: profile quick: overrides *: steps: Input should be a valid integer*"])


def test_cli_version_and_short_help():
    from click.testing import CliRunner

    from bench import __version__
    from bench.app.cli import main

    assert CliRunner().invoke(main, ["--version"]).output.strip() == f"bench, version {__version__}"
    assert "Hardware-in-the-loop bench" in CliRunner().invoke(main, ["-h"], prog_name="bench").output
