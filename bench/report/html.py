"""Render a results directory as one self-contained HTML page.

The page travels as a CI artefact or an attachment and must open from disk with no network and no JS, so
figures are embedded as base64 PNG and the CSS is inline. Every string from a device or a results file is
untrusted: Jinja autoescapes it in the HTML, and `_label` stops matplotlib from reading `$...$` in it as
mathtext. Figures are built with the object-oriented API on an Agg canvas and never enter pyplot's registry,
so none is left open however a chart fails.

Large result sets stay fast and readable: figures draw one series per (board, technique) — the median of its
repeated runs — and cap their panels and bars; tables behind figures cap their rows and link the CSV that has
them all.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, StrMethodFormatter

import bench
from bench.records import recover
from bench.records.run import counts_view, read_plain
from bench.report import study
from bench.report.compare import METRICS, read_comparison

# fmt: off
RUN_TEXT_COLUMNS = (
    "run_id", "board", "target_kind", "technique", "scheme", "numerics", "model", "status", "error", "count_unit",
    "energy_source", "energy_meter", "journal", "build_id", "plan_hash", "board_serial",
)
RUN_NUMBER_COLUMNS = (
    "steps", "final_loss", "acc_before", "acc_after", "loss_before", "loss_after", "peak_sram_bytes",
    "planned_sram_bytes", "board_sram_bytes", "flash_bytes", "board_flash_bytes", "static_bytes",
    "stack_peak_bytes", "arena_peak_bytes", "planned_weights_bytes", "planned_activations_bytes",
    "planned_gradients_bytes", "planned_optimizer_bytes",
    "instr_per_step", "instr_fwd_per_step", "instr_bwd_per_step", "instr_upd_per_step", "energy_per_step_uj",
    "lost_frames", "fidelity_max_rel_err", "wall_s",
)
LAYER_COLUMNS = (
    "run_id", "layer", "op", "instr_fwd_per_step", "instr_bwd_per_step", "instr_upd_per_step",
    "planned_weights_ram_bytes", "planned_kept_act_bytes",
    "planned_grad_bytes", "planned_scratch_bytes",
)
# fmt: on
STEP_COLUMNS = ("run_id", "step", "loss", "correct", "instr_fwd", "instr_bwd", "instr_upd", "sram_bytes")
GRAD_COLUMNS = ("run_id", "step", "layer", "param", "l2", "max_abs")
KEYS = ["board", "technique"]
STATUS_CLASSES = {"ok": "ok", "does-not-fit": "nofit", "error": "error", "stopped": "stopped", "mixed": "other",
                  "hang": "error", "disconnected": "error", "fault": "error", "fidelity-fail": "error",
                  "rack-fault": "error", "unfinished": "stopped", "diverged": "error"}
VERDICT_CLASSES = {"regression": "error", "missing": "error", "improvement": "ok", "new": "other"}
PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974",
           "#64b5cd", "#1b3a6b", "#8c2d04", "#1a6b33", "#e7c020", "#5e2a84", "#17becf")  # 16: a study's techniques
BOARD_PALETTE = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
PART_COLORS = {"forward": "#4c72b0", "backward": "#dd8452", "update": "#55a868"}
MEMORY_PARTS = {  # column → (legend label, colour); the arena is split by the plan's composition at its peak
    "static_bytes": ("static (.data/.bss)", "#8c8c8c"),
    "stack_peak_bytes": ("stack", "#b07aa1"),
    "planned_weights_bytes": ("weights", "#4c72b0"),
    "planned_activations_bytes": ("activations kept for backward", "#dd8452"),
    "planned_gradients_bytes": ("gradients", "#55a868"),
    "planned_optimizer_bytes": ("optimizer state", "#937860"),
    "arena_other": ("arena, rest (measured − planned parts)", "#ccb974"),
}
SRAM_RED = "#c44e52"
DATA_FILES = (
    "runs.parquet", "runs.csv", "steps.parquet", "steps.csv", "grads.parquet", "grads.csv", "layers.parquet",
    "layers.csv", "meta.json", "compare.json",
)  # fmt: skip
DASH = "—"
MAX_LABEL = 40
MAX_PANELS = 12
MAX_SERIES = 16  # lines per panel (the techniques profile has 12); more are named in the caption
MAX_BARS = 40
MAX_ROWS = 200
MAX_POINTS = 600
MAX_BINS = 80
FIDELITY_GUIDE = 1e-4
LOSS_CLIP_PCT = 99
LOSS_CLIP_MARGIN = 1.15


# ----------------------------------------------------------------------------------------------------
# Loading


@dataclass
class Results:
    """Everything the report reads, already cleaned so rendering never meets a surprise type."""

    runs: pd.DataFrame
    steps: pd.DataFrame
    grads: pd.DataFrame | None
    meta: dict[str, Any]
    meta_problem: str = ""
    layers: pd.DataFrame | None = None
    groups: pd.DataFrame = field(default_factory=pd.DataFrame)
    comparison: dict[str, Any] | None = None
    comparison_note: str = ""
    files: list[str] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)  # runs that started but have no record (see bench recover)
    study_runs: pd.DataFrame | None = None  # every run incl. lr-sweep runs, when the results are a study

    def __post_init__(self) -> None:
        if self.groups.empty:
            self.groups = _groups(self.runs)


def load_results(results_dir: Path) -> Results:
    """Read a results directory; everything but runs.parquet may be missing."""
    results_dir = Path(results_dir)
    runs_path = results_dir / "runs.parquet"
    if not runs_path.exists():
        raise FileNotFoundError(f"no runs.parquet in {results_dir}")
    raw = counts_view(read_plain(runs_path))
    if "energy_meter" in raw:  # shown as one label: "measured (ppk2)", "modelled"
        raw["energy_source"] = [f"{s} ({m})" if isinstance(m, str) and m else s
                                for s, m in zip(raw["energy_source"], raw["energy_meter"], strict=True)]
    study_runs = raw if study.is_study(raw) else None
    runs = _clean_runs(study.final_runs(raw))  # lr-sweep runs are tuning, shown in the study section only
    steps = _clean_numbers(_read_optional(results_dir / "steps.parquet", STEP_COLUMNS), STEP_COLUMNS, ("run_id",))
    grads = _read_present(results_dir / "grads.parquet", GRAD_COLUMNS, ("run_id", "layer", "param"))
    layers = _read_present(results_dir / "layers.parquet", LAYER_COLUMNS, ("run_id", "layer", "op"))
    meta, problem = _read_meta(results_dir / "meta.json")
    comparison, note = read_comparison(results_dir)
    files = [f for f in DATA_FILES if (results_dir / f).exists()]
    try:
        unrecorded = [m.run_id for m in recover.unrecorded(results_dir)]
    except recover.RecoverError as exc:
        unrecorded, problem = [], "; ".join(filter(None, [problem, str(exc)]))
    return Results(runs, steps, grads, meta, problem, layers, comparison=comparison, comparison_note=note,
                   files=files, unrecorded=unrecorded, study_runs=study_runs)  # fmt: skip


def _read_optional(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """Only the columns the report uses: grads.parquet also holds whole gradient tensors."""
    if not path.exists():
        return pd.DataFrame(columns=list(columns))
    present = set(pq.read_schema(path).names)
    wanted = [c for c in columns if c in present]
    wanted += [c for c in present if c.startswith("cycles") and "instr" + c[len("cycles"):] in wanted]
    return _with_columns(counts_view(read_plain(path, columns=wanted)), columns)


def _read_present(path: Path, columns: tuple[str, ...], text: tuple[str, ...]) -> pd.DataFrame | None:
    frame = _read_optional(path, columns)
    return None if frame.empty else _clean_numbers(frame, columns, text)


def _with_columns(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """Add absent columns as NaN so an older or partial results file still renders."""
    missing = [c for c in columns if c not in frame.columns]
    return frame.assign(**{c: np.nan for c in missing}) if missing else frame.copy()


def _read_meta(path: Path) -> tuple[dict[str, Any], str]:
    if not path.exists():
        return {}, "meta.json not found"
    try:
        meta = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as exc:
        return {}, f"meta.json is not valid JSON: {exc}"
    return (meta, "") if isinstance(meta, dict) else ({}, "meta.json is not a JSON object")


def _clean_runs(raw: pd.DataFrame) -> pd.DataFrame:
    runs = _with_columns(raw, RUN_TEXT_COLUMNS + RUN_NUMBER_COLUMNS)
    for col in RUN_TEXT_COLUMNS:
        runs[col] = _text_column(runs[col])
    for col in RUN_NUMBER_COLUMNS:
        runs[col] = pd.to_numeric(runs[col], errors="coerce").astype(float)
    runs = runs.sort_values([*KEYS, "run_id"], kind="stable").reset_index(drop=True)
    runs["series"] = _series_names(runs)
    runs["label"] = runs["board"] + " · " + runs["series"]
    return runs


def _series_names(runs: pd.DataFrame) -> list[str]:
    """The technique, with the run id added only where a board ran that technique more than once."""
    repeated = runs.duplicated(KEYS, keep=False)
    rows = zip(runs["technique"], runs["run_id"], repeated, strict=True)
    return [f"{t} · {r}" if rep else t for t, r, rep in rows]


def _clean_numbers(raw: pd.DataFrame, columns: tuple[str, ...], text: tuple[str, ...]) -> pd.DataFrame:
    """The ``text`` columns become categories of strings, the rest floats; rows sorted by run (and step)."""
    frame = raw.copy()
    for col in columns:
        is_text = col in text
        frame[col] = _text_column(frame[col], True) if is_text else pd.to_numeric(frame[col], errors="coerce")
    order = ["run_id", "step"] if "step" in frame.columns else ["run_id"]
    return frame.sort_values(order, kind="stable").reset_index(drop=True)


def _text_column(values: pd.Series, categorical: bool = False) -> pd.Series:
    """`_text` on each distinct value only: grads tables hold millions of rows with a few distinct ids, and as
    categories they group and join by integer codes instead of hashing every string again."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    labels = np.array([_text(u) for u in uniques] + [""], dtype=object)
    if not categorical:
        return pd.Series(labels[codes], index=values.index, dtype=object)
    categories, inverse = np.unique(labels.astype(str), return_inverse=True)
    return pd.Series(pd.Categorical.from_codes(inverse[codes], categories=categories), index=values.index)


