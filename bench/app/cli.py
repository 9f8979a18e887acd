"""The ``bench`` command line: boards, build, run, report, bench (benchmarks)."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape

from bench.app.cli_federate import federate_cmd
from bench.app.cli_flower import flower_node_cmd, flower_run_cmd
from bench.app.cli_lab import twin_host_cmd
from bench.app.cli_plan import plan_cmd
from bench.app.cli_rack import rack_group
from bench.app.cli_report import compare_cmd, json_row, recover_cmd, wide_console
from bench.app.cli_verify import verify_cmd

if TYPE_CHECKING:  # everything below pulls in numpy/pandas/the planners: imported by the commands that run them
    from rich.table import Table

    from bench.app.benchmark import StepCost, Workload
    from bench.config.boards import Rack
    from bench.config.profile import Profile
    from bench.records.run import RunRecord

console = Console(stderr=True)
DEFAULT_OUT = Path("reports/latest")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mcu-train-bench", prog_name="bench")
@click.option("-v", "--verbose", count=True, help="say more on stderr: -v what the bench does (QEMU starts, "
              "flashing, retries, runs), -vv link-level detail")
def main(verbose: int) -> None:
    """Hardware-in-the-loop bench for on-device training on microcontrollers."""
    setup_logging(verbose)


def setup_logging(verbose: int) -> None:
    """Warnings always; ``-v`` adds what the bench does, ``-vv`` link detail; to stderr, beside the progress bars."""
    from rich.logging import RichHandler

    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = RichHandler(console=console, show_path=False, markup=False, rich_tracebacks=False)
    logger = logging.getLogger("bench")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


@main.command()
@click.option("--rack", "rack_spec", default=None, help="rack TOML file (default: the emulated rack)")
@click.option("--json", "as_json", is_flag=True, help="print the catalogue and rack as JSON instead of tables")
def boards(rack_spec: str | None, as_json: bool) -> None:
    """List the board catalogue and the rack."""
    from rich.table import Table

    from bench.app.lab import listed_rack
    from bench.config.boards import load_catalogue, load_rack

    catalogue = load_catalogue()
    rack = load_rack(rack_spec, catalogue)
    if rack.labgrid is not None:  # its places, as the coordinator lists them now (none is acquired)
        rack = listed_rack(rack, catalogue)
    if as_json:
        click.echo(json.dumps({"catalogue": [b.model_dump(mode="json") for b in catalogue.values()],
                               "rack": rack.model_dump(mode="json")}, indent=1))
        return
    table = Table(title="Board catalogue (boards/*.toml)")
    for col in ("board", "MCU", "core", "SRAM", "flash", "clock", "twin machine", "pyocd target"):
        table.add_column(col)
    for b in catalogue.values():
        table.add_row(b.name, b.mcu, b.core, f"{b.sram_bytes // 1024} KB", f"{b.flash_bytes // 1024} KB",
                      f"{b.cpu_hz / 1e6:g} MHz", b.twin.machine, b.pyocd.target)
    rtable = Table(title=f"Rack '{rack.name}'")
    for col in ("name", "board", "kind", "reached by"):
        rtable.add_column(col)
    for e in rack.boards:
        reach = (f"labgrid place {e.place} on exporter {e.exporter}" if e.place else
                 f"QEMU {catalogue[e.board].twin.machine}" if e.kind == "emulated" else
                 f"probe {e.probe_uid or 'any'} / {e.port or '?'}")
        rtable.add_row(e.label, e.board, e.kind, reach)
    out = wide_console()
    out.print(table)
    out.print(rtable)


@main.command()
@click.option("--board", "names", multiple=True, help="only these boards")
@click.option("--variant", type=click.Choice(["twin", "hardware", "all"]), default="twin", show_default=True,
              help="QEMU-twin image, real-board image (built and checked on the host only), or both")
def build(names: tuple[str, ...], variant: str) -> None:
    """Build the firmware images of every board (skipped when up to date)."""
    from bench.config.boards import load_catalogue
    from bench.image.firmware import build_firmware

    variants = ("twin", "hardware") if variant == "all" else (variant,)
    for name, board in load_catalogue().items():
        if names and name not in names:
            continue
        for v in variants:
            fw = build_firmware(board, v)
            console.print(f"{name} ({v}): build {fw.build_id}, flash {fw.flash_bytes:,} B, static SRAM "
                          f"{fw.static_bytes:,} B → {fw.elf}")


# exit 0 only when every run is ok, an expected does-not-fit, or diverged (a finding about the lr)
OK_STATUSES = ("ok", "does-not-fit", "diverged")


@main.command()
@click.argument("profile_spec")
@click.option("--rack", "rack_spec", default=None, help="rack TOML file (default: the emulated rack)")
@click.option("--board", "names", multiple=True, help="only these boards of the rack")
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True)
@click.option("--technique", "techniques", multiple=True, help="only these techniques (overrides the profile's)")
@click.option("--steps", type=int, default=None, help="override the profile's steps")
@click.option("--seed", type=int, default=None, help="override the profile's seed")
@click.option("--lr", type=float, default=None, help="override the profile's lr (every numerics, no sweep)")
@click.option("--repeats", type=int, default=None, help="override the profile's repeats")
@click.option("--json", "as_json", is_flag=True, help="print every run's results row as JSON lines on stdout "
              "(progress and tables go to stderr)")
def run(profile_spec: str, rack_spec: str | None, names: tuple[str, ...], out: Path, techniques: tuple[str, ...],
        steps: int | None, seed: int | None, lr: float | None, repeats: int | None, as_json: bool) -> None:
    """Run PROFILE (a name in profiles/ or a TOML path) on the rack; write results and the HTML report.

    Exit codes: 0 every run ok, does-not-fit or diverged; 1 some run failed (named); 2 bad input (a profile, rack,
    model or option that cannot be used, named)."""
    from bench.app import runner
    from bench.app.cli_study import print_study
    from bench.app.lab import held_rack
    from bench.config.boards import filter_rack, load_catalogue, load_rack
    from bench.report.html import write_report

    overrides: dict[str, object] = {"techniques": techniques or None, "steps": steps, "seed": seed, "repeats": repeats,
                 **({"lr": lr, "lr_int8": None, "lr_by_technique": {}} if lr is not None else {})}
    profile = runner.with_overrides(runner.load_profile(profile_spec), {k: v for k, v in overrides.items()
                                                                   if v is not None})
    started = time.monotonic()
    catalogue = load_catalogue()
    with held_rack(filter_rack(load_rack(rack_spec, catalogue), list(names)), catalogue, _say) as rack:
        records = _run_on(profile, rack, out)
    report = write_report(out)
    import pandas as pd

    from bench.report.study import is_study

    table = pd.DataFrame([r.run_row() for r in records])
    if as_json:
        for row in table.to_dict("records"):
            click.echo(json_row(row))
    elif is_study(table):
        print_study(table, console, time.monotonic() - started, runner.budget_schemes(out))
    else:
        wide_console().print(summary_table(records))
    console.print(f"results: {out}/runs.parquet, steps.parquet, grads.parquet; journals: {out}/journal/",
                  soft_wrap=True)
    console.print(f"report: {report}", soft_wrap=True)
    failed = [r for r in records if r.status not in OK_STATUSES]
    if failed:
        console.print(f"[red]{len(failed)} of {len(records)} runs failed[/]: "
                      + ", ".join(f"{r.run_id} ({r.status})" for r in failed[:10]))
        sys.exit(1)


def _say(message: str) -> None:
    console.print(escape(message), soft_wrap=True, highlight=False)


def _run_on(profile: Profile, rack: Rack, out: Path) -> list[RunRecord]:
    """The profile on a rack (its labgrid places already held), with one progress bar per board."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from bench.app import runner
    from bench.app.cli_progress import LiveProgress
    from bench.app.cli_study import expected_runs

    console.print(f"profile [bold]{profile.name}[/]: {profile.model} on {profile.task}, "
                  f"{', '.join(t.name for t in profile.parsed_techniques())}; rack {rack.name} "
                  f"({len(rack.boards)} boards)")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    per_kind = {e.board: sum(1 for x in rack.boards if x.board == e.board) for e in rack.boards}
    with Progress(*columns, console=console) as bar:
        runs_per_entry = {e.label: -(-expected_runs(profile) // per_kind[e.board]) for e in rack.boards}
        live = LiveProgress(bar, runs_per_entry, profile.steps)
        records = runner.run_profile(profile, rack, out, progress=live)
    return records


def _fmt(value: object, spec: str, scale: float = 1.0) -> str:
    """A figure of a results row (NaN or None: a dash), times ``scale``."""
    if not isinstance(value, int | float) or math.isnan(value):
        return "–"
    return format(value * scale, spec)


def summary_table(records: list[RunRecord]) -> Table:
    from rich.table import Table

    table = Table(title="Runs: accuracy, loss, SRAM and counts measured on the device or twin; energy modelled")
    for col in ("board", "technique", "status", "acc before→after", "final loss", "peak SRAM / board",
                "instr/step", "energy/step", "grad rel err"):
        table.add_column(col)
    for r in sorted(records, key=lambda r: r.run_id):
        row = r.run_row()
        acc = f"{_fmt(row['acc_before'], '.1f', 100)}% → {_fmt(row['acc_after'], '.1f', 100)}%"
        if r.loss_kind == "reconstruction":  # no classes: the eval reconstruction error is the figure
            acc = f"MSE {_fmt(row['loss_before'], '.2f')} → {_fmt(row['loss_after'], '.2f')}"
        sram = f"{_fmt(row['peak_sram_bytes'], ',.0f')} / {row['board_sram_bytes']:,} B"
        # does-not-fit: the error ends "needs N B of SRAM|flash but the board has M B" (bench.image.firmware.DoesNotFit)
        error = r.error.rsplit(": ", 1)[-1] if r.status == "does-not-fit" else r.error
        status = r.status if r.status == "ok" else f"{r.status}: {error[:80]}"
        energy = f"{_fmt(row['energy_per_step_uj'], '.2f')} µJ ({row['energy_source']})"
        table.add_row(r.board.name, r.technique, status, acc, _fmt(row["final_loss"], ".3f"), sram,
                      _fmt(row["instr_per_step"], ",.0f"), energy, _fmt(row["fidelity_max_rel_err"], ".1e"))
    return table


@main.command()
@click.argument("results_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="HTML file (default: DIR/index.html, or DIR/federation.html for `bench federate` results)")
def report(results_dir: Path, out: Path | None) -> None:
    """Rebuild the HTML report from stored results, without any board: a run's (runs.parquet) or a federation's
    (rounds.parquet)."""
    if not (results_dir / "runs.parquet").is_file() and (results_dir / "rounds.parquet").is_file():
        from bench.report.federation import write_federation_report

        console.print(f"report: {write_federation_report(results_dir, out)}")
        return
    from bench.report.html import write_report

    console.print(f"report: {write_report(results_dir, out)}")


def user_errors() -> tuple[type[Exception], ...]:
    """Errors that mean bad input (a profile, rack, model or option that cannot be used): exit 2 with the message,
    never a traceback. Imported here, when one was raised, so `bench --help` does not import the planners."""
    from bench.config.boards import ConfigError
    from bench.config.profile import TechniqueError
    from bench.image.firmware import ImageError
    from bench.plan.fp32mem import Fp32MemError
    from bench.plan.int8 import QPlanError
    from bench.target.lab import LabError
    from bench.tflite.head import HeadError
    from bench.tflite.io import TFLiteImportError

    return ConfigError, TechniqueError, ImageError, TFLiteImportError, QPlanError, Fp32MemError, HeadError, LabError


def entry() -> None:
    try:
        main(standalone_mode=True)
    except Exception as e:
        if not isinstance(e, user_errors()):
            raise
        console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        sys.exit(2)


@main.command("bench")
@click.option("--board", "names", multiple=True, default=("nucleo-f746zg", "nrf52840-dk", "rpi-pico"),
              show_default=True)
@click.option("--steps", default=50, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/bench"), show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the measured costs as JSON on stdout")
@click.option("--workload", "workloads", multiple=True, type=click.Choice(["mlp", "cnn"]), default=("mlp", "cnn"),
              show_default=True, help="AIfES's workloads: the 64-32-10 MLP, the 16x16 CNN with maxpool")
@click.option("--ops", is_flag=True, help="instead: the per-op table of digits-cnn, fp32 vs int8 (issue 11's bound)")
@click.option("--forward-only", is_flag=True,
              help="instead: PEPITA and MEMPEPITA against full backprop and last-layer on digits-cnn and digits-mlp "
                   "(memory, instructions and accuracy after 300 steps)")
@click.option("--kernels", is_flag=True,
              help="instead: every int8 training kernel alone (forward, input and weight gradient, update) on "
                   "digits-cnn's and a MobileNet block's shapes, checked against its reference, per MAC vs targets")
@click.option("--sram", is_flag=True,
              help="instead: SRAM of sparse-int8 (measured on a twin) vs full-fp32 (planned) for person_detect and "
                   "VWW, the ratio MCUNetV3 reports as 20-21x")
def bench_cmd(names: tuple[str, ...], steps: int, out: Path, as_json: bool, workloads: tuple[str, ...],
              ops: bool, forward_only: bool, kernels: bool, sram: bool) -> None:
    """Benchmark: instructions and memory per fp32 training step of AIfES's MLP and CNN workloads, against AIfES on
    the same twin; with --ops, instructions per MAC of every op of digits-cnn in fp32 and int8 against the SMLAD
    bound; with --kernels, the int8 kernels one by one (exit 1 if a result differs from its reference kernel); with
    --sram, sparse-int8 against full-fp32 memory on the imported MobileNets."""
    import dataclasses

    if ops:
        _bench_ops(list(names), out, as_json)
        return
    if kernels:
        _bench_kernels(list(names), out, as_json)
        return
    if sram:
        _bench_sram(out, as_json)
        return
    if forward_only:
        _bench_forward_only(list(names), out, as_json)
        return
    from bench.app.benchmark import WORKLOADS, workload_costs

    results = {w: workload_costs(out / w, WORKLOADS[w], list(names), ["full-fp32", "last-fp32"], steps)
               for w in workloads}
    if as_json:
        click.echo(json.dumps({"how": "counts and peaks measured on twins (QEMU -icount); training bytes planned",
                               "workloads": {w: {"aifes": dataclasses.asdict(WORKLOADS[w]),
                                                 "costs": [dataclasses.asdict(c) | {"total": c.total} for c in cs]}
                                             for w, cs in results.items()}}, indent=1))
        return
    for w, costs in results.items():
        _print_workload(WORKLOADS[w], costs)


def _print_workload(w: Workload, costs: list[StepCost]) -> None:
    from rich.table import Table

    table = Table(title=f"{w.name}, fp32, batch 1 — measured on twins (QEMU -icount)")
    for col in ("board", "technique", "forward", "backward", "update", "total/step", "AIfES full step ÷ ours"):
        table.add_column(col, justify="right")
    for c in costs:
        same_work = c.board == "nucleo-f746zg" and c.technique == "full-fp32"  # AIfES measured full backprop
        ratio = f"{w.aifes_step / c.total:.2f}x" if same_work else "–"
        table.add_row(c.board, c.technique, f"{c.fwd:,.0f}", f"{c.bwd:,.0f}", f"{c.upd:,.0f}",
                      f"{c.total:,.0f} {c.unit}", ratio)
    wide_console().print(table)
    m7 = [c for c in costs if c.board == "nucleo-f746zg" and c.technique == "full-fp32"]
    if not m7:
        return
    c = m7[0]
    console.print(f"AIfES on the M7 twin: {w.aifes_step:,} instructions per full step, {w.aifes_forward:,} per "
                  f"forward; target ≥ {w.target_ratio:g}x fewer per step. Ours, measured: {c.total:,.0f} per step "
                  f"({w.aifes_step / c.total:.2f}x fewer), {c.fwd:,.0f} per forward "
                  f"({w.aifes_forward / c.fwd:.2f}x fewer)", soft_wrap=True)
    console.print(f"memory, full-fp32 on the M7 twin: AIfES {w.aifes_params_bytes:,} B parameters + "
                  f"{w.aifes_training_bytes:,} B training memory, stack peak {w.aifes_stack_bytes:,} B; ours "
                  f"{c.params_bytes:,} B parameters + {c.training_bytes:,.0f} B training memory (planned: "
                  f"activations, gradients, optimizer), arena peak {c.arena_peak_bytes:,.0f} B measured (trained "
                  f"parameter copies included), stack peak {c.stack_peak_bytes:,.0f} B measured", soft_wrap=True)


def _bench_forward_only(names: list[str], out: Path, as_json: bool) -> None:
    import dataclasses

    from rich.table import Table

    from bench.app.benchmark import forward_only_table

    rows = forward_only_table(out / "forward-only", names)
    if as_json:
        click.echo(json.dumps({"how": "SRAM, counts and accuracy measured on twins (QEMU -icount); arena planned",
                               "rows": [dataclasses.asdict(r) for r in rows]}, indent=1))
        return
    table = Table(title="forward-only training vs backprop, fp32, digits-drift, batch 1 — measured on twins "
                        "(planned arena beside the measured one)")
    for col in ("model", "board", "technique", "peak SRAM", "arena peak", "planned arena", "per step", "÷ full",
                "acc before → after", "fidelity"):
        table.add_column(col, justify="right")
    full = {(r.model, r.board): r for r in rows if r.technique == "full-fp32"}
    for r in rows:
        base = full[(r.model, r.board)]
        table.add_row(r.model, r.board, r.technique, f"{r.peak_sram_bytes:,.0f} B", f"{r.arena_peak_bytes:,.0f} B",
                      f"{r.planned_arena_bytes:,} B", f"{r.counts_per_step:,.0f} {r.unit}",
                      f"{r.counts_per_step / base.counts_per_step:.2f}x",
                      f"{r.acc_before:.1%} → {r.acc_after:.1%} ({r.steps} steps)", f"{r.fidelity_max_rel_err:.1e}")
    wide_console().print(table)


def _bench_sram(out: Path, as_json: bool) -> None:
    import dataclasses

    from rich.table import Table

    from bench.app.benchmark import sram_ratios

    try:
        rows = sram_ratios(out / "sram")
    except RuntimeError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps({"how": "sparse-int8 peak SRAM measured on a twin (planned if it fits none); full-fp32 "
                                      "planned (bench.plan.fp32mem)",
                               "rows": [dataclasses.asdict(r) | {"ratio_planned": r.ratio(r.fp32_planned_bytes),
                                                                 "ratio_naive": r.ratio(r.fp32_naive_bytes)}
                                        for r in rows]}, indent=1))
        return
    table = Table(title="SRAM: sparse-int8 (profile's scheme) vs full-fp32 backprop — bytes, static + arena + stack")
    for col in ("model", "sparse-int8 planned", "sparse-int8 measured", "full-fp32 planned", "full-fp32 naive",
                "fp32 planned ÷ sparse", "fp32 naive ÷ sparse"):
        table.add_column(col, justify="right")
    for r in rows:
        measured = f"{r.sparse_measured_bytes:,.0f} ({r.measured_on})" if r.measured_on else "fits no twin"
        table.add_row(r.model, f"{r.sparse_planned_bytes:,}", measured, f"{r.fp32_planned_bytes:,}",
                      f"{r.fp32_naive_bytes:,}", f"{r.ratio(r.fp32_planned_bytes):.1f}x",
                      f"{r.ratio(r.fp32_naive_bytes):.1f}x")
    wide_console().print(table)
    console.print(f"planned figures are for {rows[0].board if rows else '?'} (its built twin image's static bytes and "
                  "stack reserve); the ratios divide by the measured sparse peak where a twin measured it. "
                  "full-fp32 planned: the engine's arena (lifetime sharing, in-place update); naive: every "
                  "activation, gradient and fp32 weight kept at once, MCUNetV3's full-update baseline. Target: "
                  ">= 20x (MCUNetV3: 20-21x).", soft_wrap=True)


def _bench_kernels(names: list[str], out: Path, as_json: bool) -> None:
    import dataclasses

    from rich.table import Table

    from bench.app.kernels import ICOUNT_SHIFT, SMLAD_BOUND, KernelBenchError, kernel_costs
    from bench.config.boards import boards_named, load_catalogue

    catalogue = load_catalogue()
    costs = []
    for board in boards_named(catalogue, names):
        with console.status(f"{board.name}: building and running the kernel benchmark on its twin"):
            try:
                costs += kernel_costs(board, out / "kernels" / board.name)
            except KernelBenchError as exc:
                console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
                sys.exit(2)
    wrong = [c for c in costs if not c.exact]
    if as_json:
        click.echo(json.dumps({"how": f"measured on twins (QEMU -icount shift={ICOUNT_SHIFT})",
                               "smlad_bound_instr_per_mac": SMLAD_BOUND,
                               "kernels": [dataclasses.asdict(c) | {"per_work": c.per_work} for c in costs]},
                              indent=1))
    else:
        table = Table(title=f"int8 training kernels alone — measured on twins (QEMU -icount); SMLAD bound "
                            f"{SMLAD_BOUND} instr/MAC; targets on M4/M7")
        for col in ("board", "op", "shape", "phase", "MACs / weights", "instructions", "per MAC / weight",
                    "target", "vs reference"):
            table.add_column(col, justify="right")
        for c in costs:
            dsp = catalogue[c.board].core != "cortex-m0plus"
            met = "–" if not dsp else f"{c.target:g} {'met' if c.per_work <= c.target else 'not met'}"
            table.add_row(c.board, c.op, c.shape, c.phase, f"{c.work:,}", f"{c.instructions:,.0f}",
                          f"{c.per_work:.2f}", met, "exact" if c.exact else "[red]DIFFERS[/]")
        wide_console().print(table)
    if wrong:
        console.print(f"[red]{len(wrong)} kernel result(s) differ from the reference kernel[/] (logs under {out})")
        sys.exit(1)


def _bench_ops(names: list[str], out: Path, as_json: bool) -> None:
    import dataclasses

    from rich.table import Table

    from bench.app.benchmark import SMLAD_BOUND, op_costs

    costs, steps = op_costs(out, names)
    if as_json:
        click.echo(json.dumps({"how": "measured on twins (QEMU -icount)", "smlad_bound_instr_per_mac": SMLAD_BOUND,
                               "ops": [dataclasses.asdict(c) for c in costs],
                               "steps": [dataclasses.asdict(s) | {"total": s.total} for s in steps]}, indent=1))
        return
    table = Table(title=f"digits-cnn, full backprop, per op and step — measured on twins (QEMU -icount); SMLAD bound "
                        f"{SMLAD_BOUND} instr/MAC")
    for col in ("board", "numerics", "op", "MACs", "fwd", "fwd/MAC", "bwd", "bwd/MAC", "update", "upd/weight"):
        table.add_column(col, justify="right")
    for c in costs:
        table.add_row(c.board, c.numerics, f"{c.index} {c.kind}", f"{c.macs:,}", f"{c.fwd:,.0f}",
                      _fmt(c.per(c.fwd, c.macs), ".2f"), f"{c.bwd:,.0f}", _fmt(c.per(c.bwd, c.macs), ".2f"),
                      f"{c.upd:,.0f}", _fmt(c.per(c.upd, c.weights), ".2f"))
    wide_console().print(table)
    by = {(s.board, s.technique): s.total for s in steps}
    for board in names:
        fp32, int8 = by[(board, "full-fp32")], by[(board, "full-int8")]
        console.print(f"{board}: full step fp32 {fp32:,.0f}, int8 {int8:,.0f} instructions: int8 / fp32 = "
                      f"{int8 / fp32:.2f} (target <= 0.5 on M4/M7, <= 0.15 on M0+)", soft_wrap=True)


@main.command()
@click.option("--runs", default=50, show_default=True, help="how many runs")
@click.option("--seed", default=1, show_default=True, help="seed of the fault draws")
@click.option("--profile", "profile_spec", default="quick", show_default=True,
              help="profile whose model, task and techniques the runs use (shortened: 40 steps, 3 s stall timeout)")
@click.option("--rack", "rack_spec", default=None, help="rack TOML file (default: the emulated rack)")
@click.option("--board", "names", multiple=True, help="only these boards of the rack")
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/soak"), show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the soak's books as JSON on stdout (table on stderr)")
def soak(runs: int, seed: int, profile_spec: str, rack_spec: str | None, names: tuple[str, ...], out: Path,
         as_json: bool) -> None:
    """Soak: RUNS short runs through a fault-injecting link (bit errors, dropped/inserted bytes, stalls,
    disconnects); print what happened and check that nothing was lost or left running. Exit 1 if anything was."""
    from rich.table import Table

    from bench.app.runner import load_profile
    from bench.app.soak import CLEAN_FAILURES, soak_profile
    from bench.config.boards import filter_rack, load_catalogue, load_rack

    profile = soak_profile(load_profile(profile_spec))
    catalogue = load_catalogue()
    rack = filter_rack(load_rack(rack_spec, catalogue), list(names))
    if rack.labgrid is not None:
        raise click.UsageError("bench soak puts a fault proxy on local ports; run it on a local rack, not labgrid")
    console.print(f"soak: {runs} runs of {profile.name} ({', '.join(profile.techniques)}) on {len(rack.boards)} "
                  f"boards, random link faults from seed {seed}")

    def said(record: RunRecord, n: int) -> None:
        lost = f", {record.lost_frames} frames lost and counted" if record.lost_frames else ""
        console.print(f"[{n}/{runs}] {escape(record.run_id)}: faults {escape(record.link_faults)} → "
                      f"{record.status}{lost}", highlight=False, soft_wrap=True)

    from bench.app.soak import soak as run_soak
    from bench.report.html import write_report

    result = run_soak(profile, rack, out, runs, seed, on_record=said)
    table = Table(title=f"soak of {runs} runs through the fault proxy ({result.wall_s:.0f} s)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("runs ok", str(result.statuses.get("ok", 0)))
    for status in CLEAN_FAILURES:
        table.add_row(f"runs failed cleanly: {status}", str(result.statuses.get(status, 0)))
    table.add_row("runs with another status (must be 0)", str(len(result.unexpected)))
    table.add_row("frames damaged by the proxy", f"{result.frames_damaged:,}")
    table.add_row("frames counted lost by the host", f"{result.frames_counted:,}")
    table.add_row("ok runs where the two differ (must be 0)", str(len(result.ok_mismatches)))
    table.add_row("records lost (must be 0)", str(result.records_lost))
    table.add_row("orphan twin processes (must be 0)", str(result.orphans))
    console.print(table)
    if as_json:
        click.echo(json.dumps({"runs": result.runs, "records": result.records, "statuses": dict(result.statuses),
                               "frames_damaged": result.frames_damaged, "frames_counted": result.frames_counted,
                               "ok_mismatches": result.ok_mismatches, "unexpected": result.unexpected,
                               "records_lost": result.records_lost, "orphans": result.orphans,
                               "wall_s": round(result.wall_s, 1), "passed": result.passed}, indent=1))
    console.print("(a failed run may lose frames after the last one it received: no gap shows those, so totals "
                  "over failed runs may differ)")
    console.print(f"results: {out}/runs.parquet; report: {write_report(out)}")
    if not result.passed:
        console.print(f"[red]soak failed[/]: {', '.join(result.unexpected + result.ok_mismatches) or 'see above'}")
        sys.exit(1)


@main.command("list")
@click.argument("what", type=click.Choice(["profiles", "models", "tasks", "techniques", "boards"]))
@click.option("--json", "as_json", is_flag=True, help="a JSON list instead of one name per line")
def list_cmd(what: str, as_json: bool) -> None:
    """List the profiles, models, tasks, techniques or boards a profile may name, one per line."""
    from bench.config.boards import load_catalogue
    from bench.config.profile import PROFILES_DIR, TECHNIQUES
    from bench.model.tasks import task_names
    from bench.model.zoo import model_names

    names = {
        "profiles": lambda: sorted(p.stem for p in PROFILES_DIR.glob("*.toml")),
        "models": lambda: [*model_names(), "(or a path to an int8 .tflite file)"],
        "tasks": lambda: [*task_names(), "(or a .csv, .npz or image folder: docs/datasets.md)"],
        "techniques": lambda: list(TECHNIQUES),
        "boards": lambda: list(load_catalogue()),
    }[what]()
    click.echo(json.dumps(names) if as_json else "\n".join(names))


main.add_command(rack_group)
main.add_command(twin_host_cmd)
main.add_command(compare_cmd)
main.add_command(recover_cmd)
main.add_command(plan_cmd)
main.add_command(federate_cmd)
main.add_command(flower_node_cmd)
main.add_command(flower_run_cmd)
main.add_command(verify_cmd)
