"""Federated rounds across the rack: every board is a client with its own shard of the task (docs/federated.md).

Per round each live client receives the global trainable tensors over its link (WSET; round 1 starts from the plan
in flash, which *is* the global initial model), trains ``local_steps`` steps on its shard (START with the resume
flag), and sends back what it trained (WGET). Int8 clients send their codes and Q16 residuals, which the host turns
into real values at the client's own scales before averaging and back after (`bench.numerics.int8params`), so an
int8 board can sit beside an fp32 one. The host averages (`bench.numerics.fedavg`, or a Flower strategy:
`bench.app.flower`) and one board measures the new global model on the eval split. A client that fails in a round
(hang, fault, disconnect, straggling past the round timeout) is recorded, left out of that round's average and out
of the federation from then on; the rounds go on while one client is left. Everything is written after each round.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bench import plan as bench_plan
from bench.app.runner import (
    FIDELITY_TOLERANCE,
    RACK_FAULTS,
    Bench,
    Prepared,
    board_lock,
    clear_previous,
    hold,
    session_lock,
)
from bench.config.boards import Board, ConfigError, Rack, RackEntry, lock_key
from bench.config.profile import Profile, Technique
from bench.image.firmware import DoesNotFit, assemble
from bench.link import session
from bench.link.link import DeviceFault, Link, LinkError, LinkTimeout
from bench.link.protocol import Hello, ParamChunk, Step
from bench.model.qgraph import QModel
from bench.model.tasks.shards import label_histogram, shard_indices
from bench.numerics import int8params
from bench.numerics.fedavg import ClientUpdate, Tensors, fedavg, update_norm, weight_shares
from bench.numerics.int8ref import input_qparams, quantized_inputs
from bench.plan.blob import dataset_blob, int8_dataset_blob
from bench.plan.fp32 import Plan
from bench.plan.int8 import QPlan
from bench.plan.select import layer_ops
from bench.records import fidelity
from bench.records.rounds import RoundsWriter
from bench.records.run import RunRecord, atomic_path
from bench.target.drivers import Counting, QemuTarget, Target
from bench.target.factory import make_target

log = logging.getLogger(__name__)

PARAM_TIMEOUT_S = 20.0  # one WSET's ACK, or the whole WGET answer


class FederationError(ConfigError):
    """A federation that cannot start (an imported model, no client fits, bad shards): named, never a traceback."""


@dataclass(frozen=True)
class FedSettings:
    rounds: int = 10
    local_steps: int = 50
    alpha: float | None = 0.5  # Dirichlet label skew; None: IID
    techniques: tuple[str, ...] = ()  # per client (fp32 or int8), cycled; default: the profile's first fp32 one
    eval_samples: int = 0  # the global model's evaluation (0: the whole eval split)
    local_eval: int = 50  # each local run's own before/after evaluation
    round_timeout_s: float | None = None  # straggler: a client's round longer than this is dropped (default timeout_s)
    kill: dict[str, int] = field(default_factory=dict)  # fault injection (twins): client label -> round it dies in
    prox_mu: float = 0.0  # FedProx: the proximal term's mu in every client's local SGD (fp32 clients only)


class FedProgress(Protocol):
    """Callbacks for live progress (`bench federate` prints a line for each)."""

    def started(self, fed: Federation) -> None: ...

    def connected(self, client: Client) -> None: ...

    def round_done(self, round_no: int, rows: list[dict[str, object]]) -> None: ...


class Quiet:
    """No progress output: the default of the plain API."""

    def started(self, fed: Federation) -> None: ...

    def connected(self, client: Client) -> None: ...

    def round_done(self, round_no: int, rows: list[dict[str, object]]) -> None: ...


@dataclass(frozen=True)
class Int8Wire:
    """How an int8 client's trainable tensors travel: the op index of each fp32 layer (the wire's layer byte) and the
    fixed per-channel scales its codes are at (weights s_W[o], biases s_b[o] = s_in·s_W[o])."""

    ops: dict[int, int]
    scales: dict[tuple[int, int], np.ndarray]  # (layer, param) -> float64 [out_c]

    @classmethod
    def of(cls, model_layers: dict[int, int], qmodel: QModel) -> Int8Wire:
        scales = {}
        for layer, i in model_layers.items():
            op = qmodel.ops[i]
            out_c = qmodel.tensors[op.outputs[0]].shape[-1]
            for param, t in ((0, op.inputs[1]), (1, op.inputs[2])):
                scale = qmodel.tensors[t].scale
                assert scale is not None
                scales[(layer, param)] = np.broadcast_to(scale.astype(np.float64), (out_c,)).copy()
        return cls(model_layers, scales)

    def wire_key(self, key: tuple[int, int]) -> tuple[int, int]:
        return self.ops[key[0]], key[1]

    def encode(self, key: tuple[int, int], values: np.ndarray, rows: tuple[int, ...]) -> list[float]:
        """Words of the real ``values`` [len(rows), row] of tensor ``key``'s ``rows``."""
        scale = self.scales[key][np.asarray(rows)]
        words = (int8params.encode_weights(values, scale) if key[1] == 0
                 else int8params.encode_biases(values[:, 0], scale))
        return [int(w) for w in words]

    def decode(self, key: tuple[int, int], words: list[float], rows: tuple[int, ...], width: int) -> np.ndarray:
        """Real values [len(rows), width] of the words a client sent; a word out of range or a wrong count is a
        `DeviceError`."""
        arr = np.asarray(words, np.int64)
        want = len(rows) * width * (2 if key[1] else 1)
        why = int8params.check_words(arr, bias=key[1] == 1) if arr.size == want else f"{arr.size} words, want {want}"
        if why:
            raise session.DeviceError(f"tensor {key} (op {self.ops[key[0]]}): {why}")
        scale = self.scales[key][np.asarray(rows)]
        real = (int8params.decode_weights(arr, scale, width) if key[1] == 0
                else int8params.decode_biases(arr, scale)[:, None])
        return real.astype(np.float32)