def _tag(frame: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Rows of a per-step table with their run's board and technique; rows of unknown runs dropped."""
    ids = frame["run_id"].astype("category")
    lookup = runs.drop_duplicates("run_id").set_index("run_id")[KEYS].reindex(ids.cat.categories.astype(str))
    codes = ids.cat.codes.to_numpy()
    keep = (codes >= 0) & lookup["board"].notna().to_numpy()[np.maximum(codes, 0)]
    out = frame.loc[keep].copy()
    for key in KEYS:
        key_codes, key_names = pd.factorize(lookup[key])
        out[key] = pd.Categorical.from_codes(key_codes[codes[keep]], categories=key_names)
    return out


def _groups(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (board, technique): medians over its ok runs (over all runs when none was ok)."""
    numbers = list(RUN_NUMBER_COLUMNS)
    med = runs.groupby(KEYS, sort=True)[numbers].median()
    ok = runs[runs["status"] == "ok"].groupby(KEYS, sort=True)[numbers].median()
    med.loc[ok.index] = ok
    info = runs.groupby(KEYS, sort=True).agg(
        n_runs=("run_id", "size"),
        status=("status", lambda s: s.iloc[0] if s.nunique() == 1 else "mixed"),
        statuses=("status", lambda s: ", ".join(f"{n} {k or '(blank)'}" for k, n in s.value_counts().items())),
        error=("error", lambda s: next((e for e in s if e), "")),
        count_unit=("count_unit", _first_text),
        energy_source=("energy_source", _first_text),
        target_kind=("target_kind", _first_text),
    )
    groups = info.join(med).reset_index()
    groups["label"] = groups["board"] + " · " + groups["technique"]
    return groups


def _first_text(values: pd.Series) -> str:
    present = [v for v in values if v]
    return present[0] if present else ""


# ----------------------------------------------------------------------------------------------------
# Formatting (all cells are plain strings; the template escapes them)


def _text(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _missing(x: Any) -> bool:
    try:
        return x is None or not math.isfinite(float(x))
    except (TypeError, ValueError):
        return True


def _num(x: Any, fmt: str = "{:.3g}") -> str:
    return DASH if _missing(x) else fmt.format(float(x))


def _pct(x: Any) -> str:
    return _num(x * 100 if not _missing(x) else x, "{:.1f} %")


def _kib(x: Any, fmt: str = "{:,.1f}") -> str:
    """KiB without the unit: the column header carries it."""
    return _num(x / 1024 if not _missing(x) else x, fmt)


def _exact_bytes(x: Any) -> str:
    return _num(x, "{:,.0f} B")


def _count(x: Any) -> str:
    """Engineering notation, because instruction counts span k to G across models and boards."""
    if _missing(x):
        return DASH
    x = float(x)
    for scale, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.0f}"


def _label(text: Any) -> str:
    """A device string made safe for matplotlib: short, and no mathtext."""
    s = _text(text)
    s = s if len(s) <= MAX_LABEL else s[: MAX_LABEL - 1] + "…"
    return s.replace("$", r"\$")


def _source_label(source: str) -> str:
    return source or "source unknown"


def _nofit_message(run: dict[str, Any]) -> str:
    need, have = run["planned_sram_bytes"], run["board_sram_bytes"]
    over = "" if _missing(need) or _missing(have) else f", {need - have:,.0f} B over"
    return f"does not fit: needs {_exact_bytes(need)} SRAM (planned peak), board has {_exact_bytes(have)}{over}"


def _problem_message(run: dict[str, Any]) -> str:
    if run["status"] == "does-not-fit":
        return _nofit_message(run)
    return run["error"] or "(no error text)"


def _status_class(status: str) -> str:
    """A CSS class from a fixed set: the status string itself is device-controlled."""
    return STATUS_CLASSES.get(status, "other")


# ----------------------------------------------------------------------------------------------------
# Page model


@dataclass
class Table:
    """A figure's numbers, shown next to it so nothing is only readable off a plot."""

    columns: list[str]
    rows: list[list[str]]
    title: str = ""
    note: str = ""


@dataclass
class Plot:
    png: str  # base64 PNG
    caption: str
    alt: str


@dataclass
class Section:
    """One report section: figures (maybe none, when there is no data) and the tables behind them."""

    anchor: str
    title: str
    intro: str
    tables: list[Table]
    plots: list[Plot] = field(default_factory=list)
    empty_note: str = "No data to plot."


@dataclass
class Page:
    title: str
    summary: dict[str, Any]
    overview: dict[str, Any]
    results: dict[str, Any]
    sections: list[Section]
    comparison: dict[str, Any] | None
    provenance: dict[str, Any]
    toc: list[tuple[str, str]] = field(default_factory=list)
    filters: dict[str, list[str]] = field(default_factory=dict)  # choices of the filter bar (report.js)


def _capped(columns: list[str], rows: list[list[str]], csv: str = "", title: str = "") -> Table:
    """At most MAX_ROWS rows in the page; the note says where the rest are."""
    note = ""
    if len(rows) > MAX_ROWS:
        where = f"; all of them are in {csv}" if csv else ""
        note = f"First {MAX_ROWS:,} of {len(rows):,} rows{where}."
    return Table(columns, rows[:MAX_ROWS], title, note)


def _cap_note(shown: int, total: int, what: str) -> str:
    return f" Showing the first {shown} of {total} {what}; the table has them all." if total > shown else ""


def _repeat_note(groups: pd.DataFrame) -> str:
    repeated = bool((groups["n_runs"] > 1).any())
    return " Where a board ran a technique more than once, the median of its runs." if repeated else ""


# ----------------------------------------------------------------------------------------------------
# Matplotlib helpers


@dataclass(frozen=True)
class Margins:
    """Fixed margins in inches: a layout engine would draw every figure twice, for labels this short."""

    left: float = 0.75
    right: float = 0.25
    top: float = 0.35
    bottom: float = 0.55
    legend: float = 0.0  # extra room below for a figure legend
    gap: float = 0.75  # between panel rows: x label and the next title


def _new_figure(
    n_panels: int, ncols: int = 3, panel_h: float = 3.0, margins: Margins = Margins()
) -> tuple[Figure, list[Axes]]:
    ncols = max(1, min(ncols, n_panels))
    nrows = max(1, math.ceil(n_panels / ncols))
    m = margins
    height = m.top + m.bottom + m.legend + panel_h * nrows + m.gap * (nrows - 1)
    fig = Figure(figsize=(11.0, height))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=m.left / 11, right=1 - m.right / 11, top=1 - m.top / height,
                        bottom=(m.bottom + m.legend) / height, hspace=m.gap / panel_h, wspace=0.3)  # fmt: skip
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


LEGEND_BELOW = Margins(legend=0.35)


def figure_png(fig: Figure) -> str:
    """The figure as a 256-colour PNG: a plot has few colours, and a palette image is about a third of the RGB one,
    which keeps the report of a big study small enough to mail."""
    from PIL import Image

    canvas = fig.canvas
    assert isinstance(canvas, FigureCanvasAgg)
    fig.set_dpi(100)
    canvas.draw()
    image = Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")
    fig.clear()
    buf = io.BytesIO()
    image.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(buf, format="PNG", compress_level=6)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plot(fig: Figure, caption: str, alt: str) -> Plot:
    return Plot(figure_png(fig), caption, alt)


def _colors(names: Any, palette: tuple[str, ...]) -> dict[str, str]:
    """One colour per name, the same in every figure."""
    return {name: palette[i % len(palette)] for i, name in enumerate(sorted(set(names)))}


def _handles(colors: dict[str, str], used: set[str]) -> list[Any]:
    return [Patch(color=c, label=_label(t)) for t, c in colors.items() if t in used][:MAX_SERIES]


def _legend_below(fig: Figure, handles: list[Any]) -> None:
    """Into the room LEGEND_BELOW keeps under the panels."""
    if handles:
        fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncols=min(8, len(handles)),
                   fontsize=8, frameon=False)  # fmt: skip


def _grouped_x(rows: pd.DataFrame, span: float = 0.8) -> tuple[pd.DataFrame, list[tuple[float, str]]]:
    """Bar position and width of each row, clustered by board, plus each board's centre for its tick."""
    out, centers = [], []
    for i, (board, group) in enumerate(rows.groupby("board", sort=True)):
        width = span / len(group)
        offsets = (np.arange(len(group)) - (len(group) - 1) / 2) * width
        out += [(idx, i + off, width) for idx, off in zip(group.index, offsets, strict=True)]
        centers.append((float(i), board))
    pos = pd.DataFrame(out, columns=["idx", "x", "w"]).set_index("idx")
    return pos, centers


def _board_ticks(ax: Axes, centers: list[tuple[float, str]]) -> None:
    ax.set_xticks([c for c, _ in centers], [_label(b) for _, b in centers])
    if len(centers) > 5:
        ax.tick_params(axis="x", labelrotation=30)
    ax.set_xlim(-0.6, len(centers) - 0.4)


def _plain_log_ticks(axis: Any, values: Any) -> None:
    """Plain-number ticks (10^x labels go through mathtext, which doubles the render time); 1-2-5 steps when
    the data spans under two decades, else a decade would hold no label at all."""
    positive = np.asarray(values, dtype=float)
    positive = positive[np.isfinite(positive) & (positive > 0)]
    narrow = positive.size == 0 or math.log10(positive.max() / positive.min()) < 2
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if narrow else (1.0,)))
    axis.set_major_formatter(StrMethodFormatter("{x:g}"))
    axis.set_minor_formatter(NullFormatter())


