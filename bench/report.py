"""Render a results directory as one self-contained HTML page.

The page travels as a CI artefact or an attachment and must open from disk with no network and no JS, so
figures are embedded as base64 PNG and the CSS is inline. Every string from a device or a results file is
untrusted: Jinja autoescapes it in the HTML, and `_label` stops matplotlib from reading `$...$` in it as
mathtext. Figures are built with the object-oriented API on an Agg canvas and never enter pyplot's registry,
so none is left open however a chart fails.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, StrMethodFormatter

import bench

# fmt: off
RUN_TEXT_COLUMNS = (
    "run_id", "board", "target_kind", "technique", "model", "status", "error", "count_unit", "energy_source",
    "journal", "build_id", "plan_hash",
)
RUN_NUMBER_COLUMNS = (
    "steps", "final_loss", "acc_before", "acc_after", "peak_sram_bytes", "planned_sram_bytes",
    "board_sram_bytes", "flash_bytes", "board_flash_bytes", "static_bytes", "stack_bytes", "arena_bytes",
    "instr_per_step", "instr_fwd_per_step", "instr_bwd_per_step", "instr_upd_per_step", "energy_per_step_uj",
    "lost_frames", "fidelity_max_rel_err", "wall_s",
)
# fmt: on
STEP_COLUMNS = ("run_id", "step", "loss", "correct", "instr_fwd", "instr_bwd", "instr_update", "sram_bytes")
GRAD_COLUMNS = ("run_id", "step", "layer", "param", "l2", "max_abs")
STATUS_CLASSES = {"ok": "ok", "does-not-fit": "nofit", "error": "error", "stopped": "stopped"}
PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974")
PART_COLORS = {"forward": "#4c72b0", "backward": "#dd8452", "update": "#55a868"}
DASH = "—"
MAX_LABEL = 40
MAX_GRAD_PANELS = 16


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


def load_results(results_dir: Path) -> Results:
    """Read a results directory; grads.parquet, steps.parquet and meta.json may be missing."""
    runs_path = results_dir / "runs.parquet"
    if not runs_path.exists():
        raise FileNotFoundError(f"no runs.parquet in {results_dir}")
    runs = _clean_runs(pd.read_parquet(runs_path))
    steps = _read_optional(results_dir / "steps.parquet", STEP_COLUMNS)
    grads = _read_optional(results_dir / "grads.parquet", GRAD_COLUMNS)
    meta, problem = _read_meta(results_dir / "meta.json")
    has_grads = (results_dir / "grads.parquet").exists() and not grads.empty
    return Results(runs, _clean_steps(steps), _clean_grads(grads) if has_grads else None, meta, problem)


def _read_optional(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=list(columns))
    return _with_columns(frame, columns)


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
        runs[col] = runs[col].map(_text).astype(object)
    for col in RUN_NUMBER_COLUMNS:
        runs[col] = pd.to_numeric(runs[col], errors="coerce").astype(float)
    runs = runs.sort_values(["board", "technique", "run_id"], kind="stable").reset_index(drop=True)
    runs["series"] = _series_names(runs)
    runs["label"] = runs["board"] + " · " + runs["series"]
    return runs


def _series_names(runs: pd.DataFrame) -> list[str]:
    """The technique, with the run id added only where a board ran that technique more than once."""
    repeated = runs.duplicated(["board", "technique"], keep=False)
    rows = zip(runs["technique"], runs["run_id"], repeated, strict=True)
    return [f"{t} · {r}" if rep else t for t, r, rep in rows]


def _clean_steps(raw: pd.DataFrame) -> pd.DataFrame:
    steps = raw.copy()
    steps["run_id"] = steps["run_id"].map(_text).astype(object)
    for col in STEP_COLUMNS[1:]:
        steps[col] = pd.to_numeric(steps[col], errors="coerce").astype(float)
    return steps.sort_values(["run_id", "step"], kind="stable")


def _clean_grads(raw: pd.DataFrame) -> pd.DataFrame:
    grads = raw.copy()
    for col in ("run_id", "layer", "param"):
        grads[col] = grads[col].map(_text).astype(object)
    for col in ("step", "l2", "max_abs"):
        grads[col] = pd.to_numeric(grads[col], errors="coerce").astype(float)
    return grads.sort_values(["run_id", "step"], kind="stable")


# ----------------------------------------------------------------------------------------------------
# Formatting (all cells are plain strings; the template escapes them)


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
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


# ----------------------------------------------------------------------------------------------------
# Page model


@dataclass
class Table:
    """A figure's numbers, shown next to it so nothing is only readable off a plot."""

    columns: list[str]
    rows: list[list[str]]


