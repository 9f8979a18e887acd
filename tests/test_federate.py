"""Federated rounds: shards and FedAvg on the host, then the rack of real twins as a federation (weights over the
wire, a twin killed mid-round, Flower's FedAvg against the built-in one)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.app.federate import Federation, FederationError, FedSettings, run_federation
from bench.app.runner import Bench, load_profile
from bench.config.boards import load_catalogue, load_rack
from bench.link import session
from bench.link.link import DeviceFault
from bench.link.protocol import Start, WSet
from bench.model.tasks.shards import ShardError, label_histogram, shard_indices
from bench.numerics.fedavg import ClientUpdate, fedavg, update_norm, weight_shares
from bench.report.federation import write_federation_report

LABELS = np.repeat(np.arange(10), 60)


# ---- shards ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [None, 0.5, 100.0])
def test_shards_are_disjoint_cover_the_split_and_repeat_by_seed(alpha: float | None) -> None:
    shards = shard_indices(LABELS, 3, alpha, seed=7)
    joined = np.concatenate(shards)
    assert sorted(joined.tolist()) == list(range(len(LABELS)))  # every sample once
    again = shard_indices(LABELS, 3, alpha, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(shards, again, strict=True))
    other = shard_indices(LABELS, 3, alpha, seed=8)
    assert not all(np.array_equal(a, b) for a, b in zip(shards, other, strict=True))


def test_small_alpha_skews_labels_and_iid_does_not() -> None:
    """Label skew: with α = 0.1 a client's largest class holds far more than a tenth of its samples."""
    def top_share(alpha: float | None) -> float:
        hist = label_histogram(LABELS, shard_indices(LABELS, 4, alpha, seed=3), 10)
        return float(np.mean(hist.max(axis=1) / hist.sum(axis=1)))
    assert top_share(None) < 0.2
    assert top_share(0.1) > 0.4


def test_bad_shard_requests_are_named() -> None:
    with pytest.raises(ShardError, match="alpha must be > 0"):
        shard_indices(LABELS, 3, 0.0, 1)
    with pytest.raises(ShardError, match="cannot give 700 clients"):
        shard_indices(LABELS, 700, None, 1)


# ---- FedAvg ---------------------------------------------------------------------------------------------------------

def test_fedavg_weights_each_row_by_the_samples_of_the_clients_that_trained_it() -> None:
    g = {(0, 0): np.zeros((3, 2), np.float32), (0, 1): np.zeros((3, 1), np.float32)}
    full = ClientUpdate("a", 30, {(0, 0): np.ones((3, 2), np.float32), (0, 1): np.full((3, 1), 2, np.float32)},
                        {(0, 0): (0, 1, 2), (0, 1): (0, 1, 2)})
    sparse = ClientUpdate("b", 10, {(0, 0): np.full((1, 2), 5, np.float32)}, {(0, 0): (2,)})
    new = fedavg(g, [full, sparse])
    assert np.allclose(new[(0, 0)][:2], 1.0)  # only "a" trained rows 0 and 1
    assert np.allclose(new[(0, 0)][2], (30 * 1 + 10 * 5) / 40)
    assert np.allclose(new[(0, 1)], 2.0)  # "b" does not train the bias: it does not dilute it
    assert fedavg(g, [])[(0, 0)] is not g[(0, 0)] and np.array_equal(fedavg(g, [])[(0, 0)], g[(0, 0)])
    assert weight_shares([full, sparse]) == {"a": 0.75, "b": 0.25}
    assert update_norm(g, sparse) == pytest.approx(np.sqrt(50.0))


# ---- the rack as a federation (real twins) -----------------------------------------------------------------------

def _rack(boards: tuple[str, ...]):  # type: ignore[no-untyped-def]
    rack = load_rack(None, load_catalogue())
    return rack.model_copy(update={"boards": [e for e in rack.boards if e.board in boards]})


