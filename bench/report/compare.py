"""Regression gate: compare the runs of two results directories per (board, technique).

A nightly job compares tonight's results with a baseline and must fail visibly when a figure got worse by more
than its threshold, when a run that was ok is no longer ok, or when a run disappeared. Improvements are reported
too, so a baseline can be moved on purpose. The comparison is written as ``compare.json`` next to the current
results; the report renders it only while it still matches the ``runs.parquet`` it was made from.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from bench.config.boards import ConfigError, read_toml, validate_file
from bench.config.profile import PROFILES_DIR
from bench.records.run import counts_view, read_plain
from bench.records.stats import difference
from bench.report.study import final_runs

COMPARE_FILE = "compare.json"
KEYS = ["board", "technique"]
NOT_OK = "not ok"


class Thresholds(BaseModel):
    """How much worse a figure may get before it is a regression (per cent, or accuracy points)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sram_pct: float = Field(default=2.0, ge=0)
    flash_pct: float = Field(default=2.0, ge=0)
    instructions_pct: float = Field(default=5.0, ge=0)
    energy_pct: float = Field(default=5.0, ge=0)
    accuracy_points: float = Field(default=1.0, ge=0)


@dataclass(frozen=True)
class Metric:
    """One compared figure: its runs.parquet column, the threshold that guards it and its direction."""

    name: str
    column: str
    label: str
    threshold: str
    higher_is_better: bool = False
    same_column: str = ""  # the figures are comparable only when this column matches (unit, energy source)

    def limit(self, th: Thresholds) -> float:
        return float(getattr(th, self.threshold))


METRICS = (
    Metric("sram", "peak_sram_bytes", "peak SRAM", "sram_pct"),
    Metric("flash", "flash_bytes", "flash", "flash_pct"),
    Metric("instructions", "instr_per_step", "instructions / step", "instructions_pct", same_column="count_unit"),
    Metric("energy", "energy_per_step_uj", "energy / step", "energy_pct", same_column="energy_how"),
    Metric("accuracy", "acc_after", "accuracy after", "accuracy_points", higher_is_better=True),
)


@dataclass
class Delta:
    """One metric of one pair: values, change and verdict (regression, improvement, within, n/a)."""

    metric: str
    label: str
    baseline: float | None
    current: float | None
    change: str
    limit: str
    verdict: str
    note: str = ""


@dataclass
class Pair:
    """One (board, technique) seen from both sides."""

    board: str
    technique: str
    verdict: str  # regression, improvement, unchanged, missing (now), new
    base_status: str
    cur_status: str
    note: str = ""
    deltas: list[Delta] = field(default_factory=list)


@dataclass
class Comparison:
    baseline: str
    current: str
    thresholds: dict[str, float]
    thresholds_source: str
    pairs: list[Pair]
    current_fingerprint: str = ""
    warnings: list[str] = field(default_factory=list)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def count(self, verdict: str) -> int:
        return sum(p.verdict == verdict for p in self.pairs)

    @property
    def regressed(self) -> bool:
        return any(p.verdict in ("regression", "missing") for p in self.pairs)

    def summary(self) -> dict[str, Any]:
        return {
            "verdict": "regression" if self.regressed else "ok",
            **{v: self.count(v) for v in ("regression", "missing", "improvement", "unchanged", "new")},
        }

    def to_json(self) -> str:
        return json.dumps({"version": 1, "summary": self.summary(), **asdict(self)}, indent=1, default=_json_num)


