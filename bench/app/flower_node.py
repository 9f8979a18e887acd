"""One Flower node per rack host: an agent that holds this host's boards, with a ``flower-supernode`` beside it.

flwr 1.42's SuperNode runs the ClientApp of every message in a new process, but a board must stay flashed, linked and
holding its model from round to round. So the boards live here, in a long-lived agent: a `Federation` of the whole
lab's rack (every host shards and seeds it identically) serving only this host's labels. The ClientApp
(`bench.app.flower_deploy`) forwards each message to the agent over an authenticated local connection
(``multiprocessing.connection`` on 127.0.0.1, a random key in a 0600 file named in the SuperNode's ``--node-config``)
and answers with what the agent's boards did. The agent averages its own boards first (FedAvg, weighted by samples),
so Flower's FedAvg over the nodes is FedAvg over the boards. docs/federated.md, "A Flower node per rack host".
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, Listener
from pathlib import Path
from typing import Any

import numpy as np

from bench.app.federate import Federation, FederationError, FedProgress, FedSettings
from bench.app.flower import free_port, from_arrays, merged, to_arrays
from bench.app.runner import Bench, clear_previous, session_lock
from bench.config.boards import Rack
from bench.config.profile import Profile
from bench.numerics.fedavg import ClientUpdate, Tensors, update_norm
from bench.target.drivers import die_with_parent

log = logging.getLogger(__name__)

AGENT_ADDRESS_KEY = "bench-agent"  # --node-config keys the ClientApp reads
AGENT_KEY_FILE_KEY = "bench-agent-key"
STOP_GRACE_S = 10.0


def settings_digest(fed: Federation, arrays: list[np.ndarray]) -> str:
    """What every node of one federation must share: the settings that shape each local run, each client's shard
    (its sample indices, so the task's data too) and the initial global model. Paths, timeouts and fault injection
    are each host's own."""
    p, s = fed.profile, fed.settings
    h = hashlib.sha256(json.dumps({
        "profile": [p.name, Path(p.task).name, p.model, p.head_classes, p.lr, p.lr_int8, p.lr_by_technique, p.seed,
                    p.check_steps, p.sparse.model_dump() if p.sparse else None, p.last_k],
        "settings": [s.local_steps, s.alpha, list(s.techniques), s.eval_samples, s.local_eval, s.prox_mu],
    }, sort_keys=True, default=str).encode())
    for c in fed.clients:
        h.update(c.label.encode() + np.asarray(c.shard, np.int64).tobytes())
    for a in arrays:
        h.update(np.ascontiguousarray(a, np.float32).tobytes())
    return h.hexdigest()[:16]


class NodeAgent:
    """This host's boards answering the federation's requests: hello, train, evaluate, finish (`handle`)."""

    def __init__(self, fed: Federation, name: str) -> None:
        self.fed, self.name = fed, name
        self.finished = threading.Event()
        self.held: Tensors | None = None  # the global model the board that last evaluated holds
        self._lock = threading.Lock()

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """One request of the ClientApp; a failure is an answer with ``error``, never an exception."""
        with self._lock:
            try:
                kind = request.get("kind")
                if kind == "hello":
                    return self.hello()
                if kind == "train":
                    return self.train(int(request["round"]), list(request["arrays"]), dict(request["config"]))
                if kind == "evaluate":
                    return self.evaluate(int(request["round"]), list(request["arrays"]))
                if kind == "finish":
                    self.finished.set()
                    return {"node": self.name}
                return {"error": f"node {self.name}: unknown request {kind!r}"}
            except (FederationError, KeyError, TypeError, ValueError) as e:
                return {"error": f"node {self.name}: {type(e).__name__}: {e}"}

    def hello(self) -> dict[str, Any]:
        fed = self.fed
        arrays = to_arrays(fed.global_tensors)
        return {"node": self.name, "served": [c.label for c in fed.served],
                "alive": [c.label for c in fed.served if c.alive], "clients": [c.label for c in fed.clients],
                "keys": [list(k) for k in sorted(fed.global_tensors)], "arrays": arrays, "meta": fed.writer.meta,
                "digest": settings_digest(fed, arrays),
                "rows": [{**r, "node": self.name} for r in fed.writer.rows]}

    def train(self, r: int, arrays: list[np.ndarray], config: dict[str, Any]) -> dict[str, Any]:
        """Round ``r`` on every live board of this host from the global ``arrays``: the boards' rows and their
        average (weighted by samples), which Flower weights by the node's samples."""
        fed = self.fed
        received = from_arrays(fed.global_tensors, arrays)
        if r == 1 and not _same(received, fed.global_tensors):
            raise FederationError("round 1's global model is not this node's initial model (the nodes prepared "
                                  "different models: same bench version and profile on every host?)")
        if self.held is not None and not _same(received, self.held):
            for c in fed.served:  # a server-side optimiser moved the model after the evaluation: send it again
                c.holds_global = 0
        mu = config.get("proximal-mu")  # Flower's FedProx sends its mu with every round's train message
        live = [c for c in fed.served if c.alive]
        if not live:
            raise FederationError("no board of this node is left in the federation")
        with ThreadPoolExecutor(max_workers=len(live)) as pool:
            results = list(pool.map(lambda c: fed.client_round(c, r, received, _mu(mu)), live))
        rows = [row for _, row in results]
        updates = [u for u, _ in results if u is not None]
        for u, row in results:
            row["node"] = self.name
            if u is not None:
                row["update_norm"] = update_norm(received, u)
        fed.writer.add(rows)
        if not updates:
            return {"error": f"node {self.name}: every board failed round {r}: " +
                    "; ".join(f"{row['client']}: {row['error']}" for row in rows), "rows": rows}
        return {"arrays": to_arrays(_average(received, updates)), "n": sum(u.n_samples for u in updates),
                "rows": rows}

    def evaluate(self, r: int, arrays: list[np.ndarray]) -> dict[str, Any]:
        """The new global model measured on one of this host's boards (as `Federation.global_eval` picks it)."""
        fed = self.fed
        fed.global_tensors = self.held = from_arrays(fed.global_tensors, arrays)
        row = {**fed.global_eval(r, 0), "node": self.name}
        fed.writer.add([row])
        if row["status"] != "ok":
            return {"error": f"node {self.name}: {row['error']}", "row": row}
        n = row.get("eval_n")
        return {"row": row, "n": n if isinstance(n, int) else 0}


def _same(a: Tensors, b: Tensors) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _mu(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _average(received: Tensors, updates: list[ClientUpdate]) -> Tensors:
    """The node's boards averaged as whole models (each board's untrained rows are the global's), by samples."""
    n = sum(u.n_samples for u in updates)
    out: Tensors = {}
    for u in updates:
        for k, t in merged(received, u).items():
            out[k] = out.get(k, 0.0) + t.astype(np.float64) * (u.n_samples / n)
    return {k: t.astype(np.float32) for k, t in out.items()}


# ---- the agent's local endpoint and its SuperNode -----------------------------------------------------------------

@dataclass(frozen=True)
class NodeOptions:
    superlink: str  # the SuperLink's Fleet address, host:port
    name: str = ""  # the node's name in the records (default: the host name)
    insecure: bool = True  # plain HTTP to the SuperLink (a loopback or trusted lab network)
    root_certificates: Path | None = None  # else TLS with this CA bundle
    join_timeout_s: float = 600.0  # how long the node waits for the federation's run to finish


def serve_requests(agent: NodeAgent, listener: Listener) -> None:
    """Answers the ClientApp's connections one at a time until the federation finishes or the listener closes."""
    while not agent.finished.is_set():
        try:
            conn: Connection = listener.accept()
        except AuthenticationError:  # not our ClientApp: refused, and the agent goes on
            log.warning("node %s: refused a local connection without the agent's key", agent.name)
            continue
        except OSError:  # closed by `run_node` on exit
            return
        with conn:
            try:
                request = conn.recv()
                conn.send(agent.handle(request) if isinstance(request, dict) else {"error": "bad request"})
            except (EOFError, OSError) as e:
                log.warning("node %s: a ClientApp connection broke: %s", agent.name, e)


@contextmanager
def agent_endpoint(agent: NodeAgent, out: Path) -> Iterator[tuple[str, Path]]:
    """A listener on 127.0.0.1 for the ClientApp processes, its key in a 0600 file; yields (address, key file)."""
    key = secrets.token_bytes(32)
    key_file = out / "flower" / "agent.key"
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    listener = Listener(("127.0.0.1", 0), authkey=key)
    host, port = listener.address
    thread = threading.Thread(target=serve_requests, args=(agent, listener), daemon=True, name="flower-agent")
    thread.start()
    try:
        yield f"{host}:{port}", key_file
    finally:
        listener.close()
        thread.join(timeout=STOP_GRACE_S)
        key_file.unlink(missing_ok=True)


def supernode_command(opts: NodeOptions, agent_address: str, key_file: Path, port: int) -> list[str]:
    exe = shutil.which("flower-supernode", path=_venv_path()) or "flower-supernode"
    tls = ["--insecure"] if opts.insecure else ["--root-certificates", str(opts.root_certificates)]
    return [*die_with_parent([exe]), *tls, "--superlink", opts.superlink, "--host", "127.0.0.1", "--port", str(port),
            "--node-config", f'{AGENT_ADDRESS_KEY}="{agent_address}" {AGENT_KEY_FILE_KEY}="{key_file}"']


def _venv_path() -> str:
    """PATH with this interpreter's bin first: flwr's processes find flower-superexec and flwr-clientapp on it."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def flower_env(home: Path) -> dict[str, str]:
    """The environment of every Flower process the bench starts: its own FLWR_HOME (never the user's ~/.flwr)."""
    home.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "PATH": _venv_path(), "FLWR_HOME": str(home)}


@contextmanager
def started(cmd: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A Flower process in its own process group, logging to ``log_path``; it and its children (SuperExec,
    ClientApps) are stopped on exit: SIGTERM, then SIGKILL after a grace period."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield proc
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_GRACE_S)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is left (a ClientApp mid-message)
    proc.wait()


def clear_run(out: Path) -> None:
    """A federation's previous results in ``out`` go first, so a run that does not finish leaves none to misread."""
    for name in ("rounds.parquet", "rounds.csv", "federation.json", "global_model.npz"):
        (out / name).unlink(missing_ok=True)


def run_node(profile: Profile, rack: Rack, out: Path, settings: FedSettings, serve: list[str] | None,
             opts: NodeOptions, progress: FedProgress | None = None) -> Federation:
    """This host's boards as one Flower node until the federation's run finishes (or ``join_timeout_s``): flashes
    and checks them, starts its SuperNode, answers the ClientApp. ``out`` holds this host's rounds and journals."""
    with session_lock(out):
        clear_previous(out)
        name = opts.name or os.uname().nodename
        fed = Federation(Bench(out), profile, rack, settings, progress, aggregator=f"Flower node {name}",
                         serve=serve)
        agent = NodeAgent(fed, name)
        fed.progress.started(fed)
        with fed.connected() as clients:
            if not any(c.alive for c in clients):
                raise FederationError("no board of this host could start: nothing to serve")
            _serve_until_finished(agent, out, opts)
        fed.finish()
        return fed


def _serve_until_finished(agent: NodeAgent, out: Path, opts: NodeOptions) -> None:
    log_path = out / "flower" / "supernode.log"
    with agent_endpoint(agent, out) as (address, key_file), \
            started(supernode_command(opts, address, key_file, free_port()), flower_env(out / "flower" / "home"),
                    log_path) as proc:
        log.info("node %s: SuperNode pid %d, log %s", agent.name, proc.pid, log_path)
        deadline = time.monotonic() + opts.join_timeout_s
        while not agent.finished.wait(0.2):
            if proc.poll() is not None:
                raise FederationError(f"node {agent.name}: flower-supernode exited ({proc.returncode}) before the "
                                      f"federation finished; its log: {log_path}")
            if time.monotonic() > deadline:
                raise FederationError(f"node {agent.name}: the federation did not finish within "
                                      f"{opts.join_timeout_s:.0f} s (is `bench flower-run` submitted to "
                                      f"{opts.superlink}?); SuperNode log: {log_path}")