def _qemu_left(marker: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-f", f"qemu-system-arm.*{marker}"], capture_output=True, text=True, check=False)
    return out.stdout.split()


@pytest.mark.twin
def test_three_twin_federation_rises_and_survives_a_twin_killed_mid_round(tmp_path: Path) -> None:
    """Non-IID (α 0.5) on the 3-twin rack; rpi-pico's QEMU is SIGKILLed at its first step of round 2: that round's
    row says disconnected, it is in no later round, the others go on and the global model improves."""
    profile = load_profile("quick")
    settings = FedSettings(rounds=3, local_steps=25, alpha=0.5, kill={"rpi-pico": 2})
    fed = run_federation(profile, _rack(("nrf52840-dk", "nucleo-f746zg", "rpi-pico")), tmp_path, settings)
    rounds = pd.read_parquet(tmp_path / "rounds.parquet")
    clients, glob = rounds[rounds["role"] == "client"], rounds[rounds["role"] == "global"]
    pico = clients[clients["client"] == "rpi-pico"]
    assert pico["round"].tolist() == [1, 2] and pico["status"].tolist() == ["ok", "disconnected"]
    others = clients[clients["client"] != "rpi-pico"]
    assert len(others) == 6 and set(others["status"]) == {"ok"}, others[["client", "status", "error"]]
    assert glob["clients_averaged"].tolist() == [3, 2, 2] and set(glob["status"]) == {"ok"}
    acc = glob["acc_global"].to_numpy()
    first_before = clients[clients["round"] == 1]["acc_before"].iloc[0]  # the plan's model, measured on a board
    assert acc[-1] > first_before + 0.05, (first_before, acc)
    # weights travel: nothing down in round 1 (the plan in flash is the initial model), every trained value up
    trained = json.loads((tmp_path / "federation.json").read_text())["clients"]
    ok = clients[clients["status"] == "ok"]
    assert (ok[ok["round"] == 1]["bytes_down"] == 0).all()
    assert all(v == trained[c]["trained_values"] for c, v in zip(ok["client"], ok["values_up"], strict=True))
    assert (ok["bytes_up"] > 4 * ok["values_up"]).all()  # framed wire bytes measured on the link
    model = np.load(tmp_path / "global_model.npz")
    assert np.array_equal(model["L4.w"], fed.global_tensors[(4, 0)])
    assert "rpi-pico" in write_federation_report(tmp_path).read_text()
    assert not _qemu_left(tmp_path)  # nothing the bench started outlives it


@pytest.mark.twin
def test_flower_fedavg_gives_the_built_in_global_model(tmp_path: Path) -> None:
    """The same federation (2 twins, 2 rounds, same seeds) driven by a real Flower server on 127.0.0.1 through a proxy
    client per board: the same accuracy per round and global weights equal up to float32 rounding (Flower sums in
    float32, the built-in average in float64)."""
    pytest.importorskip("flwr")
    profile = load_profile("quick").model_copy(update={"check_steps": 0})
    settings = FedSettings(rounds=2, local_steps=20, alpha=0.5)
    rack = _rack(("nrf52840-dk", "nucleo-f746zg"))
    built_in = run_federation(profile, rack, tmp_path / "fedavg", settings)
    from bench.app.flower import run_flower_federation

    flower = run_flower_federation(profile, rack, tmp_path / "flower", settings)
    assert "Flower FedAvg" in flower.aggregator
    for key, t in built_in.global_tensors.items():
        assert np.allclose(flower.global_tensors[key], t, rtol=1e-5, atol=1e-6), key
    accs = [pd.read_parquet(tmp_path / d / "rounds.parquet").query("role == 'global'")["acc_global"].tolist()
            for d in ("fedavg", "flower")]
    assert accs[0] == accs[1] and len(accs[0]) == 2


@pytest.mark.twin
def test_sparse_clients_send_only_their_channels_and_the_device_refuses_bad_parameter_frames(tmp_path: Path) -> None:
    """Bytes up scale with the trained values (sparse vs full, one round each); on a live twin, WSET of a tensor the
    plan does not train and a resumed START on a freshly reset board answer FAULT 5 naming the problem."""
    profile = load_profile("techniques").model_copy(update={"check_steps": 0})  # it has a [sparse] table
    rack = _rack(("nucleo-f746zg",))
    up = {}
    for tech in ("full-fp32", "sparse-fp32"):
        run_federation(profile, rack, tmp_path / tech, FedSettings(rounds=1, local_steps=5, alpha=None,
                                                                   techniques=(tech,)))
        row = pd.read_parquet(tmp_path / tech / "rounds.parquet").query("role == 'client'").iloc[0]
        up[tech] = (int(row["values_up"]), int(row["bytes_up"]))
    assert up["sparse-fp32"][0] < up["full-fp32"][0]
    ratio_values = up["sparse-fp32"][0] / up["full-fp32"][0]
    ratio_bytes = up["sparse-fp32"][1] / up["full-fp32"][1]
    assert abs(ratio_bytes - ratio_values) < 0.05, (ratio_values, ratio_bytes)

    fed = Federation(Bench(tmp_path / "raw"), profile, rack, FedSettings(rounds=1, techniques=("last-fp32",)))
    with fed.connected() as (client,):
        link = client.link
        assert link is not None
        link.send(Start(steps=1, lr=0.01, seed=1, out_flags=Start.RESUME))
        with pytest.raises(DeviceFault, match="no parameters in SRAM"):
            link.expect(lambda m: False, timeout=10, what="FAULT")
        got = session.get_params(link, 10, "raw")  # loads the plan's values first
        assert sorted(got) == sorted(client.rows)  # last-fp32: the last dense layer's weight and bias only
        link.send(WSet(0, 0, 72, 0, (0.0,)))  # layer 0 is frozen in last-fp32
        with pytest.raises(DeviceFault, match="no such trainable tensor"):
            link.expect(lambda m: False, timeout=10, what="FAULT")
        key = min(client.rows)
        n = len(got[key])
        session.set_params(link, {key: [0.5] * n}, 10, "raw")
        assert session.get_params(link, 10, "raw")[key] == [0.5] * n


def test_int8_federation_is_refused_by_name(tmp_path: Path) -> None:
    profile = load_profile("quick")
    with pytest.raises(FederationError, match="federated int8 is not implemented"):
        Federation(Bench(tmp_path), profile, _rack(("nucleo-f746zg",)), FedSettings(techniques=("full-int8",)))


@pytest.mark.twin
def test_the_bench_federate_fixture_federates_the_session_rack(bench_federate) -> None:  # type: ignore[no-untyped-def]
    fed = bench_federate("quick", rounds=1, local_steps=5, alpha=None, techniques=("last-fp32",))
    clients = [r for r in fed.writer.rows if r["role"] == "client"]
    assert len(clients) == len(fed.clients) >= 1 and all(r["status"] == "ok" for r in clients)
    assert (fed.bench.out / "rounds.parquet").is_file()


def test_the_federation_report_escapes_what_devices_sent(tmp_path: Path) -> None:
    """A device's fault text reaches the report as the round's error: it is shown, escaped, never markup."""
    from bench.records.rounds import RoundsWriter

    meta = {"profile": "p", "model": "m", "task": "t", "rounds": 1, "local_steps": 1, "split": "iid", "seed": 1,
            "aggregator": "fedavg", "clients": {"a": {"board": "b", "technique": "full-fp32", "samples": 3,
                                                      "trained_values": 9, "labels": [1, 2]}}}
    writer = RoundsWriter(tmp_path, meta)
    writer.add([{"round": 1, "role": "client", "client": "a", "status": "fault", "error": "<script>x()</script>",
                 "acc_local": 0.5, "bytes_up": 10, "bytes_down": 0, "update_norm": 0.1},
                {"round": 1, "role": "global", "client": "(global)", "status": "ok", "acc_global": 0.5}])
    html = write_federation_report(tmp_path).read_text()
    assert "<script>" not in html and "&lt;script&gt;x()&lt;/script&gt;" in html
    from click.testing import CliRunner

    from bench.app.cli import main

    again = CliRunner().invoke(main, ["report", str(tmp_path), "--out", str(tmp_path / "again.html")])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "again.html").read_text() == html  # `bench report` knows a federation's directory


