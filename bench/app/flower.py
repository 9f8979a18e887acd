"""The rack as Flower clients: a Flower server on 127.0.0.1 and a proxy client per board (the optional [flower] extra).

Flower has no microcontroller client; its maintainers' pattern (../shared/ANCHORS.md) is a host-side proxy per
board, which is what `BoardClient` is: a `NumPyClient` whose ``fit`` sends the received global tensors to its board
over the link, trains there and returns what the board trained. The Flower server and its strategy (FedAvg here;
any strategy that aggregates ndarrays works the same way) drive the rounds; the server-side ``evaluate_fn`` measures
each new global model on a board and writes the round, exactly as the built-in loop does (`bench.app.federate`).

This uses Flower's gRPC server and clients (``flwr.server.start_server``, ``flwr.compat.client.app.start_client``),
deprecated in favour of SuperLink/SuperNode deployments but served by the same strategies. A lab of several rack
hosts runs a deployment instead: one Flower node per host (`bench.app.flower_node`, `bench.app.flower_deploy`).
"""

from __future__ import annotations

import inspect
import logging
import math
import signal
import socket
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bench.app.federate import Client, Federation, FederationError, FedProgress, FedSettings
from bench.app.runner import Bench, clear_previous, session_lock
from bench.config.boards import Rack
from bench.config.profile import Profile
from bench.numerics.fedavg import ClientUpdate, Tensors

try:
    import flwr
    from flwr.client import NumPyClient
    from flwr.common import FitRes, Parameters, Scalar, ndarrays_to_parameters
    from flwr.compat.client.app import start_client
    from flwr.server import ServerConfig, start_server
    from flwr.server.client_manager import ClientManager
    from flwr.server.client_proxy import ClientProxy
    from flwr.server.strategy import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedProx, FedYogi, Strategy
except ImportError as exc:  # pragma: no cover - the extra is installed by `make test`
    raise FederationError("--aggregator flower needs Flower: pip install 'mcu-train-bench[flower]'") from exc

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BoardClient(NumPyClient):
    """Flower's view of one board: parameters are the federation's global tensors in key order."""

    def __init__(self, fed: Federation, client: Client, collected: dict[int, list[Any]], lock: threading.Lock
                 ) -> None:
        self.fed, self.client, self.collected, self.lock = fed, client, collected, lock

    def get_parameters(self, config: dict[str, Scalar]) -> list[np.ndarray]:
        return to_arrays(self.fed.global_tensors)

    def fit(self, parameters: list[np.ndarray], config: dict[str, Scalar]
            ) -> tuple[list[np.ndarray], int, dict[str, Scalar]]:
        r = int(config["server_round"])
        if not self.client.alive:  # out of the federation since an earlier round: its proxy only says so
            raise RuntimeError(f"{self.client.label} left the federation earlier")
        received = from_arrays(self.fed.global_tensors, parameters)
        mu = config.get("proximal_mu")  # FedProx sends its mu with every round's fit
        update, row = self.fed.client_round(self.client, r, received, float(mu) if isinstance(mu, int | float) else
                                            None)
        with self.lock:
            self.collected.setdefault(r, []).append((update, row))
        if update is None:  # recorded; Flower counts it as this round's failure
            raise RuntimeError(f"{self.client.label}: {row['error']}")
        return to_arrays(merged(received, update)), update.n_samples, {"client": self.client.label}


def to_arrays(tensors: Tensors) -> list[np.ndarray]:
    return [tensors[k] for k in sorted(tensors)]


def from_arrays(like: Tensors, arrays: list[np.ndarray]) -> Tensors:
    keys = sorted(like)
    if len(arrays) != len(keys) or any(a.shape != like[k].shape for k, a in zip(keys, arrays, strict=False)):
        raise FederationError(f"Flower sent {len(arrays)} arrays; the federation has {len(keys)} tensors "
                              f"{[like[k].shape for k in keys]}")
    return {k: np.asarray(a, np.float32) for k, a in zip(keys, arrays, strict=True)}


def merged(global_tensors: Tensors, u: ClientUpdate) -> Tensors:
    """The whole global model with the rows this client trained replaced by its values: what it returns to Flower
    (whose FedAvg averages whole arrays, so a row the client did not train counts as the global's value)."""
    out = {k: t.copy() for k, t in global_tensors.items()}
    for k, vals in u.values.items():
        out[k][np.asarray(u.rows[k])] = vals
    return out


