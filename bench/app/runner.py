"""Orchestration: profile → plan → image → target → link → records, one worker per board, results as they land.

``Bench`` is the plain API under the CLI and the pytest fixtures: prepare a profile once (task, pretrained model,
dataset blob, firmware per board), then run (board, technique) pairs. Each board is locked while in use, so parallel
workers (threads here, pytest-xdist processes in tests) never share one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import platform
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout
from pydantic import ValidationError

from bench import __version__
from bench import plan as bench_plan
from bench.config import profile as config_profile
from bench.config.boards import REPO_ROOT, Board, ConfigError, Rack, RackEntry, load_catalogue, lock_dir, lock_key
from bench.config.profile import Profile, Technique, parse_technique, require_model_file
from bench.energy import JoulescopeMeter, MeterBase, MeterError, Ppk2Meter
from bench.image.firmware import DoesNotFit, Firmware, ImageSet, assemble, build_firmware, check_sram
from bench.image.symbols import decode_cfsr, decode_hfsr, symbols_for
from bench.link import session
from bench.link.faults import FaultProxy
from bench.link.link import DeviceFault, Link, LinkError, LinkTimeout
from bench.link.protocol import Hello, Step
from bench.model.nn import Model
from bench.model.qgraph import QModel
from bench.model.tasks import DeviceDataset, load_task
from bench.model.tasks.files import DatasetError, adapt
from bench.numerics.int8ref import input_qparams, quantized_inputs
from bench.numerics.pretrain import build_model
from bench.plan.blob import dataset_blob, int8_dataset_blob, validation_split
from bench.plan.budget import at_budget
from bench.plan.budget import describe as describe_scheme
from bench.plan.check import check_profile
from bench.plan.fp32 import Plan
from bench.plan.fp32mem import Fp32MemError, Fp32Memory
from bench.plan.int8 import QPlan, QPlanError
from bench.records import fidelity
from bench.records.recover import Manifest, RecoverError, unrecorded
from bench.records.run import ResultsWriter, RunRecord
from bench.records.stats import best_lr
from bench.target.drivers import (
    FlashError,
    PackMissing,
    PortError,
    ProbeAmbiguous,
    ProbeNotFound,
    Target,
)
from bench.target.factory import make_target
from bench.tflite.fp32 import Fp32Import, Fp32ImportError, layer_technique_map, to_fp32
from bench.tflite.head import replace_head
from bench.tflite.io import load_tflite
from bench.tflite.quantize import export_digits_tflite

CACHE_DIR = REPO_ROOT / ".bench-cache"
FIDELITY_TOLERANCE = 1e-4
RACK_FAULTS = (FlashError, PortError, ProbeNotFound, ProbeAmbiguous, PackMissing, MeterError)

log = logging.getLogger(__name__)


class Progress:
    """Callbacks for live progress; the default does nothing."""

    def run_started(self, label: str, technique: str, steps: int) -> None: ...

    def step(self, label: str, technique: str, step: Step) -> None: ...

    def run_finished(self, label: str, record: RunRecord) -> None: ...

    def waiting(self, label: str, what: str) -> None:
        """The run waits for ``what`` (a lock another session holds)."""


@dataclass(frozen=True)
class RunSpec:
    """Which run of a technique: its learning rate, which repeat (sample order) and phase ("sweep" trains on the
    device-train data minus a validation split and is evaluated on that split; "final" on the eval split)."""

    lr: float
    repeat: int = 0
    phase: str = "final"


@dataclass
class Int8Prepared:
    """What the int8 techniques of a profile share: the quantised model as read back from its .tflite file, and the
    task's samples quantised with its input parameters."""

    qmodel: QModel
    tflite: Path
    dataset: bytes
    x_train: np.ndarray  # int8 codes [n, h, w, c]
    y_train: np.ndarray


@dataclass
class Fp32Imported:
    """fp32 training of an imported graph (`bench.tflite.fp32`): its dequantised chain, and the task's int8 codes as
    u8 samples (code + 128) whose decoded value u8·scale + offset is the model's real input (code − zp)·scale."""

    imp: Fp32Import
    scale: float
    offset: float
    u8_train: np.ndarray
    u8_eval: np.ndarray
    dataset: bytes


@dataclass
class Prepared:
    """Everything a profile's runs share: the task data, the pretrained model and the dataset blob. An imported
    .tflite model has no fp32 ``model``: ``int8`` holds it from the start, and ``fp32`` its dequantised chain when
    the fp32 engine can train it (else ``fp32_refusal`` says why)."""

    profile: Profile
    model: Model | None
    dataset: bytes
    x_train: np.ndarray
    y_train: np.ndarray
    firmware: dict[tuple[str, str], Firmware] = field(default_factory=dict)  # (board, variant) -> image
    task: DeviceDataset | None = None
    int8: Int8Prepared | None = None
    val: dict[str, bytes] = field(default_factory=dict)  # "fp32"/"int8" -> dataset blob of an lr sweep
    fp32: Fp32Imported | None = None
    fp32_refusal: str = ""

    @property
    def model_name(self) -> str:
        if self.model is not None:
            return self.model.name
        assert self.int8 is not None
        return self.int8.qmodel.name


