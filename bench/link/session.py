"""A conversation with the training firmware over a Link: hello, start, collect until the run's summary.

Kept apart from orchestration so the same calls serve the CLI, the pytest fixtures and a user's own script.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import serial

from bench.link import protocol as proto
from bench.link.link import Link, LinkError, LinkTimeout

FAULT_HARD, FAULT_ARENA, FAULT_STACK = 1, 3, 6
FAULT_NAMES = {1: "hard fault", 2: "bad plan blob", 3: "arena too small", 4: "bad dataset blob",
               5: "bad command", 6: "stack overflow"}
# a CPU fault's arg1: the exception number the handler ran for (ARMv6/7-M)
EXCEPTIONS = {2: "NMI", 3: "HardFault", 4: "MemManage", 5: "BusFault", 6: "UsageFault", 11: "SVCall",
              12: "DebugMonitor", 14: "PendSV"}


class DeviceError(RuntimeError):
    """The device broke the conversation (e.g. SUMMARY without ACK); the message names the run and the journal."""


class DeviceFaultError(DeviceError):
    """The device reported a FAULT (kept in ``fault``); the run is over."""

    def __init__(self, message: str, fault: proto.Fault) -> None:
        super().__init__(message)
        self.fault = fault


@dataclass(frozen=True)
class TrainSettings:
    steps: int
    lr: float
    seed: int
    grad_every: int = 0
    eval_samples: int = 0
    resume: bool = False  # train on the parameters in SRAM (WSET or the last run put them there), not the plan's
    prox_mu: float = 0.0  # FedProx (fp32 plans): each step pulls the trained values toward the run's start


# (layer, param) -> the tensor's values in the GRAD layout (docs/protocol.md, "Parameters over the wire")
Params = dict[tuple[int, int], list[float]]
MAX_PARAM_VALUES = 1 << 22  # 16 MB of fp32: more than any board's SRAM, so a device claiming more is lying


def hello(link: Link, timeout: float = 10.0) -> proto.Hello:
    """Ping until the firmware introduces itself (it is silent until its first command)."""
    link.send(proto.Ping(nonce=0x42454E43))
    msg = link.expect(proto.Hello, timeout=timeout, what="HELLO after PING")
    assert isinstance(msg, proto.Hello)
    return msg


# addr -> "function file:line" (or '') from the running image's ELF; the image stage provides it
Resolve = Callable[[int], str]


def describe_fault(fault: proto.Fault, resolve: Resolve | None = None, cfsr_words: Callable[[int], str] | None = None,
                   hfsr_words: Callable[[int], str] | None = None) -> str:
    """A FAULT in words: a CPU fault with its exception, registers (resolved to function and line, CFSR and HFSR
    decoded, when given the means), the other codes with their own two arguments and no registers they do not
    carry."""
    name = FAULT_NAMES.get(fault.code, f"code {fault.code}")
    if fault.code == FAULT_HARD:
        detail = _cpu_fault(fault, resolve, cfsr_words, hfsr_words)
    elif fault.code == FAULT_ARENA:
        detail = f"needs {fault.arg0:,} B, has {fault.arg1:,} B"
    elif fault.code == FAULT_STACK:
        detail = f"stack high-water {fault.arg0:,} B of {fault.arg1:,} B"
    else:
        detail = f"arg0={fault.arg0} (0x{fault.arg0:x}), arg1={fault.arg1} (0x{fault.arg1:x})"
    text = "" if fault.text == name else fault.text
    return f"device fault: {name} ({detail}) {text}".strip()


def _cpu_fault(fault: proto.Fault, resolve: Resolve | None, cfsr_words: Callable[[int], str] | None,
               hfsr_words: Callable[[int], str] | None) -> str:
    """Exception, pc and lr (with where they point), CFSR and HFSR (arg0) with their words; a status register the
    core does not have (ARMv6-M: reads as 0) is left out."""
    parts = [EXCEPTIONS[fault.arg1]] if fault.arg1 in EXCEPTIONS else []
    for reg, value in (("pc", fault.pc), ("lr", fault.lr)):
        where = resolve(value) if resolve else ""
        parts.append(f"{reg}=0x{value:08x}" + (f" in {where}" if where else ""))
    for reg, value, words in (("cfsr", fault.cfsr, cfsr_words), ("hfsr", fault.arg0, hfsr_words)):
        if value:
            said = words(value) if words else ""
            parts.append(f"{reg}=0x{value:08x}" + (f" = {said}" if said else ""))
    return ", ".join(parts)


def selftest_fault(link: Link, kind: int, timeout: float = 10.0) -> proto.Fault:
    """Make the device fault on purpose (`proto.SelfTest`) and return the FAULT it reports."""
    link.send(proto.SelfTest(kind=kind))
    msg = link.expect(proto.Fault, timeout=timeout, what=f"FAULT after SELFTEST kind {kind}")
    assert isinstance(msg, proto.Fault)
    return msg


class MessageSink(Protocol):
    """Where a run's decoded messages go (`bench.records.RunRecord` is one)."""

    def add(self, msg: object) -> None: ...


@dataclass(frozen=True)
class TrainOutcome:
    """What the conversation itself measured: the plan hash the device acknowledged, wall time, frames lost."""

    plan_hash: int
    wall_s: float
    lost_frames: int
    steps: int


