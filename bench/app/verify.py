"""`bench verify MODEL.tflite`: is the board's int8 inference bit-exact with tflite-micro for *my* model?

The model is compiled to an evaluation-only int8 plan, loaded on a board (a twin by default) with N seeded random
int8 inputs, and run there with every op's output streamed (OUTPUT frames); tflite-micro's interpreter (the int8
truth; the `[verify]` extra) runs the same inputs with every tensor preserved. Each op's output is compared element
by element for every input.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.app.runner import board_lock, hold
from bench.config.boards import Board, ConfigError, Rack, RackEntry, lock_key
from bench.image.firmware import assemble, build_firmware
from bench.link import protocol as proto
from bench.link import session
from bench.link.link import Link
from bench.model.qgraph import QModel
from bench.numerics.int8ref import input_qparams
from bench.plan.blob import int8_dataset_blob
from bench.plan.int8 import compile_qplan
from bench.target.factory import make_target
from bench.tflite.io import load_tflite

ALL_OPS = 1  # START out_flags bit 0: every op's output
MAX_OUTPUTS = 0xFFFF  # the plan's u16 output count


class VerifyError(ConfigError):
    """A model or board that cannot be verified (named), as opposed to a mismatch, which is a result."""


@dataclass(frozen=True)
class OpCheck:
    """One op over every input: how many output codes differ from tflite-micro's, and by how much at most."""

    index: int
    kind: str
    tensor: str
    shape: tuple[int, ...]
    compared: int
    mismatched: int
    max_abs_diff: int

    @property
    def ok(self) -> bool:
        return self.compared > 0 and self.mismatched == 0


@dataclass
class Verification:
    model: str
    board: str
    inputs: int
    ops: list[OpCheck] = field(default_factory=list)
    instructions_per_inference: float = float("nan")
    sram_peak_bytes: int = 0

    @property
    def ok(self) -> bool:
        return bool(self.ops) and all(op.ok for op in self.ops)


def random_inputs(model: QModel, n: int, seed: int) -> np.ndarray:
    """``n`` int8 input codes spanning the whole code range, deterministic by seed."""
    shape = tuple(model.tensors[model.inputs[0]].shape[1:])
    return np.random.default_rng(seed).integers(-128, 128, (n, *shape)).astype(np.int8)