def load_profile(spec: str | Path) -> Profile:
    """A profile by path or name (`bench.config.profile.load_profile`), checked against its model by the plan stage
    (`bench.plan.check.check_profile`): the one loader the CLI, the plugin and scripts use."""
    path = config_profile.profile_path(spec)
    profile = config_profile.load_profile(path)
    check_profile(profile, path)
    return profile


def with_overrides(profile: Profile, overrides: dict[str, object]) -> Profile:
    """``profile`` with ``overrides`` validated and checked like the file itself (a bad key or value is a
    `ConfigError` naming it); the CLI's and the pytest fixtures' way to change a profile for one run."""
    if not overrides:
        return profile
    try:
        changed = Profile.model_validate(profile.model_dump() | overrides)
        changed.parsed_techniques()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"profile {profile.name}: overrides {sorted(overrides)}: {problems}") from None
    except ValueError as exc:
        raise ConfigError(f"profile {profile.name}: overrides {sorted(overrides)}: {exc}") from None
    check_profile(changed, config_profile.profile_path(profile.name))
    return changed


def git_commit() -> str:
    proc = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=False)
    return proc.stdout.strip() or "unknown"


class Bench:
    def __init__(self, out: Path, catalogue: dict[str, Board] | None = None, progress: Progress | None = None,
                 cache_dir: Path = CACHE_DIR) -> None:
        self.out, self.cache_dir = out, cache_dir
        self.catalogue = catalogue if catalogue is not None else load_catalogue()
        self.progress = progress or Progress()
        self._firmware_lock = threading.Lock()
        self._run_ids: set[str] = set()

    def _new_run_id(self, label: str, technique: str) -> str:
        """``<board label>.<technique>``, then ``.r2``, ``.r3``... for repeats: a run id names one run, its journal
        and its rows, in this out directory."""
        with self._firmware_lock:
            base = run_id = f"{label}.{technique}"
            n = 1
            while run_id in self._run_ids:
                n += 1
                run_id = f"{base}.r{n}"
            self._run_ids.add(run_id)
            return run_id

    def prepare(self, profile: Profile) -> Prepared:
        ds = load_task(profile.task, profile.seed, profile.dataset)
        if profile.imported is not None:
            return self._prepare_imported(profile, ds)
        model = build_model(profile.model, ds, profile.seed, self.cache_dir)
        blob = dataset_blob(ds.x_train, ds.y_train, ds.x_eval, ds.y_eval, ds.n_classes, ds.scale, ds.offset)
        return Prepared(profile=profile, model=model, dataset=blob, x_train=ds.decode(ds.x_train),
                        y_train=ds.y_train.astype(np.int64), task=ds)

    def _prepare_imported(self, profile: Profile, ds: DeviceDataset) -> Prepared:
        """An imported int8 model (its head replaced when ``head_classes`` is set), fed the task's stored bytes as its
        int8 input codes (as TFLM's person_detection example feeds its images)."""
        path = require_model_file(profile.model)
        qmodel = dataclasses.replace(load_tflite(path), name=path.stem)
        if profile.head_classes is not None:
            if profile.head_classes != ds.n_classes:
                raise ConfigError(f"profile {profile.name}: head_classes {profile.head_classes} but task {ds.name} "
                                  f"has {ds.n_classes} classes")
            path = self.out / "models" / f"{path.stem}-head{profile.head_classes}-s{profile.seed}.tflite"
            qmodel = replace_head(qmodel, profile.head_classes, profile.seed, path)
        shape_in = tuple(qmodel.tensors[qmodel.inputs[0]].shape[1:])
        classes = int(qmodel.tensors[qmodel.outputs[0]].shape[-1])
        outputs = int(np.prod(qmodel.tensors[qmodel.outputs[0]].shape))
        if profile.loss == "reconstruction":  # an autoencoder: the labels only tag the samples (e.g. anomalous)
            if int(ds.y_train.max(initial=0)) >= outputs or int(ds.y_eval.max(initial=0)) >= outputs:
                raise ConfigError(f"profile {profile.name}: task {ds.name}'s labels exceed the autoencoder's "
                                  f"{outputs} outputs (the dataset blob bounds them by the output size)")
            classes = outputs
        elif classes != ds.n_classes:
            raise ConfigError(f"profile {profile.name}: model {qmodel.name} gives {classes} classes; task {ds.name} "
                              f"has {ds.n_classes} (head_classes replaces the classifier)")
        scale, zp = input_qparams(qmodel)
        if ds.source or shape_in != ds.input_shape:
            # a user's task, or a built-in one of another shape: adapted to the model's input, then quantised with
            # its own int8 input parameters
            try:
                floats, done = adapt(ds.decode(ds.x_train), shape_in, ds.name)
                eval_floats, _ = adapt(ds.decode(ds.x_eval), shape_in, ds.name)
            except DatasetError as exc:
                raise ConfigError(f"profile {profile.name}: {exc}") from None
            x_train, x_eval = quantized_inputs(qmodel, floats), quantized_inputs(qmodel, eval_floats)
            done.append(f"quantised with the model's input scale {scale:.6g}, zero point {zp}")
            ds = dataclasses.replace(ds, provenance=(*ds.provenance, "adapted to the model: " + "; ".join(done)))
        else:  # the stored bytes as int8 codes, as TFLM's person_detection example feeds its images
            x_train, x_eval = ds.x_train.view(np.int8), ds.x_eval.view(np.int8)
        blob = int8_dataset_blob(x_train, ds.y_train, x_eval, ds.y_eval, classes, scale, zp)
        y_train = ds.y_train.astype(np.int64)
        fp32, refusal = _fp32_import(profile, qmodel, x_train, x_eval, ds, scale, zp)
        x_real = (x_train.astype(np.float32) + np.float32(128)) * np.float32(scale) + np.float32(-(128 + zp) * scale)
        return Prepared(profile=profile, model=None, dataset=fp32.dataset if fp32 else b"", x_train=x_real,
                        y_train=y_train, task=ds, int8=Int8Prepared(qmodel, path, blob, x_train, y_train), fp32=fp32,
                        fp32_refusal=refusal)

    def int8(self, prepared: Prepared) -> Int8Prepared:
        """Quantise the pretrained model once per profile, write it as .tflite and read it back through the importer
        (the same path a third-party model takes); quantise the task's samples with its input parameters."""
        with self._firmware_lock:
            if prepared.int8 is None:
                assert prepared.model is not None
                ds = prepared.task if prepared.task is not None else load_task(prepared.profile.task,
                                                                                prepared.profile.seed,
                                                                                prepared.profile.dataset)
                path = self.out / "models" / f"{prepared.model.name}-s{prepared.profile.seed}.tflite"
                path.parent.mkdir(parents=True, exist_ok=True)
                export_digits_tflite(prepared.model, ds, path)
                qmodel = load_tflite(path)
                x_train = quantized_inputs(qmodel, ds.decode(ds.x_train))
                x_eval = quantized_inputs(qmodel, ds.decode(ds.x_eval))
                scale, zp = input_qparams(qmodel)
                blob = int8_dataset_blob(x_train, ds.y_train, x_eval, ds.y_eval, ds.n_classes, scale, zp)
                prepared.int8 = Int8Prepared(qmodel, path, blob, x_train, ds.y_train.astype(np.int64))
            return prepared.int8

    def val_dataset(self, prepared: Prepared, int8: bool) -> bytes:
        """The dataset blob of lr-sweep runs: device-train minus a validation split, which is their eval split
        (`bench.plan.blob.validation_split`); the profile's eval split is not in it."""
        key = "int8" if int8 else "fp32"
        i8 = self.int8(prepared) if int8 else None
        with self._firmware_lock:
            if key not in prepared.val:
                ds, profile = prepared.task, prepared.profile
                assert ds is not None
                keep, held = validation_split(len(ds.y_train), profile.val_fraction, profile.seed)
                y = ds.y_train
                if i8 is None and prepared.fp32 is not None:  # an imported graph in fp32: its u8 samples
                    f = prepared.fp32
                    x = f.u8_train
                    blob = dataset_blob(x[keep], y[keep], x[held], y[held], f.imp.model.n_classes, f.scale, f.offset)
                elif i8 is None:
                    x = ds.x_train
                    blob = dataset_blob(x[keep], y[keep], x[held], y[held], ds.n_classes, ds.scale, ds.offset)
                else:
                    scale, zp = input_qparams(i8.qmodel)
                    x = i8.x_train
                    out = i8.qmodel.tensors[i8.qmodel.outputs[0]]
                    classes = int(np.prod(out.shape)) if profile.loss == "reconstruction" else ds.n_classes
                    blob = int8_dataset_blob(x[keep], y[keep], x[held], y[held], classes, scale, zp)
                prepared.val[key] = blob
            return prepared.val[key]

    def firmware(self, prepared: Prepared, board: Board, kind: str) -> Firmware:
        with self._firmware_lock:
            variant = "twin" if kind == "emulated" else kind
            key = (board.name, variant)  # a board listed as twin and as hardware gets each its own image
            if key not in prepared.firmware:
                prepared.firmware[key] = build_firmware(board, variant)
                log.info("%s (%s): firmware build %s, %s", board.name, variant, prepared.firmware[key].build_id,
                         prepared.firmware[key].elf)
            return prepared.firmware[key]

    def run(self, prepared: Prepared, entry: RackEntry, technique: Technique, spec: RunSpec | None = None
            ) -> RunRecord:
        """One (board, technique) run, one call per stage; failures become a record with a status, never a lost
        run. ``spec`` picks lr, repeat and phase (default: the profile's lr, repeat 0, final)."""
        board = self.catalogue[entry.board]
        profile = prepared.profile
        spec = spec or RunSpec(profile.lr_for(technique))
        run_id = self._new_run_id(entry.label, technique.name + _id_suffix(profile, spec))
        journal_dir = self.out / "journal"
        record = RunRecord(run_id=run_id, board=board, target_kind=entry.kind, technique=technique.name,
                           model=prepared.model_name, journal=str(journal_dir / f"{run_id}.rx.bin"),
                           phase=spec.phase, lr=spec.lr, repeat=spec.repeat, seed=profile.seed + spec.repeat,
                           place=entry.place or "", exporter=entry.exporter or "")
        fw = self.firmware(prepared, board, entry.kind)
        record.build_id = fw.build_id
        self.progress.run_started(entry.label, technique.name, profile.steps)
        log.info("%s: %s on %s (%s), lr %g, journal %s", run_id, technique.name, entry.label, entry.kind, spec.lr,
                 record.journal)
        try:
            plan = self._compile(prepared, technique, spec.lr)
        except (Fp32MemError, QPlanError, Fp32ImportError, ValueError) as e:  # a graph (or scheme) the planners
            record.status, record.error = "error", f"{type(e).__name__}: {e}"  # cannot plan: this run's record
        else:
            if isinstance(plan, Fp32Memory):
                self._planned_only(board, fw, plan, record, prepared.fp32_refusal)
            else:
                self._run_plan(prepared, entry, technique, plan, fw, record, journal_dir)
        log.info("%s: %s%s", record.run_id, record.status, f" ({record.error})" if record.error else "")
        self.progress.run_finished(entry.label, record)
        return record

    def _compile(self, prepared: Prepared, technique: Technique, lr: float) -> Plan | QPlan | Fp32Memory:
        """The run's plan: an fp32 technique on an imported graph trains its dequantised chain (a sparse scheme's op
        indices mapped onto its layers), or is planned only when the fp32 engine cannot train the graph."""
        imported = None if technique.is_int8 else prepared.fp32
        model = prepared.model if imported is None else imported.imp.model
        if imported is not None and technique.scheme == "sparse":
            technique = dataclasses.replace(technique, layers=layer_technique_map(imported.imp, technique.layers))
        qmodel = self.int8(prepared).qmodel if technique.is_int8 or model is None else None
        return bench_plan.compile(technique, lr, model, qmodel)

    def _run_plan(self, prepared: Prepared, entry: RackEntry, technique: Technique, plan: Plan | QPlan,
                  fw: Firmware, record: RunRecord, journal_dir: Path) -> None:
        board = self.catalogue[entry.board]
        if isinstance(plan, QPlan):
            assert plan.train is not None
            record.grad_scales = {(i, p): op.grad_scale for i, op in plan.train.ops.items() for p in (0, 1)}
            record.loss_kind = plan.train.loss
        else:
            record.loss_kind = plan.model.loss
        if record.phase == "sweep":
            dataset = self.val_dataset(prepared, isinstance(plan, QPlan))
        else:
            dataset = self.int8(prepared).dataset if isinstance(plan, QPlan) else prepared.dataset
        record.plan_hash = plan.plan_hash
        record.plan_layers, record.plan_composition = plan.layer_memory(), plan.composition()
        record.planned_sram_bytes = fw.static_bytes + plan.arena_bytes
        record.required_sram_bytes = record.planned_sram_bytes + fw.stack_bytes
        try:
            images = assemble(board, entry.kind, fw, plan, dataset, self.out / "images" / record.run_id)
        except DoesNotFit as e:
            record.status, record.error = "does-not-fit", str(e)
            return
        record.flash_bytes = fw.flash_bytes
        with hold(board_lock(lock_key(entry)), lambda what: self.progress.waiting(entry.label, what)):
            self._execute(prepared, entry, technique, plan, images, record, journal_dir)

    @staticmethod
    def _planned_only(board: Board, fw: Firmware, mem: Fp32Memory, record: RunRecord, why: str) -> None:
        """An fp32 technique on an imported graph the fp32 engine cannot train (``why``): the run is planned by
        `bench.plan.fp32mem` and recorded ``does-not-fit`` when static + planned arena + stack exceed the board's
        SRAM (the image stage's check); a plan that would fit is an ``error`` saying why it did not run."""
        record.plan_composition = mem.composition()
        record.planned_sram_bytes = fw.static_bytes + mem.arena_bytes
        record.required_sram_bytes = record.planned_sram_bytes + fw.stack_bytes
        try:
            check_sram(board, fw, mem.arena_bytes, f"fp32 training of {mem.model}/{record.technique} "
                                                   f"(bench.plan.fp32mem)")
        except DoesNotFit as e:
            record.status, record.error = "does-not-fit", str(e)
            return
        record.status, record.error = "error", (f"fp32 training of {mem.model} would fit (planned "
                                                f"{record.required_sram_bytes:,} B) but {why}")

    def _execute(self, prepared: Prepared, entry: RackEntry, technique: Technique, plan: Plan | QPlan,
                 images: ImageSet, record: RunRecord, journal_dir: Path) -> None:
        board, profile = self.catalogue[entry.board], prepared.profile
        target = make_target(entry, board, journal_dir, identify=session.running_build_id)
        started = time.monotonic()
        rx = Path(record.journal)
        manifest = Manifest.of(record, rx.stat().st_size if rx.is_file() else 0, _check_steps(profile, record))
        manifest.write(journal_dir)  # what `bench recover` needs should the bench die during this run
        proxy: FaultProxy | None = None
        link: Link | None = None
        try:
            target.load(images)
            target.reset()
            url = target.url
            if entry.faults is not None:  # tests and soaks of the bench: faults between the port and the host
                proxy = FaultProxy(url, entry.faults, board.serial.baudrate)
                record.link_faults, record.injected, url = entry.faults.describe(), proxy.stats, proxy.url
            link = Link.open(url, board.serial.baudrate, journal_dir, name=record.run_id)
            with link:
                self._converse(link, prepared, entry, technique, plan, record, target, manifest)
            _check_fidelity(record, _check_steps(profile, record) > 0)
            _check_diverged(record)
        except RACK_FAULTS as e:  # the rack failed, not the run: nightly jobs report these apart
            record.status, record.error = "rack-fault", f"{type(e).__name__}: {e}"
        except (session.DeviceFaultError, DeviceFault) as e:  # a CPU fault resolved to function and line from the ELF
            syms = symbols_for(images.firmware.elf)
            text = session.describe_fault(e.fault, syms.describe if syms else None, decode_cfsr, decode_hfsr)
            record.status, record.error = "fault", f"{record.run_id}: {text}; journal {record.journal}"
        except LinkTimeout as e:  # nothing (or nothing whole) heard within the stall timeout
            record.status, record.error = "hang", f"{type(e).__name__}: {e}"
        except LinkError as e:  # the port went away: an unplugged board, a killed twin
            record.status, record.error = "disconnected", f"{type(e).__name__}: {e}"
        except (session.DeviceError, RuntimeError, OSError, ValueError) as e:
            record.status, record.error = "error", f"{type(e).__name__}: {e}"
        finally:
            if link is not None:  # frames lost on the link (sequence gaps), whatever ended the run
                record.lost_frames = link.stats.lost_frames
                if record.status != "ok" and record.lost_frames:
                    record.error += f" ({record.lost_frames} frames lost on the link)"
            if proxy is not None:
                proxy.close()
            target.close()
            record.wall_s = time.monotonic() - started

    def _converse(self, link: Link, prepared: Prepared, entry: RackEntry, technique: Technique, plan: Plan | QPlan,
                  record: RunRecord, target: Target, manifest: Manifest) -> None:
        """HELLO, the fidelity check when the profile asks for one, then the run itself, metered when the entry has a
        meter; the device's plan hash must be the host's."""
        profile = prepared.profile
        record.hello = session.hello(link)
        record.counting = target.counting(record.hello.counter_hz, record.hello.counter_kind)
        dataclasses.replace(manifest, counting=(record.counting.unit,
                                                record.counting.counts_per_tick)).write(link.journal_path.parent)
        if _check_steps(profile, record):
            record.fidelity_max_rel_err, record.fidelity_exact = self._fidelity(link, prepared, technique, plan, record)
        with metering(entry, record, profile.timeout_s):
            outcome = session.train(link, record, _settings(profile, record, profile.steps, profile.grad_every),
                                    idle_timeout=profile.stall_timeout_s, name=record.run_id,
                                    run_timeout=profile.timeout_s,
                                    on_step=lambda s: self.progress.step(entry.label, technique.name, s))
        _check_plan_hash(record, outcome.plan_hash)

    def _fidelity(self, link: Link, prepared: Prepared, technique: Technique, plan: Plan | QPlan,
                  record: RunRecord) -> tuple[float, float]:
        """Short run streaming every gradient, replayed on the host: (worst relative error, exact), see
        `bench.records.fidelity.check_plan`."""
        check = RunRecord(run_id=f"{record.run_id}.check", board=record.board, target_kind=record.target_kind,
                          technique=record.technique, model=record.model, grad_scales=record.grad_scales)
        profile = prepared.profile
        outcome = session.train(link, check, _settings(profile, record, profile.check_steps, 1, eval_samples=1),
                                idle_timeout=profile.stall_timeout_s, name=check.run_id,
                                run_timeout=profile.timeout_s)
        _check_plan_hash(record, outcome.plan_hash)
        x, y = ((self.int8(prepared).x_train, self.int8(prepared).y_train) if isinstance(plan, QPlan)
                else (prepared.x_train, prepared.y_train))
        return fidelity.check_plan(check, plan, x, y, record.lr)


