"""The federation as a Flower App for a SuperLink/SuperNode deployment, one node per rack host (bench.app.flower_node).

- ``clientapp`` runs, per message, in a process its SuperNode starts; it forwards the message to the host's node agent
  (address and key file from the SuperNode's ``--node-config``) and returns the agent's answer.
- ``serverapp`` runs on the SuperLink's host: it waits for the nodes, checks that they federate the same profile,
  settings and initial model over disjoint boards, lets the chosen Flower strategy drive the rounds (train on every
  node, then every node measures the new global model on one of its boards), and writes rounds.parquet,
  federation.json and global_model.npz to the run config's ``out``, as `bench federate` does.
- `submit` is ``bench flower-run``: it submits the bundled app (``flower_fab/``) with ``flwr run``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Client as Connect
from pathlib import Path
from typing import Any

import numpy as np

from bench.app.federate import FederationError, finish_records
from bench.app.flower import check_strategy, described, parse_pairs, strategy_options
from bench.app.flower_node import AGENT_ADDRESS_KEY, AGENT_KEY_FILE_KEY, flower_env
from bench.records.rounds import RoundsWriter
from bench.target.drivers import die_with_parent

try:
    import flwr
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp import strategy as fl_strategy
except ImportError as exc:  # pragma: no cover - the extra is installed by `make test`
    raise FederationError("a Flower deployment needs Flower: pip install 'mcu-train-bench[flower]'") from exc

log = logging.getLogger(__name__)

FAB_DIR = Path(__file__).with_name("flower_fab")
STRATEGIES = {"FedAvg": fl_strategy.FedAvg, "FedAvgM": fl_strategy.FedAvgM, "FedAdam": fl_strategy.FedAdam,
              "FedYogi": fl_strategy.FedYogi, "FedAdagrad": fl_strategy.FedAdagrad, "FedProx": fl_strategy.FedProx}
QUERY_TIMEOUT_S = 120.0
PROGRESS = "bench: "  # the ServerApp's progress lines in Flower's streamed log, which `submit` echoes


# ---- the ClientApp: a thin forwarder to this host's node agent -----------------------------------------------------

clientapp = ClientApp()


def ask_agent(context: Context, request: dict[str, Any]) -> dict[str, Any]:
    """One request to the node agent of this SuperNode; its error is raised, so Flower reports the node's failure."""
    address = str(context.node_config.get(AGENT_ADDRESS_KEY, ""))
    key_file = Path(str(context.node_config.get(AGENT_KEY_FILE_KEY, "")))
    if not address or not key_file.is_file():
        raise RuntimeError(f"this SuperNode was not started by `bench flower-node` (no {AGENT_ADDRESS_KEY} / "
                           f"{AGENT_KEY_FILE_KEY} in its --node-config)")
    host, port = address.rsplit(":", 1)
    with Connect((host, int(port)), authkey=key_file.read_bytes()) as conn:
        conn.send(request)
        answer = conn.recv()
    if not isinstance(answer, dict):
        raise RuntimeError(f"node agent at {address} sent {type(answer).__name__}")
    if "error" in answer:
        raise RuntimeError(str(answer["error"]))
    return answer


def _rows(rows: list[dict[str, object]]) -> ConfigRecord:
    return ConfigRecord({"json": json.dumps(rows, default=_jsonable)})