def tflm_outputs(path: Path, model: QModel, xs: np.ndarray) -> list[list[np.ndarray]]:
    """Per input, every op's output as tflite-micro's interpreter computed it."""
    try:
        from tflite_micro import runtime  # type: ignore[import-untyped]
    except ImportError as e:
        raise VerifyError(f"bench verify needs tflite-micro ({e}): pip install 'mcu-train-bench[verify]'") from None
    buf = path.read_bytes()
    acts = sum(int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize for t in model.tensors if t.data is None)
    ip = runtime.Interpreter.from_bytes(buf, arena_size=2 * len(buf) + 4 * acts + (64 << 10),
                                        intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
    out = []
    for x in xs:
        ip.set_input(x[None], 0)
        ip.invoke()
        out.append([np.asarray(ip.GetTensor(op.outputs[0], 0)["tensor_data"]).ravel() for op in model.ops])
    return out


def device_outputs(board: Board, entry: RackEntry, model: QModel, xs: np.ndarray, work: Path, timeout_s: float
                   ) -> tuple[dict[tuple[int, int], np.ndarray], proto.Eval | None, proto.Summary, float]:
    """Every op's output for every input, as the board computed it; plus its EVAL, SUMMARY and instructions (or
    cycles) per tick."""
    plan = compile_qplan(model)
    n_out = int(np.prod(model.tensors[model.outputs[0]].shape[1:]))
    if n_out > MAX_OUTPUTS:
        raise VerifyError(f"{model.name}: its output has {n_out:,} values; an int8 plan holds at most "
                          f"{MAX_OUTPUTS:,}")
    scale, zp = input_qparams(model)
    y = np.zeros(len(xs), np.uint8)
    flat = xs if xs.ndim == 4 else xs.reshape(len(xs), 1, 1, -1)  # the dataset blob holds HWC samples
    data = int8_dataset_blob(flat[:0], y[:0], flat, y, n_out, scale, zp)
    fw = build_firmware(board, "twin" if entry.kind == "emulated" else entry.kind)
    images = assemble(board, entry.kind, fw, plan, data, work / "images")
    target = make_target(entry, board, work, identify=session.running_build_id)
    chunks: dict[tuple[int, int], bytearray] = {}
    ev: proto.Eval | None = None
    with hold(board_lock(lock_key(entry)), lambda what: None):
        try:
            target.load(images)
            target.reset()
            with Link.open(target.url, board.serial.baudrate, work, name=f"verify.{entry.label}") as link:
                hello = session.hello(link)
                per_tick = target.counting(hello.counter_hz, hello.counter_kind).convert(1.0)
                link.send(proto.Start(steps=0, lr=0.0, seed=1, out_samples=len(xs), out_flags=ALL_OPS))
                while True:
                    msg = link.expect(lambda m: True, timeout=timeout_s, what="OUTPUT/EVAL/SUMMARY of verify")
                    if isinstance(msg, proto.Output):
                        buf = chunks.setdefault((msg.sample, msg.op), bytearray(msg.total))
                        if len(buf) == msg.total:
                            buf[msg.offset:msg.offset + len(msg.values)] = msg.values
                    elif isinstance(msg, proto.Eval):
                        ev = msg
                    elif isinstance(msg, proto.Summary):
                        summary = msg
                        break
        finally:
            target.close()
    outs = {k: np.frombuffer(bytes(v), np.int8) for k, v in chunks.items()}
    return outs, ev, summary, per_tick


def compare(model: QModel, device: dict[tuple[int, int], np.ndarray], truth: list[list[np.ndarray]]
            ) -> list[OpCheck]:
    """Per op: codes compared and mismatched over every input (a missing or wrongly sized tensor counts whole)."""
    checks = []
    for k, op in enumerate(model.ops):
        t = model.tensors[op.outputs[0]]
        compared = mismatched = worst = 0
        for s, per_op in enumerate(truth):
            want = per_op[k].astype(np.int64)
            got = device.get((s, k))
            compared += want.size
            if got is None or got.size != want.size:
                mismatched += want.size
                worst = max(worst, 256)
                continue
            diff = np.abs(got.astype(np.int64) - want)
            mismatched += int((diff != 0).sum())
            worst = max(worst, int(diff.max(initial=0)))
        checks.append(OpCheck(k, op.kind, t.name, tuple(t.shape), compared, mismatched, worst))
    return checks


def verify(path: Path, rack: Rack, catalogue: dict[str, Board], board_name: str, inputs: int, seed: int, work: Path,
           timeout_s: float = 600.0) -> Verification:
    """The whole check for one board of ``rack``."""
    entry = next((e for e in rack.boards if e.board == board_name or e.label == board_name), None)
    if entry is None:
        raise VerifyError(f"board {board_name!r} is not in rack {rack.name} "
                          f"({', '.join(e.label for e in rack.boards)})")
    if inputs < 1 or inputs > 0xFFFE:
        raise VerifyError(f"--inputs {inputs}: want 1..65534")
    model = dataclasses.replace(load_tflite(path), name=path.stem)
    xs = random_inputs(model, inputs, seed)
    truth = tflm_outputs(path, model, xs)
    board = catalogue[entry.board]
    device, ev, summary, per_tick = device_outputs(board, entry, model, xs, work, timeout_s)
    result = Verification(path.name, entry.label, inputs, compare(model, device, truth))
    if ev is not None and ev.n:
        result.instructions_per_inference = ev.ticks * per_tick / ev.n
    result.sram_peak_bytes = summary.sram_peak
    return result