def _fp32_import(profile: Profile, qmodel: QModel, x_train: np.ndarray, x_eval: np.ndarray, ds: DeviceDataset,
                 scale: float, zp: int) -> tuple[Fp32Imported | None, str]:
    """The fp32 side of an imported graph, or None and why the fp32 engine cannot train it."""
    try:
        imp = to_fp32(qmodel, profile.loss)
    except Fp32ImportError as e:
        return None, str(e)
    offset = -(128 + zp) * scale  # u8 = code + 128 decodes to (code − zp)·scale
    u8_train, u8_eval = [(np.asarray(a, np.int16) + 128).astype(np.uint8).reshape(len(a), *imp.model.input_shape)
                         for a in (x_train, x_eval)]
    blob = dataset_blob(u8_train, ds.y_train, u8_eval, ds.y_eval, imp.model.n_classes, scale, offset)
    return Fp32Imported(imp, scale, offset, u8_train, u8_eval, blob), ""


class PlanMismatch(RuntimeError):
    """The device acknowledged a plan other than the one the host compiled for this run."""


def _check_plan_hash(record: RunRecord, device_hash: int | None) -> None:
    """The plan the device ran (its ACK) must be the one the host compiled (``record.plan_hash``)."""
    if device_hash is not None and record.plan_hash is not None and device_hash != record.plan_hash:
        raise PlanMismatch(f"{record.run_id}: the device ran plan {device_hash:08x} but the host compiled "
                           f"{record.plan_hash:08x} for this run (another session's images?); journal {record.journal}")


