"""``bench compare``: the nightly regression gate over two stored results directories (no board needed)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:  # bench.report.compare pulls in pandas: imported when a command runs, not by `bench --help`
    from rich.table import Table

    from bench.report.compare import Comparison, Delta, Pair

VERDICT_STYLES = {"regression": "bold red", "missing": "bold red", "improvement": "green", "new": "cyan"}
DELTA_STYLES = {"regression": "red", "improvement": "green"}


def _value(metric: str, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if metric == "accuracy":
        return f"{value * 100:.1f}%"
    if metric == "energy":
        return f"{value:.4g} µJ"
    if metric == "instructions":
        return f"{value / 1e6:.4g} M" if value >= 1e6 else f"{value:,.0f}"
    return f"{value:,.0f}"


def _cell(d: Delta | None) -> str:
    if d is None:
        return ""
    text = f"{_value(d.metric, d.baseline)} → {_value(d.metric, d.current)}"
    detail = d.change or d.note
    text = escape(f"{text} ({detail})" if detail else text)
    style = DELTA_STYLES.get(d.verdict)
    return f"[{style}]{text}[/]" if style else text


def _row(pair: Pair) -> list[str]:
    from bench.report.compare import METRICS

    deltas = {d.metric: d for d in pair.deltas}
    style = VERDICT_STYLES.get(pair.verdict, "")
    verdict = f"[{style}]{pair.verdict}[/]" if style else pair.verdict
    cells = [_cell(deltas.get(m.name)) for m in METRICS]
    return [escape(pair.board), escape(pair.technique), verdict, *cells, escape(pair.note)]


def comparison_table(comp: Comparison) -> Table:
    """Every (board, technique): regressions red, improvements green, missing runs named."""
    from rich.table import Table

    from bench.report.compare import METRICS

    th = ", ".join(f"{k} {v:g}" for k, v in comp.thresholds.items())
    table = Table(title=f"{comp.current} against baseline {comp.baseline}", caption=f"thresholds: {th} "
                  f"({comp.thresholds_source})")  # fmt: skip
    for col in ("board", "technique", "verdict", *[m.label for m in METRICS], "note"):
        table.add_column(escape(col))
    for pair in comp.pairs:
        table.add_row(*_row(pair))
    return table


def json_row(row: dict[str, object]) -> str:
    """One results row as a JSON object; NaN (a figure the run did not produce) becomes null."""
    clean = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
    return json.dumps(clean, default=str)


def wide_console(stderr: bool = False) -> Console:
    """A console for tables: the terminal's width, or 200 columns when not a terminal, so piped output (``| less``,
    ``> file``, CI logs) is never cut at 80 columns."""
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=200)


def verdict_line(comp: Comparison) -> str:
    s = comp.summary()
    counts = ", ".join(f"{s[k]} {k}" for k in ("regression", "missing", "improvement", "unchanged", "new"))
    return f"{'REGRESSION' if comp.regressed else 'ok'}: {counts}"


@click.command("compare")
@click.argument("baseline_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("current_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--thresholds", "thresholds_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="TOML with a [thresholds] table (sram_pct, flash_pct, instructions_pct, "
              "energy_pct, accuracy_points); overrides the profile's")  # fmt: skip
@click.option("--no-report", is_flag=True, help="do not re-render CURRENT_DIR/index.html")
@click.option("--json", "as_json", is_flag=True, help="print the comparison as JSON on stdout (the table goes nowhere)")
def compare_cmd(baseline_dir: Path, current_dir: Path, thresholds_file: Path | None, no_report: bool,
                as_json: bool) -> None:
    """Compare CURRENT_DIR with BASELINE_DIR per (board, technique); exit 1 on any regression."""
    from bench.report.compare import compare_dirs, write_comparison

    try:
        comp = compare_dirs(baseline_dir, current_dir, thresholds_file)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    err = Console(stderr=True)
    for warning in comp.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    if as_json:
        click.echo(comp.to_json())
    else:
        wide_console().print(comparison_table(comp))
    path = write_comparison(comp, current_dir)
    if not no_report:
        from bench.report.html import write_report

        err.print(f"report: {write_report(current_dir)} (comparison in {path.name})")
    err.print(verdict_line(comp), style="bold red" if comp.regressed else "green")
    if comp.regressed:
        sys.exit(1)


@click.command("recover")
@click.argument("results_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--no-report", is_flag=True, help="do not re-render RESULTS_DIR/index.html")
@click.option("--json", "as_json", is_flag=True, help="print the recovered runs' results rows as JSON lines on stdout")
def recover_cmd(results_dir: Path, no_report: bool, as_json: bool) -> None:
    """Rebuild the records of runs a stopped bench never wrote (from their journals) into RESULTS_DIR's tables."""
    from rich.table import Table

    from bench.config.boards import load_catalogue
    from bench.records.recover import RecoverError, recover

    try:
        done = recover(results_dir, load_catalogue())
    except RecoverError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        for record in done.records:
            click.echo(json_row(record.run_row()))
    console = wide_console(stderr=as_json)
    if not done.records:
        console.print(f"nothing to recover: every run that started in {results_dir} is recorded "
                      f"({done.already_recorded} runs)")
    else:
        table = Table(title=f"recovered into {results_dir}/runs.parquet (status unfinished)")
        for col in ("run", "steps", "last step", "summary", "lost frames", "journal"):
            table.add_column(col)
        for r in done.records:
            last = str(r.steps[-1].step) if r.steps else "–"
            table.add_row(escape(r.run_id), str(len(r.steps)), last, "yes" if r.summary else "no",
                          str(r.lost_frames), escape(r.journal))
        console.print(table)
        console.print(f"{len(done.records)} run(s) recovered, {done.already_recorded} already recorded")
    if not no_report:
        from bench.report.html import write_report

        Console(stderr=True).print(f"report: {write_report(results_dir)}")
