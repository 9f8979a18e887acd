"""The regression gate: per (board, technique) verdicts, thresholds, `bench compare`, and the pytest option."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from test_report import BOARDS, _run_row

from bench.app.cli import main
from bench.config.boards import ConfigError
from bench.report.compare import (
    COMPARE_FILE,
    Thresholds,
    compare_runs,
    fingerprint,
    load_thresholds,
    read_comparison,
)
from bench.report.html import _comparison

pytest_plugins = ["pytester"]
BOARD, TECH = "rpi-pico", "full-fp32"


def _runs(**changes: dict[str, object]) -> pd.DataFrame:
    """Three ok runs; ``changes`` maps "board/technique" to columns to override."""
    rows = [_run_row(i, b, TECH, BOARDS[b]) for i, b in enumerate(BOARDS)]
    for row in rows:
        row.update(changes.get(f"{row['board']}/{row['technique']}", {}))
    return pd.DataFrame(rows)


def _pair(base: pd.DataFrame, cur: pd.DataFrame, th: Thresholds | None = None):
    pairs = {(p.board, p.technique): p for p in compare_runs(base, cur, th or Thresholds())}
    return pairs[(BOARD, TECH)], pairs


def _deltas(pair) -> dict[str, str]:
    return {d.metric: d.verdict for d in pair.deltas}


def test_identical_results_are_unchanged() -> None:
    pair, pairs = _pair(_runs(), _runs())
    assert {p.verdict for p in pairs.values()} == {"unchanged"}
    assert set(_deltas(pair).values()) == {"within"}


@pytest.mark.parametrize(
    ("column", "factor", "metric"),
    [("peak_sram_bytes", 1.021, "sram"), ("flash_bytes", 1.03, "flash"), ("instr_per_step", 1.051, "instructions"),
     ("energy_per_step_uj", 1.06, "energy")],
)  # fmt: skip
def test_each_cost_regresses_past_its_threshold(column: str, factor: float, metric: str) -> None:
    base = _runs()
    value = float(base.loc[base["board"] == BOARD, column].iloc[0])
    pair, _ = _pair(base, _runs(**{f"{BOARD}/{TECH}": {column: value * factor}}))
    assert pair.verdict == "regression" and _deltas(pair)[metric] == "regression"
    within, _ = _pair(base, _runs(**{f"{BOARD}/{TECH}": {column: value * 1.015}}))
    assert _deltas(within)[metric] == "within"


def test_accuracy_drop_of_more_than_a_point_regresses_and_a_gain_is_an_improvement() -> None:
    pair, _ = _pair(_runs(), _runs(**{f"{BOARD}/{TECH}": {"acc_after": 0.835}}))
    assert _deltas(pair)["accuracy"] == "regression" and pair.deltas[-1].change == "-1.50 pp"
    better, _ = _pair(_runs(), _runs(**{f"{BOARD}/{TECH}": {"acc_after": 0.9, "peak_sram_bytes": 100_000}}))
    assert better.verdict == "improvement"
    assert _deltas(better)["accuracy"] == "improvement" and _deltas(better)["sram"] == "improvement"


def test_a_run_that_was_ok_and_is_not_now_is_a_regression() -> None:
    pair, _ = _pair(_runs(), _runs(**{f"{BOARD}/{TECH}": {"status": "error"}}))
    assert pair.verdict == "regression" and pair.note == "was ok, now error"
    fixed, _ = _pair(_runs(**{f"{BOARD}/{TECH}": {"status": "does-not-fit"}}), _runs())
    assert fixed.verdict == "improvement" and "was does-not-fit" in fixed.note


def test_missing_runs_are_reported_on_either_side() -> None:
    base, cur = _runs(), _runs()
    pairs = {(p.board, p.technique): p for p in compare_runs(base, cur[cur["board"] != BOARD], Thresholds())}
    assert pairs[(BOARD, TECH)].verdict == "missing"
    extra = pd.concat([cur, cur.iloc[[0]].assign(technique="bias-fp32")])
    pairs = {(p.board, p.technique): p for p in compare_runs(base, extra, Thresholds())}
    assert pairs[("nucleo-f746zg", "bias-fp32")].verdict == "new"


def test_energy_from_different_sources_is_not_compared() -> None:
    pair, _ = _pair(_runs(), _runs(**{f"{BOARD}/{TECH}": {"energy_source": "measured", "energy_meter": "ina228",
                                                          "energy_per_step_uj": 1e6}}))  # fmt: skip
    energy = next(d for d in pair.deltas if d.metric == "energy")
    assert energy.verdict == "n/a" and "not comparable: modelled vs measured (ina228)" in energy.note
    assert pair.verdict == "unchanged"
    measured = {"energy_source": "measured", "energy_meter": "ina228"}
    pair, _ = _pair(_runs(**{f"{BOARD}/{TECH}": measured}),
                    _runs(**{f"{BOARD}/{TECH}": measured | {"energy_meter": "ppk2"}}))
    energy = next(d for d in pair.deltas if d.metric == "energy")  # two meters: not like with like either
    assert energy.verdict == "n/a" and "measured (ina228) vs measured (ppk2)" in energy.note


def test_thresholds_from_profile_then_file(tmp_path: Path) -> None:
    profile = tmp_path / "nightly.toml"
    profile.write_text('techniques = ["full-fp32"]\n[thresholds]\nsram_pct = 0.5\nenergy_pct = 10\n')
    file = tmp_path / "th.toml"
    file.write_text("[thresholds]\nenergy_pct = 20\n")
    th, source = load_thresholds(str(profile), file)
    assert (th.sram_pct, th.energy_pct, th.flash_pct) == (0.5, 20.0, 2.0)
    assert source == "defaults + profile nightly.toml + file th.toml"
    file.write_text("sram_percent = 1\n")
    with pytest.raises(ConfigError, match=r"th\.toml: key 'sram_percent': unknown key"):
        load_thresholds(None, file)


def _results(root: Path, runs: pd.DataFrame) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    runs.to_parquet(root / "runs.parquet")
    (root / "meta.json").write_text(json.dumps({"profile": "quick"}))
    return root


def test_cli_exits_1_on_regression_and_writes_the_comparison(tmp_path: Path) -> None:
    base = _results(tmp_path / "base", _runs())
    cur = _results(tmp_path / "cur", _runs(**{f"{BOARD}/{TECH}": {"flash_bytes": 200_000}}))
    result = CliRunner().invoke(main, ["compare", str(base), str(cur), "--no-report"], terminal_width=200)
    assert result.exit_code == 1, result.output
    assert "regression" in result.output and "+33.33%" in result.output
    data = json.loads((cur / COMPARE_FILE).read_text())
    assert data["summary"]["verdict"] == "regression" and data["summary"]["regression"] == 1
    loose = tmp_path / "loose.toml"
    loose.write_text("[thresholds]\nflash_pct = 50\n")
    result = CliRunner().invoke(main, ["compare", str(base), str(cur), "--thresholds", str(loose), "--no-report"])
    assert result.exit_code == 0, result.output


def test_json_output_warns_on_different_profiles_and_keeps_the_thresholds_the_run_recorded(tmp_path: Path) -> None:
    """A profile given as a path is not in profiles/ when `bench compare` runs: its [thresholds] come from meta.json."""
    base = _results(tmp_path / "base", _runs())
    cur = _results(tmp_path / "cur", _runs(**{f"{BOARD}/{TECH}": {"flash_bytes": 200_000}}))
    (cur / "meta.json").write_text(json.dumps({"profile": "my-night", "thresholds": {"flash_pct": 50}}))
    result = CliRunner().invoke(main, ["compare", str(base), str(cur), "--no-report", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["thresholds"]["flash_pct"] == 50 and data["thresholds_source"] == "defaults + profile my-night (as run)"
    assert data["summary"]["verdict"] == "ok" and data["summary"]["unchanged"] == 3
    assert data["warnings"] == ["the baseline ran profile quick and the current results profile my-night: figures "
                                "may differ for that reason alone"]
    assert "warning: the baseline ran profile quick" in result.stderr


def test_cli_re_renders_the_report_with_the_comparison(tmp_path: Path) -> None:
    base = _results(tmp_path / "base", _runs())
    cur = _results(tmp_path / "cur", _runs(**{f"{BOARD}/{TECH}": {"acc_after": 0.9}}))
    result = CliRunner().invoke(main, ["compare", str(base), str(cur)])
    assert result.exit_code == 0, result.output
    html = (cur / "index.html").read_text(encoding="utf-8")
    section = html.split('<section id="comparison">')[1].split("</section>")[0]
    assert 'href="#comparison"' in html and "improvement" in section
    assert '<td class="better">85.0 % → 90.0 % (+5.00 pp)</td>' in section


def test_a_comparison_of_other_results_is_not_shown(tmp_path: Path) -> None:
    cur = _results(tmp_path / "cur", _runs())
    (cur / COMPARE_FILE).write_text(json.dumps({"pairs": [], "current_fingerprint": fingerprint(cur)}))
    assert read_comparison(cur)[0] is not None
    _runs(**{f"{BOARD}/{TECH}": {"flash_bytes": 1}}).to_parquet(cur / "runs.parquet")
    data, note = read_comparison(cur)
    assert data is None and "made from other results" in note


def test_a_malformed_comparison_is_a_note_not_a_crash() -> None:
    assert "could not be read" in _comparison({"pairs": [{"board": "x"}]})["problem"]


GATE_TEST = """
from bench.config.boards import load_catalogue
from bench.app.pytest_plugin import RUNS_KEY
from bench.records.run import RunRecord