def _check_fidelity(record: RunRecord, checked: bool) -> None:
    """A run whose gradients fail their own check is never recorded as ok: fp32 beyond FIDELITY_TOLERANCE relative
    error, int8 not exactly the integer reference."""
    if not checked or record.status != "ok":
        return
    err, exact = record.fidelity_max_rel_err, record.fidelity_exact
    if exact == exact and exact != 1.0:  # int8 plans (exact is NaN for fp32)
        record.status, record.error = "fidelity-fail", (f"int8 gradients differ from the integer reference "
                                                        f"(worst relative error {err:.3g})")
    elif exact != exact and err == err and err > FIDELITY_TOLERANCE:
        record.status, record.error = "fidelity-fail", (f"fp32 gradients off by {err:.3g} relative, over the "
                                                        f"tolerance {FIDELITY_TOLERANCE:g}")


def _check_diverged(record: RunRecord) -> None:
    """A run whose loss left the finite numbers is not a trained result: ``diverged`` (its gradients may still have
    passed their check: the device did what the reference does, at too large a learning rate)."""
    if record.status != "ok":
        return
    bad = next((s for s in record.steps if not math.isfinite(s.loss)), None)
    ev = record.evals.get(1)
    if bad is not None or (ev is not None and ev.n and not math.isfinite(ev.loss_sum)):
        where = f"loss {bad.loss} at step {bad.step}" if bad is not None else "eval loss not finite after training"
        record.status, record.error = "diverged", (f"training diverged ({where}) at lr {record.lr:g}: a smaller "
                                                   f"learning rate (profile key 'lr', or 'lr_int8')")


