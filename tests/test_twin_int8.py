"""Int8 (TQPL) plans on every twin: each streamed output bit-exact with bench/numerics/int8ref.py (hence tflite-micro).

The plain API at work, as in tests/test_twin.py: `bench.plan.int8` compiles, `bench.image.firmware.assemble` places
the blobs,
`QemuTarget` runs the board's firmware, `Link` carries START / OUTPUT / EVAL / LAYERS / SUMMARY. Figures (SRAM
measured vs planned, instructions per inference and per MAC) are printed (`pytest -s`) and kept as JUnit properties.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from bench.app.runner import board_lock
from bench.config.boards import Board, load_catalogue
from bench.image.firmware import assemble, build_firmware
from bench.link import protocol as proto
from bench.link import session
from bench.link.link import Link
from bench.model.qgraph import QModel
from bench.model.tasks import DeviceDataset, load_task, person
from bench.numerics import int8ref, pretrain
from bench.plan import blob
from bench.plan import int8 as qplan
from bench.target.drivers import QemuTarget
from bench.tflite.io import load_tflite
from bench.tflite.quantize import quantize_model
from tests.test_qplan import zoo_core

pytestmark = pytest.mark.twin
SEED = 0
ALL_OPS = 1


@dataclass
class EvalRun:
    """What one int8 START produced."""

    outputs: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # (sample, op or 0xFF) -> int8
    eval: proto.Eval | None = None
    layers: proto.LayerCosts | None = None
    summary: proto.Summary | None = None
    hello: proto.Hello | None = None
    instr_per_tick: float = 0.0

    def instructions(self, ticks: float) -> float:
        return ticks * self.instr_per_tick


def run_int8(board: Board, label: str, plan: qplan.QPlan, data: bytes, starts: list[proto.Start],
             work: Path) -> list[EvalRun]:
    """Load plan + dataset on the board's twin and run each START in one session; OUTPUT frames are reassembled."""
    fw = build_firmware(board)
    images = assemble(board, "emulated", fw, plan, data, work / "images")
    runs: list[EvalRun] = []
    with board_lock(label):
        target = QemuTarget(board, work / "qemu.log")
        target.load(images)
        target.reset()
        try:
            with Link.open(target.url, board.serial.baudrate, work, name=f"int8-{board.name}") as link:
                hello = session.hello(link)
                counting = target.counting(hello.counter_hz, hello.counter_kind)
                for start in starts:
                    runs.append(_collect(link, start, hello, counting.convert(1.0)))
        finally:
            target.close()
    return runs


def _collect(link: Link, start: proto.Start, hello: proto.Hello, instr_per_tick: float) -> EvalRun:
    run = EvalRun(hello=hello, instr_per_tick=instr_per_tick)
    chunks: dict[tuple[int, int], bytearray] = {}
    link.send(start)
    while run.summary is None:
        msg = link.expect(lambda m: True, timeout=120, what="int8 evaluation messages")
        if isinstance(msg, proto.Fault):
            raise session.DeviceError(session.describe_fault(msg))
        if isinstance(msg, proto.Output):
            buf = chunks.setdefault((msg.sample, msg.op), bytearray(msg.total))
            buf[msg.offset:msg.offset + len(msg.values)] = msg.values
        elif isinstance(msg, proto.Eval):
            run.eval = msg
        elif isinstance(msg, proto.LayerCosts):
            run.layers = msg
        elif isinstance(msg, proto.Summary):
            run.summary = msg
    run.outputs = {k: np.frombuffer(bytes(v), np.int8) for k, v in chunks.items()}
    assert link.stats.lost_frames == 0
    return run


def _assert_bit_exact(model: QModel, x: np.ndarray, run: EvalRun, samples: range, all_ops: bool) -> int:
    """Every streamed tensor equals bench.numerics.int8ref's; returns how many were compared."""
    ref = int8ref.forward(model, x)
    keys = [(s, op) for s in samples for op in (range(len(model.ops)) if all_ops else [proto.Output.GRAPH])]
    assert sorted(run.outputs) == sorted(keys)
    for s, op in keys:
        want = ref[-1 if op == proto.Output.GRAPH else op][s].ravel()
        got = run.outputs[(s, op)]
        assert np.array_equal(got, want), f"sample {s} op {op}: {(got != want).sum()} of {got.size} codes differ"
    return len(keys)


def _figures(record_property, name: str, plan: qplan.QPlan, run: EvalRun, board: Board) -> dict[str, float]:
    assert run.eval is not None and run.summary is not None and run.layers is not None and run.hello is not None
    s = run.summary
    per_inference = run.instructions(run.eval.ticks / run.eval.n)
    figures = {
        "planned_sram": run.hello.static_bytes + plan.arena_bytes,
        "planned_arena": plan.arena_bytes,
        "measured_arena_peak": s.arena_peak,
        "measured_stack": s.stack_hwm,
        "measured_sram_peak": s.sram_peak,
        "instructions_per_inference": per_inference,
        "instructions_per_mac": per_inference / sum(plan.macs),
    }
    convs = [(e.fwd, plan.macs[e.layer]) for e in run.layers.entries if e.op == 0x80 | qplan.OP_CODES["CONV_2D"]]
    if convs:
        figures["conv_instructions_per_mac"] = run.instructions(sum(t for t, _ in convs) / run.eval.n) / sum(
            m for _, m in convs)
    for k, v in figures.items():
        record_property(f"{name}.{board.name}.{k}", v)
    print(f"\n{name} on {board.name}: " + ", ".join(f"{k} {v:,.2f}" for k, v in figures.items()))
    # measured memory: the device writes exactly the planned arena, and everything fits the board
    assert s.arena_peak <= plan.arena_bytes and s.sram_peak <= board.sram_bytes
    assert s.sram_peak == run.hello.static_bytes + s.stack_hwm + s.arena_peak
    return figures