@dataclass
class Client:
    """One board of the federation: its shard, plan, and the target and link that stay open across rounds."""

    label: str
    entry: RackEntry
    board: Board
    technique: Technique
    plan: Plan | QPlan
    shard: np.ndarray
    target: Target | None = None
    link: Link | None = None
    hello: Hello | None = None
    counting: Counting | None = None
    alive: bool = True
    holds_global: int = 0  # the round whose global model this client's SRAM holds (it evaluated it), 0 none
    fidelity_max_rel_err: float = math.nan
    rows: dict[tuple[int, int], tuple[int, ...]] = field(default_factory=dict)  # tensor -> output channels trained
    wire: Int8Wire | None = None  # int8 clients: how their tensors travel

    @property
    def n_samples(self) -> int:
        return len(self.shard)

    @property
    def kind(self) -> int:
        """The WSET/WDATA kind of this client's plan: f32 values or int32 words."""
        return ParamChunk.FLOATS if self.wire is None else ParamChunk.INT_WORDS


def global_init(model_layers: list, clients: list[Client]) -> Tensors:
    """The global trainable tensors: the pretrained model's values ([out, row]; biases [out, 1]) of every tensor some
    client trains."""
    keys = sorted({k for c in clients for k in c.rows})
    out: Tensors = {}
    for layer, param in keys:
        arr = model_layers[layer].weight if param == 0 else model_layers[layer].bias
        out[(layer, param)] = np.asarray(arr, np.float32).reshape(arr.shape[0], -1).copy()
    return out


def trained_rows(plan: Plan) -> dict[tuple[int, int], tuple[int, ...]]:
    """What a plan trains, as WGET sends it: (layer, param) -> output channels (a sparse layer's list, else all)."""
    rows: dict[tuple[int, int], tuple[int, ...]] = {}
    for lp in plan.layers:
        out = plan.model.layers[lp.index].out_shape[-1]
        if lp.train_w:
            rows[(lp.index, 0)] = lp.channels or tuple(range(out))
        if lp.train_b:
            rows[(lp.index, 1)] = tuple(range(out))
    return rows


def trained_rows_int8(plan: QPlan, ops: dict[int, int]) -> dict[tuple[int, int], tuple[int, ...]]:
    """What an int8 plan trains, keyed like `trained_rows` by the fp32 layer of each op (``ops``: layer -> op)."""
    assert plan.train is not None
    layer_of = {i: layer for layer, i in ops.items()}
    rows: dict[tuple[int, int], tuple[int, ...]] = {}
    for i, top in sorted(plan.train.ops.items()):
        if top.train_w:
            rows[(layer_of[i], 0)] = top.channels or tuple(range(len(top.m)))
        if top.train_b:
            rows[(layer_of[i], 1)] = tuple(range(len(top.m)))
    return rows