# Flower's strategies wired up: those that aggregate on the server alone, and FedProx, whose clients add its proximal
# term to their local SGD (the fp32 trainer's START prox_mu: it sends its proximal_mu with every fit).
STRATEGIES: dict[str, type[FedAvg]] = {"FedAvg": FedAvg, "FedAvgM": FedAvgM, "FedAdam": FedAdam, "FedYogi": FedYogi,
                                       "FedAdagrad": FedAdagrad, "FedProx": FedProx}


class _WaitForAlive(FedAvg):
    """A strategy that waits, each round, for every board still alive (a dead board's proxy has left), and keeps the
    global model when nobody trained."""

    fed: Federation

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: ClientManager
                      ) -> list[tuple[ClientProxy, Any]]:
        alive = sum(c.alive for c in self.fed.clients)
        self.min_fit_clients = self.min_available_clients = max(alive, 1)
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list[Any]) -> tuple[Parameters | None, dict[str, Scalar]]:
        if not results:  # nobody trained: the global model stays (FedAvg would return None and keep it too)
            return ndarrays_to_parameters(to_arrays(self.fed.global_tensors)), {}
        return super().aggregate_fit(server_round, results, failures)


def check_strategy(name: str, prox_mu: float = 0.0) -> None:
    """A `FederationError` naming the choices unless ``name`` is in `STRATEGIES`; FedProx needs a mu > 0."""
    if name not in STRATEGIES:
        raise FederationError(f"Flower strategy {name!r} is not wired up; choose one of {', '.join(STRATEGIES)}")
    if name == "FedProx" and not prox_mu > 0:
        raise FederationError("Flower strategy FedProx needs its proximal term's mu: give --prox-mu (> 0)")


def strategy_options(cls: type, name: str, pairs: Mapping[str, str]) -> dict[str, float | int | bool]:
    """``pairs`` (--strategy-option KEY=VALUE) as keyword arguments of Flower strategy ``cls``: only its numeric and
    boolean hyperparameters (eta, tau, server_momentum, ...), each parsed as its default's type. What the bench sets
    itself (fractions, minimum counts, FedProx's mu) is not an option; anything else is refused, naming the choices."""
    params = {p.name: p.default for p in inspect.signature(cls).parameters.values()
              if isinstance(p.default, bool | int | float) and not p.name.startswith(("fraction_", "min_"))
              and p.name not in ("accept_failures", "proximal_mu")}
    out: dict[str, float | int | bool] = {}
    for key, text in pairs.items():
        if key not in params:
            choices = ", ".join(f"{k} (default {v})" for k, v in params.items()) or "none"
            raise FederationError(f"Flower strategy {name} has no option {key!r}; its options: {choices}")
        default = params[key]
        try:
            if isinstance(default, bool):
                if text.lower() not in ("true", "false"):
                    raise ValueError(text)
                out[key] = text.lower() == "true"
            else:
                out[key] = int(text) if isinstance(default, int) else float(text)
        except ValueError:
            raise FederationError(f"--strategy-option {key}={text}: want a {type(default).__name__} like its "
                                  f"default {default}") from None
    return out


def described(options: Mapping[str, object] | None) -> str:
    """The strategy's hyperparameters for the records' aggregator field: ' [eta=0.01]', or nothing."""
    return f" [{', '.join(f'{k}={v}' for k, v in options.items())}]" if options else ""


def parse_pairs(values: tuple[str, ...] | list[str]) -> dict[str, str]:
    """KEY=VALUE strings (--strategy-option) as a dict; a value without '=' is refused by name."""
    out = {}
    for v in values:
        key, sep, text = v.partition("=")
        if not sep or not key.strip():
            raise FederationError(f"--strategy-option {v!r}: want KEY=VALUE, e.g. eta=0.01")
        out[key.strip()] = text.strip()
    return out


def rack_strategy(name: str, fed: Federation, **kwargs: Any) -> Strategy:
    """Flower strategy ``name`` (`STRATEGIES`) waiting for the rack's live boards (FedProx: with the federation's
    ``prox_mu`` as its proximal_mu)."""
    check_strategy(name, fed.settings.prox_mu)
    if name == "FedProx":
        kwargs["proximal_mu"] = fed.settings.prox_mu
    cls = type(f"Rack{name}", (_WaitForAlive, STRATEGIES[name]), {"fed": fed})
    return cls(**kwargs)


