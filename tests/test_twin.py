"""End to end on every twin of the rack: real firmware under QEMU, real pty, real protocol.

These are the bench's own fixtures at work: ``bench_board`` is parametrized over the rack, ``bench_run`` flashes and
trains.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.config.boards import load_catalogue
from bench.config.profile import parse_technique
from bench.image.firmware import ImageSet, build_firmware
from bench.link import protocol as proto
from bench.link import session
from bench.link.link import Link
from bench.model.tasks import load_task
from bench.numerics.pretrain import build_model
from bench.plan.blob import dataset_blob
from bench.plan.fp32 import compile_plan
from bench.target.drivers import QemuTarget

pytestmark = pytest.mark.twin
STEPS = 150


@pytest.mark.parametrize("technique", ["full-fp32", "last-fp32"])
def test_training_on_twin_lowers_loss_and_matches_reference(bench_board, bench_run, technique):
    run = bench_run(bench_board, technique, steps=STEPS, grad_every=50)
    assert run.status == "ok", run.error
    assert run.hello.board == bench_board.board and run.hello.proto_version == proto.PROTOCOL_VERSION
    assert run.hello.build_id == run.build_id  # the device runs exactly the image the bench built
    assert len(run.steps) == STEPS and run.lost_frames == 0
    # on the whole eval split (batch-1 training losses are too noisy to compare over 150 steps)
    assert run.eval_loss(1) < run.eval_loss(0)
    assert run.accuracy(1) > run.accuracy(0)
    assert (run.acc_before, run.acc_after) == (run.accuracy(0), run.accuracy(1))  # the results columns, by name
    assert run.final_loss == run.row["final_loss"] and len(repr(run)) < 300 and run.run_id in repr(run)
    # gradients streamed during the first steps against an independent numpy reference
    assert run.fidelity_max_rel_err < 1e-4
    row = run.record.run_row()
    assert 0 < row["peak_sram_bytes"] <= row["board_sram_bytes"]
    assert row["arena_peak_bytes"] <= row["planned_sram_bytes"]
    assert row["instr_fwd_per_step"] > 0 and row["instr_upd_per_step"] > 0
    assert row["energy_source"] == "modelled" and row["energy_per_step_uj"] > 0
    # per-layer costs: the forward pass is timed per layer, so the layers sum to a little less than the phase
    layers = run.record.layer_rows()
    fwd_sum = sum(r["instr_fwd_per_step"] for r in layers)
    assert 0.8 * row["instr_fwd_per_step"] < fwd_sum <= row["instr_fwd_per_step"]
    param_layers = [r["layer"] for r in layers if r["op"] in ("dense", "conv2d")]
    trained = {i for i, _ in parse_technique(technique).trainable(param_layers)}
    assert all((r["instr_upd_per_step"] > 0) == (r["layer"] in trained) for r in layers)
    assert row["planned_weights_bytes"] > 0 and row["planned_optimizer_bytes"] == 0
    # full gradient tensors streamed every 50 steps, statistics every step
    streamed = run.grads.dropna(subset=["values"])
    assert sorted(streamed["step"].unique()) == [0, 50, 100]
    assert run.grads["step"].nunique() == STEPS


def test_sparse_update_on_twin(bench_board, bench_run):
    """MCUNetV3 sparse update (profiles/techniques.toml [sparse]): only the selected channels train, on the device as
    in the reference replay; the measured peak is close to the plan's."""
    run = bench_run(bench_board, "sparse-fp32", profile="techniques", steps=STEPS, grad_every=50)
    assert run.status == "ok", run.error
    assert run.eval_loss(1) < run.eval_loss(0) and run.accuracy(1) > run.accuracy(0)
    assert run.fidelity_max_rel_err < 1e-4  # the replay applies the same channel masks
    row = run.record.run_row()
    assert abs(row["peak_sram_bytes"] - row["planned_sram_bytes"]) <= 0.1 * row["planned_sram_bytes"]
    # GRAD streams the selected channels' rows only: 1 of 8 conv channels (3x3x1), 8 of 32 dense rows (288)
    streamed = run.grads.dropna(subset=["values"])
    sizes = {(r.layer, r.param): len(r.values) for r in streamed.itertuples() if r.step == 0}
    assert sizes[(0, "w")] == 9 and sizes[(2, "w")] == 8 * 288 and sizes[(4, "w")] == 10 * 32
    layers = {r["layer"]: r for r in run.record.layer_rows()}
    assert all(layers[i]["instr_upd_per_step"] > 0 for i in (0, 2, 4))


def test_instruction_counts_are_deterministic(bench_run):
    entry = next(e for e in _rack_entries() if e.board == "nucleo-f746zg")
    a = bench_run(entry, "last-fp32", steps=5, check_steps=0, eval_samples=1)
    b = bench_run(entry, "last-fp32", steps=5, check_steps=0, eval_samples=1)
    cols = ["instr_fwd", "instr_bwd", "instr_upd"]
    # the same instructions run each time; a SysTick tick is 0.625 instructions at -icount shift=6 and the tick
    # phase at START depends on when the host's bytes arrived, so each timed window may be off by one tick. The
    # forward phase is the sum of 2 + n_layers windows (sample decode, each layer, loss), the others of one here.
    diff = np.abs(a.steps[cols].to_numpy() - b.steps[cols].to_numpy())
    windows = np.array([2 + len(a.record.plan_layers), 1, 1])
    assert (diff <= windows * 0.625 + 1e-9).all(), diff
    assert a.steps["instr_fwd"].min() > 1000