class Federation:
    """A federation of the rack's boards on one profile; `run` drives the rounds and returns the round rows."""

    def __init__(self, bench: Bench, profile: Profile, rack: Rack, settings: FedSettings,
                 progress: FedProgress | None = None, aggregator: str = "fedavg (built in)",
                 serve: Collection[str] | None = None) -> None:
        """``serve``: the labels of the boards this host drives (a Flower node of a lab, `bench.app.flower_node`);
        the others are clients of the same federation on other hosts, sharded and seeded identically. Default: all."""
        self.bench, self.profile, self.rack, self.settings = bench, profile, rack, settings
        self.aggregator = aggregator + (f", FedProx clients (mu {settings.prox_mu:g})" if settings.prox_mu else "")
        self.progress: FedProgress = progress or Quiet()
        self.prepared: Prepared = bench.prepare(profile)
        if self.prepared.model is None:
            raise FederationError(f"profile {profile.name}: federated rounds need a bench.model.zoo model (its fp32 "
                                  f"tensors are the global model); federating an imported .tflite model is not "
                                  f"implemented")
        self._x_eval_int8: np.ndarray | None = None
        self.clients = self._clients()
        self.served = self._served(serve)
        self.global_tensors = global_init(list(self.prepared.model.layers), self.clients)
        self.writer = RoundsWriter(bench.out, self._meta())

    def _techniques(self) -> list[Technique]:
        names = self.settings.techniques or tuple(t for t in self.profile.techniques if t.endswith("-fp32"))[:1]
        if not names:
            raise FederationError(f"profile {self.profile.name}: no fp32 technique to federate (give --technique)")
        techs = [self.profile.technique(n) for n in names]
        no_prox = [t.name for t in techs if t.is_int8 or t.forward_only]
        if self.settings.prox_mu and no_prox:
            raise FederationError(f"--prox-mu with {', '.join(no_prox)}: FedProx is implemented for fp32 backprop "
                                  f"clients only (the int8 update has no proximal term; the forward-only replay has "
                                  f"none either)")
        if not self.settings.prox_mu >= 0:
            raise FederationError(f"--prox-mu {self.settings.prox_mu}: mu must be >= 0")
        return techs

    def _clients(self) -> list[Client]:
        techs, prepared, s = self._techniques(), self.prepared, self.settings
        entries = list(self.rack.boards)
        twins = {e.label for e in entries if e.kind == "emulated" and e.control is None}
        unknown = sorted(set(s.kill) - twins)
        if unknown:
            raise FederationError(f"--kill names {', '.join(unknown)}: the bench kills QEMU twins of this host only "
                                  f"(here: {', '.join(sorted(twins)) or 'none'})")
        shards = shard_indices(prepared.y_train, len(entries), s.alpha, self.profile.seed)
        clients = []
        for k, entry in enumerate(entries):
            tech = techs[k % len(techs)]
            board = self.bench.catalogue[entry.board]
            clients.append(self._client(entry, board, tech, shards[k]))
        return clients

    def _served(self, serve: Collection[str] | None) -> list[Client]:
        if serve is None:
            return self.clients
        unknown = sorted(set(serve) - {c.label for c in self.clients})
        if unknown or not serve:
            raise FederationError(f"boards to serve {', '.join(unknown) or '(none)'}: not in the federation's rack "
                                  f"({', '.join(c.label for c in self.clients)})")
        return [c for c in self.clients if c.label in serve]

    def _client(self, entry: RackEntry, board: Board, tech: Technique, shard: np.ndarray) -> Client:
        """A client's plan: fp32 on the zoo model, or int8 on its quantised graph with the wire that maps the two."""
        model = self.prepared.model
        assert model is not None
        lr = self.profile.lr_for(tech)
        if not tech.is_int8:
            plan = bench_plan.compile(tech, lr, model, None)
            assert isinstance(plan, Plan)
            return Client(entry.label, entry, board, tech, plan, shard, rows=trained_rows(plan))
        qmodel = self.bench.int8(self.prepared).qmodel
        qplan = bench_plan.compile(tech, lr, model, qmodel)
        assert isinstance(qplan, QPlan)
        ops = layer_ops(model, qmodel)
        return Client(entry.label, entry, board, tech, qplan, shard, rows=trained_rows_int8(qplan, ops),
                      wire=Int8Wire.of(ops, qmodel))

    def _meta(self) -> dict[str, object]:
        s, task = self.settings, self.prepared.task
        assert task is not None
        hist = label_histogram(self.prepared.y_train, [c.shard for c in self.clients], task.n_classes)
        return {"profile": self.profile.name, "model": self.prepared.model_name, "task": task.name,
                "rounds": s.rounds, "local_steps": s.local_steps,
                "split": "iid" if s.alpha is None else f"dirichlet alpha={s.alpha:g}", "seed": self.profile.seed,
                "aggregator": self.aggregator, "prox_mu": s.prox_mu,
                "clients": {c.label: {"board": c.board.name, "technique": c.technique.name, "samples": c.n_samples,
                                      "labels": hist[i].tolist(),
                                      "trained_values": int(self._n_values(c))}
                            for i, c in enumerate(self.clients)}}

    # ---- connecting -------------------------------------------------------------------------------------------

    @contextmanager
    def connected(self) -> Iterator[list[Client]]:
        """Every client's board locked, loaded with its plan and shard, reset and greeted (and its gradients checked
        against the host reference); a board that cannot start is marked and left out. Everything is closed on exit."""
        with ExitStack() as stack:
            for c in self.served:
                stack.enter_context(hold(board_lock(lock_key(c.entry)), lambda what: None))
                stack.callback(self._close, c)
                try:
                    self._connect(c)
                except (DoesNotFit, *RACK_FAULTS, LinkError, RuntimeError, OSError, ValueError) as e:
                    self._fail(c, 0, f"{type(e).__name__}: {e}")
                self.progress.connected(c)
            yield self.served

    def _blob(self, c: Client) -> bytes:
        """The client's dataset blob: its shard of the training split and the whole eval split, as its plan's
        numerics read them (int8 clients: the samples quantised with the graph's input parameters)."""
        task = self.prepared.task
        assert task is not None
        if c.wire is None:
            return dataset_blob(task.x_train[c.shard], task.y_train[c.shard], task.x_eval, task.y_eval,
                                task.n_classes, task.scale, task.offset)
        i8 = self.bench.int8(self.prepared)
        if self._x_eval_int8 is None:
            self._x_eval_int8 = quantized_inputs(i8.qmodel, task.decode(task.x_eval))
        scale, zp = input_qparams(i8.qmodel)
        return int8_dataset_blob(i8.x_train[c.shard], task.y_train[c.shard], self._x_eval_int8, task.y_eval,
                                 task.n_classes, scale, zp)

    def _connect(self, c: Client) -> None:
        prepared = self.prepared
        blob = self._blob(c)
        fw = self.bench.firmware(prepared, c.board, c.entry.kind)
        images = assemble(c.board, c.entry.kind, fw, c.plan, blob, self.bench.out / "images" / f"fed.{c.label}")
        c.target = make_target(c.entry, c.board, self.bench.out / "journal", identify=session.running_build_id)
        c.target.load(images)
        c.target.reset()
        c.link = Link.open(c.target.url, c.board.serial.baudrate, self.bench.out / "journal", name=f"fed.{c.label}")
        c.hello = session.hello(c.link)
        c.counting = c.target.counting(c.hello.counter_hz, c.hello.counter_kind)
        if self.profile.check_steps:
            self._check(c)

    def _check(self, c: Client) -> None:
        """The profile's fidelity check on the client's own shard: a gradient off the host reference (int8: not
        exactly equal to it) ends the client before it contributes anything."""
        assert c.link is not None
        lr = self.profile.lr_for(c.technique)
        check = RunRecord(run_id=f"fed.{c.label}.check", board=c.board, target_kind=c.entry.kind,
                          technique=c.technique.name, model=self.prepared.model_name)
        session.train(c.link, check, session.TrainSettings(self.profile.check_steps, lr, self.profile.seed, 1, 1,
                                                           prox_mu=self.settings.prox_mu),
                      idle_timeout=self.profile.stall_timeout_s, name=check.run_id, run_timeout=self.profile.timeout_s)
        x = self.prepared.x_train if c.wire is None else self.bench.int8(self.prepared).x_train
        c.fidelity_max_rel_err, exact = fidelity.check_plan(check, c.plan, x[c.shard], self.prepared.y_train[c.shard],
                                                            lr, self.settings.prox_mu)
        if c.wire is not None and exact != 1.0:
            raise session.DeviceError(f"{c.label}: int8 gradients not exactly the host integer reference's (worst "
                                      f"{c.fidelity_max_rel_err:.3g} relative)")
        if not c.fidelity_max_rel_err <= FIDELITY_TOLERANCE:
            raise session.DeviceError(f"{c.label}: gradients off the host reference by {c.fidelity_max_rel_err:.3g} "
                                      f"relative (tolerance {FIDELITY_TOLERANCE:g})")

    def _fail(self, c: Client, round_no: int, error: str) -> None:
        c.alive = False
        log.warning("%s: out of the federation in round %d: %s", c.label, round_no, error)
        self.writer.add([_failed_row(c, round_no, error)])

    @staticmethod
    def _close(c: Client) -> None:
        if c.link is not None:
            c.link.close()
        if c.target is not None:
            c.target.close()

    # ---- rounds ---------------------------------------------------------------------------------------------------

    def run(self) -> list[dict[str, object]]:
        """All rounds on the connected clients, averaged by the built-in FedAvg; returns every row written."""
        self.progress.started(self)
        with self.connected() as clients:
            for r in range(1, self.settings.rounds + 1):
                live = [c for c in clients if c.alive]
                if not live:
                    log.error("round %d: no client left", r)
                    break
                with ThreadPoolExecutor(max_workers=len(live)) as pool:
                    results = list(pool.map(lambda c, r=r: self.client_round(c, r, self.global_tensors), live))
                updates = [u for u, _ in results if u is not None]
                self.finish_round(r, results, fedavg(self.global_tensors, updates))
        return self.finish()

    def finish_round(self, r: int, results: list[tuple[ClientUpdate | None, dict[str, object]]],
                     new_global: Tensors) -> dict[str, object]:
        """The round's bookkeeping once its average is known: each client's share and update size, the new global
        model measured on a board, the rows written. Returns the global row."""
        updates = [u for u, _ in results if u is not None]
        rows = [row for _, row in results]
        shares = weight_shares(updates)
        norms = {u.client: update_norm(self.global_tensors, u) for u in updates}
        for row in rows:
            if row["client"] in norms:
                row["weight_share"], row["update_norm"] = shares[str(row["client"])], norms[str(row["client"])]
        self.global_tensors = new_global
        glob = self.global_eval(r, len(updates))
        self.writer.add([*rows, glob])
        self.progress.round_done(r, [*rows, glob])
        return glob

    def finish(self) -> list[dict[str, object]]:
        """Writes the final global model and the federation's summary (`finish_records`); returns every row."""
        finish_records(self.writer, self.global_tensors)
        return self.writer.rows

    def client_round(self, c: Client, r: int, global_tensors: Tensors, prox_mu: float | None = None
                     ) -> tuple[ClientUpdate | None, dict[str, object]]:
        """One client's round: ``global_tensors`` down (from round 2, unless the client evaluated them last round and
        holds them), local steps (FedProx's ``prox_mu``: the settings' unless a strategy sends one), what it trained
        up. A failure is the row's status, never an exception."""
        link = c.link
        assert link is not None
        s, lr = self.settings, self.profile.lr_for(c.technique)
        mu = s.prox_mu if prox_mu is None else prox_mu
        name = f"fed.{c.label}.r{r}"
        rec = RunRecord(run_id=name, board=c.board, target_kind=c.entry.kind, technique=c.technique.name,
                        model=self.prepared.model_name, journal=str(link.journal_path), counting=c.counting)
        row = {**_row(c, r, "client"), "prox_mu": mu}
        started = time.monotonic()
        tx0 = link.tx_bytes
        try:
            # round 1: fp32 clients start from the plan in flash, which is the global model; an int8 client's flash
            # holds its codes, so it gets the global values with their residuals. Later rounds: every client but
            # the one that evaluated (and so holds) the last global model.
            if (r == 1 and c.wire is not None) or (r > 1 and c.holds_global != r - 1):
                session.set_params(link, self._down(c, global_tensors), PARAM_TIMEOUT_S, name, c.kind)
                row["values_down"] = self._n_values(c)
            row["bytes_down"] = link.tx_bytes - tx0
            row["wall_down_s"] = time.monotonic() - started
            on_step = self._killer(c, r)
            left = (s.round_timeout_s or self.profile.timeout_s) - (time.monotonic() - started)  # straggler budget
            session.train(link, rec, session.TrainSettings(s.local_steps, lr, self._seed(r, c), 0, s.local_eval,
                                                           resume=r > 1 or c.wire is not None, prox_mu=mu),
                          idle_timeout=self.profile.stall_timeout_s, name=name, run_timeout=max(left, 1.0),
                          on_step=on_step)
            rx0, t_up = link.rx_bytes, time.monotonic()
            got = session.get_params(link, PARAM_TIMEOUT_S, name, c.kind)
            row["bytes_up"], row["wall_up_s"] = link.rx_bytes - rx0, time.monotonic() - t_up
            update = self._update(c, got)
        except (LinkError, session.DeviceError, OSError, ValueError) as e:
            c.alive = False
            row.update(status=_status(e), error=f"{type(e).__name__}: {e}", wall_s=time.monotonic() - started)
            log.warning("%s: dropped from round %d and the federation: %s", c.label, r, row["error"])
            return None, row
        row.update(_measured(rec), values_up=sum(v.size for v in update.values.values()),
                   wall_s=time.monotonic() - started)
        return update, row

    def _killer(self, c: Client, r: int) -> Callable[[Step], None] | None:
        """Fault injection: the client's twin is killed at its first step of round ``kill[label]``."""
        if self.settings.kill.get(c.label) != r:
            return None
        target = c.target
        assert isinstance(target, QemuTarget), c.label  # _clients admits local twins only

        def kill(step: Step) -> None:
            if target.running:
                log.warning("%s: killing its twin in round %d (fault injection)", c.label, r)
                target.kill()
        return kill

    def _seed(self, r: int, c: Client) -> int:
        """Each round and client draws its own sample order (xorshift32 seed, never 0)."""
        return (self.profile.seed * 1_000_003 + r * 7919 + self.clients.index(c) * 131) % (2**32 - 1) + 1

    def _down(self, c: Client, tensors: Tensors | None = None) -> session.Params:
        """The rows of the global tensors the client trains, as WSET sends them (int8 clients: words at their own
        scales, keyed by op)."""
        t = self.global_tensors if tensors is None else tensors
        if c.wire is None:
            return {k: t[k][np.asarray(rows)].ravel().tolist() for k, rows in c.rows.items()}
        return {c.wire.wire_key(k): c.wire.encode(k, t[k][np.asarray(rows)], rows) for k, rows in c.rows.items()}

    def _n_values(self, c: Client) -> int:
        """The parameter values a client trains: what one WSET of its rows or one WGET carries."""
        return sum(len(rows) * self.global_tensors[k].shape[1] for k, rows in c.rows.items())

    def _update(self, c: Client, got: session.Params) -> ClientUpdate:
        wire_keys = {c.wire.wire_key(k) if c.wire else k: k for k in c.rows}
        if set(got) != set(wire_keys):
            raise session.DeviceError(f"{c.label}: WGET sent tensors {sorted(got)}, the plan trains "
                                      f"{sorted(wire_keys)}")
        values = {}
        for wk, k in wire_keys.items():
            rows, width = c.rows[k], self.global_tensors[k].shape[1]
            if c.wire is not None:
                values[k] = c.wire.decode(k, got[wk], rows, width)
                continue
            arr = np.asarray(got[wk], np.float32)
            if arr.size != len(rows) * width or not np.all(np.isfinite(arr)):
                raise session.DeviceError(f"{c.label}: tensor {k} has {arr.size} values (want {len(rows) * width}) "
                                          f"or non-finite ones")
            values[k] = arr.reshape(len(rows), width)
        return ClientUpdate(c.label, c.n_samples, values, c.rows)

    def _covers(self, c: Client) -> bool:
        """Whether the client trains every row of the global model (so it can hold all of it for an evaluation)."""
        return all(len(c.rows.get(k, ())) == t.shape[0] for k, t in self.global_tensors.items())

    def global_eval(self, r: int, n_updates: int) -> dict[str, object]:
        """The new global model measured on one live board (the first in rack order that trains all of it, fp32
        before int8, which would measure it requantised): WSET, then START resume with no steps (EVAL phase 0 is the
        global model on the eval split)."""
        row: dict[str, object] = {"round": r, "role": "global", "client": "(global)", "clients_averaged": n_updates,
                                  "status": "ok", "error": ""}
        for c in sorted((c for c in self.served if c.alive), key=lambda c: (not self._covers(c), c.wire is not None)):
            assert c.link is not None
            rec = RunRecord(run_id=f"fed.global.r{r}", board=c.board, target_kind=c.entry.kind,
                            technique=c.technique.name, model=self.prepared.model_name)
            tx0 = c.link.tx_bytes
            try:
                session.set_params(c.link, self._down(c), PARAM_TIMEOUT_S, rec.run_id, c.kind)
                row["values_down"] = self._n_values(c)
                row["bytes_down"] = c.link.tx_bytes - tx0
                if not self._covers(c):
                    row["note"] = (f"{c.label} trains only part of the global model: the rows it does not train are "
                                   f"its plan's in this evaluation")
                session.train(c.link, rec, session.TrainSettings(0, 0.0, 1, 0, self.settings.eval_samples,
                                                                 resume=True),
                              idle_timeout=self.profile.stall_timeout_s, name=rec.run_id,
                              run_timeout=self.profile.timeout_s)
            except (LinkError, session.DeviceError, OSError) as e:
                self._fail(c, r, f"global evaluation: {type(e).__name__}: {e}")
                continue
            c.holds_global = r
            row.update(board=c.board.name, measured_on=c.label, acc_global=rec.accuracy(0),
                       loss_global=rec.eval_loss(0), eval_n=rec.evals[0].n if 0 in rec.evals else 0)
            return row
        row.update(status="error", error="no live board to evaluate the global model on", acc_global=math.nan)
        return row