@dataclass
class Chart:
    """One report section built around a figure; the table is always there, the image only with data."""

    anchor: str
    title: str
    caption: str
    table: Table
    png: str | None = None  # base64 PNG; None when there is nothing to plot
    empty_note: str = "No data to plot."


@dataclass
class Page:
    title: str
    summary: dict[str, Any]
    results: dict[str, Any]
    charts: list[Chart]
    provenance: dict[str, Any]
    toc: list[tuple[str, str]] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------
# Matplotlib helpers


def _new_figure(n_panels: int, ncols: int = 3, panel_h: float = 3.0) -> tuple[Figure, list[Axes]]:
    ncols = max(1, min(ncols, n_panels))
    nrows = max(1, math.ceil(n_panels / ncols))
    fig = Figure(figsize=(11.0, panel_h * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    fig.clear()
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _technique_colors(runs: pd.DataFrame) -> dict[str, str]:
    """One colour per technique, the same in every figure."""
    names = sorted(runs["technique"].unique())
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def _technique_handles(colors: dict[str, str], used: set[str]) -> list[Any]:
    return [Patch(color=c, label=_label(t)) for t, c in colors.items() if t in used]


def _grouped_x(runs: pd.DataFrame, span: float = 0.8) -> tuple[pd.DataFrame, list[tuple[float, str]]]:
    """Bar position and width of each run, clustered by board, plus each board's centre for its tick."""
    rows, centers = [], []
    for i, (board, group) in enumerate(runs.groupby("board", sort=True)):
        width = span / len(group)
        offsets = (np.arange(len(group)) - (len(group) - 1) / 2) * width
        rows += [(idx, i + off, width) for idx, off in zip(group.index, offsets, strict=True)]
        centers.append((float(i), board))
    pos = pd.DataFrame(rows, columns=["idx", "x", "w"]).set_index("idx")
    return pos, centers


def _board_ticks(ax: Axes, centers: list[tuple[float, str]]) -> None:
    ax.set_xticks([c for c, _ in centers], [_label(b) for _, b in centers])
    if len(centers) > 5:
        ax.tick_params(axis="x", labelrotation=30)
    ax.set_xlim(-0.6, len(centers) - 0.4)


# ----------------------------------------------------------------------------------------------------
# Summary, results table, provenance


def _summary(res: Results) -> dict[str, Any]:
    runs, meta = res.runs, res.meta
    counts = runs["status"].value_counts()
    problems = [r for r in runs.to_dict("records") if r["status"] != "ok"]
    lossy = runs[runs["lost_frames"] > 0]
    return {
        "profile": _text(meta.get("profile")) or DASH,
        "rack": _text(meta.get("rack")) or DASH,
        "when": _when(meta),
        "n_runs": len(runs),
        "status_counts": ", ".join(f"{n} {s or '(blank)'}" for s, n in counts.items()),
        "boards": _boards_line(runs),
        "techniques": ", ".join(sorted(runs["technique"].unique())),
        "problems": [
            {
                "label": r["label"],
                "status": r["status"],
                "status_class": _status_class(r["status"]),
                "message": _problem_message(r),
            }
            for r in problems
        ],
        "lost": [f"{lbl}: {n:.0f} lost frames" for lbl, n in zip(lossy["label"], lossy["lost_frames"], strict=True)],
        "notes": _notes(meta),
        "meta_problem": res.meta_problem,
    }


def _when(meta: dict[str, Any]) -> str:
    started, finished = _text(meta.get("started")), _text(meta.get("finished"))
    if not started:
        return DASH
    text = f"{started} → {finished}" if finished else started
    try:
        seconds = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    except (ValueError, TypeError):
        return text
    return f"{text} ({seconds / 60:.1f} min)"


def _boards_line(runs: pd.DataFrame) -> str:
    kinds = runs.groupby("board", sort=True)["target_kind"].agg(lambda k: "/".join(sorted(set(k) - {""})))
    return ", ".join(f"{b} ({k})" if k else b for b, k in kinds.items())


def _notes(meta: dict[str, Any]) -> list[str]:
    notes = meta.get("notes") or []
    return [_text(n) for n in notes] if isinstance(notes, list) else [_text(notes)]


def _status_class(status: str) -> str:
    """A CSS class from a fixed set: the status string itself is device-controlled."""
    return STATUS_CLASSES.get(status, "other")


def _unit_header(values: pd.Series, what: str, fallback: str) -> str:
    present = sorted(set(values) - {""})
    return f"{what} ({present[0]})" if len(present) == 1 else f"{what} ({fallback})"


def _results_table(runs: pd.DataFrame) -> dict[str, Any]:
    return {
        "work_header": _unit_header(
            runs.loc[runs["instr_per_step"].notna(), "count_unit"], "Work / step", "unit per cell"
        ),
        "energy_header": _unit_header(
            runs.loc[runs["energy_per_step_uj"].notna(), "energy_source"],
            "Energy / step, µJ",
            "source per cell",
        ),
        "rows": [_result_row(r) for r in runs.to_dict("records")],
    }


def _result_row(run: dict[str, Any]) -> dict[str, Any]:
    unit = run["count_unit"] or "counts"
    return {
        "board": run["board"],
        "kind": run["target_kind"],
        "technique": run["technique"],
        "model": run["model"],
        "status": run["status"],
        "status_class": _status_class(run["status"]),
        "error": run["error"] if run["status"] != "does-not-fit" else "",
        "nofit": _nofit_message(run) if run["status"] == "does-not-fit" else "",
        "steps": _num(run["steps"], "{:,.0f}"),
        "acc": f"{_num(run['acc_before'] * 100, '{:.1f}')} → {_num(run['acc_after'] * 100, '{:.1f}')}",
        "loss": _num(run["final_loss"], "{:.4g}"),
        "sram": [
            _kib(run["peak_sram_bytes"]),
            _kib(run["planned_sram_bytes"]),
            _kib(run["board_sram_bytes"]),
        ],
        "flash": [_kib(run["flash_bytes"]), _kib(run["board_flash_bytes"], "{:,.0f}")],
        "work": DASH if _missing(run["instr_per_step"]) else f"{_count(run['instr_per_step'])} {unit}",
        "energy": _num(run["energy_per_step_uj"], "{:.4g} µJ"),
        "energy_source": "" if _missing(run["energy_per_step_uj"]) else _source_label(run["energy_source"]),
    }


def _provenance(res: Results) -> dict[str, Any]:
    meta_rows = [[_text(k), _meta_value(v)] for k, v in res.meta.items()]
    cols = [
        "Run",
        "Board",
        "Technique",
        "Model",
        "Build",
        "Plan hash",
        "Journal",
        "Wall time",
        "Lost frames",
        "Twin fidelity (max rel. err.)",
    ]
    rows = [
        [
            r["run_id"],
            r["board"],
            r["technique"],
            r["model"],
            r["build_id"],
            r["plan_hash"],
            r["journal"],
            _num(r["wall_s"], "{:.1f} s"),
            _num(r["lost_frames"], "{:.0f}"),
            _num(r["fidelity_max_rel_err"], "{:.2e}"),
        ]
        for r in res.runs.to_dict("records")
    ]
    return {
        "meta": Table(["Field", "Value"], meta_rows),
        "runs": Table(cols, rows),
        "meta_problem": res.meta_problem,
        "bench_version": bench.__version__,
    }


def _meta_value(value: Any) -> str:
    if isinstance(value, list):
        return "; ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return _text(value)


# ----------------------------------------------------------------------------------------------------
# Charts


def _window(n: int) -> int:
    """Moving-average width: about a tenth of the run, so short runs stay visible and long ones smooth."""
    return max(1, min(50, n // 10))


def _loss_chart(res: Results, colors: dict[str, str]) -> Chart:
    runs, steps = res.runs, res.steps.dropna(subset=["step", "loss"])
    boards = sorted(runs["board"].unique())
    chart = Chart(
        "loss",
        "Training loss",
        "Per board, techniques overlaid: raw loss faint, moving average solid.",
        _loss_table(runs, steps),
    )
    if steps.empty:
        chart.empty_note = "No step data was recorded."
        return chart
    fig, axes = _new_figure(len(boards))
    drawn: set[str] = set()
    for ax, board in zip(axes, boards, strict=True):
        drawn |= _loss_panel(ax, runs[runs["board"] == board], steps, colors)
        ax.set_title(_label(board), fontsize=10)
    handles = _technique_handles(colors, drawn)
    fig.legend(handles=handles, loc="outside lower center", ncols=min(6, len(handles)), fontsize=8)
    chart.png = _png(fig)
    return chart


def _loss_panel(ax: Axes, runs: pd.DataFrame, steps: pd.DataFrame, colors: dict[str, str]) -> set[str]:
    """Draw one board's runs; return the techniques that had steps to draw."""
    drawn = set()
    for run in runs.to_dict("records"):
        s = steps[steps["run_id"] == run["run_id"]]
        if s.empty:
            continue
        color = colors[run["technique"]]
        smooth = s["loss"].rolling(_window(len(s)), min_periods=1).mean()
        ax.plot(s["step"], s["loss"], color=color, alpha=0.2, linewidth=0.8)
        ax.plot(s["step"], smooth, color=color, linewidth=1.8)
        drawn.add(run["technique"])
    if not drawn:
        ax.text(0.5, 0.5, "no steps recorded", ha="center", va="center", transform=ax.transAxes, color="gray")
        return drawn
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    return drawn


def _loss_table(runs: pd.DataFrame, steps: pd.DataFrame) -> Table:
    rows = []
    for run in runs.to_dict("records"):
        loss = steps.loc[steps["run_id"] == run["run_id"], "loss"]
        w = _window(len(loss))
        last_smooth = loss.rolling(w, min_periods=1).mean().iloc[-1] if len(loss) else np.nan
        rows.append(
            [
                run["board"],
                run["technique"],
                f"{len(loss):,}",
                _num(loss.iloc[0] if len(loss) else None),
                _num(loss.min()),
                _num(loss.iloc[-1] if len(loss) else None),
                _num(last_smooth),
                str(w),
            ]
        )
    cols = ["Board", "Technique", "Steps", "First loss", "Min loss", "Last loss", "Last (smoothed)", "Window"]
    return Table(cols, rows)


def _sram_chart(res: Results, colors: dict[str, str]) -> Chart:
    runs = res.runs
    chart = Chart(
        "sram",
        "Peak SRAM vs board SRAM",
        "Bars: measured peak. Diamonds: planned peak. Red dashes: the board's SRAM. "
        "Hatched outline: planned peak of a run that did not fit.",
        _sram_table(runs),
    )
    if runs[["peak_sram_bytes", "planned_sram_bytes", "board_sram_bytes"]].isna().all().all():
        return chart
    fig, (ax,) = _new_figure(1, panel_h=4.0)
    pos, centers = _grouped_x(runs)
    for idx, run in runs.iterrows():
        _sram_bar(ax, run, pos.at[idx, "x"], pos.at[idx, "w"], colors[run["technique"]])
    for i, board in centers:
        limit = runs.loc[runs["board"] == board, "board_sram_bytes"].max()
        if not _missing(limit):
            ax.hlines(limit / 1024, i - 0.45, i + 0.45, colors="#c44e52", linestyles="--", linewidth=2)
    _board_ticks(ax, centers)
    ax.set_ylabel("SRAM (KiB)")
    ax.grid(axis="y", alpha=0.3)
    extra = [
        Line2D([], [], color="#c44e52", linestyle="--", label="board SRAM"),
        Line2D([], [], color="black", marker="D", linestyle="", label="planned peak"),
        Patch(facecolor="none", edgecolor="gray", hatch="//", label="planned, did not fit"),
    ]
    ax.legend(
        handles=_technique_handles(colors, set(runs["technique"])) + extra,
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
    )
    chart.png = _png(fig)
    return chart


def _sram_bar(ax: Axes, run: pd.Series, x: float, w: float, color: str) -> None:
    planned, peak = run["planned_sram_bytes"], run["peak_sram_bytes"]
    if run["status"] == "does-not-fit" and not _missing(planned):
        ax.bar(x, planned / 1024, w * 0.9, facecolor="none", edgecolor=color, hatch="//")
    elif not _missing(peak):
        ax.bar(x, peak / 1024, w * 0.9, color=color)
    if not _missing(planned):
        ax.plot(x, planned / 1024, marker="D", color="black", markersize=5)


def _sram_table(runs: pd.DataFrame) -> Table:
    cols = [
        "Board",
        "Technique",
        "Status",
        "Measured peak",
        "Planned peak",
        "Board SRAM",
        "Headroom",
        "Static",
        "Stack",
        "Arena",
    ]
    rows = [
        [
            r["board"],
            r["technique"],
            r["status"],
            _exact_bytes(r["peak_sram_bytes"]),
            _exact_bytes(r["planned_sram_bytes"]),
            _exact_bytes(r["board_sram_bytes"]),
            _exact_bytes(
                r["board_sram_bytes"]
                - (r["planned_sram_bytes"] if _missing(r["peak_sram_bytes"]) else r["peak_sram_bytes"])
            ),
            _exact_bytes(r["static_bytes"]),
            _exact_bytes(r["stack_bytes"]),
            _exact_bytes(r["arena_bytes"]),
        ]
        for r in runs.to_dict("records")
    ]
    return Table(cols, rows)


def _work_chart(res: Results) -> Chart:
    runs = res.runs
    parts = ["instr_fwd_per_step", "instr_bwd_per_step", "instr_upd_per_step"]
    chart = Chart(
        "work",
        "Instructions / cycles per step",
        "Mean per training step, split into forward, backward and update. QEMU twins count "
        "instructions; hardware counts cycles: the axis says which.",
        _work_table(runs),
    )
    has = runs[runs[[*parts, "instr_per_step"]].notna().any(axis=1)]
    panels = sorted({(b, u) for b, u in zip(has["board"], has["count_unit"], strict=True)})
    if not panels:
        return chart
    fig, axes = _new_figure(len(panels))
    for ax, (board, unit) in zip(axes, panels, strict=True):
        _work_panel(ax, has[(has["board"] == board) & (has["count_unit"] == unit)], parts)
        ax.set_title(_label(board), fontsize=10)
        ax.set_ylabel(f"{_label(unit) or 'counts'} / step")
    axes[0].legend(handles=[Patch(color=c, label=p) for p, c in PART_COLORS.items()], fontsize=8)
    chart.png = _png(fig)
    return chart


def _work_panel(ax: Axes, runs: pd.DataFrame, parts: list[str]) -> None:
    x = np.arange(len(runs))
    bottom = np.zeros(len(runs))
    for col, color in zip(parts, PART_COLORS.values(), strict=True):
        values = runs[col].fillna(0).to_numpy()
        ax.bar(x, values, 0.6, bottom=bottom, color=color)
        bottom += values
    only_total = (bottom == 0) & runs["instr_per_step"].notna().to_numpy()
    ax.bar(x[only_total], runs["instr_per_step"].to_numpy()[only_total], 0.6, color="#bbbbbb")
    ax.set_xticks(x, [_label(t) for t in runs["series"]], rotation=30 if len(runs) > 3 else 0)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _count(v)))
    ax.grid(axis="y", alpha=0.3)


def _work_table(runs: pd.DataFrame) -> Table:
    cols = ["Board", "Technique", "Unit", "Forward", "Backward", "Update", "Total / step"]
    rows = [
        [
            r["board"],
            r["technique"],
            r["count_unit"] or DASH,
            _count(r["instr_fwd_per_step"]),
            _count(r["instr_bwd_per_step"]),
            _count(r["instr_upd_per_step"]),
            _count(r["instr_per_step"]),
        ]
        for r in runs.to_dict("records")
    ]
    return Table(cols, rows)


def _energy_chart(res: Results, colors: dict[str, str]) -> Chart:
    runs = res.runs[res.runs["energy_per_step_uj"].notna()]
    chart = Chart(
        "energy",
        "Energy per step",
        "One panel per energy source: modelled figures come from datasheet current times time, "
        "measured ones from a power meter. Never compare the two as equals.",
        _energy_table(res.runs),
    )
    sources = sorted(runs["energy_source"].unique())
    if not sources:
        return chart
    fig, axes = _new_figure(len(sources), ncols=2, panel_h=3.6)
    for ax, source in zip(axes, sources, strict=True):
        _energy_panel(ax, runs[runs["energy_source"] == source], colors, _label(_source_label(source)))
    chart.png = _png(fig)
    return chart


def _energy_panel(ax: Axes, runs: pd.DataFrame, colors: dict[str, str], source: str) -> None:
    pos, centers = _grouped_x(runs)
    for idx, run in runs.iterrows():
        ax.bar(
            pos.at[idx, "x"],
            run["energy_per_step_uj"],
            pos.at[idx, "w"] * 0.9,
            color=colors[run["technique"]],
        )
    _board_ticks(ax, centers)
    ax.set_title(f"energy per step ({source})", fontsize=10)
    ax.set_ylabel(f"µJ per step ({source})")
    ax.grid(axis="y", alpha=0.3)
    handles = _technique_handles(colors, set(runs["technique"]))
    ax.legend(
        handles=handles,
        fontsize=8,
        title=f"{source} energy",
        title_fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
    )


def _energy_table(runs: pd.DataFrame) -> Table:
    cols = ["Board", "Technique", "Energy source", "Energy / step (µJ)", "Steps", "Energy, all steps (mJ)"]
    rows = [
        [
            r["board"],
            r["technique"],
            _source_label(r["energy_source"]) if not _missing(r["energy_per_step_uj"]) else DASH,
            _num(r["energy_per_step_uj"], "{:.4g}"),
            _num(r["steps"], "{:,.0f}"),
            _num(r["energy_per_step_uj"] * r["steps"] / 1000, "{:.4g}"),
        ]
        for r in runs.to_dict("records")
    ]
    return Table(cols, rows)


def _accuracy_chart(res: Results, colors: dict[str, str]) -> Chart:
    runs = res.runs
    chart = Chart(
        "accuracy",
        "Accuracy before and after training",
        "Hollow circle: before training; filled: after; the line joins them.",
        _accuracy_table(runs),
    )
    if runs[["acc_before", "acc_after"]].isna().all().all():
        return chart
    fig, (ax,) = _new_figure(1, panel_h=3.8)
    pos, centers = _grouped_x(runs)
    for idx, run in runs.iterrows():
        x, before, after = pos.at[idx, "x"], run["acc_before"] * 100, run["acc_after"] * 100
        color = colors[run["technique"]]
        ax.plot([x, x], [before, after], color=color, linewidth=2)
        ax.plot(x, before, marker="o", markerfacecolor="white", markeredgecolor=color, markersize=8)
        ax.plot(x, after, marker="o", color=color, markersize=8)
    _board_ticks(ax, centers)
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy (%)")
    ax.grid(axis="y", alpha=0.3)
    extra = [
        Line2D([], [], marker="o", markerfacecolor="white", markeredgecolor="gray", linestyle="", label="before"),
        Line2D([], [], marker="o", color="gray", linestyle="", label="after"),
    ]
    ax.legend(
        handles=_technique_handles(colors, set(runs["technique"])) + extra,
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
    )
    chart.png = _png(fig)
    return chart


def _accuracy_table(runs: pd.DataFrame) -> Table:
    rows = [
        [
            r["board"],
            r["technique"],
            _pct(r["acc_before"]),
            _pct(r["acc_after"]),
            _num((r["acc_after"] - r["acc_before"]) * 100, "{:+.1f} pp"),
        ]
        for r in runs.to_dict("records")
    ]
    return Table(["Board", "Technique", "Before", "After", "Change"], rows)


def _grad_chart(res: Results, colors: dict[str, str]) -> Chart | None:
    if res.grads is None:
        return None
    grads = res.grads.merge(res.runs[["run_id", "board", "technique", "label"]], on="run_id", how="inner")
    grads = grads.dropna(subset=["step", "l2"])
    chart = Chart(
        "grads",
        "Gradient L2 norm per layer",
        "One panel per layer and parameter (w weights, b bias), one line per run coloured by "
        "technique; line style tells boards apart. Log scale.",
        _grad_table(grads),
    )
    panels = sorted({(layer, p) for layer, p in zip(grads["layer"], grads["param"], strict=True)}, key=_layer_key)[
        :MAX_GRAD_PANELS
    ]
    if not panels:
        return chart
    fig, axes = _new_figure(len(panels), ncols=4, panel_h=2.4)
    styles = _board_styles(grads)
    for ax, (layer, param) in zip(axes, panels, strict=True):
        _grad_panel(ax, grads[(grads["layer"] == layer) & (grads["param"] == param)], colors, styles)
        ax.set_title(f"layer {_label(layer)} · {_label(param)}", fontsize=9)
    _grad_legend(fig, colors, styles, set(grads["technique"]))
    chart.png = _png(fig)
    return chart


def _layer_key(panel: tuple[str, str]) -> tuple[int, float, str, bool, str]:
    """Numeric layers in numeric order, then named ones; weights before biases."""
    layer, param = panel
    try:
        return (0, float(layer), "", param != "w", param)
    except ValueError:
        return (1, 0.0, layer, param != "w", param)


def _plain_log_ticks(ax: Axes, values: pd.Series) -> None:
    """Plain-number ticks (10^x labels go through mathtext, which doubles the render time); 1-2-5 steps when
    the data spans under two decades, else a decade would hold no label at all."""
    positive = values[values > 0]
    narrow = math.log10(positive.max() / positive.min()) < 2
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if narrow else (1.0,)))
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _board_styles(grads: pd.DataFrame) -> dict[str, str]:
    styles = ["-", "--", ":", "-."]
    return {b: styles[i % len(styles)] for i, b in enumerate(sorted(grads["board"].unique()))}


