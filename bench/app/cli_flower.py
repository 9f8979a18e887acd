"""``bench flower-node`` (one per rack host) and ``bench flower-run`` (submits the federation to the SuperLink): a
lab's rack hosts as Flower nodes of one federation (`bench.app.flower_node`, `bench.app.flower_deploy`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import click

from bench.app.cli_federate import ConsoleProgress, fed_profile, fed_settings, federation_options, finish


def _tls(insecure: bool, root_certificates: Path | None) -> bool:
    if insecure == (root_certificates is not None):
        raise click.UsageError("give exactly one of --insecure (plain HTTP: loopback or a trusted lab network) and "
                               "--root-certificates CA.pem (TLS)")
    return insecure


tls_options = [
    click.option("--insecure", is_flag=True, help="plain HTTP to the SuperLink (loopback or a trusted lab network)"),
    click.option("--root-certificates", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                 help="TLS to the SuperLink, verified with this CA bundle"),
]


def _with_tls(f: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(tls_options):
        f = option(f)
    return f


@click.command("flower-node")
@click.argument("profile_spec")
@click.option("--superlink", required=True, metavar="HOST:PORT", help="the SuperLink's Fleet API address")
@click.option("--serve", "serve", multiple=True, metavar="LABEL",
              help="the boards of the rack this host drives (repeat; default: all of them)")
@click.option("--name", default="", help="this node's name in the records (default: the host name)")
@click.option("--join-timeout", "join_timeout_s", default=3600.0, show_default=True, type=float,
              help="seconds to wait for the federation's run to finish")
@federation_options
@_with_tls
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/flower-node"), show_default=True)
def flower_node_cmd(profile_spec: str, superlink: str, serve: tuple[str, ...], name: str, join_timeout_s: float,
                    rack_spec: str | None, names: tuple[str, ...], local_steps: int, alpha: float, iid: bool,
                    techniques: tuple[str, ...], prox_mu: float, round_timeout_s: float | None,
                    kills: tuple[str, ...], seed: int | None, insecure: bool, root_certificates: Path | None,
                    out: Path) -> None:
    """This host's boards as one Flower node: flashes and checks them, starts a flower-supernode connected to
    SUPERLINK, and trains and evaluates on them as the federation's ServerApp asks, until its run finishes.

    Give every rack host the same PROFILE, rack (the whole lab's) and federation options, and each its own --serve
    labels: the hosts shard and seed the federation identically. Exit codes: 0 every board of this host took part
    in every round; 1 some failed (named); 2 bad input."""
    from bench.app.cli_report import wide_console
    from bench.app.flower_node import NodeOptions, run_node
    from bench.app.lab import sigterm_as_interrupt
    from bench.config.boards import filter_rack, load_catalogue, load_rack

    console = wide_console(stderr=True)
    opts = NodeOptions(superlink, name, _tls(insecure, root_certificates), root_certificates, join_timeout_s)
    profile = fed_profile(profile_spec, seed)
    settings = fed_settings(1, local_steps, alpha, iid, techniques, prox_mu, round_timeout_s, kills)
    catalogue = load_catalogue()
    rack = filter_rack(load_rack(rack_spec, catalogue), list(names))
    if rack.labgrid is not None:
        raise click.UsageError("a Flower node drives its own host's boards: give it a rack file of boards and twins "
                               "(a labgrid rack's places are acquired where they run; not implemented for nodes)")
    with sigterm_as_interrupt():  # SIGTERM (a cancelled job) unwinds like Ctrl-C: nothing the node started is left
        console.print(f"Flower node on {superlink}: waiting for `bench flower-run` (SuperNode log: "
                      f"{out}/flower/supernode.log)", soft_wrap=True)
        fed = run_node(profile, rack, out, settings, list(serve) or None, opts, ConsoleProgress(console, 0))
    finish(console, fed.writer.rows, out)


@click.command("flower-run")
@click.argument("profile_spec")
@click.option("--superlink", required=True, metavar="HOST:PORT", help="the SuperLink's Control API address")
@click.option("--nodes", default=1, show_default=True, type=click.IntRange(1, 1000),
              help="the Flower nodes (rack hosts) to wait for")
@click.option("--rounds", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--strategy", default="FedAvg", show_default=True,
              help="Flower's strategy (FedAvg, FedAvgM, FedAdam, FedYogi, FedAdagrad, FedProx)")
@click.option("--prox-mu", default=0.0, show_default=True, type=click.FloatRange(0.0),
              help="FedProx's mu (the nodes' --prox-mu must be the same: their fidelity check uses it)")
@click.option("--round-timeout", "round_timeout_s", default=3600.0, show_default=True, type=float,
              help="seconds the strategy waits for the nodes' replies in each round")
@click.option("--join-timeout", "join_timeout_s", default=600.0, show_default=True, type=float,
              help="seconds to wait for --nodes nodes to connect")
@click.option("--strategy-option", "strategy_options", multiple=True, metavar="KEY=VALUE",
              help="a hyperparameter of the strategy, e.g. eta=0.01 for FedAdam (repeat)")
@_with_tls
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/flower-run"), show_default=True,
              help="where the ServerApp writes the rounds (a path on the SuperLink's host)")
def flower_run_cmd(profile_spec: str, superlink: str, nodes: int, rounds: int, strategy: str, prox_mu: float,
                   round_timeout_s: float, join_timeout_s: float, strategy_options: tuple[str, ...], insecure: bool,
                   root_certificates: Path | None, out: Path) -> None:
    """Submits the federation of PROFILE to the SuperLink: Flower's STRATEGY drives ROUNDS rounds over the NODES
    `bench flower-node`s, which train and evaluate on their boards; rounds.parquet, federation.json,
    global_model.npz and the report in --out. Exit codes: 0 every round averaged every board; 1 a failure (named)
    or the run did not finish; 2 bad input."""
    from bench.app.cli_report import wide_console
    from bench.app.flower import check_strategy, parse_pairs
    from bench.app.flower_deploy import RunConfig, submit
    from bench.app.flower_node import clear_run
    from bench.records.rounds import read_rounds

    console = wide_console(stderr=True)
    tls = _tls(insecure, root_certificates)
    check_strategy(strategy, prox_mu)  # before anything is submitted: the ServerApp's refusal would only be logged
    out = out.resolve()
    clear_run(out)
    cfg = RunConfig(out, fed_profile(profile_spec, None).name, nodes, rounds, strategy, prox_mu, round_timeout_s,
                    join_timeout_s, tuple(f"{k}={v}" for k, v in parse_pairs(strategy_options).items()))
    cfg.strategy_kwargs()  # refused here, by name, rather than in the ServerApp's log
    flwr_log = out / "flower" / "flwr-run.log"
    console.print(f"submitting to the SuperLink at {superlink}: {nodes} node(s), {rounds} rounds of {strategy} "
                  f"(Flower's log: {flwr_log})", soft_wrap=True)
    rc = submit(cfg, superlink, tls, root_certificates, out / "flower" / "home", flwr_log, console.print)
    meta_path = out / "federation.json"
    if rc != 0 or not meta_path.is_file() or "global_accuracy" not in json.loads(meta_path.read_text()):
        console.print(f"[red]the Flower run did not finish[/] (flwr exit {rc}); Flower's log: {flwr_log}",
                      soft_wrap=True)
        sys.exit(1)
    rows, _ = read_rounds(out)
    finish(console, rows.to_dict("records"), out)