def run_flower_federation(profile: Profile, rack: Rack, out: Path, settings: FedSettings,
                          progress: FedProgress | None = None, strategy: str = "FedAvg",
                          options: Mapping[str, str] | None = None) -> Federation:
    """`bench.app.federate.run_federation` with Flower driving the rounds: ``out`` is this session's alone;
    ``options``: the strategy's hyperparameters (`strategy_options`)."""
    check_strategy(strategy, settings.prox_mu)
    kwargs = strategy_options(STRATEGIES[strategy], strategy, options or {})
    with session_lock(out):
        clear_previous(out)
        return run_flower(Bench(out), profile, rack, settings, progress, strategy, kwargs)


def run_flower(bench: Bench, profile: Profile, rack: Rack, settings: FedSettings,
               progress: FedProgress | None = None, strategy: str = "FedAvg",
               options: Mapping[str, float | int | bool] | None = None) -> Federation:
    """The federation with a Flower server on 127.0.0.1 (a free port) and one proxy client thread per board."""
    address = f"127.0.0.1:{free_port()}"
    if not log.isEnabledFor(logging.INFO):  # Flower logs every round (and its deprecations) itself: -v shows them
        logging.getLogger("flwr").setLevel(logging.ERROR)
    fed = Federation(bench, profile, rack, settings, progress, aggregator=f"Flower {strategy}{described(options)} "
                                                                           f"(flwr {flwr.__version__}, server "
                                                                           f"{address})")
    collected: dict[int, list[Any]] = {}
    lock = threading.Lock()

    def evaluate(server_round: int, parameters: list[np.ndarray], config: dict[str, Scalar]
                 ) -> tuple[float, dict[str, Scalar]] | None:
        if server_round == 0:
            return None  # the initial model: every board's plan, measured as round 1's acc_before
        with lock:
            results = collected.pop(server_round, [])
        glob = fed.finish_round(server_round, results, from_arrays(fed.global_tensors, parameters))
        return _float(glob.get("loss_global")), {"accuracy": _float(glob.get("acc_global"))}

    fed.progress.started(fed)
    with fed.connected() as clients:
        live = [c for c in clients if c.alive]
        if not live:
            raise FederationError("no board of the rack could start: nothing to federate")
        server_strategy = rack_strategy(strategy, fed, **(options or {}), fraction_fit=1.0, fraction_evaluate=0.0,
                                        min_evaluate_clients=0, accept_failures=True, evaluate_fn=evaluate,
                                        on_fit_config_fn=lambda r: {"server_round": r},
                                        initial_parameters=ndarrays_to_parameters(to_arrays(fed.global_tensors)))
        proxies = [threading.Thread(target=_proxy, args=(address, BoardClient(fed, c, collected, lock)), daemon=True,
                                    name=f"flower-{c.label}") for c in live]
        starter = threading.Thread(target=_start_when_listening, args=(address, proxies), daemon=True)
        starter.start()  # the legacy gRPC client does not retry a refused connection: start them once it listens
        _serve(address, settings, server_strategy, profile.timeout_s)
        starter.join(timeout=10)
        for t in proxies:  # the server's end disconnects them; nothing outlives the federation
            t.join(timeout=10)
    fed.finish()
    return fed


def _serve(address: str, settings: FedSettings, strategy: Strategy, timeout_s: float) -> None:
    """The Flower server, in this (the main) thread as it requires; the signal handlers it installs are undone after
    it, so Ctrl-C and SIGTERM stop the bench as everywhere else."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            start_server(server_address=address, strategy=strategy,
                         config=ServerConfig(num_rounds=settings.rounds, round_timeout=settings.round_timeout_s or
                                             timeout_s))
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _float(value: object) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


def _start_when_listening(address: str, threads: list[threading.Thread], timeout_s: float = 30.0) -> None:
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, int(port)), timeout=1.0).close()
            break
        except OSError:
            time.sleep(0.05)
    for t in threads:
        t.start()


def _proxy(address: str, client: BoardClient) -> None:
    """One board's Flower client until the server ends the federation (or its board fails)."""
    try:
        start_client(server_address=address, client=client.to_client(), insecure=True, max_retries=50,
                     max_wait_time=60.0)
    except Exception as e:  # a proxy's end must not take the federation with it; its round row says why
        log.warning("%s: Flower client ended: %s", client.client.label, e)