def _log_if_wide(ax: Axes, which: str, values: Any, ratio: float = 30.0) -> None:
    """Log scale when the values span more than ``ratio``: an M0+ needs 30× the energy of an M4F."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size < 2 or v.max() / v.min() <= ratio:
        return
    if which == "x":
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis, v)
    else:
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis, v)


def _thin(frame: pd.DataFrame) -> pd.DataFrame:
    """At most MAX_POINTS points per drawn line: more pixels than that add time, not information."""
    step = max(1, math.ceil(len(frame) / MAX_POINTS))
    return frame.iloc[::step]


# ----------------------------------------------------------------------------------------------------
# Summary, overview, results table, provenance


def _summary(res: Results) -> dict[str, Any]:
    runs, meta = res.runs, res.meta
    problems = runs[runs["status"] != "ok"].to_dict("records")
    lossy = runs[runs["lost_frames"] > 0]
    return {
        "profile": _text(meta.get("profile")) or DASH,
        "rack": _text(meta.get("rack")) or DASH,
        "when": _when(meta),
        "n_runs": len(runs),
        "status_counts": ", ".join(f"{n} {s or '(blank)'}" for s, n in runs["status"].value_counts().items()),
        "boards": _boards_line(runs),
        "techniques": ", ".join(sorted(runs["technique"].unique())),
        "problems": [_problem(r) for r in problems[:30]],
        "more_problems": max(0, len(problems) - 30),
        "lost": [f"{lbl}: {n:.0f} lost frames" for lbl, n in zip(lossy["label"], lossy["lost_frames"], strict=True)],
        "notes": _notes(meta),
        "meta_problem": res.meta_problem,
        "comparison_note": res.comparison_note,
        "unrecorded": res.unrecorded,
    }


def _problem(run: dict[str, Any]) -> dict[str, str]:
    return {
        "label": run["label"],
        "status": run["status"],
        "status_class": _status_class(run["status"]),
        "message": _problem_message(run),
    }


def _when(meta: dict[str, Any]) -> str:
    """``2026-12-02 00:37 UTC → 00:38 (1.2 min)``: minutes are what a reader wants, not microseconds."""
    started, finished = _text(meta.get("started")), _text(meta.get("finished"))
    if not started:
        return DASH
    text = f"{friendly_time(started)} → {friendly_time(finished, started)}" if finished else friendly_time(started)
    try:
        seconds = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    except (ValueError, TypeError):
        return text
    return f"{text} ({seconds / 60:.1f} min)"


def friendly_time(iso: str, same_day_as: str = "") -> str:
    """An ISO timestamp to the minute in UTC (``HH:MM`` alone when on the day of ``same_day_as``); other text as is."""
    try:
        when = datetime.fromisoformat(iso)
    except (ValueError, TypeError):
        return iso
    when = when.astimezone(UTC) if when.tzinfo else when
    zone = " UTC" if when.tzinfo else ""
    try:
        if same_day_as and datetime.fromisoformat(same_day_as).astimezone(UTC).date() == when.date():
            return when.strftime("%H:%M") + zone
    except (ValueError, TypeError):
        pass
    return when.strftime("%Y-%m-%d %H:%M") + zone


def _boards_line(runs: pd.DataFrame) -> str:
    kinds = runs.groupby("board", sort=True)["target_kind"].agg(lambda k: "/".join(sorted(set(k) - {""})))
    return ", ".join(f"{b} ({k})" if k else b for b, k in kinds.items())


def _notes(meta: dict[str, Any]) -> list[str]:
    notes = meta.get("notes") or []
    return [_text(n) for n in notes] if isinstance(notes, list) else [_text(notes)]


def _significance(res: Results) -> dict[tuple[str, str], str]:
    """(board, technique) -> how its mean accuracy stands against the board's best, when there are repeats."""
    if res.study_runs is None:
        return {}
    out = {}
    for r in study.technique_rows(res.study_runs):
        if r.acc_after.n < 2:
            continue
        if r.vs_best is None:
            out[(r.board, r.technique)] = f"best of n={r.acc_after.n} (± {r.acc_after.half_width * 100:.1f} pt)"
        elif not r.vs_best.significant:
            out[(r.board, r.technique)] = f"n.s. vs best ({r.vs_best.delta * 100:+.1f} pt)"
        else:
            out[(r.board, r.technique)] = f"below best ({r.vs_best.delta * 100:+.1f} pt, significant)"
    return out


def _overview(groups: pd.DataFrame, significance: dict[tuple[str, str], str] | None = None) -> dict[str, Any]:
    """Boards × techniques: status per cell, and for a run that did not fit, required vs available SRAM; with
    repeats, whether the technique's accuracy differs significantly from the board's best."""
    techniques = sorted(groups["technique"].unique())
    cells = {(g["board"], g["technique"]): _cell(g) for g in groups.to_dict("records")}
    for key, said in (significance or {}).items():
        if key in cells:
            cells[key]["lines"].append(said)
    rows = [
        {"board": b, "cells": [cells.get((b, t)) for t in techniques]} for b in sorted(groups["board"].unique())
    ]
    return {"techniques": techniques, "rows": rows}


def _cell(g: dict[str, Any]) -> dict[str, Any]:
    status = g["status"]
    head = g["statuses"] if g["n_runs"] > 1 else status
    if status == "does-not-fit":
        lines = [f"needs {_kib(g['planned_sram_bytes'])} KiB SRAM", f"board has {_kib(g['board_sram_bytes'])} KiB"]
    elif status in ("ok", "mixed"):
        lines = [
            f"acc {_num(g['acc_before'] * 100, '{:.1f}')} → {_num(g['acc_after'] * 100, '{:.1f}')} %",
            f"SRAM {_kib(g['peak_sram_bytes'])} / {_kib(g['board_sram_bytes'], '{:,.0f}')} KiB",
        ]
    else:
        lines = [_shorten(g["error"] or "(no error text)", 60)]
    return {"status": head, "status_class": _status_class(status), "lines": lines, "nofit": status == "does-not-fit"}