def _json_num(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else str(value)


# ----------------------------------------------------------------------------------------------------
# Thresholds


def load_thresholds(profile: str | None = None, file: Path | None = None,
                    stored: dict[str, Any] | None = None) -> tuple[Thresholds, str]:
    """Defaults, overridden by the profile's ``[thresholds]`` table (``stored``: the table as the run recorded it in
    meta.json, else the profile file found by name), overridden by a thresholds file."""
    th, sources = Thresholds(), ["defaults"]
    profile_path = _profile_path(profile)
    if stored:
        th = _override(th, Path(f"meta.json of profile {profile}"), stored)
        sources.append(f"profile {profile} (as run)")
    elif profile_path is not None and read_toml(profile_path).get("thresholds"):
        th = _override(th, profile_path, read_toml(profile_path)["thresholds"])
        sources.append(f"profile {profile_path.name}")
    if file is not None:
        data = read_toml(Path(file))
        th = _override(th, Path(file), data.get("thresholds", data))
        sources.append(f"file {Path(file).name}")
    return th, " + ".join(sources)


def _override(th: Thresholds, path: Path, table: Any) -> Thresholds:
    """Unknown keys and bad values are errors naming the file and the key, like every other bench file."""
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: key 'thresholds': expected a table")
    return validate_file(Thresholds, path, th.model_dump() | table)


def _profile_path(profile: str | None) -> Path | None:
    if not profile:
        return None
    path = Path(profile)
    if path.suffix == ".toml" and path.exists():
        return path
    named = PROFILES_DIR / f"{profile}.toml"
    return named if named.exists() else None


# ----------------------------------------------------------------------------------------------------
# Loading


def fingerprint(results_dir: Path) -> str:
    """Hash of runs.parquet, so a comparison is never shown next to results it was not made from."""
    path = Path(results_dir) / "runs.parquet"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else ""


def load_runs(results_dir: Path) -> pd.DataFrame:
    path = Path(results_dir) / "runs.parquet"
    if not path.exists():
        raise FileNotFoundError(f"no runs.parquet in {results_dir}")
    return read_plain(path)


def _clean(runs: pd.DataFrame) -> pd.DataFrame:
    """Plain columns; counts in one column whatever their unit (`counts_view`); ``energy_how``: the source and its
    meter, since energy from two different meters is no more comparable than modelled vs measured."""
    runs = counts_view(runs)
    for col in [*KEYS, "status", "count_unit", "energy_source", "energy_meter"]:
        runs[col] = runs[col].astype(object).fillna("").astype(str) if col in runs else ""
    runs["energy_how"] = [f"{s} ({m})" if m else s for s, m in zip(runs["energy_source"], runs["energy_meter"],
                                                                      strict=True)]
    for m in METRICS:
        runs[m.column] = (pd.to_numeric(runs[m.column], errors="coerce").astype("float64") if m.column in runs
                          else math.nan)
    return runs


def _by_key(runs: pd.DataFrame) -> dict[tuple[str, str], dict[str, Any]]:
    """One entry per (board, technique) of the final runs (lr-sweep runs are tuning): medians over its ok runs, and
    their accuracies for the CI rule; ok only if every run was ok."""
    out = {}
    for key, group in _clean(final_runs(runs)).groupby(KEYS, sort=True):
        ok = group[group["status"] == "ok"]
        bad = group.loc[group["status"] != "ok", "status"]
        row: dict[str, Any] = {m.column: float(ok[m.column].median()) for m in METRICS}
        row |= {c: _mode(ok[c]) for c in ("count_unit", "energy_how")}
        row["status"] = "ok" if bad.empty else str(bad.iloc[0])
        row["runs"] = len(group)
        row["accuracies"] = [float(v) for v in ok["acc_after"] if math.isfinite(v)]
        out[(str(key[0]), str(key[1]))] = row
    return out


def _mode(values: pd.Series) -> str:
    return str(values.mode().iloc[0]) if len(values) else ""


# ----------------------------------------------------------------------------------------------------
# Comparing


def compare_runs(baseline: pd.DataFrame, current: pd.DataFrame, th: Thresholds) -> list[Pair]:
    base, cur = _by_key(baseline), _by_key(current)
    return [_pair(key, base.get(key), cur.get(key), th) for key in sorted(base.keys() | cur.keys())]


def _pair(key: tuple[str, str], base: dict | None, cur: dict | None, th: Thresholds) -> Pair:
    if cur is None:
        assert base is not None  # a key comes from one side at least
        return Pair(*key, "missing", base["status"], "", "no run now (it was in the baseline)")
    if base is None:
        return Pair(*key, "new", "", cur["status"], "not in the baseline")
    pair = Pair(*key, "unchanged", base["status"], cur["status"])
    if base["status"] == "ok" and cur["status"] != "ok":
        pair.verdict, pair.note = "regression", f"was ok, now {cur['status']}"
    elif base["status"] != "ok" and cur["status"] == "ok":
        pair.verdict, pair.note = "improvement", f"was {base['status']}, now ok"
    elif base["status"] != "ok":
        pair.note = f"still {cur['status']}"
    if base["status"] == cur["status"] == "ok":
        pair.deltas = [_delta(m, base, cur, th) for m in METRICS]
        pair.verdict = _worst([d.verdict for d in pair.deltas])
    return pair


def _worst(verdicts: list[str]) -> str:
    if "regression" in verdicts:
        return "regression"
    return "improvement" if "improvement" in verdicts else "unchanged"


def _delta(m: Metric, base: dict, cur: dict, th: Thresholds) -> Delta:
    b, c, limit = base[m.column], cur[m.column], m.limit(th)
    unit = " pp" if m.higher_is_better else "%"
    delta = Delta(m.name, m.label, _finite(b), _finite(c), "", f"{limit:g}{unit}", "n/a")
    if m.same_column and base[m.same_column] != cur[m.same_column]:
        delta.note = f"not comparable: {base[m.same_column] or '?'} vs {cur[m.same_column] or '?'}"
    elif delta.baseline is None or delta.current is None:
        delta.note = "not measured on both sides"
    elif m.higher_is_better and min(len(base["accuracies"]), len(cur["accuracies"])) >= 2:
        _ci_verdict(delta, base["accuracies"], cur["accuracies"])
    else:
        change = _change(m, delta.baseline, delta.current)
        delta.change = f"{change:+.2f}{unit}"
        worse = -change if m.higher_is_better else change
        delta.verdict = "regression" if worse > limit else "improvement" if -worse > limit else "within"
    return delta


def _ci_verdict(delta: Delta, base: list[float], cur: list[float]) -> None:
    """With repeats on both sides, accuracy regresses (or improves) only when the 95% Welch interval of the change
    in means excludes 0, instead of a fixed number of points: one unlucky sample order is not a regression."""
    diff = difference(cur, base)
    delta.baseline, delta.current = _finite(sum(base) / len(base)), _finite(sum(cur) / len(cur))
    delta.change = f"{diff.delta * 100:+.2f} pp"
    delta.limit = "95% CI"
    delta.note = (f"mean of {len(cur)} vs {len(base)} runs, CI [{diff.lo * 100:+.2f}, {diff.hi * 100:+.2f}] pp, "
                  f"{'significant' if diff.significant else 'not significant'}")
    delta.verdict = "within" if not diff.significant else "regression" if diff.delta < 0 else "improvement"


def _change(m: Metric, b: float, c: float) -> float:
    """Accuracy in points; everything else in per cent of the baseline."""
    if m.higher_is_better:
        return (c - b) * 100
    if b == 0:
        return 0.0 if c == 0 else math.inf
    return (c - b) / abs(b) * 100


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def compare_dirs(baseline_dir: Path, current_dir: Path, thresholds_file: Path | None = None) -> Comparison:
    """Compare two results directories with the current profile's thresholds (and an optional file); a warning
    when the two sides ran different profiles (their figures may not be like for like)."""
    current = profile_of(current_dir)
    th, source = load_thresholds(current, thresholds_file, stored_thresholds(current_dir))
    pairs = compare_runs(load_runs(baseline_dir), load_runs(current_dir), th)
    base = profile_of(baseline_dir)
    warnings = [f"the baseline ran profile {base or '(unknown)'} and the current results profile "
                f"{current or '(unknown)'}: figures may differ for that reason alone"] if base != current else []
    return Comparison(str(baseline_dir), str(current_dir), th.model_dump(), source, pairs, fingerprint(current_dir),
                      warnings)


def _meta(results_dir: Path) -> dict[str, Any]:
    try:
        meta = json.loads((Path(results_dir) / "meta.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def profile_of(results_dir: Path) -> str | None:
    """The profile name meta.json records, whose ``[thresholds]`` apply."""
    profile = _meta(results_dir).get("profile")
    return profile if isinstance(profile, str) else None


def stored_thresholds(results_dir: Path) -> dict[str, Any] | None:
    """The profile's ``[thresholds]`` as the run recorded them (None for results made before they were recorded)."""
    table = _meta(results_dir).get("thresholds")
    return table if isinstance(table, dict) else None


def write_comparison(comp: Comparison, results_dir: Path) -> Path:
    path = Path(results_dir) / COMPARE_FILE
    path.write_text(comp.to_json() + "\n", encoding="utf-8")
    return path


def read_comparison(results_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """The stored comparison if it matches the current runs.parquet, else None and why."""
    path = Path(results_dir) / COMPARE_FILE
    if not path.exists():
        return None, ""
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as exc:
        return None, f"{COMPARE_FILE} is not valid JSON: {exc}"
    if not isinstance(data, dict) or not isinstance(data.get("pairs"), list):
        return None, f"{COMPARE_FILE} has no comparison in it"
    if data.get("current_fingerprint") != fingerprint(results_dir):
        return None, f"{COMPARE_FILE} was made from other results (runs.parquet changed since); not shown"
    return data, ""