@dataclass
class Device:
    """A board (or twin) running the bench firmware with no plan loaded, and the open, journaled Link to it."""

    link: Link
    hello: Hello
    entry: RackEntry


@contextmanager
def device(entry: RackEntry, board: Board, journal_dir: Path, name: str) -> Iterator[Device]:
    """A live `Device` for tests and scripts that talk to the firmware directly (HELLO already exchanged). The board
    is locked while the link is open; the target is closed (a twin stopped) afterwards."""
    fw = build_firmware(board, "twin" if entry.kind == "emulated" else entry.kind)
    images = ImageSet(board=board, kind=entry.kind, firmware=fw, blobs=(), plan_hash=0, arena_bytes=0)
    target = make_target(entry, board, journal_dir, identify=session.running_build_id)
    with hold(board_lock(lock_key(entry)), lambda what: None):
        try:
            target.load(images)
            target.reset()
            with Link.open(target.url, board.serial.baudrate, journal_dir, name=name) as link:
                yield Device(link, session.hello(link), entry)
        finally:
            target.close()


def make_meter(entry: RackEntry, window_s: float) -> MeterBase:
    """The meter a rack entry names; Joulescope reads a fixed window, stopped early when the run ends."""
    if entry.meter == "ppk2":
        return Ppk2Meter(port=entry.meter_port)
    return JoulescopeMeter(duration_s=window_s)


