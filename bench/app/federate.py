"""Federated rounds across the rack: every board is a client with its own shard of the task (docs/federated.md).

Per round each live client receives the global trainable tensors over its link (WSET; round 1 starts from the plan
in flash, which *is* the global initial model), trains ``local_steps`` steps on its shard (START with the resume
flag), and sends back what it trained (WGET). The host averages (`bench.numerics.fedavg`, or a Flower strategy:
`bench.app.flower`) and one board measures the new global model on the eval split. A client that fails in a round
(hang, fault, disconnect, straggling past the round timeout) is recorded, left out of that round's average and out
of the federation from then on; the rounds go on while one client is left. Everything is written after each round.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
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
from bench.link.protocol import Hello, Step
from bench.model.tasks.shards import label_histogram, shard_indices
from bench.numerics.fedavg import ClientUpdate, Tensors, fedavg, update_norm, weight_shares
from bench.plan.blob import dataset_blob
from bench.plan.fp32 import Plan
from bench.records import fidelity
from bench.records.rounds import RoundsWriter
from bench.records.run import RunRecord, atomic_path
from bench.target.drivers import Counting, QemuTarget, Target
from bench.target.factory import make_target

log = logging.getLogger(__name__)

PARAM_TIMEOUT_S = 20.0  # one WSET's ACK, or the whole WGET answer


class FederationError(ConfigError):
    """A federation that cannot start (int8 technique, no client fits, bad shards): named, never a traceback."""


@dataclass(frozen=True)
class FedSettings:
    rounds: int = 10
    local_steps: int = 50
    alpha: float | None = 0.5  # Dirichlet label skew; None: IID
    techniques: tuple[str, ...] = ()  # per client, cycled over the rack; default: the profile's first fp32 one
    eval_samples: int = 0  # the global model's evaluation (0: the whole eval split)
    local_eval: int = 50  # each local run's own before/after evaluation
    round_timeout_s: float | None = None  # straggler: a client's round longer than this is dropped (default timeout_s)
    kill: dict[str, int] = field(default_factory=dict)  # fault injection (twins): client label -> round it dies in


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


@dataclass
class Client:
    """One board of the federation: its shard, plan, and the target and link that stay open across rounds."""

    label: str
    entry: RackEntry
    board: Board
    technique: Technique
    plan: Plan
    shard: np.ndarray
    target: Target | None = None
    link: Link | None = None
    hello: Hello | None = None
    counting: Counting | None = None
    alive: bool = True
    holds_global: int = 0  # the round whose global model this client's SRAM holds (it evaluated it), 0 none
    fidelity_max_rel_err: float = math.nan
    rows: dict[tuple[int, int], tuple[int, ...]] = field(default_factory=dict)  # tensor -> output channels trained

    @property
    def n_samples(self) -> int:
        return len(self.shard)


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


class Federation:
    """A federation of the rack's boards on one profile; `run` drives the rounds and returns the round rows."""

    def __init__(self, bench: Bench, profile: Profile, rack: Rack, settings: FedSettings,
                 progress: FedProgress | None = None, aggregator: str = "fedavg (built in)") -> None:
        self.bench, self.profile, self.rack, self.settings = bench, profile, rack, settings
        self.aggregator = aggregator
        self.progress: FedProgress = progress or Quiet()
        self.prepared: Prepared = bench.prepare(profile)
        if self.prepared.model is None:
            raise FederationError(f"profile {profile.name}: federated rounds train bench.model.zoo models in fp32; an "
                                  f"imported .tflite model trains in int8 only, and int8 parameters do not travel "
                                  f"over the wire yet")
        self.clients = self._clients()
        self.global_tensors = global_init(list(self.prepared.model.layers), self.clients)
        self.writer = RoundsWriter(bench.out, self._meta())

    def _techniques(self) -> list[Technique]:
        names = self.settings.techniques or tuple(t for t in self.profile.techniques if t.endswith("-fp32"))[:1]
        if not names:
            raise FederationError(f"profile {self.profile.name}: no fp32 technique to federate (give --technique)")
        techs = [self.profile.technique(n) for n in names]
        bad = [t.name for t in techs if t.is_int8]
        if bad:
            raise FederationError(f"technique {', '.join(bad)}: federated int8 is not implemented (int8 codes, "
                                  f"residuals and scales do not travel over the wire yet); use *-fp32")
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
            assert prepared.model is not None
            plan = bench_plan.compile(tech, self.profile.lr_for(tech), prepared.model, None)
            assert isinstance(plan, Plan)
            board = self.bench.catalogue[entry.board]
            clients.append(Client(entry.label, entry, board, tech, plan, shards[k], rows=trained_rows(plan)))
        return clients

    def _meta(self) -> dict[str, object]:
        s, task = self.settings, self.prepared.task
        assert task is not None
        hist = label_histogram(self.prepared.y_train, [c.shard for c in self.clients], task.n_classes)
        return {"profile": self.profile.name, "model": self.prepared.model_name, "task": task.name,
                "rounds": s.rounds, "local_steps": s.local_steps,
                "split": "iid" if s.alpha is None else f"dirichlet alpha={s.alpha:g}", "seed": self.profile.seed,
                "aggregator": self.aggregator,
                "clients": {c.label: {"board": c.board.name, "technique": c.technique.name, "samples": c.n_samples,
                                      "labels": hist[i].tolist(),
                                      "trained_values": int(sum(len(r) * self.global_tensors[k].shape[1]
                                                                for k, r in c.rows.items()))}
                            for i, c in enumerate(self.clients)}}

    # ---- connecting -------------------------------------------------------------------------------------------

    @contextmanager
    def connected(self) -> Iterator[list[Client]]:
        """Every client's board locked, loaded with its plan and shard, reset and greeted (and its gradients checked
        against the host reference); a board that cannot start is marked and left out. Everything is closed on exit."""
        with ExitStack() as stack:
            for c in self.clients:
                stack.enter_context(hold(board_lock(lock_key(c.entry)), lambda what: None))
                stack.callback(self._close, c)
                try:
                    self._connect(c)
                except (DoesNotFit, *RACK_FAULTS, LinkError, RuntimeError, OSError, ValueError) as e:
                    self._fail(c, 0, f"{type(e).__name__}: {e}")
                self.progress.connected(c)
            yield self.clients

    def _connect(self, c: Client) -> None:
        prepared = self.prepared
        task = prepared.task
        assert task is not None
        blob = dataset_blob(task.x_train[c.shard], task.y_train[c.shard], task.x_eval, task.y_eval, task.n_classes,
                            task.scale, task.offset)
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
        """The profile's fidelity check on the client's own shard: a gradient off the host reference ends the client
        before it contributes anything."""
        assert c.link is not None
        lr = self.profile.lr_for(c.technique)
        check = RunRecord(run_id=f"fed.{c.label}.check", board=c.board, target_kind=c.entry.kind,
                          technique=c.technique.name, model=self.prepared.model_name)
        session.train(c.link, check, session.TrainSettings(self.profile.check_steps, lr, self.profile.seed, 1, 1),
                      idle_timeout=self.profile.stall_timeout_s, name=check.run_id, run_timeout=self.profile.timeout_s)
        c.fidelity_max_rel_err, _ = fidelity.check_plan(check, c.plan, self.prepared.x_train[c.shard],
                                                        self.prepared.y_train[c.shard], lr)
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
        glob = self._global_eval(r, len(updates))
        self.writer.add([*rows, glob])
        self.progress.round_done(r, [*rows, glob])
        return glob

    def finish(self) -> list[dict[str, object]]:
        """Writes the final global model (global_model.npz: ``L<layer>.w`` [out, row], ``L<layer>.b`` [out]) and the
        federation's summary; returns every row."""
        arrays: dict[str, Any] = {f"L{layer}.{'wb'[param]}": t if param == 0 else t[:, 0] for (layer, param), t in
                  self.global_tensors.items()}
        with atomic_path(self.bench.out / "global_model.npz") as tmp, tmp.open("wb") as fh:
            np.savez(fh, **arrays)
        self.writer.finish(global_accuracy=[row["acc_global"] for row in self.writer.rows
                                            if row["role"] == "global"])
        return self.writer.rows

    def client_round(self, c: Client, r: int, global_tensors: Tensors) -> tuple[ClientUpdate | None, dict[str, object]]:
        """One client's round: ``global_tensors`` down (from round 2, unless the client evaluated them last round and
        holds them), local steps, what it trained up. A failure is the row's status, never an exception."""
        link = c.link
        assert link is not None
        s, lr = self.settings, self.profile.lr_for(c.technique)
        name = f"fed.{c.label}.r{r}"
        rec = RunRecord(run_id=name, board=c.board, target_kind=c.entry.kind, technique=c.technique.name,
                        model=self.prepared.model_name, journal=str(link.journal_path), counting=c.counting)
        row = _row(c, r, "client")
        started = time.monotonic()
        tx0 = link.tx_bytes
        try:
            if r > 1 and c.holds_global != r - 1:  # the evaluator of the last round holds it already
                row["values_down"] = session.set_params(link, self._down(c, global_tensors), PARAM_TIMEOUT_S, name)
            row["bytes_down"] = link.tx_bytes - tx0
            row["wall_down_s"] = time.monotonic() - started
            on_step = self._killer(c, r)
            left = (s.round_timeout_s or self.profile.timeout_s) - (time.monotonic() - started)  # straggler budget
            session.train(link, rec, session.TrainSettings(s.local_steps, lr, self._seed(r, c), 0, s.local_eval,
                                                           resume=r > 1),
                          idle_timeout=self.profile.stall_timeout_s, name=name, run_timeout=max(left, 1.0),
                          on_step=on_step)
            rx0, t_up = link.rx_bytes, time.monotonic()
            got = session.get_params(link, PARAM_TIMEOUT_S, name)
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
        """The rows of the global tensors the client trains, as WSET sends them."""
        t = self.global_tensors if tensors is None else tensors
        return {k: t[k][np.asarray(rows)].ravel().tolist() for k, rows in c.rows.items()}

    def _update(self, c: Client, got: session.Params) -> ClientUpdate:
        if set(got) != set(c.rows):
            raise session.DeviceError(f"{c.label}: WGET sent tensors {sorted(got)}, the plan trains {sorted(c.rows)}")
        values = {}
        for k, rows in c.rows.items():
            arr = np.asarray(got[k], np.float32)
            width = self.global_tensors[k].shape[1]
            if arr.size != len(rows) * width or not np.all(np.isfinite(arr)):
                raise session.DeviceError(f"{c.label}: tensor {k} has {arr.size} values (want {len(rows) * width}) "
                                          f"or non-finite ones")
            values[k] = arr.reshape(len(rows), width)
        return ClientUpdate(c.label, c.n_samples, values, c.rows)

    def _covers(self, c: Client) -> bool:
        """Whether the client trains every row of the global model (so it can hold all of it for an evaluation)."""
        return all(len(c.rows.get(k, ())) == t.shape[0] for k, t in self.global_tensors.items())

    def _global_eval(self, r: int, n_updates: int) -> dict[str, object]:
        """The new global model measured on one live board (the first in rack order): WSET, then START resume with no
        steps (EVAL phase 0 is the global model on the eval split)."""
        row: dict[str, object] = {"round": r, "role": "global", "client": "(global)", "clients_averaged": n_updates,
                                  "status": "ok", "error": ""}
        for c in sorted((c for c in self.clients if c.alive), key=lambda c: not self._covers(c)):
            assert c.link is not None
            rec = RunRecord(run_id=f"fed.global.r{r}", board=c.board, target_kind=c.entry.kind,
                            technique=c.technique.name, model=self.prepared.model_name)
            tx0 = c.link.tx_bytes
            try:
                row["values_down"] = session.set_params(c.link, self._down(c), PARAM_TIMEOUT_S, rec.run_id)
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