def _grad_panel(ax: Axes, grads: pd.DataFrame, colors: dict[str, str], styles: dict[str, str]) -> None:
    for (_, board, technique), g in grads.groupby(["run_id", "board", "technique"], sort=True):
        ax.plot(g["step"], g["l2"], color=colors[technique], linestyle=styles[board], linewidth=1.2)
    if (grads["l2"] > 0).any():
        ax.set_yscale("log")
        _plain_log_ticks(ax, grads["l2"])
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)


def _grad_legend(fig: Figure, colors: dict[str, str], styles: dict[str, str], used: set[str]) -> None:
    board_handles = [Line2D([], [], color="gray", linestyle=s, label=_label(b)) for b, s in styles.items()]
    fig.legend(
        handles=_technique_handles(colors, used) + board_handles,
        loc="outside lower center",
        ncols=min(6, len(used) + len(styles)),
        fontsize=8,
    )


def _grad_table(grads: pd.DataFrame) -> Table:
    rows = []
    for (_, layer, param), g in grads.groupby(["label", "layer", "param"], sort=True):
        rows.append(
            [
                g["board"].iloc[0],
                g["technique"].iloc[0],
                layer,
                param,
                f"{len(g):,}",
                _num(g["l2"].iloc[0]),
                _num(g["l2"].iloc[-1]),
                _num(g["l2"].max()),
                _num(g["max_abs"].max()),
            ]
        )
    cols = ["Board", "Technique", "Layer", "Param", "Samples", "First L2", "Last L2", "Max L2", "Max |g|"]
    return Table(cols, rows)