@contextmanager
def metering(entry: RackEntry, record: RunRecord, window_s: float) -> Iterator[None]:
    """Capture the supply current around the training steps when the entry has a meter; attach energy per step."""
    if entry.meter is None:
        yield
        return
    with make_meter(entry, window_s) as meter:
        meter.start()
        try:
            yield
        finally:
            capture = meter.stop()
        record.attach_capture(capture, entry.meter_channel)


def _settings(profile: Profile, record: RunRecord, steps: int, grad_every: int, eval_samples: int | None = None
              ) -> session.TrainSettings:
    seed = profile.seed if record.seed is None else record.seed
    return session.TrainSettings(steps=steps, lr=record.lr, seed=seed, grad_every=grad_every,
                                 eval_samples=profile.eval_samples if eval_samples is None else eval_samples)


def _check_steps(profile: Profile, record: RunRecord) -> int:
    """Fidelity-check steps before a run: none for lr-sweep runs (tuning only; their final runs are checked)."""
    return 0 if record.phase == "sweep" else profile.check_steps


def _id_suffix(profile: Profile, spec: RunSpec) -> str:
    """Run ids say the lr of sweep runs and the repeat when there are several: ``.sweep-lr0.01.r2``, ``.r3``."""
    suffix = f".sweep-lr{spec.lr:g}" if spec.phase == "sweep" else ""
    return suffix + (f".r{spec.repeat}" if profile.repeats > 1 else "")


