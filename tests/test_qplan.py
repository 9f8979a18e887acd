"""The int8 plan compiler: TQPL blob layout, precomputed constants, an arena plan never overlapping live tensors."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from bench.model.qgraph import QModel, QOp, QTensor
from bench.model.tasks import DeviceDataset, load_task, person
from bench.numerics import int8prep, int8ref, pretrain
from bench.plan import blob
from bench.plan import int8 as qplan
from bench.tflite.io import load_tflite
from bench.tflite.quantize import quantize_model
from tests.test_int8ref import _Zoo

SEED = 0


@pytest.fixture(scope="module")
def task() -> DeviceDataset:
    return load_task("digits-drift", SEED)


@pytest.fixture(scope="module")
def digits_cnn(task: DeviceDataset, tmp_path_factory: pytest.TempPathFactory) -> QModel:
    model = pretrain.build_model("digits-cnn", task, SEED, tmp_path_factory.mktemp("cache"))
    return quantize_model(model, np.asarray(task.x_pretrain, np.float64), name="digits-cnn")


def zoo_core(seed: int, keep_dims: bool = True) -> QModel:
    """The int8ref operator zoo without its QUANTIZE/DEQUANTIZE edges: int8 in, int8 SOFTMAX out."""
    full = _Zoo(seed).build(keep_dims)
    ops = full.ops[1:-1]
    return QModel("zoo", full.tensors, ops, (ops[0].inputs[0],), (ops[-1].outputs[0],))


def _live_pairs(plan: qplan.QPlan):
    bufs = plan.buffers
    for i, a in enumerate(bufs):
        for b in bufs[i + 1:]:
            if a.start <= b.end and b.start <= a.end:
                yield a, b


def _check_arena(plan: qplan.QPlan) -> None:
    model = plan.model
    for a, b in _live_pairs(plan):
        assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset, f"{a} overlaps {b} while both live"
    assert plan.arena_bytes == max(b.offset + b.size for b in plan.buffers)
    for i, op in enumerate(model.ops):
        out = op.outputs[0]
        for t in (op.inputs[:2] if op.kind == "ADD" else op.inputs[:1]):
            if op.kind == "RESHAPE":
                assert plan.offset_of(out) == plan.offset_of(t), f"op {i}: RESHAPE must alias its input"
                continue
            lo_a, lo_b = plan.offset_of(out), plan.offset_of(t)
            size_a, size_b = (int(np.prod(model.tensors[x].shape)) for x in (out, t))
            assert lo_a + size_a <= lo_b or lo_b + size_b <= lo_a, f"op {i}: output overlaps input"
    # the planned peak is at least the largest op's input + output, at most all activations
    acts = [int(np.prod(t.shape)) for t in model.tensors if t.data is None]
    assert plan.arena_bytes <= sum(-(-a // 4) * 4 for a in acts)


def _header(blob: bytes) -> tuple:
    return struct.unpack_from("<IHHIIIIIHHIIHHHHI", blob)


def test_blob_layout(digits_cnn: QModel) -> None:
    plan = qplan.compile_qplan(digits_cnn)
    blob = plan.blob(0x1234000)
    (magic, version, hdr, total, crc, phash, arena, ds, n_t, n_ops, t_off, o_off, t_in, t_out, n_cls, flags,
     train) = _header(blob)
    assert (magic, version, hdr, total) == (0x4C505154, 1, 64, len(blob))
    assert blob[:4] == b"TQPL"
    assert crc == zlib.crc32(blob[:12] + b"\0" * 4 + blob[16:])
    assert (phash, arena, ds) == (plan.plan_hash, plan.arena_bytes, 0x1234000)
    assert (n_ops, n_cls, flags, train) == (len(digits_cnn.ops), 10, 0, 0) and blob[52:64] == bytes(12)
    assert t_off == 64 and o_off == 64 + 32 * n_t and n_t == len(plan.tensor_ids)
    assert plan.tensor_ids[t_in] == digits_cnn.inputs[0] and plan.tensor_ids[t_out] == digits_cnn.outputs[0]
    assert plan.blob(0x2000)[16:20] == blob[16:20]  # the hash names the plan, not where its dataset lies
    codes = [blob[o_off + 64 * i] for i in range(n_ops)]
    assert [qplan.OP_NAMES[c] for c in codes] == digits_cnn.kinds()
    for i in range(n_t):  # every tensor: activations in the arena, constants inside the blob
        kind, _, rank, _, *dims, off, nbytes, zp, _, _ = struct.unpack_from("<BBBB4HIIifI", blob,
                                                                                        t_off + 32 * i)
        t = digits_cnn.tensors[plan.tensor_ids[i]]
        assert dims[4 - rank:] == list(t.shape) and rank == len(t.shape)
        if kind == qplan.KIND_ACTIVATION:
            assert off + nbytes <= plan.arena_bytes and off == plan.offset_of(plan.tensor_ids[i])
            assert zp == int(t.zero_point[0])
        else:
            assert o_off + 64 * n_ops <= off and off + nbytes <= total
            raw = np.frombuffer(blob, "<i4" if kind == qplan.KIND_CONST_I32 else "i1", t.data.size, off)
            assert np.array_equal(raw, t.data.ravel())


def test_precomputed_constants_match_int8ref(digits_cnn: QModel) -> None:
    plan = qplan.compile_qplan(digits_cnn)
    blob = plan.blob(0)
    o_off = _header(blob)[11]
    for i, op in enumerate(digits_cnn.ops):
        rec = blob[o_off + 64 * i: o_off + 64 * (i + 1)]
        flags, rq_off, eff_off, param0, macs = rec[1], *struct.unpack_from("<IIiI", rec, 24)
        assert rec[40:] == bytes(24)
        if op.kind in ("CONV_2D", "FULLY_CONNECTED"):
            w = digits_cnn.tensors[op.inputs[1]]
            s_in = float(digits_cnn.tensors[op.inputs[0]].scale[0])
            s_out = float(digits_cnn.tensors[op.outputs[0]].scale[0])
            mult, shift = int8prep.multipliers(s_in, w, s_out)
            table = np.frombuffer(blob, "<i4", 2 * len(mult), rq_off).reshape(-1, 2)
            assert np.array_equal(table[:, 0], mult) and np.array_equal(table[:, 1], shift) and flags == 1
            zp_in = int(digits_cnn.tensors[op.inputs[0]].zero_point[0])
            eff = np.frombuffer(blob, "<i4", len(mult), eff_off)
            wsum = w.data.astype(np.int64).reshape(len(mult), -1).sum(axis=1)
            assert np.array_equal(eff, digits_cnn.tensors[op.inputs[2]].data - zp_in * wsum)
            assert macs == plan.macs[i] > 0
        if op.kind == "SOFTMAX":
            s_in = float(digits_cnn.tensors[op.inputs[0]].scale[0])
            assert param0 == int8prep.softmax_params(1.0, s_in)[2]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_arena_never_overlaps_live_tensors(digits_cnn: QModel, seed: int) -> None:
    for model in (digits_cnn, zoo_core(seed, True), zoo_core(seed, False)):
        _check_arena(qplan.compile_qplan(model))


def test_person_detect_plan(shared_models: Path) -> None:
    model = load_tflite(shared_models / "person_detect.tflite")
    plan = qplan.compile_qplan(model)
    _check_arena(plan)
    # the peak is the largest op's input + output (48x48x8 -> 48x48x16): lifetimes let everything else share it
    assert plan.arena_bytes == 48 * 48 * (8 + 16)
    assert sum(plan.macs) > 7_000_000 and len(plan.blob(0)) < 320_000


def test_refuses_what_the_device_cannot_run() -> None:
    full = _Zoo(0).build(True)
    with pytest.raises(qplan.QPlanError, match="operator 0: QUANTIZE"):
        qplan.compile_qplan(full)
    core = zoo_core(0)
    mean = next(i for i, op in enumerate(core.ops) if op.kind == "MEAN")
    axis = len(core.tensors)
    tensors = (*core.tensors, QTensor("axis", (1,), "int32", data=np.array([3], np.int32)))
    bad = core.ops[mean]
    ops = list(core.ops)
    ops[mean] = QOp("MEAN", (bad.inputs[0], axis), bad.outputs, bad.options)
    with pytest.raises(qplan.QPlanError, match=f"operator {mean}: MEAN"):
        qplan.compile_qplan(QModel("zoo", tensors, tuple(ops), core.inputs, core.outputs))


def test_int8_dataset_blob(task: DeviceDataset, digits_cnn: QModel) -> None:
    x = int8ref.quantized_inputs(digits_cnn, task.decode(task.x_eval[:5]))
    scale, zp = int8ref.input_qparams(digits_cnn)
    data = blob.int8_dataset_blob(x[:2], task.y_eval[:2], x, task.y_eval[:5], 10, scale, zp)
    magic, _, hdr, total, crc, n_train, n_eval, h, w, c, n_cls, s, off, x_off, dtype, res, shift = struct.unpack_from(
        "<IHHIIIIHHHHffIBBh", data)
    assert (magic, hdr, total, n_train, n_eval, (h, w, c), n_cls) == (0x54534454, 48, len(data), 2, 5, (8, 8, 1), 10)
    assert (dtype, res, shift, x_off) == (blob.DTYPE_I8, 0, 0, 48)
    assert crc == zlib.crc32(data[:12] + b"\0" * 4 + data[16:])
    assert np.isclose(s, scale) and np.isclose(off, -zp * scale)
    x_eval_off = 48 + 128 + 4  # x_train (2 x 64), y_train (2, padded to 4)
    assert np.array_equal(np.frombuffer(data, np.int8, x.size, x_eval_off), x.ravel())


def test_person_detect_samples(shared_models: Path, task: DeviceDataset) -> None:
    x, y = person.person_detect_samples(shared_models, task.x_eval, n_digits=3)
    assert x.shape == (5, 96, 96, 1) and x.dtype == np.int8 and y.tolist() == [1, 0, 0, 0, 0]
    # the BMP bytes reinterpreted as int8, exactly as tests/test_int8ref.py feeds tflite-micro
    from tests.test_int8ref import _grayscale_bmp

    assert np.array_equal(x[0, :, :, 0], _grayscale_bmp(shared_models / "person.bmp").view(np.int8))
    model = load_tflite(shared_models / "person_detect.tflite")
    assert int8ref.predict(model, x[:2]).tolist() == [1, 0]


def test_vectorised_update_multipliers_equal_the_scalar_rule() -> None:
    """The planner computes every channel's multiplier at once; each must be `update_multiplier`'s (exact ties to
    2^31, zero, values below 2^-160, neighbours of powers of two)."""
    from bench.plan.int8 import update_multiplier, update_multipliers

    rng = np.random.default_rng(0)
    vals = np.concatenate([10.0 ** rng.uniform(-55, 15, 5000),
                           [0.0, 2.0**-170, 2.0**-161, 2.0**-160, 1.0, 0.5, 2.0**59, 1 - 2**-40, 3e-7]])
    vals = np.concatenate([vals, np.nextafter(vals, 0), np.nextafter(vals, 1e300)])
    assert update_multipliers(vals).tolist() == [list(update_multiplier(float(v))) for v in vals]
    with pytest.raises(qplan.QPlanError, match="too large"):
        update_multipliers(np.array([1.0, 2.0**70]))


def test_a_sparse_layer_without_weights_is_named() -> None:
    from bench.plan.select import top_channels

    model = _Zoo(0).build(True)
    with pytest.raises(qplan.QPlanError, match=r"op 5 is AVERAGE_POOL_2D; only CONV_2D"):
        top_channels(model, 5, 0.5)
    with pytest.raises(qplan.QPlanError, match="op 99 is not an op of this"):
        top_channels(model, 99, 0.5)


def test_the_search_s_arena_is_the_compiled_plan_s() -> None:
    """`planned_arena` (what the scheme search plans thousands of times) is `compile_qplan`'s arena; refused alike."""
    from tests.test_residual_backward import TRAIN, residual_graph

    model = residual_graph()
    for train in (TRAIN, frozenset({(5, "b")}), frozenset({(1, "w"), (2, "b"), (5, "w")})):
        for channels in ((), ((1, (0, 3, 5)),)):
            spec = qplan.QTrainSpec(train, 0.01, True, channels if (1, "w") in train else ())
            assert qplan.planned_arena(model, spec) == qplan.compile_qplan(model, spec).arena_bytes
    assert qplan.planned_arena(model) == qplan.compile_qplan(model).arena_bytes
    with pytest.raises(qplan.QPlanError, match="nothing to train"):
        qplan.planned_arena(model, qplan.QTrainSpec(frozenset(), 0.01))
