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
from bench.numerics import int8params
from bench.numerics.fedavg import ClientUpdate, fedavg, update_norm, weight_shares
from bench.plan.fp32 import Plan
from bench.plan.int8 import QPlan
from bench.records.run import RunRecord
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

def test_int8_words_round_trip_within_half_a_residual_step_and_clamp_like_the_update() -> None:
    rng = np.random.default_rng(3)
    scale = rng.uniform(0.001, 0.05, 4)
    real = rng.uniform(-127.4, 127.4, (4, 9)) * scale[:, None]
    words = int8params.encode_weights(real, scale)
    assert np.all(np.abs(int8params.decode_weights(words, scale, 9) - real) <= scale[:, None] / 65536 / 2 + 1e-15)
    assert int8params.check_words(words, bias=False) is None
    big = int8params.encode_weights(np.array([[1e3, -1e3]]), np.array([0.01]))
    assert big.tolist() == [int8params.W_HI, int8params.W_LO]  # codes 127 and -128 with their extreme residuals
    b = np.array([-3.7, 0.0, 2.5e-3, 1e9])
    bw = int8params.encode_biases(b, np.full(4, 1e-4))
    assert bw[6] == int8params.BIAS_MAX and bw[7] == 0  # clamped code, residual 0
    assert np.allclose(int8params.decode_biases(bw, np.full(4, 1e-4))[:3], b[:3], atol=1e-4 / 65536)
    assert int8params.check_words(bw, bias=True) is None
    assert "outside" in str(int8params.check_words(np.array([0, 40000]), bias=True))
    assert "outside" in str(int8params.check_words(np.array([int8params.W_HI + 1]), bias=False))


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


@pytest.mark.twin
def test_fedprox_on_a_twin_matches_the_host_replay_and_pulls_toward_the_start(tmp_path: Path) -> None:
    """START's prox_mu on a live twin: after 15 steps from the plan's values, every trained value equals the host
    reference's FedProx run (`run_sgd(prox_mu=...)`) within 1e-4 relative, and is measurably nearer the start than
    the same samples without the proximal term; the anchor is measured as arena."""
    from bench.numerics import fp32 as reference

    profile = load_profile("quick").model_copy(update={"check_steps": 0})
    fed = Federation(Bench(tmp_path), profile, _rack(("nucleo-f746zg",)), FedSettings(rounds=1, alpha=None,
                                                                                      techniques=("full-fp32",)))
    (layer, _) = max(k for k in fed.clients[0].rows)
    with fed.connected() as (client,):
        link = client.link
        assert link is not None and isinstance(client.plan, Plan)
        peaks, final = [], []
        for mu in (0.0, 3.0):
            rec = RunRecord(run_id=f"prox{mu}", board=client.board, target_kind="emulated", technique="full-fp32",
                            model="m")
            session.train(link, rec, session.TrainSettings(15, 0.02, 7, 0, 1, prox_mu=mu), idle_timeout=20,
                          name=rec.run_id)
            got = session.get_params(link, 10, "raw")
            samples = [st.sample for st in rec.steps]
            x, y = fed.prepared.x_train[client.shard][samples], fed.prepared.y_train[client.shard][samples]
            _, ref = reference.run_sgd(client.plan.model, x, y, 0.02, set(client.plan.trainable), prox_mu=mu)
            want = np.asarray(ref.layers[layer].weight, np.float64).ravel()
            dev = np.asarray(got[(layer, 0)], np.float64)
            assert np.linalg.norm(dev - want) <= 1e-4 * np.linalg.norm(want), mu
            final.append(dev)
            peaks.append(rec.peak_sram()[0])
    start = np.asarray(client.plan.model.layers[layer].weight, np.float64).ravel()
    assert np.linalg.norm(final[1] - start) < 0.9 * np.linalg.norm(final[0] - start)
    anchor_bytes = 4 * sum(len(r) * fed.global_tensors[k].shape[1] for k, r in client.rows.items())
    assert peaks[1] >= peaks[0] + anchor_bytes - 8


