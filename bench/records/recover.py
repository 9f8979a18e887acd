"""Rebuilding the records of runs a killed bench never wrote, from their raw byte journals.

Why: a host killed mid-session (OOM, power, a CI runner's timeout) leaves every finished run in the results tables
(they are written after each run) but the in-flight run only in its rx journal, which is written before anything is
decoded. Each run leaves a small manifest beside its journal when it starts (``<run_id>.run.json``: what it ran and
where its bytes begin); `recover` decodes the journal from there and files the messages as the run's record, with
status ``unfinished``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.config.boards import Board
from bench.link import protocol as proto
from bench.records.run import ResultsWriter, RunRecord, atomic_path
from bench.target.drivers import Counting

MANIFEST_SUFFIX = ".run.json"
UNFINISHED = "unfinished"


class RecoverError(RuntimeError):
    """A results directory or one of its manifests cannot be read; the message names the file."""


@dataclass(frozen=True)
class Manifest:
    """What a run was about to do, written before its first byte: enough to rebuild its record from the journal."""

    run_id: str
    board: str
    target_kind: str
    technique: str
    model: str
    journal: str
    rx_offset: int  # the rx journal's size when this run opened its link: its bytes start here
    check_steps: int  # a fidelity-check run comes first on the same link (its START is acknowledged first)
    plan_hash: int | None
    build_id: str
    grad_scales: list[tuple[int, int, float]]
    counting: tuple[str, float] | None = None  # known once the device said HELLO
    phase: str = "final"
    lr: float = float("nan")
    repeat: int = 0
    seed: int | None = None
    loss_kind: str = "cross-entropy"  # a reconstruction has no accuracy: the rebuilt record must not show one

    @classmethod
    def of(cls, record: RunRecord, rx_offset: int, check_steps: int) -> Manifest:
        scales = [(layer, param, c) for (layer, param), c in record.grad_scales.items()]
        counting = (record.counting.unit, record.counting.counts_per_tick) if record.counting else None
        return cls(record.run_id, record.board.name, record.target_kind, record.technique, record.model,
                   record.journal, rx_offset, check_steps, record.plan_hash, record.build_id, scales, counting,
                   record.phase, record.lr, record.repeat, record.seed, record.loss_kind)

    def write(self, journal_dir: Path) -> Path:
        path = journal_dir / f"{self.run_id}{MANIFEST_SUFFIX}"
        journal_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.__dict__, indent=1) + "\n")
        return path

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            fields = json.loads(path.read_text())
            fields["grad_scales"] = [tuple(s) for s in fields["grad_scales"]]
            fields["counting"] = tuple(fields["counting"]) if fields.get("counting") else None
            return cls(**fields)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise RecoverError(f"{path}: not a run manifest ({type(exc).__name__}: {exc})") from None


def journal_messages(path: Path, offset: int) -> tuple[list[proto.Message], proto.DecoderStats]:
    """Every message that decodes from ``path`` after byte ``offset`` (a missing journal has none)."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        data = b""
    decoder = proto.FrameDecoder(start_offset=offset)
    messages, _ = proto.feed_messages(decoder, data)
    return messages, decoder.stats


def rebuild(manifest: Manifest, board: Board) -> RunRecord:
    """The record of an unrecorded run: its HELLO, then what followed the START acknowledgement of the run itself
    (after the fidelity check's, when it had one)."""
    record = RunRecord(run_id=manifest.run_id, board=board, target_kind=manifest.target_kind,
                       technique=manifest.technique, model=manifest.model, journal=manifest.journal,
                       status=UNFINISHED, build_id=manifest.build_id, plan_hash=manifest.plan_hash,
                       grad_scales={(layer, param): c for layer, param, c in manifest.grad_scales},
                       phase=manifest.phase, lr=manifest.lr, repeat=manifest.repeat, seed=manifest.seed,
                       loss_kind=manifest.loss_kind)
    if manifest.counting is not None:
        record.counting = Counting(*manifest.counting)
    messages, stats = journal_messages(Path(manifest.journal), manifest.rx_offset)
    acks_to_skip = 2 if manifest.check_steps else 1
    for msg in messages:
        if isinstance(msg, proto.Hello) and record.hello is None:
            record.hello = msg
        elif isinstance(msg, proto.Ack) and msg.cmd_type == proto.MsgType.START:
            acks_to_skip -= 1
        elif acks_to_skip == 0:
            record.add(msg)
    record.lost_frames = stats.lost_frames
    ended = "the device had sent its SUMMARY" if record.summary else f"at step {len(record.steps)}"
    record.error = (f"the bench stopped before recording this run ({ended}); rebuilt by `bench recover` from "
                    f"{manifest.journal}")
    return record


@dataclass(frozen=True)
class Recovered:
    """What `recover` did: the records it rebuilt, and how many runs were already recorded."""

    records: list[RunRecord]
    already_recorded: int


def unrecorded(out: Path) -> list[Manifest]:
    """Manifests of runs that started in ``out`` but are missing from its runs table."""
    runs_path = out / "runs.parquet"
    recorded = set(pd.read_parquet(runs_path, columns=["run_id"])["run_id"]) if runs_path.is_file() else set()
    manifests = [Manifest.read(p) for p in sorted((out / "journal").glob(f"*{MANIFEST_SUFFIX}"))]
    return [m for m in manifests if m.run_id not in recorded]


def recover(out: Path, catalogue: dict[str, Board]) -> Recovered:
    """Rebuild every started-but-unrecorded run of ``out`` from its journal and add it to the results tables."""
    if not out.is_dir():
        raise RecoverError(f"{out}: no such results directory")
    missing = unrecorded(out)
    writer = ResultsWriter.resume(out)
    records = []
    for manifest in missing:
        board = catalogue.get(manifest.board)
        if board is None:
            raise RecoverError(f"{out / 'journal' / (manifest.run_id + MANIFEST_SUFFIX)}: board '{manifest.board}' "
                               f"is not in the catalogue")
        records.append(rebuild(manifest, board))
    for record in records:
        writer.add(record)
    if records:
        writer.finish(recovered=[r.run_id for r in records])
    return Recovered(records, already_recorded=len(writer.runs) - len(records))
