"""``bench federate``: federated rounds across the rack (`bench.app.federate`), progress per round on stderr, the
round table at the end, results and the federation report in --out."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from bench.app.federate import Client, Federation, FedSettings
    from bench.config.profile import Profile

DEFAULT_OUT = Path("reports/federate")


def _kills(values: tuple[str, ...]) -> dict[str, int]:
    out = {}
    for v in values:
        label, sep, r = v.rpartition("@")
        if not sep or not label or not r.isdigit() or int(r) < 1:
            raise click.BadParameter(f"{v!r}: want LABEL@ROUND, e.g. rpi-pico@3", param_hint="--kill")
        out[label] = int(r)
    return out


def federation_options(f: Callable[..., None]) -> Callable[..., None]:
    """The options that shape a federation's clients: `bench federate`'s and every `bench flower-node`'s."""
    options = [
        click.option("--rack", "rack_spec", default=None, help="rack TOML file (default: the emulated rack)"),
        click.option("--board", "names", multiple=True, help="only these boards of the rack"),
        click.option("--local-steps", default=50, show_default=True, type=click.IntRange(1, 1_000_000),
                     help="SGD steps each client takes per round"),
        click.option("--alpha", default=0.5, show_default=True, type=float,
                     help="non-IID label skew: Dirichlet alpha of each class's split over clients"),
        click.option("--iid", is_flag=True, help="IID shards instead of the Dirichlet split"),
        click.option("--technique", "techniques", multiple=True,
                     help="technique per client (fp32 or int8), cycled over the rack (default: the profile's first "
                          "fp32 one)"),
        click.option("--prox-mu", default=0.0, show_default=True, type=click.FloatRange(0.0),
                     help="FedProx: mu of the proximal term in every client's local SGD (fp32 backprop clients); "
                          "with the built-in FedAvg this is FedProx, and Flower's FedProx strategy needs it"),
        click.option("--round-timeout", "round_timeout_s", default=None, type=float,
                     help="straggler timeout: a client's round longer than this is dropped (default: the profile's "
                          "timeout_s)"),
        click.option("--kill", "kills", multiple=True, metavar="LABEL@ROUND",
                     help="fault injection on twins: kill this client's twin during that round"),
        click.option("--seed", type=int, default=None, help="override the profile's seed (shards and sample orders)"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def fed_settings(rounds: int, local_steps: int, alpha: float, iid: bool, techniques: tuple[str, ...],
                 prox_mu: float, round_timeout_s: float | None, kills: tuple[str, ...]) -> FedSettings:
    from bench.app.federate import FedSettings

    return FedSettings(rounds=rounds, local_steps=local_steps, alpha=None if iid else alpha, techniques=techniques,
                       round_timeout_s=round_timeout_s, kill=_kills(kills), prox_mu=prox_mu)


def fed_profile(profile_spec: str, seed: int | None) -> Profile:
    from bench.app import runner

    profile = runner.load_profile(profile_spec)
    return profile if seed is None else runner.with_overrides(profile, {"seed": seed})


@click.command("federate")
@click.argument("profile_spec")
@federation_options
@click.option("--rounds", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--aggregator", type=click.Choice(["fedavg", "flower"]), default="fedavg", show_default=True,
              help="the built-in FedAvg, or Flower's FedAvg strategy (needs the [flower] extra)")
@click.option("--strategy", default="FedAvg", show_default=True,
              help="--aggregator flower: Flower's strategy (FedAvg, FedAvgM, FedAdam, FedYogi, FedAdagrad, FedProx)")
@click.option("--strategy-option", "strategy_options", multiple=True, metavar="KEY=VALUE",
              help="--aggregator flower: a hyperparameter of the strategy, e.g. eta=0.01 for FedAdam (repeat)")
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True)
def federate_cmd(profile_spec: str, rack_spec: str | None, names: tuple[str, ...], rounds: int, local_steps: int,
                 alpha: float, iid: bool, techniques: tuple[str, ...], aggregator: str, strategy: str,
                 strategy_options: tuple[str, ...], prox_mu: float, round_timeout_s: float | None,
                 kills: tuple[str, ...], seed: int | None, out: Path) -> None:
    """Federated rounds of PROFILE's task and model: every board of the rack is a client with its own shard; weights
    travel over the links; the host aggregates and one board measures the global model after each round.

    Exit codes: 0 every round averaged at least one client; 1 some client failed (named) or no client was left; 2 bad
    input."""
    from bench.app.cli_report import wide_console
    from bench.app.federate import run_federation
    from bench.app.lab import held_rack
    from bench.config.boards import filter_rack, load_catalogue, load_rack

    console = wide_console(stderr=True)
    profile = fed_profile(profile_spec, seed)
    settings = fed_settings(rounds, local_steps, alpha, iid, techniques, prox_mu, round_timeout_s, kills)
    catalogue = load_catalogue()
    with held_rack(filter_rack(load_rack(rack_spec, catalogue), list(names)), catalogue, console.print) as rack:
        if aggregator == "flower":
            from bench.app.flower import parse_pairs, run_flower_federation  # the optional [flower] extra

            fed = run_flower_federation(profile, rack, out, settings, ConsoleProgress(console, rounds), strategy,
                                        parse_pairs(strategy_options))
        else:
            if strategy_options:
                raise click.UsageError("--strategy-option is a Flower strategy's: give --aggregator flower")
            fed = run_federation(profile, rack, out, settings, ConsoleProgress(console, rounds))
    finish(console, fed.writer.rows, out)


def finish(console: Console, rows: list[dict[str, object]], out: Path) -> None:
    """The round table on stdout, the report written, exit 1 naming the failures."""
    from bench.app.cli_report import wide_console
    from bench.report.federation import write_federation_report

    wide_console().print(round_table(rows))
    report = write_federation_report(out)
    console.print(f"results: {out}/rounds.parquet, federation.json; journals: {out}/journal/", soft_wrap=True)
    console.print(f"report: {report}", soft_wrap=True)
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        console.print(f"[red]{len(failed)} failures[/]: " + ", ".join(
            f"{r['client']} round {r['round']} ({r['status']})" for r in failed[:10]), soft_wrap=True)
        sys.exit(1)


class ConsoleProgress:
    """One line per client as it connects and per round as it ends."""

    def __init__(self, console: Console, rounds: int) -> None:
        self.console, self.rounds = console, rounds

    def started(self, fed: Federation) -> None:
        s = fed.settings
        self.console.print(f"federation of {len(fed.clients)} clients, {s.rounds} rounds × {s.local_steps} local "
                           f"steps, {fed.writer.meta['split']}, {fed.aggregator}", highlight=False)

    def connected(self, client: Client) -> None:
        state = "ready" if client.alive else "[red]failed to start[/]"
        self.console.print(f"  {client.label}: {client.technique.name}, {client.n_samples} samples — {state}",
                           highlight=False)

    def round_done(self, round_no: int, rows: list[dict[str, object]]) -> None:
        glob = next(r for r in rows if r["role"] == "global")
        clients = [r for r in rows if r["role"] == "client"]
        ok = sum(1 for r in clients if r["status"] == "ok")
        up = sum(_num(r.get("bytes_up")) for r in clients)
        down = sum(_num(r.get("bytes_down")) for r in clients)
        dropped = ", ".join(f"{r['client']} ({r['status']})" for r in clients if r["status"] != "ok")
        self.console.print(f"round {round_no}/{self.rounds}: global accuracy {_num(glob.get('acc_global')):.1%} "
                           f"(measured on {glob.get('measured_on', '-')}), {ok}/{len(clients)} clients averaged, "
                           f"up {up:,.0f} B, down {down:,.0f} B" + (f"; dropped: {dropped}" if dropped else ""),
                           highlight=False)


def _num(value: object) -> float:
    """A row's figure as a float (missing: NaN)."""
    return float(value) if isinstance(value, int | float) else math.nan


def round_table(rows: list[dict[str, object]]) -> Table:
    """Per round: the global accuracy and which board measured it, then each client's local figures."""
    from rich.table import Table

    table = Table(title="federated rounds — accuracy measured on twins, bytes measured on the links, energy modelled")
    for col in ("round", "client", "technique", "status", "acc global", "acc local", "local loss", "up B", "down B",
                "instr/step", "energy/round"):
        table.add_column(col, justify="right")
    for r in rows:
        glob = r["role"] == "global"
        table.add_row(str(r["round"]), str(r["client"]), str(r.get("technique", "") if not glob else
                                                              f"on {r.get('measured_on', '-')}"), str(r["status"]),
                      _pct(r.get("acc_global")), _pct(r.get("acc_local")), _fmt(r.get("local_loss"), ".3f"),
                      _fmt(r.get("bytes_up"), ",.0f"), _fmt(r.get("bytes_down"), ",.0f"),
                      _fmt(r.get("counts_per_step"), ",.0f"),
                      _fmt(r.get("energy_round_uj"), ",.1f", " µJ (modelled)" if r.get("energy_source") ==
                           "modelled" else " µJ"))
    return table


def _pct(value: object) -> str:
    v = _num(value)
    return "–" if math.isnan(v) else f"{v:.1%}"


def _fmt(value: object, spec: str, unit: str = "") -> str:
    v = _num(value)
    return "–" if math.isnan(v) else f"{v:{spec}}{unit}"
