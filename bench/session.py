"""A conversation with the training firmware over a Link: hello, start, collect until the run's summary.

Kept apart from orchestration so the same calls serve the CLI, the pytest fixtures and a user's own script.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bench import protocol as proto
from bench.link import Link
from bench.records import RunRecord

FAULT_NAMES = {1: "hard fault", 2: "bad plan blob", 3: "arena too small", 4: "bad dataset blob",
               5: "bad command", 6: "stack overflow"}


class DeviceError(RuntimeError):
    """The device reported a fault or stopped answering; the message names the run and the journal."""


@dataclass(frozen=True)
class TrainSettings:
    steps: int
    lr: float
    seed: int
    grad_every: int = 0
    eval_samples: int = 0


def hello(link: Link, timeout: float = 10.0) -> proto.Hello:
    """Ping until the firmware introduces itself (it is silent until its first command)."""
    link.send(proto.Ping(nonce=0x42454E43))
    msg = link.expect(proto.Hello, timeout=timeout, what="HELLO after PING")
    assert isinstance(msg, proto.Hello)
    return msg


def describe_fault(fault: proto.Fault) -> str:
    name = FAULT_NAMES.get(fault.code, f"code {fault.code}")
    detail = f"needs {fault.arg0:,} B, has {fault.arg1:,} B" if fault.code == 3 else \
        f"pc=0x{fault.pc:08x} lr=0x{fault.lr:08x} cfsr=0x{fault.cfsr:08x}"
    return f"device fault: {name} ({detail}) {fault.text}".strip()


def train(link: Link, record: RunRecord, settings: TrainSettings, idle_timeout: float,
          on_step: Callable[[proto.Step], None] | None = None) -> None:
    """Start a run and file every message into ``record`` until SUMMARY; a FAULT ends it with an error."""
    link.send(proto.Start(steps=settings.steps, lr=settings.lr, seed=settings.seed,
                          grad_every=settings.grad_every, eval_samples=settings.eval_samples))
    started = time.monotonic()
    ack_seen = False
    while record.summary is None:
        msg = link.expect(lambda m: True, timeout=idle_timeout,
                          what=f"messages of run {record.run_id} (step {len(record.steps)})")
        if isinstance(msg, proto.Ack):
            ack_seen = True
            record.plan_hash = msg.plan_hash
        elif isinstance(msg, proto.Fault):
            record.faults.append(msg)
            raise DeviceError(f"{record.run_id}: {describe_fault(msg)}; journal {link.journal_path}")
        record.add(msg)
        if on_step is not None and isinstance(msg, proto.Step):
            on_step(msg)
    if not ack_seen:
        raise DeviceError(f"{record.run_id}: SUMMARY without ACK; journal {link.journal_path}")
    record.wall_s = time.monotonic() - started
    record.lost_frames = link.stats.lost_frames