# ------------------------------------------------------------------------------------------------ models


@pytest.fixture(scope="module")
def task() -> DeviceDataset:
    return load_task("digits-drift", SEED)


@pytest.fixture(scope="module")
def digits_cnn(task: DeviceDataset, tmp_path_factory: pytest.TempPathFactory) -> QModel:
    """The project's exported int8 digits CNN (as export_digits_tflite writes it)."""
    from bench.tflite.quantize import digits_calibration

    model = pretrain.build_model("digits-cnn", task, SEED, tmp_path_factory.mktemp("cache"))
    return quantize_model(model, digits_calibration(task), name=model.name)


def test_digits_cnn_bit_exact_on_twin(bench_board, task: DeviceDataset, digits_cnn: QModel, tmp_path: Path,
                                      record_property) -> None:
    """All 300 drifted eval digits: the graph output of each, plus every op's output for the first 3."""
    board_cfg = load_catalogue()[bench_board.board]
    x = int8ref.quantized_inputs(digits_cnn, task.decode(task.x_eval))
    plan = qplan.compile_qplan(digits_cnn)
    scale, zp = int8ref.input_qparams(digits_cnn)
    data = blob.int8_dataset_blob(x[:0], task.y_eval[:0], x, task.y_eval, 10, scale, zp)
    every, first = run_int8(board_cfg, bench_board.label, plan, data, [
        proto.Start(steps=0, lr=0.0, seed=1, out_samples=0xFFFF),
        proto.Start(steps=0, lr=0.0, seed=1, eval_samples=3, out_samples=3, out_flags=ALL_OPS),
    ], tmp_path)
    assert _assert_bit_exact(digits_cnn, x, every, range(len(x)), all_ops=False) == 300
    assert _assert_bit_exact(digits_cnn, x, first, range(3), all_ops=True) == 3 * len(digits_cnn.ops)
    assert every.eval.n == 300 and every.eval.correct == int((int8ref.predict(digits_cnn, x) == task.y_eval).sum())
    _figures(record_property, "digits-cnn", plan, every, board_cfg)


@pytest.mark.parametrize("seed", [0, 1])
def test_operator_zoo_bit_exact_on_twin(bench_board, seed: int, tmp_path: Path) -> None:
    """Strided SAME conv + ReLU6, depthwise with multiplier 2, ADD, SAME average pool, MEAN, RESHAPE, FC, SOFTMAX."""
    board_cfg = load_catalogue()[bench_board.board]
    model = zoo_core(seed, keep_dims=bool(seed % 2 == 0))
    x = np.random.default_rng(seed + 7).integers(-128, 128, (4, 9, 9, 3)).astype(np.int8)
    y = int8ref.predict(model, x).astype(np.uint8)
    scale, zp = int8ref.input_qparams(model)
    plan = qplan.compile_qplan(model)
    data = blob.int8_dataset_blob(x[:0], y[:0], x, y, 5, scale, zp)
    (run,) = run_int8(board_cfg, bench_board.label, plan, data,
                      [proto.Start(steps=0, lr=0.0, seed=1, out_samples=4, out_flags=ALL_OPS)], tmp_path)
    _assert_bit_exact(model, x, run, range(4), all_ops=True)
    assert run.eval.correct == 4


def test_person_detect_bit_exact_on_m7_twin(shared_models: Path, task: DeviceDataset, tmp_path: Path,
                                            record_property) -> None:
    """TFLM's person_detect in the NUCLEO-F746ZG's 320 KB: person.bmp, no_person.bmp and 4 upscaled digits."""
    entry = next(e for e in _rack_entries() if e.board == "nucleo-f746zg")
    board_cfg = load_catalogue()[entry.board]
    model = load_tflite(shared_models / "person_detect.tflite")
    x, y = person.person_detect_samples(shared_models, task.x_eval)
    plan = qplan.compile_qplan(model)
    scale, zp = int8ref.input_qparams(model)
    data = blob.int8_dataset_blob(x[:0], y[:0], x, y, 2, scale, zp)
    (run,) = run_int8(board_cfg, entry.label, plan, data,
                      [proto.Start(steps=0, lr=0.0, seed=1, out_samples=2, out_flags=ALL_OPS)], tmp_path)
    _assert_bit_exact(model, x, run, range(2), all_ops=True)  # all 31 ops of both BMPs
    assert int8ref.predict(model, x[:2]).tolist() == [1, 0] and run.eval.n == len(x)
    assert run.eval.correct == int((int8ref.predict(model, x) == y).sum())
    figures = _figures(record_property, "person_detect", plan, run, board_cfg)
    record_property("person_detect.plan_blob_bytes", len(plan.blob(0)))
    assert figures["measured_arena_peak"] == plan.arena_bytes  # the largest op writes all of its planned bytes


def _rack_entries():
    from bench.config.boards import default_rack

    return default_rack(load_catalogue()).boards