def test_plan_too_big_for_board_reports_required_vs_available(bench_board, bench_run):
    run = bench_run(bench_board, "full-fp32", model="digits-mlp-wide", steps=1)
    assert run.status == "does-not-fit"
    sram = load_catalogue()[bench_board.board].sram_bytes
    assert f"but the board has {sram:,} B" in run.error and "arena available" in run.error
    assert run.record.planned_sram_bytes > sram


def _rack_entries():
    from bench.config.boards import default_rack

    return default_rack(load_catalogue()).boards


def test_twin_is_linked_with_the_real_board_sram(tmp_path):
    """Skip the host's fit check: the firmware itself must refuse an arena its board does not have."""
    board = load_catalogue()["nrf52840-dk"]
    fw = build_firmware(board)
    ds = load_task("digits-drift", 1)
    model = build_model("digits-mlp", ds, 1, None)
    plan = compile_plan(model, parse_technique("full-fp32"))
    huge = _with_arena(plan, board.sram_bytes)
    data = dataset_blob(ds.x_train[:4], ds.y_train[:4], ds.x_eval[:4], ds.y_eval[:4], 10, ds.scale, ds.offset)
    images = _images(board, fw, huge, data, tmp_path)
    target = QemuTarget(board, tmp_path / "qemu.log")
    target.load(images)
    target.reset()
    try:
        with Link.open(target.url, 115200, tmp_path, name="huge") as link:
            hello = session.hello(link)
            link.send(proto.Start(steps=1, lr=0.01, seed=1, grad_every=0, eval_samples=1))
            fault = link.expect(proto.Fault, timeout=20, what="FAULT for an oversized arena")
    finally:
        target.close()
    assert fault.code == 3 and fault.arg0 == board.sram_bytes and fault.arg1 == hello.arena_bytes
    assert hello.arena_bytes < board.sram_bytes - hello.static_bytes - hello.stack_bytes + 1


def _with_arena(plan, arena_bytes):
    from dataclasses import replace

    return replace(plan, arena_bytes=arena_bytes)


def _images(board, fw, plan, data, work) -> ImageSet:
    from bench.image.firmware import BLOB_ALIGN, Blob

    plan_addr = board.plan_addr(emulated=True)
    ds_addr = plan_addr + (len(plan.blob(0)) + BLOB_ALIGN - 1) // BLOB_ALIGN * BLOB_ALIGN
    (work / "plan.bin").write_bytes(plan.blob(ds_addr))
    (work / "data.bin").write_bytes(data)
    blobs = (Blob("plan", plan_addr, work / "plan.bin", 0), Blob("dataset", ds_addr, work / "data.bin", len(data)))
    return ImageSet(board=board, kind="emulated", firmware=fw, blobs=blobs, plan_hash=plan.plan_hash,
                    arena_bytes=plan.arena_bytes)


def test_bench_dut_is_a_live_journaled_link_to_the_firmware(bench_board, bench_dut, bench_log_dir):
    from bench.link.protocol import Ping, Pong

    assert bench_dut.hello.board == bench_board.board and bench_dut.entry == bench_board
    bench_dut.link.send(Ping(nonce=0xC0FFEE))
    pong = bench_dut.link.expect(lambda m: isinstance(m, Pong) and m.nonce == 0xC0FFEE, timeout=5, what="our PONG")
    assert isinstance(pong, Pong)  # (the PING of the HELLO exchange has its own PONG, queued before this one)
    assert bench_dut.link.journal_path.stat().st_size > 0 and bench_dut.link.journal_path.parent == bench_log_dir
    assert bench_board.label in bench_log_dir.name  # this test's own directory, one per parametrized board


def test_bench_bench_ops_prints_per_op_counts_against_the_smlad_bound(tmp_path):
    """The table issue 11 is measured by: every op of digits-cnn in fp32 and int8, its MACs from the plan and its
    counts from the device's layer costs, which add up to the step's counts."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "from bench.app.cli import entry; entry()", "bench", "--ops",
                           "--board", "nucleo-f746zg", "--out", str(tmp_path), "--json"], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(done.stdout)
    assert data["smlad_bound_instr_per_mac"] == 0.5
    int8 = [o for o in data["ops"] if o["numerics"] == "int8"]
    assert [(o["kind"], o["macs"]) for o in int8] == [("CONV_2D", 2592), ("FULLY_CONNECTED", 9216),
                                                     ("FULLY_CONNECTED", 320), ("SOFTMAX", 0)]
    assert all(o["fwd"] > 0 for o in int8) and int8[1]["weights"] == 9216
    step = next(s for s in data["steps"] if s["technique"] == "full-int8")
    layer_total = sum(o["fwd"] + o["bwd"] + o["upd"] for o in int8)
    assert 0.8 * step["total"] < layer_total <= step["total"] * 1.001  # the ops account for the step