@pytest.mark.twin
def test_flower_fedprox_gives_the_built_in_fedprox_global_model(tmp_path: Path) -> None:
    """FedProx both ways on 2 twins, 2 rounds (mu 0.5): the built-in FedAvg with proximal clients and Flower's FedProx
    strategy, whose proximal_mu reaches the boards, give the same global model; every client's fidelity check ran
    with the proximal step and passed."""
    pytest.importorskip("flwr")
    profile = load_profile("quick")
    settings = FedSettings(rounds=2, local_steps=20, alpha=0.5, prox_mu=0.5)
    rack = _rack(("nrf52840-dk", "nucleo-f746zg"))
    built_in = run_federation(profile, rack, tmp_path / "fedavg", settings)
    from bench.app.flower import run_flower_federation

    flower = run_flower_federation(profile, rack, tmp_path / "flower", settings, strategy="FedProx")
    assert "Flower FedProx" in flower.aggregator and "mu 0.5" in built_in.aggregator
    for key, t in built_in.global_tensors.items():
        assert np.allclose(flower.global_tensors[key], t, rtol=1e-5, atol=1e-6), key
    rows = pd.read_parquet(tmp_path / "flower" / "rounds.parquet").query("role == 'client'")
    assert (rows["prox_mu"] == 0.5).all() and (rows["fidelity_max_rel_err"] <= 1e-4).all()


def test_fedprox_is_refused_for_clients_without_a_proximal_step(tmp_path: Path) -> None:
    with pytest.raises(FederationError, match="FedProx is implemented for fp32 backprop clients only"):
        Federation(Bench(tmp_path), load_profile("quick"), _rack(("nucleo-f746zg",)),
                   FedSettings(techniques=("full-int8",), prox_mu=0.1))
    flower = pytest.importorskip("bench.app.flower")
    with pytest.raises(FederationError, match="needs its proximal term's mu"):
        flower.check_strategy("FedProx", 0.0)


def test_an_imported_model_federation_is_refused_by_name(tmp_path: Path, shared_models: Path) -> None:
    profile = load_profile("person_detect")
    with pytest.raises(FederationError, match=r"federating an imported \.tflite model is not implemented"):
        Federation(Bench(tmp_path), profile, _rack(("nucleo-f746zg",)), FedSettings(techniques=("last-int8",)))


@pytest.mark.twin
def test_int8_boards_federate_beside_an_fp32_board(tmp_path: Path) -> None:
    """A heterogeneous rack: full-int8 on the M4F twin, full-fp32 on the M7, sparse-int8 on the M0+. Every int8
    client's gradients are exactly the host reference's; the int8 clients get the global model in round 1 (their flash
    holds codes), the fp32 one does not; the fp32 board measures the global model, which improves; the sparse client
    sends fewer values; bytes are measured on the links."""
    profile = load_profile("techniques")  # [sparse] and lr_int8
    settings = FedSettings(rounds=2, local_steps=20, alpha=0.5, techniques=("full-int8", "full-fp32", "sparse-int8"))
    fed = run_federation(profile, _rack(("nrf52840-dk", "nucleo-f746zg", "rpi-pico")), tmp_path, settings)
    rounds = pd.read_parquet(tmp_path / "rounds.parquet")
    clients, glob = rounds[rounds["role"] == "client"], rounds[rounds["role"] == "global"]
    assert set(clients["status"]) == {"ok"} and len(clients) == 6, clients[["client", "status", "error"]]
    int8 = clients[clients["client"].isin(["nrf52840-dk", "rpi-pico"])]
    assert (int8["fidelity_max_rel_err"] == 0).all()
    first = clients[clients["round"] == 1].set_index("client")
    assert first.loc["nrf52840-dk", "bytes_down"] > 0 and first.loc["nucleo-f746zg", "bytes_down"] == 0
    assert set(glob["measured_on"]) == {"nucleo-f746zg"} and set(glob["status"]) == {"ok"}
    assert glob["acc_global"].iloc[-1] > first.loc["nucleo-f746zg", "acc_before"] + 0.05, glob["acc_global"]
    trained = json.loads((tmp_path / "federation.json").read_text())["clients"]
    assert all(v == trained[c]["trained_values"] for c, v in zip(clients["client"], clients["values_up"], strict=True))
    assert trained["rpi-pico"]["trained_values"] < trained["nrf52840-dk"]["trained_values"]
    assert (clients["bytes_up"] > 4 * clients["values_up"]).all()
    assert all(np.all(np.isfinite(t)) for t in fed.global_tensors.values())
    assert not _qemu_left(tmp_path)


