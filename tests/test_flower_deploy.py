"""A lab's rack hosts as Flower nodes: a real flower-superlink on 127.0.0.1, one `bench flower-node` per "host" (two
processes here, serving two and one of the emulated rack's twins), `bench flower-run` submitting the federation."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.app.federate import FederationError, FedSettings, run_federation
from bench.app.runner import load_profile
from bench.config.boards import load_catalogue, load_rack

flwr = pytest.importorskip("flwr")

from bench.app import flower_deploy, flower_node  # noqa: E402  (needs the [flower] extra)
from bench.app.flower import free_port  # noqa: E402

BENCH = str(Path(sys.executable).with_name("bench"))


def _hello(node: str, served: list[str], digest: str = "d1", profile: str = "quick") -> dict[str, object]:
    return {"node": node, "served": served, "clients": ["a", "b", "c"], "digest": digest, "rows": [],
            "keys": [[0, 0]], "meta": {"profile": profile, "clients": {}}}


def _cfg(tmp_path: Path) -> flower_deploy.RunConfig:
    return flower_deploy.RunConfig(tmp_path, "quick", 2, 2, "FedAvg", 0.0, 60.0, 60.0)


def test_nodes_that_disagree_or_overlap_are_refused_by_name(tmp_path: Path) -> None:
    arrays = [np.zeros((2, 2), np.float32)]
    good = {1: (_hello("hostA", ["a", "b"]), arrays), 2: (_hello("hostB", ["c"]), arrays)}
    initial, meta = flower_deploy._check_hellos(good, _cfg(tmp_path))
    assert meta["nodes"] == {"hostA": ["a", "b"], "hostB": ["c"]} and "deployment: 2 nodes" in str(meta["aggregator"])
    assert initial is arrays
    cases = {
        "digest per node": {1: good[1], 2: (_hello("hostB", ["c"], digest="d2"), arrays)},
        "served by two nodes: ['b']": {1: good[1], 2: (_hello("hostB", ["b", "c"]), arrays)},
        "by none: ['c']": {1: good[1], 2: (_hello("hostB", []), arrays)},
        "not 'quick'": {1: (_hello("hostA", ["a", "b", "c"], profile="nightly"), arrays)},
    }
    for words, hellos in cases.items():
        with pytest.raises(FederationError, match=words.replace("[", r"\[").replace("]", r"\]")):
            flower_deploy._check_hellos(hellos, _cfg(tmp_path))


def test_a_supernode_not_started_by_bench_flower_node_is_refused_by_name() -> None:
    from flwr.app import Context, RecordDict

    ctx = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    with pytest.raises(RuntimeError, match="not started by `bench flower-node`"):
        flower_deploy.ask_agent(ctx, {"kind": "hello"})


def test_the_node_agent_answers_only_with_its_key(tmp_path: Path) -> None:
    """The agent's endpoint authenticates its ClientApps: the key file's key is answered, another key is not."""
    from multiprocessing import AuthenticationError
    from multiprocessing.connection import Client

    class Agent:
        name = "hostA"
        finished = flower_node.threading.Event()

        def handle(self, request: dict[str, object]) -> dict[str, object]:
            self.finished.set()
            return {"node": self.name, "echo": request["kind"]}

    with flower_node.agent_endpoint(Agent(), tmp_path) as (address, key_file):  # type: ignore[arg-type]
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"
        host, port = address.rsplit(":", 1)
        with pytest.raises(AuthenticationError):
            Client((host, int(port)), authkey=b"not the key")
        with Client((host, int(port)), authkey=key_file.read_bytes()) as conn:
            conn.send({"kind": "hello"})
            assert conn.recv() == {"node": "hostA", "echo": "hello"}
    assert not key_file.exists()


# ---- a real deployment on 127.0.0.1 ------------------------------------------------------------------------------

def _listening(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture
def superlink(tmp_path: Path) -> Iterator[str]:
    """A real flower-superlink on a free port of 127.0.0.1 (its log in tmp_path), stopped with its SuperExec."""
    port = free_port()
    cmd = [str(Path(sys.executable).with_name("flower-superlink")), "--insecure", "--host", "127.0.0.1", "--port",
           str(port), "--disable-runtime-dependency-installation"]
    with flower_node.started(cmd, flower_node.flower_env(tmp_path / "superlink-home"), tmp_path / "superlink.log"):
        _listening(port)
        yield f"127.0.0.1:{port}"


def _left(marker: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", str(marker)], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()  # the superlink fixture's processes name no path under tmp_path


@pytest.mark.twin
def test_two_rack_hosts_as_flower_nodes_give_the_built_in_global_model(tmp_path: Path, superlink: str) -> None:
    """3 twins served by two `bench flower-node`s (2 + 1) under a real SuperLink, Flower's FedAvg over the nodes:
    the global weights equal the built-in FedAvg's over the same 3 boards (same shards and seeds) up to float32
    rounding, every board has its row in every round, and nothing the nodes started outlives them."""
    common = ["quick", "--superlink", superlink, "--insecure", "--local-steps", "20", "--join-timeout", "600"]
    nodes = {"hostA": ["--serve", "nrf52840-dk", "--serve", "nucleo-f746zg"], "hostB": ["--serve", "rpi-pico"]}
    procs = {name: subprocess.Popen([BENCH, "flower-node", *common, *serve, "--name", name, "--out",
                                     str(tmp_path / name)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for name, serve in nodes.items()}
    try:
        run = subprocess.run([BENCH, "flower-run", "quick", "--superlink", superlink, "--insecure", "--nodes", "2",
                              "--rounds", "2", "--join-timeout", "300", "--out", str(tmp_path / "run")],
                             capture_output=True, text=True, timeout=900, check=False)
        outputs = {name: p.communicate(timeout=120)[0].decode(errors="replace") for name, p in procs.items()}
    finally:
        for p in procs.values():
            p.kill()
    assert run.returncode == 0, run.stdout + run.stderr + "\n".join(outputs.values())
    assert all(p.returncode == 0 for p in procs.values()), outputs
    assert "round 2: global accuracy" in run.stderr  # the ServerApp's progress, echoed from Flower's stream
    rounds = pd.read_parquet(tmp_path / "run" / "rounds.parquet")
    clients, glob = rounds[rounds["role"] == "client"], rounds[rounds["role"] == "global"]
    assert sorted(zip(clients["client"], clients["node"], strict=True)) == sorted(
        [("nrf52840-dk", "hostA"), ("nucleo-f746zg", "hostA"), ("rpi-pico", "hostB")] * 2)
    assert set(clients["status"]) == {"ok"} and clients["weight_share"].groupby(clients["round"]).sum().round(
        9).tolist() == [1.0, 1.0]
    assert glob["clients_averaged"].tolist() == [3, 3] and set(glob["status"]) == {"ok"}
    assert (clients["update_norm"] > 0).all()  # each board's step away from the global model, as in bench federate
    meta = json.loads((tmp_path / "run" / "federation.json").read_text())
    assert "deployment: 2 nodes" in meta["aggregator"] and len(meta["global_accuracy"]) == 2

    built_in = run_federation(load_profile("quick"), load_rack(None, load_catalogue()), tmp_path / "builtin",
                              FedSettings(rounds=2, local_steps=20))
    deployed = np.load(tmp_path / "run" / "global_model.npz")
    for (layer, param), t in built_in.global_tensors.items():
        got = deployed[f"L{layer}.{'wb'[param]}"]
        assert np.allclose(got, t if param == 0 else t[:, 0], rtol=1e-5, atol=1e-6), (layer, param)
    built_acc = pd.read_parquet(tmp_path / "builtin" / "rounds.parquet").query("role == 'global'")["acc_global"]
    assert glob["acc_global"].tolist() == built_acc.tolist()
    for name in nodes:  # each host keeps its own boards' rows and journals
        local = pd.read_parquet(tmp_path / name / "rounds.parquet")
        assert set(local.query("role == 'client'")["node"]) == {name}
        assert any((tmp_path / name / "journal").iterdir())
    assert not _left(tmp_path)


@pytest.mark.twin
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_a_flower_node_stopped_by_a_signal_leaves_nothing_running(tmp_path: Path, superlink: str, sig: str) -> None:
    """A node waiting for its run (its twin flashed, its SuperNode connected) that gets SIGTERM, as a cancelled CI
    job sends, unwinds; one that is SIGKILLed takes its SuperNode and QEMU with it (parent-death signal). Either way
    neither outlives it."""
    import signal

    out = tmp_path / "hostA"
    node = subprocess.Popen([BENCH, "flower-node", "quick", "--superlink", superlink, "--insecure", "--serve",
                             "nucleo-f746zg", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        log = out / "flower" / "supernode.log"
        deadline = time.monotonic() + 120
        while not (log.is_file() and _left(tmp_path)) and node.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2.0)  # the SuperNode has started its SuperExec
        assert node.poll() is None and any("supernode" in p for p in _left(tmp_path)), _left(tmp_path)
        node.send_signal(getattr(signal, sig))
        output = node.communicate(timeout=60)[0].decode(errors="replace")
    finally:
        node.kill()
    assert node.returncode != 0 and "Traceback" not in output, output
    deadline = time.monotonic() + 15  # a SIGKILLed node's SuperExec notices its parent's death on its next poll
    while _left(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _left(tmp_path)


def test_the_flower_commands_want_an_explicit_transport() -> None:
    """Plain HTTP to a SuperLink is a choice the user makes (--insecure), not a default; TLS needs a CA bundle."""
    from click.testing import CliRunner

    from bench.app.cli import main

    for cmd in (["flower-run", "quick", "--superlink", "127.0.0.1:1"],
                ["flower-node", "quick", "--superlink", "127.0.0.1:1"]):
        result = CliRunner().invoke(main, cmd)
        assert result.exit_code == 2 and "give exactly one of --insecure" in result.output, result.output
    bad = subprocess.run([BENCH, "flower-run", "quick", "--superlink", "127.0.0.1:1", "--insecure", "--strategy",
                          "FedProx"], capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "needs its proximal term's mu" in bad.stderr and "Traceback" not in bad.stderr


def test_strategy_options_reach_the_strategy_and_bad_ones_are_refused_by_name(tmp_path: Path) -> None:
    """--strategy-option KEY=VALUE: a strategy's own hyperparameter, typed like its default, in both Flower APIs;
    an unknown key names the strategy's options, a bad value its type, and the bench's own settings are not options."""
    from types import SimpleNamespace

    from bench.app import flower

    legacy = flower.strategy_options(flower.STRATEGIES["FedAdam"], "FedAdam", flower.parse_pairs(["eta=0.05"]))
    fed = SimpleNamespace(settings=FedSettings(), clients=[])
    initial = flower.ndarrays_to_parameters([np.zeros(2, np.float32)])
    strategy = flower.rack_strategy("FedAdam", fed, **legacy, initial_parameters=initial)  # type: ignore[arg-type]
    assert strategy.eta == 0.05  # type: ignore[attr-defined]
    cfg = flower_deploy.RunConfig(tmp_path, "quick", 1, 1, "FedAvgM", 0.0, 1.0, 1.0, ("server_momentum=0.9",))
    recorder = flower_deploy.Recorder(None, {}, [])  # type: ignore[arg-type]
    assert flower_deploy.deploy_strategy("FedAvgM", recorder, 0.0, cfg.strategy_kwargs()).server_momentum == 0.9
    with pytest.raises(FederationError, match=r"FedAdam has no option 'etaa'; its options: .*eta \(default"):
        flower.strategy_options(flower.STRATEGIES["FedAdam"], "FedAdam", {"etaa": "1"})
    with pytest.raises(FederationError, match="has no option 'fraction_fit'"):
        flower.strategy_options(flower.STRATEGIES["FedAdam"], "FedAdam", {"fraction_fit": "0.5"})
    with pytest.raises(FederationError, match="eta=fast: want a float"):
        flower.strategy_options(flower.STRATEGIES["FedAdam"], "FedAdam", {"eta": "fast"})
    with pytest.raises(FederationError, match="want KEY=VALUE"):
        flower.parse_pairs(["eta"])
    bad = subprocess.run([BENCH, "flower-run", "quick", "--superlink", "127.0.0.1:1", "--insecure", "--strategy",
                          "FedYogi", "--strategy-option", "tauu=1"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert bad.returncode == 2 and "FedYogi has no option 'tauu'" in bad.stderr, bad.stderr