# ----------------------------------------------------------------------------------------------------
# Rendering


def build_page(res: Results) -> Page:
    """Everything the template needs, as plain strings and base64 images."""
    colors = _technique_colors(res.runs)
    charts = [
        _loss_chart(res, colors),
        _sram_chart(res, colors),
        _work_chart(res),
        _energy_chart(res, colors),
        _accuracy_chart(res, colors),
        _grad_chart(res, colors),
    ]
    charts = [c for c in charts if c is not None]
    summary = _summary(res)
    title = f"Training bench report · {summary['profile']}"
    toc = [
        ("summary", "Summary"),
        ("results", "Results"),
        *[(c.anchor, c.title) for c in charts],
        ("provenance", "Provenance"),
    ]
    return Page(title, summary, _results_table(res.runs), charts, _provenance(res), toc)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("bench", "templates"),
        autoescape=True,  # every value may come from a device
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(res: Results) -> str:
    return _environment().get_template("report.html.j2").render(page=build_page(res))


def write_report(results_dir: Path, out: Path | None = None) -> Path:
    """Render ``results_dir`` into one HTML file (default ``results_dir/index.html``) and return its path."""
    results_dir = Path(results_dir)
    out = Path(out) if out is not None else results_dir / "index.html"
    html = render_html(load_results(results_dir))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out