def _jsonable(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else str(value)


@clientapp.query()
def query(msg: Message, context: Context) -> Message:
    kind = str(msg.content["config"]["kind"])
    answer = ask_agent(context, {"kind": kind})
    if kind != "hello":
        return Message(RecordDict({"config": ConfigRecord({"node": str(answer["node"])})}), reply_to=msg)
    arrays = answer.pop("arrays")
    return Message(RecordDict({"arrays": ArrayRecord(arrays), "hello": ConfigRecord(
        {"json": json.dumps(answer, default=_jsonable)})}), reply_to=msg)


@clientapp.train()
def train(msg: Message, context: Context) -> Message:
    config = dict(msg.content.config_records["config"])
    answer = ask_agent(context, {"kind": "train", "round": _round(config),
                                 "arrays": msg.content.array_records["arrays"].to_numpy_ndarrays(), "config": config})
    return Message(RecordDict({"arrays": ArrayRecord(answer["arrays"]),
                               "metrics": MetricRecord({"num-examples": int(answer["n"])}),
                               "rows": _rows(answer["rows"])}), reply_to=msg)


@clientapp.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    r = _round(dict(msg.content.config_records["config"]))
    answer = ask_agent(context, {"kind": "evaluate", "round": r,
                                 "arrays": msg.content.array_records["arrays"].to_numpy_ndarrays()})
    row = answer["row"]
    return Message(RecordDict({"metrics": MetricRecord({"num-examples": max(int(answer["n"]), 1),
                                                        "accuracy": _float(row.get("acc_global")),
                                                        "loss": _float(row.get("loss_global"))}),
                               "rows": _rows([row])}), reply_to=msg)


def _round(config: Mapping[str, object]) -> int:
    r = config.get("server-round")
    if not isinstance(r, int):
        raise RuntimeError(f"the strategy sent no server-round (config {sorted(config)})")
    return r


def _float(value: object) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


# ---- the ServerApp ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunConfig:
    """The ServerApp's run config (``flwr run --run-config``; defaults in flower_fab/pyproject.toml)."""

    out: Path
    profile: str
    nodes: int
    rounds: int
    strategy: str
    prox_mu: float
    round_timeout_s: float
    join_timeout_s: float
    options: tuple[str, ...] = ()  # the strategy's KEY=VALUE hyperparameters (--strategy-option)

    @classmethod
    def of(cls, cfg: dict[str, Any]) -> RunConfig:
        if not str(cfg.get("out", "")):
            raise FederationError("the run config has no 'out' directory (submit with `bench flower-run`)")
        return cls(Path(str(cfg["out"])), str(cfg["profile"]), int(cfg["nodes"]), int(cfg["rounds"]),
                   str(cfg["strategy"]), float(cfg["prox-mu"]), float(cfg["round-timeout"]),
                   float(cfg["join-timeout"]), tuple(v for v in str(cfg.get("strategy-options", "")).split(",") if v))

    def strategy_kwargs(self) -> dict[str, float | int | bool]:
        """The strategy's hyperparameters, checked against its message-API class (`bench.app.flower`)."""
        return strategy_options(STRATEGIES[self.strategy], self.strategy, parse_pairs(self.options))


serverapp = ServerApp()


@serverapp.main()
def main(grid: Grid, context: Context) -> None:
    run_server(grid, RunConfig.of(dict(context.run_config)))


def run_server(grid: Grid, cfg: RunConfig) -> None:
    """The federation over the connected nodes; whatever happens, every node is told to finish (its boards closed)."""
    check_strategy(cfg.strategy, cfg.prox_mu)
    cfg.strategy_kwargs()  # refused before any node is asked
    node_ids = wait_for_nodes(grid, cfg.nodes, cfg.join_timeout_s)
    try:
        _rounds(grid, cfg, node_ids)
    finally:
        _ask_all(grid, node_ids, "finish", timeout=30.0, strict=False)


def _rounds(grid: Grid, cfg: RunConfig, node_ids: list[int]) -> None:
    hellos = _ask_all(grid, node_ids, "hello")
    initial, meta = _check_hellos(hellos, cfg)
    recorder = Recorder(RoundsWriter(cfg.out, meta), {nid: str(h["node"]) for nid, (h, _) in hellos.items()},
                        [list(map(int, k)) for k in next(iter(hellos.values()))[0]["keys"]])
    for h, _ in hellos.values():
        recorder.writer.add(list(h["rows"]))  # boards that could not start: their round-0 rows
    strategy = deploy_strategy(cfg.strategy, recorder, cfg.prox_mu, cfg.strategy_kwargs())
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(initial), num_rounds=cfg.rounds,
                            timeout=cfg.round_timeout_s)
    recorder.finish(result.arrays.to_numpy_ndarrays() if result.arrays else initial)