def test_trains(request):
    board = load_catalogue()["rpi-pico"]
    record = RunRecord("r1", board, "emulated", "full-fp32", "digits-cnn", flash_bytes={flash})
    request.config.stash[RUNS_KEY].append(record)
"""


def _gate(pytester: pytest.Pytester, flash: int) -> tuple[pytest.RunResult, ET.Element]:
    base = _results(pytester.path / "base", _runs())
    pytester.makepyfile(GATE_TEST.format(flash=flash))
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest("--bench-baseline", str(base), "--bench-out",
                                str(pytester.path / "out"), f"--junitxml={junit}")  # fmt: skip
    return result, ET.parse(junit).getroot()


def _properties(node: ET.Element, path: str) -> dict[str, str]:
    return {p.get("name"): p.get("value") for p in node.iterfind(path)}


def test_plugin_gate_fails_the_session_on_regression(pytester: pytest.Pytester) -> None:
    result, junit = _gate(pytester, 200_000)
    result.assert_outcomes(passed=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*bench: comparison with the baseline*", "*REGRESSION*"])
    session = _properties(junit, "./testsuite/properties/property")
    assert session["bench.compare.verdict"] == "regression"
    assert session["bench.compare.missing"] == "2"  # the other boards of the baseline did not run
    test = _properties(junit, ".//testcase/properties/property")
    assert test["bench.rpi-pico.full-fp32.flash_bytes"] == "200000"
    assert test["bench.rpi-pico.full-fp32.verdict"].startswith("regression: flash +33.33%")
    assert (pytester.path / "out" / "latest" / COMPARE_FILE).exists()


def test_plugin_gate_passes_without_regression(pytester: pytest.Pytester) -> None:
    base = _runs()
    result, junit = _gate(pytester, int(base.loc[base["board"] == BOARD, "flash_bytes"].iloc[0]))
    test = _properties(junit, ".//testcase/properties/property")
    assert test["bench.rpi-pico.full-fp32.verdict"] == "unchanged"
    assert result.ret == 1  # still: two baseline runs are missing from this session
    assert _properties(junit, "./testsuite/properties/property")["bench.compare.regression"] == "0"