def board_lock(key: str) -> FileLock:
    """An inter-process lock per physical board (`lock_key`); released when its holder exits, even on a crash."""
    directory = lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    return FileLock(str(directory / f"{key}.lock"))


@contextmanager
def hold(lock: FileLock, say: Callable[[str], None]) -> Iterator[None]:
    """Hold ``lock``; when someone else has it, say so once (what and where) and then wait for it."""
    try:
        lock.acquire(timeout=0)
    except Timeout:
        say(f"{Path(lock.lock_file).stem} (held by another session; lock {lock.lock_file})")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


class OutDirBusy(ConfigError):
    """Another bench session is writing into the same out directory."""


def session_lock(out: Path) -> FileLock:
    """One session per out directory: two would train on each other's images and overwrite each other's tables."""
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / ".bench-session.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise OutDirBusy(f"{out}: another bench session is writing here (lock {lock.lock_file}); wait for it or "
                         f"choose another --out") from None
    return lock


def run_meta(profile: str, rack: Rack, thresholds: dict[str, float] | None = None) -> dict[str, object]:
    """meta.json of a results directory; ``thresholds``: the profile's, which `bench compare` applies later (the
    profile file may be gone or have been given as a path by then)."""
    return {"profile": profile, "thresholds": thresholds or {}, "bench_version": __version__,
            "git_commit": git_commit(), "host": platform.node(), "rack": rack.name,
            "started": datetime.now(UTC).isoformat(),
            "notes": ["energy on twins is modelled: instructions / clock x datasheet run current x supply "
                      "voltage, one cycle per instruction assumed"]}


def run_profile(profile: Profile, rack: Rack, out: Path, progress: Progress | None = None,
                on_record: Callable[[RunRecord], None] | None = None) -> list[RunRecord]:
    """Every technique of ``profile`` on every board of ``rack``: boards in parallel, techniques in sequence. The out
    directory is this session's alone while it runs (`OutDirBusy` otherwise)."""
    with session_lock(out):
        clear_previous(out)
        return _run_profile(profile, rack, out, progress, on_record)