def _shorten(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _unit_header(values: pd.Series, what: str, fallback: str) -> str:
    present = sorted(set(values) - {""})
    return f"{what} ({present[0]})" if len(present) == 1 else f"{what} ({fallback})"


def _results_table(runs: pd.DataFrame) -> dict[str, Any]:
    records = runs.to_dict("records")
    return {
        "work_header": _unit_header(
            runs.loc[runs["instr_per_step"].notna(), "count_unit"], "Work / step", "unit per cell"
        ),
        "energy_header": _unit_header(
            runs.loc[runs["energy_per_step_uj"].notna(), "energy_source"], "Energy / step, µJ", "source per cell"
        ),
        "rows": [_result_row(r) for r in records[:MAX_ROWS]],
        "note": f"First {MAX_ROWS:,} of {len(records):,} runs; all of them are in runs.csv."
        if len(records) > MAX_ROWS
        else "",
    }


def _result_row(run: dict[str, Any]) -> dict[str, Any]:
    unit = run["count_unit"] or "counts"
    return {
        "board": run["board"],
        "kind": run["target_kind"],
        "technique": run["series"],
        "filter_technique": run["technique"],
        "model": run["model"],
        "status": run["status"],
        "status_class": _status_class(run["status"]),
        "error": run["error"] if run["status"] != "does-not-fit" else "",
        "nofit": _nofit_message(run) if run["status"] == "does-not-fit" else "",
        "steps": _num(run["steps"], "{:,.0f}"),
        "acc": f"{_num(run['acc_before'] * 100, '{:.1f}')} → {_num(run['acc_after'] * 100, '{:.1f}')}",
        "acc_after": "" if _missing(run["acc_after"]) else f"{run['acc_after'] * 100:.3f}",  # the column's sort key
        "loss": _num(run["final_loss"], "{:.4g}"),
        "sram": [_kib(run["peak_sram_bytes"]), _kib(run["planned_sram_bytes"]), _kib(run["board_sram_bytes"])],
        "flash": [_kib(run["flash_bytes"]), _kib(run["board_flash_bytes"], "{:,.0f}")],
        "work": DASH if _missing(run["instr_per_step"]) else f"{_count(run['instr_per_step'])} {unit}",
        "energy": _num(run["energy_per_step_uj"], "{:.4g} µJ"),
        "energy_source": "" if _missing(run["energy_per_step_uj"]) else _source_label(run["energy_source"]),
    }


PROVENANCE_KEYS = (
    ("bench_version", "Bench version"),
    ("git_commit", "Git commit"),
    ("host", "Host"),
    ("profile", "Profile"),
    ("rack", "Rack"),
    ("started", "Started"),
    ("finished", "Finished"),
)


def _provenance(res: Results) -> dict[str, Any]:
    key_rows = [(label, (friendly_time(_text(res.meta.get(key))) if key in ("started", "finished")
                         else _meta_value(res.meta.get(key))) or DASH) for key, label in PROVENANCE_KEYS]
    key_rows += [
        ("Firmware builds", _distinct(res.runs, "build_id")),
        ("Plan hashes", _distinct(res.runs, "plan_hash")),
        ("Boards", _targets_line(res.runs)),
    ]
    cols = ["Run", "Board", "Serial / twin", "Technique", "Model", "Build", "Plan hash", "Journal", "Wall time"]
    rows = [
        [r["run_id"], r["board"], _target(r), r["technique"], r["model"], r["build_id"], r["plan_hash"],
         r["journal"], _num(r["wall_s"], "{:.1f} s")]
        for r in res.runs.to_dict("records")
    ]  # fmt: skip
    return {
        "keys": key_rows,
        "meta": Table(["Field", "Value"], [[_text(k), _meta_value(v)] for k, v in res.meta.items()]),
        "runs": _capped(cols, rows, "runs.csv"),
        "meta_problem": res.meta_problem,
        "bench_version": bench.__version__,
    }


def _target(run: dict[str, Any]) -> str:
    """The board's serial (probe id) on hardware; on the emulated rack, the twin."""
    if run["board_serial"]:
        return run["board_serial"]
    return "QEMU twin" if run["target_kind"] == "emulated" else DASH


def _targets_line(runs: pd.DataFrame) -> str:
    pairs = sorted({(r["board"], _target(r)) for r in runs.to_dict("records")})
    return "; ".join(f"{b}: {t}" for b, t in pairs[:20]) or DASH


def _distinct(runs: pd.DataFrame, col: str) -> str:
    values = sorted(set(runs[col]) - {""})
    more = f" (+{len(values) - 8} more)" if len(values) > 8 else ""
    return ", ".join(values[:8]) + more if values else DASH


def _meta_value(value: Any) -> str:
    if isinstance(value, list):
        return "; ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return _text(value)


def _file_links(res: Results, results_dir: Path, out: Path) -> list[dict[str, str]]:
    """Relative links, so the report and its tables can move together."""
    rel = os.path.relpath(results_dir.resolve(), out.parent.resolve())
    return [{"name": f, "href": Path(rel, f).as_posix()} for f in res.files]


# ----------------------------------------------------------------------------------------------------
# Curves: loss and training accuracy per board and per technique


def _window(n: int) -> int:
    """Moving-average width: about a tenth of the run, so short runs stay visible and long ones smooth."""
    return max(1, min(50, n // 10))


def _smoothed(steps: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Steps with each run's moving averages of loss and correct, tagged with board and technique."""
    s = _tag(steps.dropna(subset=["step"]), runs)
    if s.empty:
        return s.assign(w=[], loss_s=[], correct_s=[])
    s["w"] = s.groupby("run_id")["step"].transform("size").map(_window)
    for col in ("loss", "correct"):  # accuracy only over full windows: 1 of 1 correct is not 100 %
        s[f"{col}_s"] = np.nan
        for w, part in s.groupby("w"):
            least = 1 if col == "loss" else int(w)
            rolled = part.groupby("run_id", sort=False)[col].rolling(int(w), min_periods=least).mean()
            s.loc[rolled.index.get_level_values(-1), f"{col}_s"] = rolled.to_numpy()
    return s


def _curves(sm: pd.DataFrame) -> pd.DataFrame:
    """Per (board, technique, step): medians over repeated runs (the run itself when there is one)."""
    cols = {"loss": "median", "loss_s": "median", "correct_s": "median"}
    return sm.groupby([*KEYS, "step"], sort=True).agg(cols).reset_index()


def _loss_top(values: pd.Series) -> float:
    """Raw batch-1 losses spike far above the trend; clip to the smoothed curves' high percentile."""
    v = values.dropna()
    return float(np.percentile(v, LOSS_CLIP_PCT)) * LOSS_CLIP_MARGIN if len(v) else math.nan


def _curve_section(res: Results) -> Section:
    sm = _smoothed(res.steps, res.runs)
    section = Section(
        "curves",
        "Loss and accuracy curves",
        "Training loss and training accuracy (moving average of batch-1 correct predictions) over steps. "
        "Circles: accuracy on the held-out eval split before (hollow) and after (filled) training."
        + _repeat_note(res.groups),
        [_curve_table(res.groups, sm)],
    )
    if sm.empty:
        section.empty_note = "No step data was recorded."
        return section
    curves = _curves(sm)
    tech_colors, board_colors = _colors(res.runs["technique"], PALETTE), _colors(res.runs["board"], BOARD_PALETTE)
    for panel, line, colors in (("board", "technique", tech_colors), ("technique", "board", board_colors)):
        section.plots.append(_loss_plot(curves, res.groups, panel, line, colors))
        section.plots.append(_acc_plot(curves, res.groups, panel, line, colors))
    return section


def _panels(curves: pd.DataFrame, key: str) -> list[str]:
    return sorted(curves[key].unique())[:MAX_PANELS]


def _series_in(curves: pd.DataFrame, key: str) -> list[tuple[str, pd.DataFrame]]:
    return list(curves.groupby(key, sort=True))[:MAX_SERIES]


def _series_note(curves: pd.DataFrame, key: str) -> str:
    return _cap_note(MAX_SERIES, curves[key].nunique(), f"{key}s per panel")


DASHES = ((0, (6, 4)), (3, (2, 5)), (0, (1, 6)), (5, (8, 8)))  # for a curve that lies on one drawn before it


class Overlaps:
    """Curves of one figure that are identical to one already drawn in their panel: each gets its own dash
    pattern (so every colour shows) and the caption names them, instead of one hiding the others."""

    def __init__(self) -> None:
        self.panel: list[np.ndarray] = []
        self.named: list[str] = []

    def start(self) -> None:
        self.panel = []

    def style(self, y: pd.Series, label: str, panel: str) -> Any:
        values = y.to_numpy(dtype=float)
        same = [i for i, seen in enumerate(self.panel) if seen.shape == values.shape
                and np.allclose(seen, values, rtol=1e-6, atol=1e-9, equal_nan=True)]
        self.panel.append(values)
        if not same:
            return "-"
        self.named.append(f"{label} in {panel}")
        return DASHES[(len(self.panel) - 2) % len(DASHES)]

    def note(self) -> str:
        if not self.named:
            return ""
        shown = ", ".join(self.named[:6]) + (f" and {len(self.named) - 6} more" if len(self.named) > 6 else "")
        return f" Dashed: a curve identical to one drawn before it in its panel ({shown})."


def _loss_plot(curves: pd.DataFrame, groups: pd.DataFrame, panel: str, line: str, colors: dict) -> Plot:
    panels = _panels(curves, panel)
    fig, axes = _new_figure(len(panels), margins=LEGEND_BELOW)
    off_scale, drawn, overlaps = 0, set(), Overlaps()
    for ax, name in zip(axes, panels, strict=True):
        part = curves[curves[panel] == name]
        top = _loss_top(part["loss_s"])
        overlaps.start()
        for key, c in _series_in(part, line):
            c = _thin(c)
            if _single_run(groups, c):
                ax.plot(c["step"], c["loss"], color=colors[key], alpha=0.2, linewidth=0.7)
                off_scale += int((c["loss"] > top).sum())
            ax.plot(c["step"], c["loss_s"], color=colors[key], linewidth=1.8,
                    linestyle=overlaps.style(c["loss_s"], key, name))
            drawn.add(key)
        if not math.isnan(top):
            ax.set_ylim(0, top)
        _curve_axes(ax, name, "loss")
    _legend_below(fig, _handles(colors, drawn))
    caption = (
        f"Loss per {panel}, {line}s overlaid: raw batch-1 loss faint, moving average solid. The y axis is clipped "
        f"at {LOSS_CLIP_MARGIN:g}× the {LOSS_CLIP_PCT}th percentile of the smoothed curves of each panel, so raw "
        f"spikes do not squash the trend ({off_scale:,} raw points lie above it; the table gives the maximum)."
        + overlaps.note()
    )
    notes = _cap_note(len(panels), curves[panel].nunique(), f"{panel}s") + _series_note(curves, line)
    return _plot(fig, caption + notes, f"loss per {panel}")


def _single_run(groups: pd.DataFrame, c: pd.DataFrame) -> bool:
    """Raw batch-1 losses are drawn only for a series that is one run, not a median of several."""
    row = groups[(groups["board"] == c["board"].iloc[0]) & (groups["technique"] == c["technique"].iloc[0])]
    return bool(len(row) and row["n_runs"].iloc[0] == 1)


def _acc_plot(curves: pd.DataFrame, groups: pd.DataFrame, panel: str, line: str, colors: dict) -> Plot:
    panels = _panels(curves, panel)
    fig, axes = _new_figure(len(panels), panel_h=2.6, margins=LEGEND_BELOW)
    drawn, overlaps = set(), Overlaps()
    for ax, name in zip(axes, panels, strict=True):
        part = curves[curves[panel] == name]
        overlaps.start()
        for key, c in _series_in(part, line):
            c = _thin(c)
            ax.plot(c["step"], c["correct_s"] * 100, color=colors[key], linewidth=1.6,
                    linestyle=overlaps.style(c["correct_s"], key, name))
            _eval_marks(ax, groups, name if panel == "board" else key, key if panel == "board" else name, c)
            drawn.add(key)
        ax.set_ylim(0, 105)
        _curve_axes(ax, name, "accuracy (%)")
    _legend_below(fig, _handles(colors, drawn))
    caption = (f"Training accuracy per {panel}, {line}s overlaid (moving average); circles: eval split before/after."
               + overlaps.note())
    notes = _cap_note(len(panels), curves[panel].nunique(), f"{panel}s") + _series_note(curves, line)
    return _plot(fig, caption + notes, f"accuracy per {panel}")


def _eval_marks(ax: Axes, groups: pd.DataFrame, board: str, technique: str, c: pd.DataFrame) -> None:
    row = groups[(groups["board"] == board) & (groups["technique"] == technique)]
    if row.empty:
        return
    color = ax.get_lines()[-1].get_color()
    before, after = row["acc_before"].iloc[0] * 100, row["acc_after"].iloc[0] * 100
    ax.plot(c["step"].iloc[0], before, marker="o", markerfacecolor="white", markeredgecolor=color, markersize=6)
    ax.plot(c["step"].iloc[-1], after, marker="o", color=color, markersize=6)


def _curve_axes(ax: Axes, title: str, ylabel: str) -> None:
    ax.set_title(_label(title), fontsize=10)
    ax.set_xlabel("step", fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)


def _curve_table(groups: pd.DataFrame, sm: pd.DataFrame) -> Table:
    stats = _curve_stats(sm)
    cols = [
        "Board", "Technique", "Runs", "Steps", "First loss", "Min loss (smoothed)", "Last loss (smoothed)",
        "Max raw loss", "Train acc, last (smoothed)", "Eval acc before → after", "Eval loss before → after",
    ]  # fmt: skip
    rows = []
    for g in groups.to_dict("records"):
        st = stats.get((g["board"], g["technique"]), {})
        rows.append([
            g["board"], g["technique"], str(g["n_runs"]), _num(st.get("steps"), "{:,.0f}"), _num(st.get("first")),
            _num(st.get("min_s")), _num(st.get("last_s")), _num(st.get("max_raw")), _pct(st.get("acc_s")),
            f"{_pct(g['acc_before'])} → {_pct(g['acc_after'])}",
            f"{_num(g['loss_before'])} → {_num(g['loss_after'])}",
        ])  # fmt: skip
    return _capped(cols, rows, "steps.csv")


def _curve_stats(sm: pd.DataFrame) -> dict[tuple[str, str], dict[str, float]]:
    if sm.empty:
        return {}
    curves = _curves(sm)
    by = curves.groupby(KEYS, sort=True)
    stats = pd.DataFrame({
        "steps": by["step"].size(), "first": by["loss"].first(), "min_s": by["loss_s"].min(),
        "last_s": by["loss_s"].last(), "acc_s": by["correct_s"].last(),
        "max_raw": sm.groupby(KEYS, sort=True)["loss"].max(),
    })  # fmt: skip
    return {(b, t): row for (b, t), row in stats.to_dict("index").items()}


# ----------------------------------------------------------------------------------------------------
# Trade-offs: accuracy vs peak SRAM and vs energy per step, Pareto fronts marked


def _pareto(cost: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Runs no other run beats on both: no cheaper-or-equal run with more accuracy."""
    front = np.zeros(len(cost), dtype=bool)
    best = -math.inf
    for i in np.lexsort((-gain, cost)):
        if gain[i] > best:
            front[i], best = True, gain[i]
    return front


def _tradeoff_section(res: Results) -> Section:
    ok = res.runs[(res.runs["status"] == "ok") & res.runs["acc_after"].notna()].copy()
    ok["front_sram"] = _front(ok, "peak_sram_bytes", [])
    ok["front_energy"] = _front(ok, "energy_per_step_uj", ["energy_source"])
    section = Section(
        "tradeoffs",
        "Accuracy vs memory and energy",
        "Each point is a run that finished ok: colour is the technique, marker shape the board. Ringed points "
        "joined by the grey line form the Pareto front (nothing else is both cheaper and more accurate)."
        + (" With repeats a front of single runs is noisy: the study section plots each technique's mean with its "
           "95% CI and marks which differ significantly from the best." if res.study_runs is not None else ""),
        [_tradeoff_table(ok)],
    )
    if ok.empty:
        return section
    fig, axes = _new_figure(2, ncols=2, panel_h=4.0, margins=LEGEND_BELOW)
    colors, markers = _colors(res.runs["technique"], PALETTE), _markers(res.runs)
    _scatter(axes[0], ok, "peak_sram_bytes", "front_sram", colors, markers, 1 / 1024)
    axes[0].set_xlabel("peak SRAM, measured (KiB)")
    _scatter(axes[1], ok, "energy_per_step_uj", "front_energy", colors, markers, 1.0)
    axes[1].set_xlabel(f"energy per step, µJ ({_label(_sources(ok))})")
    _log_if_wide(axes[1], "x", ok["energy_per_step_uj"])
    _legend_below(fig, _handles(colors, set(ok["technique"])) + _marker_handles(markers))
    section.plots.append(_plot(fig, "Accuracy after training against peak SRAM (left) and energy per step "
                                    "(right, labelled with its source; fronts are drawn per source).",
                               "accuracy vs SRAM and energy"))  # fmt: skip
    return section


def _study_section(res: Results) -> Section | None:
    """Repeats, the lr sweep, QAS vs no-QAS and the equal-budget schemes (`bench.report.study`), when the results are
    a study: mean ± 95% CI, every difference marked significant or not."""
    runs = res.study_runs
    if runs is None:
        return None
    rows = study.technique_rows(runs)
    techniques = Table(["board", "technique", "lr", "acc before", "acc after", "vs the board's best", "peak SRAM (B)",
                        "instr/step"],
                       [[r.board, r.technique, r.lr, study.pct(r.acc_before), study.pct(r.acc_after),
                         "best" if r.vs_best is None else study.points(r.vs_best), study.figure(r.peak_sram),
                         study.figure(r.instr_per_step)] for r in rows],
                       "Techniques at their chosen lr",
                       "Accuracy: mean ± 95% t confidence interval over the repeats (sample orders). Counts and SRAM "
                       "are deterministic on twins: shown once when every repeat gave the same figure.")
    sweep = study.sweep_rows(runs)
    tables = [techniques]
    if sweep:
        edges = study.edge_choices(sweep)
        note = ("The chosen lr is at the edge of the sweep for " + ", ".join(f"{b} {t} ({lr:g})" for b, t, lr in edges)
                + ": the best may lie outside the range." if edges else "Every chosen lr lies inside its sweep.")
        tables.append(Table(["board", "technique", "lr", "validation accuracy", "chosen"],
                            [[r.board, r.technique, f"{r.lr:g}", study.pct(r.val_acc), "yes" if r.chosen else ""]
                             for r in sweep], "lr sweep (validation split of device-train; eval split not used)",
                            note))
    schemes = res.meta.get("budget_schemes")
    budget = study.budget_rows(runs)
    if budget:
        tables.append(Table(["technique", "trains", "acc after", "peak SRAM (B)", "planned SRAM (B)"],
                            [[r.technique, _text((schemes or {}).get(r.technique)) if isinstance(schemes, dict)
                              else DASH, study.pct(r.acc_after), study.figure(r.peak_sram),
                              _planned(runs, r.technique)] for r in budget],
                            "Schemes at an equal memory budget (planned arena ≤ the budget)"))
    pairs = study.qas_pairs(runs)
    if pairs:
        tables.append(Table(["board", "QAS", "no QAS", "QAS − no QAS"],
                            [[p.board, p.left, p.right, study.points(p.diff)] for p in pairs],
                            "int8 with vs without Quantization-Aware Scaling, each at its own best lr"))
    section = Section("study", "Study: repeats, tuned learning rates, equal budget",
                      "Every technique trained at the learning rate that gave the best mean validation accuracy in its "
                      "sweep, then repeated with different sample orders on the eval split. Differences to the best "
                      "technique whose 95% interval contains 0 are not significant.", tables)
    if sweep:
        section.plots.append(_sweep_plot(sweep))
    if any(math.isfinite(r.acc_after.mean) for r in rows):
        section.plots.append(_ci_plot(rows))
    return section


def _planned(runs: pd.DataFrame, technique: str) -> str:
    planned = pd.to_numeric(runs.loc[runs["technique"] == technique, "planned_sram_bytes"], errors="coerce").dropna()
    return f"{planned.iloc[0]:,.0f}" if len(planned) else DASH


SCHEME_COLORS = {"full": PALETTE[0], "last": PALETTE[1], "bias": PALETTE[2], "sparse": PALETTE[3]}


def _numerics(technique: str) -> str:
    return technique.split("@")[0].split("-", 1)[-1]


def _scheme_style(technique: str) -> dict[str, Any]:
    """Colour by scheme; an equal-budget variant (``@budget``) dashed with square markers."""
    budget = "@" in technique
    return {"color": SCHEME_COLORS.get(technique.split("-")[0], "#8c8c8c"), "ls": "--" if budget else "-",
            "marker": "s" if budget else "o"}


def _sweep_plot(rows: list[study.SweepRow]) -> Plot:
    """Validation accuracy against lr, one panel per (board, numerics) so no panel has more than a handful of
    curves; colour is the scheme, error bars the 95% CI, the star the chosen lr."""
    panels = sorted({(r.board, _numerics(r.technique)) for r in rows})
    fig, axes = _new_figure(len(panels), ncols=min(len(panels), 3), panel_h=3.4, margins=LEGEND_BELOW)
    for ax, (board, numerics) in zip(axes, panels, strict=True):
        names = sorted({r.technique for r in rows if r.board == board and _numerics(r.technique) == numerics})
        for k, technique in enumerate(names):
            mine = sorted((r for r in rows if r.board == board and r.technique == technique), key=lambda r: r.lr)
            dodge = 1 + 0.04 * (k - (len(names) - 1) / 2)  # side by side at one lr, none hidden by another
            style = _scheme_style(technique)
            err = [0 if math.isnan(r.val_acc.half_width) else r.val_acc.half_width * 100 for r in mine]
            ax.errorbar([r.lr * dodge for r in mine], [r.val_acc.mean * 100 for r in mine], yerr=err, ms=4,
                        capsize=3, lw=1.2, label=technique, **style)
            for r in (r for r in mine if r.chosen):
                ax.plot([r.lr * dodge], [r.val_acc.mean * 100], marker="*", ms=13, color=style["color"],
                        mec="black", mew=0.6, ls="none")
        ax.set_xscale("log")
        _study_axes(ax, f"{board} · {numerics}", "learning rate (log)", "validation accuracy (%)")
        ax.legend(fontsize=7, loc="lower left")
    _scheme_legend(fig)
    return _plot(fig, "lr sweep: mean validation accuracy ± 95% CI per learning rate, one panel per numerics (the "
                      "validation split is carved from device-train; curves drawn slightly apart at each lr so none "
                      "hides another; dashed: the equal-budget schemes). The star is the lr the final runs used.",
                 "lr sweep curves")


def _study_axes(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def _scheme_legend(fig: Figure) -> None:
    fig.legend(handles=[Patch(color=c, label=s) for s, c in SCHEME_COLORS.items()], loc="lower center",
               ncol=4, fontsize=8, frameon=False)


def _ci_plot(rows: list[study.TechniqueRow]) -> Plot:
    """Accuracy (mean ± CI) against measured peak SRAM, every point labelled; hollow: not significantly different
    from the board's best (the best included)."""
    boards = sorted({r.board for r in rows})
    fig, axes = _new_figure(len(boards), ncols=1, panel_h=5.0, margins=LEGEND_BELOW)
    for ax, board in zip(axes, boards, strict=True):
        for r in (r for r in rows if r.board == board and math.isfinite(r.acc_after.mean)):
            same = r.vs_best is None or not r.vs_best.significant
            style = _scheme_style(r.technique)
            err = 0 if math.isnan(r.acc_after.half_width) else r.acc_after.half_width * 100
            x, y = r.peak_sram.mean / 1024, r.acc_after.mean * 100
            ax.errorbar([x], [y], yerr=[err], ms=6, capsize=3, color=style["color"], marker=style["marker"],
                        mfc="white" if same else style["color"], ls="none")
            ax.annotate(r.technique, (x, y), xytext=(5, 2), textcoords="offset points", fontsize=7)
        _study_axes(ax, board, "peak SRAM, measured (KiB)", "accuracy after training (%)")
    _scheme_legend(fig)
    return _plot(fig, "Accuracy after training (mean ± 95% CI over repeats) against peak SRAM: the Pareto view with "
                      "its uncertainty. Hollow markers: the board's best technique and those not significantly "
                      "different from it; squares: the equal-budget schemes.",
                 "accuracy with confidence intervals vs SRAM")


def _front(runs: pd.DataFrame, cost: str, split: list[str]) -> pd.Series:
    flags = pd.Series(False, index=runs.index)
    valid = runs[runs[cost].notna()]
    for _, part in valid.groupby(split) if split else [(None, valid)]:
        flags.loc[part.index] = _pareto(part[cost].to_numpy(), part["acc_after"].to_numpy())
    return flags


def _markers(runs: pd.DataFrame) -> dict[str, str]:
    return {b: MARKERS[i % len(MARKERS)] for i, b in enumerate(sorted(runs["board"].unique()))}


def _marker_handles(markers: dict[str, str]) -> list[Any]:
    return [
        Line2D([], [], color="gray", marker=m, linestyle="", label=_label(b)) for b, m in markers.items()
    ][:MAX_SERIES]


def _sources(runs: pd.DataFrame) -> str:
    present = sorted({_source_label(s) for s in runs.loc[runs["energy_per_step_uj"].notna(), "energy_source"]})
    return " / ".join(present) if present else "no energy figures"


def _scatter(ax: Axes, runs: pd.DataFrame, cost: str, front: str, colors: dict, markers: dict, scale: float) -> None:
    valid = runs[runs[cost].notna()]
    for (board, technique), part in valid.groupby(KEYS):
        ax.scatter(part[cost] * scale, part["acc_after"] * 100, color=colors[technique], marker=markers[board],
                   s=36, alpha=0.85, zorder=3)  # fmt: skip
    split = ["energy_source"] if cost == "energy_per_step_uj" else []
    for _, part in valid[valid[front]].groupby(split) if split else [(None, valid[valid[front]])]:
        part = part.sort_values(cost)
        ax.plot(part[cost] * scale, part["acc_after"] * 100, color="gray", drawstyle="steps-post", zorder=2)
        ax.scatter(part[cost] * scale, part["acc_after"] * 100, s=140, facecolors="none", edgecolors="black", zorder=4)
    ax.set_ylabel("accuracy after training (%)")
    ax.grid(alpha=0.3)


def _tradeoff_table(ok: pd.DataFrame) -> Table:
    ordered = ok.sort_values(["front_sram", "front_energy"], ascending=False, kind="stable")
    cols = ["Board", "Technique", "Accuracy after", "Peak SRAM", "Energy / step (µJ)", "Energy source",
            "On SRAM front", "On energy front"]  # fmt: skip
    rows = [
        [r["board"], r["series"], _pct(r["acc_after"]), _exact_bytes(r["peak_sram_bytes"]),
         _num(r["energy_per_step_uj"], "{:.4g}"), _source_label(r["energy_source"]),
         "yes" if r["front_sram"] else "", "yes" if r["front_energy"] else ""]
        for r in ordered.to_dict("records")
    ]  # fmt: skip
    return _capped(cols, rows, "runs.csv")


# ----------------------------------------------------------------------------------------------------
# Memory breakdown


def _memory_parts(groups: pd.DataFrame) -> pd.DataFrame:
    """Bytes per part: measured static, stack and arena, the arena split by the plan's composition."""
    parts = groups[list(MEMORY_PARTS)[:-1]].copy()
    planned = parts[list(MEMORY_PARTS)[2:-1]]
    split = planned.notna().any(axis=1)
    parts["arena_other"] = np.where(split, (groups["arena_peak_bytes"] - planned.sum(axis=1)).clip(lower=0),
                                    groups["arena_peak_bytes"])  # fmt: skip
    return parts.fillna(0.0)


def _memory_section(res: Results) -> Section:
    groups = res.groups
    section = Section(
        "memory",
        "Memory breakdown",
        "Peak SRAM per run: static data and stack as measured, the arena split into weights, activations kept "
        "for the backward pass, gradients and optimizer state as planned at the arena's peak. Red tick: the "
        "board's SRAM; black diamond: the planned peak. Hatched: the plan of a run that did not fit."
        + _repeat_note(groups),
        [_memory_table(groups)],
    )
    shown = groups.iloc[:MAX_BARS]
    if shown[["peak_sram_bytes", "planned_sram_bytes", "arena_peak_bytes"]].isna().all().all():
        return section
    fig, (ax,) = _new_figure(1, panel_h=0.3 + 0.3 * len(shown), margins=Margins(left=2.4, right=2.7))
    _memory_bars(ax, shown, _memory_parts(shown))
    section.plots.append(_plot(fig, "KiB of SRAM per (board, technique)." + _cap_note(len(shown), len(groups), "runs"),
                               "memory breakdown"))  # fmt: skip
    return section


def _memory_bars(ax: Axes, groups: pd.DataFrame, parts: pd.DataFrame) -> None:
    y = np.arange(len(groups))
    nofit = (groups["status"] == "does-not-fit").to_numpy()
    left = np.zeros(len(groups))
    for col, (label, color) in MEMORY_PARTS.items():
        width = parts[col].to_numpy() / 1024
        ax.barh(y, width, 0.7, left=left, color=color, label=label,
                hatch=["//" if n else "" for n in nofit], edgecolor="white", linewidth=0.3)  # fmt: skip
        left += width
    ax.vlines(groups["board_sram_bytes"] / 1024, y - 0.45, y + 0.45, colors=SRAM_RED, linewidth=2.5,
              label="board SRAM")  # fmt: skip
    ax.plot(groups["planned_sram_bytes"] / 1024, y, "D", color="black", markersize=5, label="planned peak")
    ax.set_yticks(y, [_label(s) for s in groups["label"]], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("SRAM (KiB)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _memory_table(groups: pd.DataFrame) -> Table:
    cols = ["Board", "Technique", "Status", "Static", "Stack", "Arena (measured)", "Weights", "Activations kept",
            "Gradients", "Optimizer", "Measured peak", "Planned peak", "Board SRAM", "Headroom"]  # fmt: skip
    rows = []
    for g in groups.to_dict("records"):
        used = g["planned_sram_bytes"] if _missing(g["peak_sram_bytes"]) else g["peak_sram_bytes"]
        rows.append([g["board"], g["technique"], g["status"]] + [_exact_bytes(g[c]) for c in (
            "static_bytes", "stack_peak_bytes", "arena_peak_bytes", "planned_weights_bytes",
            "planned_activations_bytes", "planned_gradients_bytes", "planned_optimizer_bytes", "peak_sram_bytes",
            "planned_sram_bytes", "board_sram_bytes")] + [_exact_bytes(g["board_sram_bytes"] - used)])  # fmt: skip
    return _capped(cols, rows, "runs.csv")


# ----------------------------------------------------------------------------------------------------
# Per-layer cost and gradient heatmaps


def _layer_means(res: Results) -> pd.DataFrame:
    """Per (board, technique, layer): the mean of its runs, layers in model order."""
    layers = _tag(res.layers, res.runs)
    layers["order"] = layers.groupby("run_id").cumcount()
    numbers = list(LAYER_COLUMNS[3:])
    means = layers.groupby([*KEYS, "layer", "op"], sort=False).agg({**dict.fromkeys(numbers, "mean"), "order": "min"})
    return means.reset_index().sort_values([*KEYS, "order"], kind="stable")


def _layer_section(res: Results) -> Section | None:
    if res.layers is None:
        return None
    means = _layer_means(res)
    section = Section(
        "layers",
        "Per-layer cost",
        "Instructions (or cycles) per step spent in each layer, measured, split into forward, backward and "
        "update; the table adds each layer's planned memory." + _repeat_note(res.groups),
        [_layer_table(means, res.groups)],
    )
    panels = list(means.groupby(KEYS, sort=True))
    if not panels:
        return section
    shown = panels[:MAX_PANELS]
    n_layers = max(len(p) for _, p in shown)
    fig, axes = _new_figure(len(shown), panel_h=0.5 + 0.28 * n_layers, margins=Margins(left=1.1, legend=0.35))
    units = dict(zip(zip(res.groups["board"], res.groups["technique"], strict=True), res.groups["count_unit"],
                     strict=True))  # fmt: skip
    widest: dict[str, float] = {}  # per unit: panels in one unit share one x scale, so bars compare across them
    for (board, technique), part in shown:
        unit = units.get((board, technique)) or "counts"
        total = float(part[list(LAYER_COLUMNS[3:6])].fillna(0).sum(axis=1).max())
        widest[unit] = max(widest.get(unit, 0.0), total)
    for ax, ((board, technique), part) in zip(axes, shown, strict=True):
        _layer_panel(ax, part)
        unit = units.get((board, technique)) or "counts"
        ax.set_xlim(0, widest[unit] * 1.05 or 1.0)
        ax.set_title(_label(f"{board} · {technique}"), fontsize=9)
        ax.set_xlabel(f"{_label(unit)} / step", fontsize=8)
    _legend_below(fig, [Patch(color=c, label=p) for p, c in PART_COLORS.items()])
    section.plots.append(_plot(fig, "One panel per (board, technique); layers top to bottom in model order; panels "
                               "in one unit share one scale."
                               + _cap_note(len(shown), len(panels), "panels"), "per-layer cost"))  # fmt: skip
    return section


def _layer_panel(ax: Axes, part: pd.DataFrame) -> None:
    y = np.arange(len(part))
    left = np.zeros(len(part))
    for col, color in zip(LAYER_COLUMNS[3:6], PART_COLORS.values(), strict=True):
        width = part[col].fillna(0).to_numpy()
        ax.barh(y, width, 0.7, left=left, color=color)
        left += width
    ax.set_yticks(y, [_label(f"{layer} {op}".strip()) for layer, op in zip(part["layer"], part["op"], strict=True)])
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _count(v)))
    ax.tick_params(labelsize=7)
    ax.grid(axis="x", alpha=0.3)


def _layer_table(means: pd.DataFrame, groups: pd.DataFrame) -> Table:
    cols = ["Board", "Technique", "Layer", "Op", "Forward", "Backward", "Update", "Total / step", "Weights (RAM)",
            "Activations kept", "Gradients", "Scratch"]  # fmt: skip
    rows = [
        [r["board"], r["technique"], r["layer"], r["op"], *[_count(r[c]) for c in LAYER_COLUMNS[3:6]],
         _count(np.nansum([r[c] for c in LAYER_COLUMNS[3:6]])),
         *[_exact_bytes(r[c]) for c in LAYER_COLUMNS[6:]]]
        for r in means.to_dict("records")
    ]  # fmt: skip
    return _capped(cols, rows, "layers.csv")


def _layer_key(name: str) -> tuple[int, float, str]:
    """Numeric layers in numeric order, then named ones."""
    try:
        return (0, float(name), "")
    except ValueError:
        return (1, 0.0, name)


def _grad_bins(res: Results) -> pd.DataFrame:
    """Median L2 per (board, technique, layer·param, step bin): at most MAX_BINS columns per heatmap."""
    assert res.grads is not None  # the section exists only when grads.parquet does
    grads = res.grads.dropna(subset=["step", "l2"])
    grads = _tag(grads[np.isfinite(grads["l2"].astype(float))], res.runs)  # a diverged run's inf norms: no colour
    width = max(1, math.ceil((grads["step"].max() + 1) / MAX_BINS)) if len(grads) else 1
    grads["bin"] = (grads["step"] // width) * width
    bins = grads.groupby([*KEYS, "layer", "param", "bin"], sort=True)["l2"].median().reset_index()
    bins["row"] = bins["layer"].astype(str) + " · " + bins["param"].astype(str)
    return bins


def _grad_section(res: Results) -> Section | None:
    if res.grads is None:
        return None
    bins = _grad_bins(res)
    section = Section(
        "grads",
        "Gradient norms per layer",
        "L2 norm of each trained tensor's gradient (w weights, b bias) over the steps, one heatmap per "
        "(board, technique), on one shared log colour scale; steps are binned, each cell the median."
        + _repeat_note(res.groups),
        [_grad_table(res)],
    )
    panels = list(bins.groupby(KEYS, sort=True))
    positive = bins.loc[bins["l2"] > 0, "l2"]
    if not panels or positive.empty:
        return section
    shown = panels[:MAX_PANELS]
    n_rows = max(part["row"].nunique() for _, part in shown)
    fig, axes = _new_figure(len(shown), panel_h=0.6 + 0.22 * n_rows, margins=Margins(right=0.3))
    norm = LogNorm(vmin=float(positive.quantile(0.01)), vmax=float(positive.max()))
    image = None
    for ax, ((board, technique), part) in zip(axes, shown, strict=True):
        image = _heatmap(ax, part, norm)
        ax.set_title(_label(f"{board} · {technique}"), fontsize=9)
    assert image is not None  # shown has at least one panel
    bar = fig.colorbar(image, ax=axes, fraction=0.03, pad=0.02, label="gradient L2 norm")
    _plain_log_ticks(bar.ax.yaxis, positive)
    caption = "Rows: layer · parameter; columns: steps." + _cap_note(len(shown), len(panels), "panels")
    section.plots.append(_plot(fig, caption, "gradient heatmap"))
    return section


def _heatmap(ax: Axes, part: pd.DataFrame, norm: LogNorm) -> Any:
    rows = sorted(part["row"].unique(), key=lambda r: (*_layer_key(r.split(" · ")[0]), r.split(" · ")[-1] != "w"))
    grid = part.pivot_table(index="row", columns="bin", values="l2", aggfunc="median").reindex(rows)
    values = np.where(grid.to_numpy() > 0, grid.to_numpy(), np.nan)
    step = float(grid.columns[1] - grid.columns[0]) if grid.shape[1] > 1 else 1.0
    extent = (float(grid.columns[0]), float(grid.columns[-1]) + step, len(rows) - 0.5, -0.5)
    image = ax.imshow(values, aspect="auto", interpolation="nearest", norm=norm, cmap="viridis", extent=extent)
    ax.set_yticks(range(len(rows)), [_label(r) for r in rows], fontsize=7)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    return image


def _grad_table(res: Results) -> Table:
    assert res.grads is not None  # the section exists only when grads.parquet does
    grads = _tag(res.grads.dropna(subset=["step", "l2"]), res.runs)  # inf norms (a diverged run) shown as they are
    by = grads.groupby([*KEYS, "layer", "param"], sort=True)
    stats = pd.DataFrame({
        "runs": by["run_id"].nunique(), "samples": by["l2"].size(), "first": by["l2"].first(),
        "last": by["l2"].last(), "max": by["l2"].max(), "max_abs": by["max_abs"].max(),
    }).reset_index()  # fmt: skip
    cols = ["Board", "Technique", "Layer", "Param", "Runs", "Samples", "First L2", "Last L2", "Max L2", "Max |g|"]
    rows = [
        [r["board"], r["technique"], r["layer"], r["param"], str(r["runs"]), f"{r['samples']:,}", _num(r["first"]),
         _num(r["last"]), _num(r["max"]), _num(r["max_abs"])]
        for r in stats.to_dict("records")
    ]  # fmt: skip
    return _capped(cols, rows, "grads.csv")


# ----------------------------------------------------------------------------------------------------
# Fidelity, energy, instructions


NUMERICS_ORDER = ("fp32", "int8", "int8-noqas")


def _numerics_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Accuracy after training per (board, scheme, numerics), medians of ok runs; techniques are <scheme>-<numerics>."""
    ok = runs[(runs["status"] == "ok") & runs["acc_after"].notna()]
    parts = ok["technique"].astype(str).str.split("-", n=1, expand=True)
    if parts.shape[1] < 2:
        return pd.DataFrame(columns=["board", "scheme", "numerics", "acc"])
    frame = pd.DataFrame({"board": ok["board"].astype(str), "scheme": parts[0], "numerics": parts[1],
                          "acc": ok["acc_after"].astype(float)})
    frame = frame[frame["numerics"].isin(NUMERICS_ORDER)]
    return frame.groupby(["board", "scheme", "numerics"], as_index=False)["acc"].median()


def _numerics_section(res: Results) -> Section | None:
    """fp32 vs int8 with QAS vs int8 without QAS, per scheme: MCUNetV3's ablation, measured."""
    acc = _numerics_frame(res.runs)
    if acc.empty or acc["numerics"].nunique() < 2:
        return None
    wide = acc.pivot_table(index=["board", "scheme"], columns="numerics", values="acc").reset_index()
    section = Section(
        "numerics",
        "Numerics: fp32 vs int8 with QAS vs int8 without QAS",
        "Accuracy after training on the eval split, per board and scheme, for each arithmetic the scheme ran in. "
        "MCUNetV3 found int8 SGD with Quantization-Aware Scaling within about a point of fp32 and plain int8 SGD "
        "clearly worse; this is the same comparison, measured on the rack.",
        [_numerics_table(wide)],
    )
    boards = sorted(acc["board"].unique())
    fig, axes = _new_figure(len(boards), panel_h=3.0, margins=LEGEND_BELOW)
    colors = dict(zip(NUMERICS_ORDER, PALETTE, strict=False))
    for ax, board in zip(axes, boards, strict=True):
        rows = wide[wide["board"] == board]
        x = np.arange(len(rows))
        for k, numerics in enumerate(n for n in NUMERICS_ORDER if n in wide.columns):
            ax.bar(x + (k - 1) * 0.27, rows[numerics] * 100, width=0.27, color=colors[numerics], label=numerics)
        ax.set_xticks(x, [_label(v) for v in rows["scheme"]])
        ax.set_title(_label(board))
        ax.set_ylabel("accuracy after (%)")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    _legend_below(fig, _handles(colors, set(acc["numerics"])))
    section.plots.append(_plot(fig, "Bars per scheme: fp32, int8 with QAS, int8 without QAS (medians of ok runs).",
                               "accuracy by numerics"))
    return section


def _numerics_table(wide: pd.DataFrame) -> Table:
    cols = ["Board", "Scheme", *[f"{n} acc %" for n in NUMERICS_ORDER], "int8 − fp32 (pt)", "no-QAS − QAS (pt)"]
    rows = []
    for r in wide.to_dict("records"):
        vals = [r.get(n, math.nan) for n in NUMERICS_ORDER]
        rows.append([r["board"], r["scheme"], *[_pct(v) for v in vals],
                     _num((vals[1] - vals[0]) * 100, "{:+.1f}"), _num((vals[2] - vals[1]) * 100, "{:+.1f}")])
    return _capped(cols, rows, "runs.csv")


def _fidelity_section(res: Results) -> Section:
    groups = res.groups
    worst = res.runs.groupby(KEYS, sort=True)["fidelity_max_rel_err"].max().reindex(
        pd.MultiIndex.from_frame(groups[KEYS]))  # fmt: skip
    section = Section(
        "fidelity",
        "Gradient fidelity",
        "Worst relative error of the gradients the device streamed during its check steps, against the "
        f"independent float64 reference replaying the same samples. Grey line: {FIDELITY_GUIDE:g} for scale.",
        [_fidelity_table(res.runs)],
    )
    shown = groups.assign(err=worst.to_numpy()).iloc[:MAX_BARS]
    shown = shown[shown["err"] > 0]
    if shown.empty:
        section.empty_note = "No fidelity check results."
        return section
    fig, (ax,) = _new_figure(1, panel_h=0.3 + 0.26 * len(shown), margins=Margins(left=2.4, top=0.15))
    colors = _colors(res.runs["technique"], PALETTE)
    ax.scatter(shown["err"], np.arange(len(shown)), c=[colors[t] for t in shown["technique"]], s=40, zorder=3)
    ax.axvline(FIDELITY_GUIDE, color="gray", linestyle="--")
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis, [*shown["err"], FIDELITY_GUIDE])
    ax.set_yticks(np.arange(len(shown)), [_label(s) for s in shown["label"]], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("max relative error of streamed gradients (worst run)")
    ax.grid(axis="x", alpha=0.3)
    section.plots.append(_plot(fig, "One point per (board, technique), the worst of its runs.", "gradient fidelity"))
    return section


def _fidelity_table(runs: pd.DataFrame) -> Table:
    cols = ["Board", "Technique", "Status", "Max rel. error", f"Within {FIDELITY_GUIDE:g}", "Lost frames"]
    rows = [
        [r["board"], r["series"], r["status"], _num(r["fidelity_max_rel_err"], "{:.2e}"),
         DASH if _missing(r["fidelity_max_rel_err"]) else ("yes" if r["fidelity_max_rel_err"] <= FIDELITY_GUIDE
                                                            else "no"),
         _num(r["lost_frames"], "{:.0f}")]
        for r in runs.to_dict("records")
    ]  # fmt: skip
    return _capped(cols, rows, "runs.csv")


def _energy_section(res: Results) -> Section:
    groups = res.groups[res.groups["energy_per_step_uj"].notna()]
    section = Section(
        "energy",
        "Energy per step",
        "One panel per energy source: modelled figures come from instructions ÷ clock × datasheet run current × "
        "supply voltage, measured ones from a power meter. Never compare the two as equals." + _repeat_note(groups),
        [_energy_table(res.groups)],
    )
    sources = sorted(groups["energy_source"].unique())
    if not sources:
        return section
    fig, axes = _new_figure(len(sources), ncols=2, panel_h=3.6, margins=Margins(left=0.95, legend=0.35))
    colors = _colors(res.runs["technique"], PALETTE)
    for ax, source in zip(axes, sources, strict=True):
        _energy_panel(ax, groups[groups["energy_source"] == source].reset_index(drop=True), colors,
                      _label(_source_label(source)))  # fmt: skip
    _legend_below(fig, _handles(colors, set(groups["technique"])))
    section.plots.append(_plot(fig, "Energy per training step; a log axis where boards differ by more than 30×.",
                               "energy per step"))  # fmt: skip
    return section


def _energy_panel(ax: Axes, rows: pd.DataFrame, colors: dict[str, str], source: str) -> None:
    pos, centers = _grouped_x(rows)
    ax.bar(pos["x"], rows.loc[pos.index, "energy_per_step_uj"], pos["w"] * 0.9,
           color=[colors[t] for t in rows.loc[pos.index, "technique"]])  # fmt: skip
    _board_ticks(ax, centers)
    _log_if_wide(ax, "y", rows["energy_per_step_uj"])
    ax.set_title(f"energy per step ({source})", fontsize=10)
    ax.set_ylabel(f"µJ per step ({source})")
    ax.grid(axis="y", alpha=0.3)


def _energy_table(groups: pd.DataFrame) -> Table:
    cols = ["Board", "Technique", "Energy source", "Energy / step (µJ)", "Steps", "Energy, all steps (mJ)"]
    rows = [
        [g["board"], g["technique"],
         _source_label(g["energy_source"]) if not _missing(g["energy_per_step_uj"]) else DASH,
         _num(g["energy_per_step_uj"], "{:.4g}"), _num(g["steps"], "{:,.0f}"),
         _num(g["energy_per_step_uj"] * g["steps"] / 1000, "{:.4g}")]
        for g in groups.to_dict("records")
    ]  # fmt: skip
    return _capped(cols, rows, "runs.csv")


WORK_PARTS = ["instr_fwd_per_step", "instr_bwd_per_step", "instr_upd_per_step"]


def _work_section(res: Results) -> Section:
    groups = res.groups
    section = Section(
        "work",
        "Instructions per step",
        "Mean per training step, split into forward, backward and update. QEMU twins count instructions; "
        "hardware counts cycles: each axis says which." + _repeat_note(groups),
        [_work_table(groups)],
    )
    has = groups[groups[[*WORK_PARTS, "instr_per_step"]].notna().any(axis=1)]
    panels = sorted({(b, u) for b, u in zip(has["board"], has["count_unit"], strict=True)})
    if not panels:
        return section
    shown = panels[:MAX_PANELS]
    fig, axes = _new_figure(len(shown))
    for ax, (board, unit) in zip(axes, shown, strict=True):
        _work_panel(ax, has[(has["board"] == board) & (has["count_unit"] == unit)].iloc[:MAX_SERIES])
        ax.set_title(_label(board), fontsize=10)
        ax.set_ylabel(f"{_label(unit) or 'counts'} / step")
    axes[0].legend(handles=[Patch(color=c, label=p) for p, c in PART_COLORS.items()], fontsize=8)
    section.plots.append(_plot(fig, "Stacked: forward, backward, update." + _cap_note(len(shown), len(panels),
                                                                                   "boards"), "instructions per step"))
    return section


def _work_panel(ax: Axes, rows: pd.DataFrame) -> None:
    x = np.arange(len(rows))
    bottom = np.zeros(len(rows))
    for col, color in zip(WORK_PARTS, PART_COLORS.values(), strict=True):
        values = rows[col].fillna(0).to_numpy()
        ax.bar(x, values, 0.6, bottom=bottom, color=color)
        bottom += values
    only_total = (bottom == 0) & rows["instr_per_step"].notna().to_numpy()
    ax.bar(x[only_total], rows["instr_per_step"].to_numpy()[only_total], 0.6, color="#bbbbbb")
    ax.set_xticks(x, [_label(t) for t in rows["technique"]], rotation=30 if len(rows) > 3 else 0)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _count(v)))
    ax.grid(axis="y", alpha=0.3)


def _work_table(groups: pd.DataFrame) -> Table:
    cols = ["Board", "Technique", "Unit", "Forward", "Backward", "Update", "Total / step"]
    rows = [
        [g["board"], g["technique"], g["count_unit"] or DASH, *[_count(g[c]) for c in WORK_PARTS],
         _count(g["instr_per_step"])]
        for g in groups.to_dict("records")
    ]  # fmt: skip
    return _capped(cols, rows, "runs.csv")


# ----------------------------------------------------------------------------------------------------
# Comparison with a baseline (compare.json, written by `bench compare`)


COMPARE_FORMATS = {
    "sram": lambda v: _exact_bytes(v),
    "flash": lambda v: _exact_bytes(v),
    "instructions": _count,
    "energy": lambda v: _num(v, "{:.4g} µJ"),
    "accuracy": _pct,
}


def _comparison(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """The stored comparison as display strings; a malformed file gives a note, never a crash."""
    if data is None:
        return None
    try:
        rows = [_comparison_row(p) for p in data["pairs"]]
    except (KeyError, TypeError, AttributeError) as exc:
        return {"problem": f"compare.json could not be read: {exc!r}"}
    raw_summary = data.get("summary")
    summary: dict[str, Any] = raw_summary if isinstance(raw_summary, dict) else {}
    verdict = _text(summary.get("verdict")) or "unknown"
    return {
        "problem": "",
        "verdict": verdict,
        "verdict_class": "error" if verdict == "regression" else "ok",
        "counts": ", ".join(f"{_text(v)} {_text(k)}" for k, v in summary.items() if k != "verdict"),
        "baseline": _text(data.get("baseline")),
        "created": _text(data.get("created")),
        "thresholds": _thresholds_line(data.get("thresholds"), data.get("thresholds_source")),
        "metrics": [m.label for m in METRICS],
        "rows": rows,
    }


def _thresholds_line(th: Any, source: Any) -> str:
    if not isinstance(th, dict):
        return DASH
    text = ", ".join(f"{_text(k)} {_text(v)}" for k, v in th.items())
    return f"{text} ({_text(source)})" if source else text


def _comparison_row(pair: dict[str, Any]) -> dict[str, Any]:
    deltas = {d["metric"]: d for d in pair.get("deltas") or []}
    return {
        "board": _text(pair["board"]),
        "technique": _text(pair["technique"]),
        "verdict": _text(pair["verdict"]),
        "verdict_class": VERDICT_CLASSES.get(pair["verdict"], "stopped"),
        "status": f"{_text(pair.get('base_status')) or DASH} → {_text(pair.get('cur_status')) or DASH}",
        "note": _text(pair.get("note")),
        "cells": [_comparison_cell(m.name, deltas.get(m.name)) for m in METRICS],
    }


def _comparison_cell(metric: str, d: dict[str, Any] | None) -> dict[str, str]:
    if d is None:
        return {"text": DASH, "cls": ""}
    fmt = COMPARE_FORMATS[metric]
    text = f"{fmt(d.get('baseline'))} → {fmt(d.get('current'))}"
    detail = _text(d.get("change")) or _text(d.get("note"))
    cls = {"regression": "worse", "improvement": "better"}.get(_text(d.get("verdict")), "")
    return {"text": f"{text} ({detail})" if detail else text, "cls": cls}


# ----------------------------------------------------------------------------------------------------
# Rendering


def build_page(res: Results) -> Page:
    """Everything the template needs, as plain strings and base64 images."""
    candidates = [
        _study_section(res),
        _curve_section(res),
        _tradeoff_section(res),
        _numerics_section(res),
        _memory_section(res),
        _layer_section(res),
        _grad_section(res),
        _fidelity_section(res),
        _energy_section(res),
        _work_section(res),
    ]
    sections = [s for s in candidates if s is not None]
    summary = _summary(res)
    comparison = _comparison(res.comparison)
    title = f"Training bench report · {summary['profile']}"
    toc = [
        ("summary", "Summary"),
        *([("comparison", "Comparison")] if comparison else []),
        ("overview", "Overview"),
        ("results", "Runs"),
        *[(s.anchor, s.title) for s in sections],
        ("provenance", "Provenance"),
    ]
    overview = _overview(res.groups, _significance(res))
    return Page(title, summary, overview, _results_table(res.runs), sections, comparison, _provenance(res), toc,
                _filters(res.runs))


def _filters(runs: pd.DataFrame) -> dict[str, list[str]]:
    """Boards, schemes and numerics the runs have: the filter bar's choices."""
    parts = [str(t).split("@")[0].partition("-") for t in runs["technique"]]
    return {"board": sorted({str(b) for b in runs["board"]}), "scheme": sorted({p[0] for p in parts}),
            "numerics": sorted({p[2] for p in parts if p[2]})}


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("bench.report", "templates"),
        autoescape=True,  # every value may come from a device
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(res: Results, files: list[dict[str, str]] | None = None) -> str:
    """The page; its one script (templates/report.js, ours) is inline and the only one its Content-Security-Policy
    lets run (by hash), so nothing a device sent can ever execute even if it got past the escaping."""
    page = build_page(res)
    script = (resources.files("bench.report") / "templates" / "report.js").read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return _environment().get_template("report.html.j2").render(page=page, files=files or [], script=script,
                                                                 script_hash=f"sha256-{digest}")


def write_report(results_dir: Path, out: Path | None = None) -> Path:
    """Render ``results_dir`` into one HTML file (default ``results_dir/index.html``) and return its path."""
    results_dir = Path(results_dir)
    out = Path(out) if out is not None else results_dir / "index.html"
    res = load_results(results_dir)
    html = render_html(res, _file_links(res, results_dir, out))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out