def finish_records(writer: RoundsWriter, global_tensors: Tensors) -> None:
    """global_model.npz in the writer's directory (``L<layer>.w`` [out, row], ``L<layer>.b`` [out]) and the summary's
    global accuracy per round: the end of every federation, built in or Flower-driven."""
    arrays: dict[str, Any] = {f"L{layer}.{'wb'[param]}": t if param == 0 else t[:, 0] for (layer, param), t in
                              global_tensors.items()}
    with atomic_path(writer.out / "global_model.npz") as tmp, tmp.open("wb") as fh:
        np.savez(fh, **arrays)
    writer.finish(global_accuracy=[row["acc_global"] for row in writer.rows if row["role"] == "global"])


def _row(c: Client, r: int, role: str) -> dict[str, object]:
    return {"round": r, "role": role, "client": c.label, "board": c.board.name, "technique": c.technique.name,
            "samples": c.n_samples, "status": "ok", "error": "", "bytes_down": 0, "bytes_up": 0, "values_down": 0,
            "values_up": 0, "fidelity_max_rel_err": c.fidelity_max_rel_err}


def _status(e: Exception) -> str:
    """A failed round's status, as a run's would be (hang, fault, disconnected, error)."""
    if isinstance(e, LinkTimeout):
        return "hang"
    if isinstance(e, DeviceFault | session.DeviceFaultError):
        return "fault"
    return "disconnected" if isinstance(e, LinkError) else "error"