def train(link: Link, sink: MessageSink, settings: TrainSettings, idle_timeout: float, name: str,
          on_step: Callable[[proto.Step], None] | None = None, run_timeout: float | None = None) -> TrainOutcome:
    """Start a run and hand every message to ``sink`` until SUMMARY; a FAULT ends it with a `DeviceFaultError`.
    ``idle_timeout`` is the longest silence tolerated (the device sends a step, or beats, at least every second of
    its time), ``run_timeout`` the longest conversation; either raises `LinkTimeout`."""
    link.send(proto.Start(steps=settings.steps, lr=settings.lr, seed=settings.seed,
                          grad_every=settings.grad_every, eval_samples=settings.eval_samples,
                          out_flags=proto.Start.RESUME if settings.resume else 0, prox_mu=settings.prox_mu))
    started = time.monotonic()
    plan_hash: int | None = None
    steps = 0
    while True:
        if run_timeout is not None and time.monotonic() - started > run_timeout:
            raise LinkTimeout(f"{name}: still running after {run_timeout:g} s (profile timeout_s), at step {steps}; "
                              f"journal {link.journal_path}")
        msg = link.expect(lambda m: True, timeout=idle_timeout,
                          what=f"messages of run {name} (step {steps}; silent for {idle_timeout:g} s: hung?)")
        sink.add(msg)
        if isinstance(msg, proto.Ack):
            plan_hash = msg.plan_hash
        elif isinstance(msg, proto.Fault):
            raise DeviceFaultError(f"{name}: {describe_fault(msg)}; journal {link.journal_path}", msg)
        elif isinstance(msg, proto.Step):
            steps += 1
            if on_step is not None:
                on_step(msg)
        elif isinstance(msg, proto.Summary):
            break
    if plan_hash is None:
        raise DeviceError(f"{name}: SUMMARY without ACK; journal {link.journal_path}")
    return TrainOutcome(plan_hash, time.monotonic() - started, link.stats.lost_frames, steps)


def get_params(link: Link, timeout: float, name: str, kind: int = proto.ParamChunk.FLOATS) -> Params:
    """WGET: every trainable tensor of the plan as the device holds it now, as values of ``kind`` (f32 for fp32
    plans, int32 words for int8 plans). Each tensor must arrive whole, in order and with one total; the sum of
    totals is bounded (`MAX_PARAM_VALUES`)."""
    link.send(proto.WGet())
    got: Params = {}
    totals: dict[tuple[int, int], int] = {}
    while True:
        msg = link.expect((proto.WData, proto.Ack), timeout=timeout, what=f"WDATA/ACK after WGET ({name})")
        if isinstance(msg, proto.Ack):
            break
        assert isinstance(msg, proto.WData)
        if msg.kind != kind:
            raise DeviceError(f"{name}: WDATA of kind {msg.kind}, expected {kind} (this plan's numerics); journal "
                              f"{link.journal_path}")
        key = (msg.layer, msg.param)
        values = got.setdefault(key, [])
        if msg.offset != len(values) or totals.setdefault(key, msg.total) != msg.total:
            raise DeviceError(f"{name}: WDATA of tensor {key} out of order (offset {msg.offset}, have "
                              f"{len(values)}); journal {link.journal_path}")
        if sum(totals.values()) > MAX_PARAM_VALUES:
            raise DeviceError(f"{name}: WDATA beyond {MAX_PARAM_VALUES:,} values; journal {link.journal_path}")
        values.extend(msg.values)
    short = sorted(k for k, v in got.items() if len(v) != totals[k])
    if short or msg.cmd_type != proto.MsgType.WGET:
        raise DeviceError(f"{name}: WGET answered with incomplete tensors {short} or an ACK of "
                          f"0x{msg.cmd_type:02x}; journal {link.journal_path}")
    return got


def set_params(link: Link, params: Params, timeout: float, name: str, kind: int = proto.ParamChunk.FLOATS) -> int:
    """WSET every tensor of ``params`` (values of ``kind``, as `get_params`) in chunks, each acknowledged before the
    next is sent (a UART without flow control cannot overrun); returns the values sent. A FAULT (a tensor the plan
    does not train, a wrong size) raises `DeviceFault` naming it."""
    sent = 0
    for (layer, param), values in params.items():
        for off in range(0, len(values), proto.ParamChunk.MAX_VALUES):
            chunk = tuple(values[off:off + proto.ParamChunk.MAX_VALUES])
            link.send(proto.WSet(layer, param, len(values), off, chunk, kind))
            ack = link.expect(proto.Ack, timeout=timeout, what=f"ACK of WSET ({layer}, {param}) at {off} ({name})")
            assert isinstance(ack, proto.Ack)
            sent += len(chunk)
    return sent


def running_build_id(url: str, baudrate: int, journal_dir: Path, name: str, timeout: float) -> str | None:
    """The build id the firmware at ``url`` reports in HELLO, or None when nothing answers. Failing to open the port
    at all raises the underlying `serial.SerialException` / `OSError`, so the caller can name the port."""
    try:
        with Link.open(url, baudrate, journal_dir, name=name) as link:
            return hello(link, timeout=timeout).build_id
    except LinkError as exc:
        if isinstance(exc.__cause__, serial.SerialException | OSError):
            raise exc.__cause__ from exc
        return None