def test_killing_a_board_that_is_not_a_local_twin_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(FederationError, match="--kill names stm32h7: the bench kills QEMU twins"):
        Federation(Bench(tmp_path), load_profile("quick"), _rack(("nucleo-f746zg",)), FedSettings(kill={"stm32h7": 2}))


def test_a_flower_strategy_the_device_cannot_serve_is_refused_by_name() -> None:
    flower = pytest.importorskip("bench.app.flower")
    with pytest.raises(FederationError, match="FedProx needs a proximal term"):
        flower.check_strategy("FedProx")
    flower.check_strategy("FedAdam")  # server-side optimisers need nothing of the device


@pytest.mark.twin
def test_a_straggler_past_the_round_timeout_is_dropped_as_a_hang(tmp_path: Path) -> None:
    """The M0+ twin's 200 soft-float steps take longer than a 0.5 s round: its row says hang, and with nobody left
    the round's global row says so."""
    profile = load_profile("quick").model_copy(update={"check_steps": 0})
    fed = run_federation(profile, _rack(("rpi-pico",)), tmp_path,
                         FedSettings(rounds=2, local_steps=200, alpha=None, round_timeout_s=0.5))
    (client, glob) = fed.writer.rows
    assert (client["status"], client["round"]) == ("hang", 1) and "still running after" in str(client["error"])
    assert glob["status"] == "error" and glob["clients_averaged"] == 0