def _failed_row(c: Client, r: int, error: str) -> dict[str, object]:
    return {**_row(c, r, "client"), "status": "error", "error": error}


def _measured(rec: RunRecord) -> dict[str, object]:
    """What a local run measured: its steps, loss, accuracy before (the global model) and after (the local one),
    counts per step, modelled (or measured) energy per round."""
    fwd, bwd, upd = rec.mean_counts()
    per_step = fwd + bwd + upd
    energy, source, _ = rec.energy()
    steps = len(rec.steps)
    return {"steps": steps, "local_loss": float(np.mean([s.loss for s in rec.steps])) if steps else math.nan,
            "acc_before": rec.accuracy(0), "acc_local": rec.accuracy(1), "count_unit": rec.counting.unit
            if rec.counting else "", "counts_per_step": per_step, "energy_round_uj": energy * steps,
            "energy_source": source, "peak_sram_bytes": rec.peak_sram()[0]}


def run_federation(profile: Profile, rack: Rack, out: Path, settings: FedSettings, progress: FedProgress | None = None
                   ) -> Federation:
    """The plain API under `bench federate` and the tests, with the built-in FedAvg (Flower's:
    `bench.app.flower.run_flower_federation`). ``out`` is this session's alone while it runs; the previous session's
    journals and images there go first."""
    with session_lock(out):
        clear_previous(out)
        fed = Federation(Bench(out), profile, rack, settings, progress)
        fed.run()
        return fed