@pytest.mark.twin
def test_an_int8_twin_takes_and_returns_codes_with_their_residuals(tmp_path: Path) -> None:
    """On a live int8 twin: a resumed START before any parameters is refused; WGET first loads the plan's codes
    (residual 0); WSET of words with residuals comes back word for word through WGET and a resumed evaluation; f32
    frames and out-of-range words answer FAULT 5 naming the problem."""
    profile = load_profile("techniques").model_copy(update={"check_steps": 0})
    fed = Federation(Bench(tmp_path), profile, _rack(("nucleo-f746zg",)), FedSettings(rounds=1,
                                                                                      techniques=("last-int8",)))
    with fed.connected() as (client,):
        link, wire = client.link, client.wire
        assert link is not None and wire is not None and isinstance(client.plan, QPlan)
        link.send(Start(steps=1, lr=0.01, seed=1, out_flags=Start.RESUME))
        with pytest.raises(DeviceFault, match="no parameters in SRAM"):
            link.expect(lambda m: False, timeout=10, what="FAULT")
        got = session.get_params(link, 10, "raw", WSet.INT_WORDS)
        (layer, _), = [k for k in client.rows if k[1] == 0]
        op = wire.ops[layer]
        codes = client.plan.model.tensors[client.plan.model.ops[op].inputs[1]].data
        assert codes is not None and sorted(got) == [(op, 0), (op, 1)]
        assert got[(op, 0)] == (codes.astype(np.int64).ravel() * 65536).tolist()  # the plan's codes, residual 0
        words = [int(w) + (j % 3 - 1) * 12345 for j, w in enumerate(got[(op, 0)])]
        session.set_params(link, {(op, 0): words}, 10, "raw", WSet.INT_WORDS)
        assert session.get_params(link, 10, "raw", WSet.INT_WORDS)[(op, 0)] == words
        session.train(link, RunRecord(run_id="eval", board=client.board, target_kind="emulated",
                                      technique="last-int8", model="m"),
                      session.TrainSettings(0, 0.0, 1, 0, 10, resume=True), idle_timeout=20, name="eval")
        assert session.get_params(link, 10, "raw", WSet.INT_WORDS)[(op, 0)] == words  # a resumed run keeps them
        n = len(words)
        for frame, why in ((WSet(op, 0, n, 0, (0.0,)), "int8 plan takes kind 1 frames"),
                           (WSet(op, 0, n, 0, (127 * 65536 + 32768,), WSet.INT_WORDS), "outside its range"),
                           (WSet(op, 1, len(got[(op, 1)]), 1, (0, 0), WSet.INT_WORDS), "pairs")):
            link.send(frame)
            with pytest.raises(DeviceFault, match=why):
                link.expect(lambda m: False, timeout=10, what="FAULT")


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


def test_a_flower_strategy_not_wired_up_is_refused_by_name() -> None:
    flower = pytest.importorskip("bench.app.flower")
    with pytest.raises(FederationError, match="'FedNova' is not wired up; choose one of FedAvg"):
        flower.check_strategy("FedNova")
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