def wait_for_nodes(grid: Grid, n: int, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while len(ids := sorted(grid.get_node_ids())) < n:
        if time.monotonic() > deadline:
            raise FederationError(f"{len(ids)} of {n} Flower nodes connected within {timeout_s:.0f} s (start "
                                  f"`bench flower-node` on every rack host)")
        time.sleep(0.5)
    return ids


def _ask_all(grid: Grid, node_ids: list[int], kind: str, timeout: float = QUERY_TIMEOUT_S, strict: bool = True
             ) -> dict[int, tuple[dict[str, Any], list[np.ndarray]]]:
    """A query to every node; (answer, arrays) per node id. ``strict``: a node that fails or is silent is an error."""
    messages = [Message(RecordDict({"config": ConfigRecord({"kind": kind})}), dst_node_id=nid, message_type="query")
                for nid in node_ids]
    replies = {m.metadata.src_node_id: m for m in grid.send_and_receive(messages, timeout=timeout)}
    out = {}
    for nid in node_ids:
        m = replies.get(nid)
        if m is None or m.has_error():
            if strict:
                why = "no answer" if m is None else m.error.reason
                raise FederationError(f"Flower node {nid} did not answer {kind!r}: {why}")
            continue
        if kind == "hello":
            out[nid] = (json.loads(str(m.content["hello"]["json"])),
                        m.content.array_records["arrays"].to_numpy_ndarrays())
        else:
            out[nid] = (dict(m.content["config"]), [])
    return out


def _check_hellos(hellos: dict[int, tuple[dict[str, Any], list[np.ndarray]]], cfg: RunConfig
                  ) -> tuple[list[np.ndarray], dict[str, object]]:
    """The nodes must federate one profile, settings and initial model, each board served by exactly one node."""
    answers = [h for h, _ in hellos.values()]
    first = answers[0]
    if first["meta"]["profile"] != cfg.profile:
        raise FederationError(f"the nodes federate profile {first['meta']['profile']!r}, not {cfg.profile!r}")
    digests = {h["node"]: h["digest"] for h in answers}
    if len(set(digests.values())) > 1 or any(h["clients"] != first["clients"] for h in answers):
        raise FederationError(f"the nodes do not federate the same profile, settings, rack and initial model "
                              f"(digest per node: {digests}); start every `bench flower-node` alike")
    served = [label for h in answers for label in h["served"]]
    twice = sorted({x for x in served if served.count(x) > 1})
    missing = sorted(set(first["clients"]) - set(served))
    if twice or missing:
        raise FederationError(f"boards served by two nodes: {twice or 'none'}; by none: {missing or 'none'} "
                              f"(give each host's boards to its node with --serve)")
    version = getattr(flwr, "__version__", "?")
    aggregator = (f"Flower {cfg.strategy}{described(cfg.strategy_kwargs())} (flwr {version}, deployment: "
                  f"{len(answers)} nodes)")
    meta = {**first["meta"], "aggregator": aggregator, "nodes": {h["node"]: h["served"] for h in answers},
            "rounds": cfg.rounds}
    if cfg.prox_mu:
        meta["prox_mu"] = cfg.prox_mu
    return next(iter(hellos.values()))[1], meta


class Recorder:
    """The rounds as the nodes report them: each board's row from the train replies, then one global row from
    the evaluate replies (every node measured the new model on one of its boards; the mean weighted by samples)."""

    def __init__(self, writer: RoundsWriter, names: dict[int, str], keys: list[list[int]]) -> None:
        self.writer, self.names, self.keys = writer, names, keys
        self.pending: list[dict[str, object]] = []

    def train(self, r: int, replies: list[Message]) -> None:
        rows: list[dict[str, object]] = []
        for m in replies:
            node = self.names.get(m.metadata.src_node_id, str(m.metadata.src_node_id))
            if m.has_error():
                rows.append({"round": r, "role": "client", "client": f"(node {node})", "node": node,
                             "status": "error", "error": str(m.error.reason)})
            else:
                rows += json.loads(str(m.content["rows"]["json"]))
        replied = {m.metadata.src_node_id for m in replies}
        for nid, node in self.names.items():
            if nid not in replied:  # down, or slower than the round timeout: its boards are not in this round
                rows.append({"round": r, "role": "client", "client": f"(node {node})", "node": node,
                             "status": "hang", "error": f"no reply from node {node} this round (down, or past "
                                                        f"--round-timeout)"})
        ok = [row for row in rows if row.get("status") == "ok"]
        total = sum(_num(row.get("samples")) for row in ok)
        for row in ok:
            row["weight_share"] = _num(row.get("samples")) / total
        self.pending = rows

    def evaluate(self, r: int, replies: list[Message]) -> None:
        evals = [json.loads(str(m.content["rows"]["json"]))[0] for m in replies if not m.has_error()]
        glob: dict[str, object] = {"round": r, "role": "global", "client": "(global)", "status": "ok", "error": "",
                                   "clients_averaged": sum(row.get("status") == "ok" for row in self.pending
                                                           if row.get("role") == "client")}
        measured = [e for e in evals if e.get("status") == "ok"]
        if not measured:
            errors = [str(m.error.reason) for m in replies if m.has_error()]
            glob.update(status="error", acc_global=math.nan,
                        error="no node measured the global model" + (f": {'; '.join(errors)}" if errors else ""))
        else:
            n = [max(_num(e.get("eval_n")), 1.0) for e in measured]
            glob.update(acc_global=float(np.average([_num(e["acc_global"]) for e in measured], weights=n)),
                        loss_global=float(np.average([_num(e.get("loss_global")) for e in measured], weights=n)),
                        eval_n=int(n[0]), measured_on=", ".join(str(e.get("measured_on")) for e in measured),
                        board=", ".join(str(e.get("board")) for e in measured),
                        bytes_down=sum(_num(e.get("bytes_down")) for e in measured),
                        values_down=sum(_num(e.get("values_down")) for e in measured))
            if len({_num(e["acc_global"]) for e in measured}) > 1:
                glob["note"] = "the nodes measured different accuracies: " + ", ".join(
                    f"{e.get('measured_on')} {_num(e['acc_global']):.4f}" for e in measured)
        self.writer.add([*self.pending, glob])
        print(f"{PROGRESS}round {r}: global accuracy {_num(glob.get('acc_global')):.1%} (measured on "
              f"{glob.get('measured_on', '-')}), {glob['clients_averaged']} boards averaged", flush=True)
        self.pending = []

    def finish(self, arrays: list[np.ndarray]) -> None:
        """global_model.npz and the summary, as `bench federate` writes them."""
        finish_records(self.writer, {(layer, param): a for (layer, param), a in zip(self.keys, arrays, strict=True)})


def _num(value: object) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


def deploy_strategy(name: str, recorder: Recorder, prox_mu: float,
                    options: Mapping[str, float | int | bool] | None = None) -> Any:
    """Flower's strategy ``name`` training and evaluating on every connected node, its replies recorded."""
    cls = STRATEGIES[name]

    class Recorded(cls):  # type: ignore[valid-type, misc]
        def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> Any:
            replies = list(replies)
            recorder.train(server_round, replies)
            return super().aggregate_train(server_round, replies)

        def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> Any:
            replies = list(replies)
            out = super().aggregate_evaluate(server_round, replies)
            recorder.evaluate(server_round, replies)
            return out

    kwargs: dict[str, Any] = {**(options or {}), "fraction_train": 1.0, "fraction_evaluate": 1.0, "min_train_nodes": 1,
                              "min_evaluate_nodes": 1, "min_available_nodes": 1}
    if name == "FedProx":
        kwargs["proximal_mu"] = prox_mu
    Recorded.__name__ = f"Rack{name}"
    return Recorded(**kwargs)


# ---- submitting the run: `bench flower-run` ----------------------------------------------------------------------

def submit(cfg: RunConfig, superlink: str, insecure: bool, root_certificates: Path | None, home: Path,
           log_path: Path, echo: Callable[[str], None]) -> int:
    """``flwr run`` of the bundled app against ``superlink`` (its Control API, host:port): Flower's whole log to
    ``log_path``, the ServerApp's progress lines and errors to ``echo``; returns flwr's exit code."""
    env = flower_env(home)
    tls = "insecure = true" if insecure else f'root-certificates = "{root_certificates}"'
    (home / "config.toml").write_text(f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\naddress = "{superlink}"\n'
                                      f"{tls}\n")
    q = json.dumps  # a JSON string is a TOML basic string: quotes and backslashes in a path stay escaped
    run_config = (f"out={q(str(cfg.out))} profile={q(cfg.profile)} nodes={cfg.nodes} rounds={cfg.rounds} "
                  f"strategy={q(cfg.strategy)} prox-mu={cfg.prox_mu} round-timeout={cfg.round_timeout_s} "
                  f"join-timeout={cfg.join_timeout_s} strategy-options={q(','.join(cfg.options))}")
    exe = shutil.which("flwr", path=env["PATH"]) or "flwr"
    cmd = [*die_with_parent([exe]), "run", str(FAB_DIR), "bench", "--run-config", run_config, "--stream"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as fh, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                     env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            fh.flush()
            text = line.decode(errors="replace").rstrip()
            if PROGRESS in text or "ERROR" in text or "Error" in text:
                echo(text[text.find(PROGRESS) + len(PROGRESS):] if PROGRESS in text else text)
        return proc.wait()