def clear_previous(out: Path) -> None:
    """A new session in ``out`` replaces the previous one's results, so its journals, QEMU logs and images go too
    (else they sit beside tables they no longer belong to). Runs it never recorded are named in a warning first."""
    try:
        lost = unrecorded(out) if (out / "journal").is_dir() else []
    except RecoverError as exc:  # a damaged manifest: nothing a new run could recover either
        log.warning("%s: discarding the previous session's journals: %s", out, exc)
        lost = []
    if lost:
        log.warning("%s: discarding %d run(s) a stopped bench never recorded (%s); `bench recover %s` before a new "
                    "run keeps them", out, len(lost), ", ".join(m.run_id for m in lost[:5]), out)
    for name in ("journal", "images"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("runs", "steps", "grads", "layers"):
        for suffix in (".parquet", ".csv"):
            (out / f"{name}{suffix}").unlink(missing_ok=True)


def study_techniques(prepared: Prepared) -> list[Technique]:
    """The profile's techniques, plus its ``[compare]`` equal-budget schemes (`bench.plan.budget`)."""
    profile = prepared.profile
    techniques = profile.parsed_techniques()
    if profile.compare is None:
        return techniques
    if prepared.model is None or prepared.task is None:
        raise ConfigError(f"profile {profile.name}: [compare] needs a bench.model.zoo model, not {profile.model}")
    lrs = sorted(profile.lrs_for(parse_technique("last-fp32")))  # fp32's: the trials of the search are fp32 SGD
    return techniques + at_budget(prepared.model, prepared.task, profile.compare, profile.seed, lrs[len(lrs) // 2])


Job = tuple[Technique, RunSpec]


def budget_schemes(out: Path) -> dict[str, str]:
    """What each equal-budget technique of a stored run trained (meta.json ``budget_schemes``)."""
    try:
        meta = json.loads((out / "meta.json").read_text())
    except (OSError, ValueError):
        return {}
    schemes = meta.get("budget_schemes") if isinstance(meta, dict) else None
    return {str(k): str(v) for k, v in schemes.items()} if isinstance(schemes, dict) else {}


def sweep_jobs(profile: Profile, techniques: list[Technique]) -> list[Job]:
    """Every (technique, lr, repeat) of the techniques whose lr is swept."""
    return [(t, RunSpec(lr, r, "sweep")) for t in techniques if len(profile.lrs_for(t)) > 1
            for lr in profile.lrs_for(t) for r in range(profile.repeats)]


def final_jobs(profile: Profile, techniques: list[Technique], best: dict[str, float]) -> list[Job]:
    """Every (technique, repeat) at the technique's chosen lr (its only one when not swept)."""
    return [(t, RunSpec(best.get(t.name, profile.lr_for(t)), r)) for t in techniques for r in range(profile.repeats)]


def chosen_lrs(records: list[RunRecord]) -> dict[str, float]:
    """technique -> the swept lr with the best mean validation accuracy, or lowest validation loss for a
    reconstruction (sweep runs only: the eval split is not looked at), see `bench.records.stats.best_lr`."""
    by_technique: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        if r.phase == "sweep":
            by_technique.setdefault(r.technique, []).append((r.lr, r.score(1) if r.status == "ok" else math.nan))
    return {name: best_lr(pairs) for name, pairs in by_technique.items()}


def run_queue(bench: Bench, prepared: Prepared, entries: list[RackEntry], jobs: list[Job],
              finished: Callable[[RunRecord], None]) -> list[RunRecord]:
    """Run ``jobs`` in order on ``entries`` (boards of one kind), each entry taking the next job when free."""
    pending: queue.SimpleQueue[Job] = queue.SimpleQueue()
    for job in jobs:
        pending.put(job)
    done: list[RunRecord] = []

    def worker(entry: RackEntry) -> None:
        while True:
            try:
                technique, spec = pending.get_nowait()
            except queue.Empty:
                return
            record = bench.run(prepared, entry, technique, spec)
            done.append(record)
            finished(record)

    with ThreadPoolExecutor(max_workers=max(len(entries), 1)) as pool:
        for future in [pool.submit(worker, e) for e in entries]:
            future.result()
    return done


def _run_profile(profile: Profile, rack: Rack, out: Path, progress: Progress | None,
                 on_record: Callable[[RunRecord], None] | None) -> list[RunRecord]:
    bench = Bench(out, progress=progress)
    prepared = bench.prepare(profile)
    techniques = study_techniques(prepared)
    budget = {t.name: describe_scheme(t) for t in techniques if t.label}  # what each equal-budget scheme trains
    meta = run_meta(profile.name, rack, profile.thresholds) | ({"budget_schemes": budget} if budget else {})
    if prepared.task is not None and prepared.task.provenance:  # a user's task: where it came from, how it was fed
        meta["task"] = {"name": prepared.task.name, "source": prepared.task.source,
                        "provenance": list(prepared.task.provenance)}
    writer = ResultsWriter(out, meta)
    lock = threading.Lock()
    records: list[RunRecord] = []

    def finished(record: RunRecord) -> None:
        with lock:
            records.append(record)
            writer.add(record)
        if on_record is not None:
            on_record(record)

    def study(entries: list[RackEntry]) -> None:
        """One kind of board: the lr sweep first, then the final runs at each technique's chosen lr."""
        swept = run_queue(bench, prepared, entries, sweep_jobs(profile, techniques), finished)
        run_queue(bench, prepared, entries, final_jobs(profile, techniques, chosen_lrs(swept)), finished)

    groups: dict[str, list[RackEntry]] = {}
    for entry in rack.boards:
        groups.setdefault(entry.board, []).append(entry)
    with ThreadPoolExecutor(max_workers=max(len(groups), 1)) as pool:
        for future in [pool.submit(study, entries) for entries in groups.values()]:
            future.result()
    writer.finish(finished=datetime.now(UTC).isoformat())
    return records
