"""The numpy int8 reference against tflite-micro's Python interpreter: every operator's output, byte for byte.

tflite-micro is a pinned test dependency (the `test` extra); without it these tests fail naming the package, since
a skipped bit-exactness check would silently let the int8 reference drift.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from bench.model.qgraph import (
    AddOptions,
    ConvOptions,
    FullyConnectedOptions,
    MeanOptions,
    NoOptions,
    PoolOptions,
    QModel,
    QOp,
    QTensor,
    ReshapeOptions,
    SoftmaxOptions,
)
from bench.model.tasks import DeviceDataset, load_task
from bench.numerics import int8ref, pretrain, quant
from bench.tflite.io import load_tflite, write_tflite
from bench.tflite.quantize import export_digits_tflite

SEED = 0


@pytest.fixture(scope="module")
def tflm() -> ModuleType:
    try:
        from tflite_micro import runtime
    except ImportError as e:
        pytest.fail(f"the tflite-micro package is required for int8 bit-exactness tests ({e}); "
                    "install the pinned test extra: .venv/bin/pip install -e '.[test]'")
    return runtime


def _arena_size(buf: bytes, model: QModel) -> int:
    """Generous: every activation kept (kPreserveAllTensors) plus the model; too small an arena can crash TFLM."""
    act_bytes = sum(int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize for t in model.tensors if t.data is None)
    return 2 * len(buf) + 4 * act_bytes + (64 << 10)


def _tflm_outputs(tflm: ModuleType, buf: bytes, model: QModel, xs: np.ndarray) -> list[list[np.ndarray]]:
    """Per sample, every operator's output tensor as tflite-micro computed it."""
    ip = tflm.Interpreter.from_bytes(
        buf, arena_size=_arena_size(buf, model), intrepreter_config=tflm.InterpreterConfig.kPreserveAllTensors
    )
    per_sample = []
    for x in xs:
        ip.set_input(x[None], 0)
        ip.invoke()
        per_sample.append([ip.GetTensor(op.outputs[0], 0)["tensor_data"] for op in model.ops])
    return per_sample


def _assert_bit_exact(tflm: ModuleType, buf: bytes, model: QModel, xs: np.ndarray) -> list[np.ndarray]:
    """Compare every operator for every sample; returns our outputs (batched)."""
    ours = int8ref.forward(model, xs)
    for i, theirs in enumerate(_tflm_outputs(tflm, buf, model, xs)):
        for k, (op, ref) in enumerate(zip(model.ops, theirs, strict=True)):
            got, where = ours[k][i], f"sample {i} operator {k} ({op.kind})"
            assert (got.dtype, got.size) == (ref.dtype, ref.size), f"{where}: {got.dtype}{got.shape} vs {ref.shape}"
            diff = np.abs(got.astype(np.float64) - ref.reshape(got.shape)).max()
            assert diff == 0, f"{where}: max |ours - tflm| = {diff}"
    return ours


# ------------------------------------------------------------------------------------------ integer arithmetic


def test_quantize_multiplier() -> None:
    assert quant.quantize_multiplier(0.0) == (0, 0)
    assert quant.quantize_multiplier(0.5) == (1 << 30, 0)
    assert quant.quantize_multiplier(1.0) == (1 << 30, 1)
    assert quant.quantize_multiplier(2.0**-40) == (0, 0)  # would shift every bit out
    m, shift = quant.quantize_multiplier(0.3)
    assert abs(m * 2.0 ** (shift - 31) - 0.3) < 2**-31


def test_gemmlowp_primitives() -> None:
    assert int(quant.srdhm(quant.INT32_MIN, quant.INT32_MIN)) == quant.INT32_MAX  # the one overflow saturates
    assert quant.rounding_divide_by_pot(np.array([3, -3, 5, -5, -6]), 1).tolist() == [2, -2, 3, -3, -3]
    assert int(quant.rounding_divide_by_pot(-5, 2)) == -1
    rng = np.random.default_rng(SEED)
    x = rng.integers(-(2**24), 2**24, 2000)
    for real in (0.0007, 0.3, 0.99, 3.7):
        m, shift = quant.quantize_multiplier(real)
        err = np.abs(quant.multiply_by_quantized_multiplier(x, m, shift) - x * real).max()
        assert err <= 1 + real * 2**-31 * 2**24  # rounding plus the Q0.31 error of the multiplier


def test_fixed_point_exp_and_reciprocal() -> None:
    a = -np.arange(0, 32 << 26, 1 << 20, dtype=np.int64)  # 0 .. -32 in Q5.26
    got = quant.exp_on_negative_values(a, 5) / 2.0**31
    assert np.abs(got - np.exp(a / 2.0**26)).max() < 1e-6
    x = np.array([1 << 19, 3 << 19, 1000 << 19, (1 << 31) - 1], np.int64)  # Q12.19: 1, 3, 1000, ~4096
    scale, bits = quant.reciprocal(x, 12)
    assert np.allclose(scale / 2.0 ** (31 + bits), 2.0**19 / x, rtol=1e-6)


def test_activation_range() -> None:
    assert quant.activation_range("NONE", 0.1, 3) == (-128, 127)
    assert quant.activation_range("RELU", 0.1, 3) == (3, 127)
    assert quant.activation_range("RELU6", 0.04, -100) == (-100, 50)
    assert quant.activation_range("RELU6", 6 / 255, -128) == (-128, 127)


# ------------------------------------------------------------------------------------------ third-party models


def _grayscale_bmp(path: Path) -> np.ndarray:
    """An 8-bit palettised grayscale BMP as [h, w] uint8, top row first (BMP rows are stored bottom-up)."""
    raw = path.read_bytes()
    assert raw[:2] == b"BM"
    offset, width, height = (int.from_bytes(raw[a:b], "little", signed=True) for a, b in ((10, 14), (18, 22), (22, 26)))
    assert int.from_bytes(raw[28:30], "little") == 8
    palette = np.frombuffer(raw[54:offset], np.uint8).reshape(-1, 4)[:, :3]
    assert np.array_equal(palette, np.repeat(np.arange(len(palette), dtype=np.uint8)[:, None], 3, axis=1))
    stride = (width + 3) // 4 * 4
    rows = np.frombuffer(raw[offset : offset + stride * abs(height)], np.uint8).reshape(abs(height), stride)[:, :width]
    return rows[::-1] if height > 0 else rows


@pytest.mark.parametrize("x", [-128, -90, -1, 0, 5, 64, 127])
def test_hello_world_bit_exact(tflm: ModuleType, shared_models: Path, x: int) -> None:
    buf = (shared_models / "hello_world_int8.tflite").read_bytes()
    _assert_bit_exact(tflm, buf, load_tflite(buf), np.array([[x]], np.int8))


@pytest.mark.parametrize(("image", "expected"), [("person.bmp", 1), ("no_person.bmp", 0)])
def test_person_detect_bit_exact(tflm: ModuleType, shared_models: Path, image: str, expected: int) -> None:
    """All 31 operators match; the class ranking is TFLM's own expectation (index 1 = person).

    TFLM's example feeds the image bytes as int8 (its generated C arrays declare the 0..255 pixels int8_t), so
    the input here is the same bytes reinterpreted, not pixel - 128.
    """
    buf = (shared_models / "person_detect.tflite").read_bytes()
    model = load_tflite(buf)
    x = _grayscale_bmp(shared_models / image).view(np.int8).reshape(1, 96, 96, 1)
    ours = _assert_bit_exact(tflm, buf, model, x)
    scores = ours[-1].reshape(-1)
    assert int(np.argmax(scores)) == expected and scores[expected] > scores[1 - expected]


# ------------------------------------------------------------------------------------------ an operator zoo


class _Zoo:
    """Builds a random int8 graph that exercises every supported operator and option the imports lack."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.tensors: list[QTensor] = []
        self.ops: list[QOp] = []

    def tensor(self, shape: tuple[int, ...], scale: float | None = None, zp: int = 0, dtype: str = "int8",
               data: np.ndarray | None = None, per_channel: np.ndarray | None = None, qdim: int = 0) -> int:
        scales = per_channel if per_channel is not None else None if scale is None else np.array([scale], np.float32)
        zps = None if scales is None else np.full(len(scales), zp, np.int64)
        self.tensors.append(QTensor(f"t{len(self.tensors)}", shape, dtype, scales, zps, qdim, data))
        return len(self.tensors) - 1

    def weighted(self, kind: str, x: int, w_shape: tuple[int, ...], out: int, options: object, qdim: int) -> None:
        """Random int8 weights (per-channel along ``qdim`` unless it is None) and int32 biases."""
        channels = w_shape[qdim] if qdim is not None else 1
        s_w = self.rng.uniform(0.003, 0.01, channels).astype(np.float32)
        w = self.tensor(w_shape, data=self.rng.integers(-127, 128, w_shape).astype(np.int8), per_channel=s_w,
                        qdim=qdim or 0)
        s_in = float(self.tensors[x].scale[0])  # type: ignore[index]
        n_out = w_shape[0] if kind != "DEPTHWISE_CONV_2D" else w_shape[3]
        bias = self.rng.integers(-3000, 3000, n_out).astype(np.int32)
        b = self.tensor((n_out,), dtype="int32", data=bias, per_channel=(s_in * s_w).astype(np.float32))
        self.ops.append(QOp(kind, (x, w, b), (out,), options))  # type: ignore[arg-type]

    def build(self, keep_dims: bool) -> QModel:
        x = self.tensor((1, 9, 9, 3), dtype="float32")
        a = self.tensor((1, 9, 9, 3), 0.02, 5)
        self.ops.append(QOp("QUANTIZE", (x,), (a,), NoOptions()))
        b = self.tensor((1, 5, 5, 4), 0.04, -100)  # RELU6 clamps at code 50
        self.weighted("CONV_2D", a, (4, 3, 3, 3), b, ConvOptions("SAME", (2, 2), "RELU6"), 0)
        c = self.tensor((1, 5, 5, 8), 0.03, -128)
        self.weighted("DEPTHWISE_CONV_2D", b, (1, 3, 3, 8), c, ConvOptions("SAME", (1, 1), "RELU", 2), 3)
        d = self.tensor((1, 5, 5, 8), 0.05, 10)
        self.weighted("CONV_2D", c, (8, 1, 1, 8), d, ConvOptions("VALID", (1, 1)), 0)
        e = self.tensor((1, 5, 5, 8), 0.06, -128)
        self.ops.append(QOp("ADD", (c, d), (e,), AddOptions("RELU")))
        f = self.tensor((1, 3, 3, 8), 0.06, -128)
        self.ops.append(QOp("AVERAGE_POOL_2D", (e,), (f,), PoolOptions("SAME", (2, 2), (3, 3))))
        f2 = self.tensor((1, 3, 3, 8), 0.06, -128)  # a pool keeps its input's scale and zero point
        self.ops.append(QOp("MAX_POOL_2D", (f,), (f2,), PoolOptions("SAME", (1, 1), (2, 2), "RELU6")))
        axis = self.tensor((2,), dtype="int32", data=np.array([1, 2], np.int32))
        g = self.tensor((1, 1, 1, 8) if keep_dims else (1, 8), 0.045, -90)
        self.ops.append(QOp("MEAN", (f2, axis), (g,), MeanOptions(keep_dims)))
        if keep_dims:
            shape = self.tensor((2,), dtype="int32", data=np.array([1, 8], np.int32))
            flat = self.tensor((1, 8), 0.045, -90)
            self.ops.append(QOp("RESHAPE", (g, shape), (flat,), ReshapeOptions((1, 8))))
            g = flat
        logits = self.tensor((1, 5), 0.08, 3)
        self.weighted("FULLY_CONNECTED", g, (5, 8), logits, FullyConnectedOptions(), None)  # type: ignore[arg-type]
        probs = self.tensor((1, 5), 1 / 256, -128)
        self.ops.append(QOp("SOFTMAX", (logits,), (probs,), SoftmaxOptions(1.0)))
        out = self.tensor((1, 5), dtype="float32")
        self.ops.append(QOp("DEQUANTIZE", (probs,), (out,), NoOptions()))
        return QModel("zoo", tuple(self.tensors), tuple(self.ops), (x,), (out,))


@pytest.mark.parametrize("keep_dims", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_operator_zoo_bit_exact(tflm: ModuleType, seed: int, keep_dims: bool) -> None:
    """QUANTIZE, strided SAME conv + RELU6, depthwise ×2, ADD, SAME average pool, SAME max pool + RELU6, MEAN,
    RESHAPE, per-tensor FC."""
    model = _Zoo(seed).build(keep_dims)
    buf = write_tflite(model)
    xs = np.random.default_rng(seed + 100).uniform(-2.5, 2.5, (6, 9, 9, 3)).astype(np.float32)
    ours = _assert_bit_exact(tflm, buf, load_tflite(buf), xs)
    for op, out in zip(model.ops[1:-2], ours[1:-2], strict=True):  # every int8 op produced varied codes
        assert len(np.unique(out)) > 3, op.kind


# ------------------------------------------------------------------------------------------ the project's models


@pytest.fixture(scope="module")
def task() -> DeviceDataset:
    return load_task("digits-drift", SEED)


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn"])
def test_exported_digits_bit_exact(tflm: ModuleType, task: DeviceDataset, tmp_path: Path, name: str) -> None:
    """Every operator, on every one of the 300 drifted evaluation digits."""
    model = pretrain.build_model(name, task, SEED, tmp_path / "cache")
    path = tmp_path / f"{name}.tflite"
    qmodel = export_digits_tflite(model, task, path)
    xs = int8ref.quantize_input(qmodel, task.decode(task.x_eval))
    _assert_bit_exact(tflm, path.read_bytes(), qmodel, xs)


def test_exported_aifes_cnn_bit_exact(tflm: ModuleType, tmp_path: Path) -> None:
    """The maxpool model (VALID 2×2 MAX_POOL_2D after a fused-ReLU conv) on its 16×16 task, every evaluation digit."""
    task16 = load_task("digits16-drift", SEED)
    model = pretrain.build_model("aifes-cnn", task16, SEED, tmp_path / "cache")
    path = tmp_path / "aifes-cnn.tflite"
    qmodel = export_digits_tflite(model, task16, path)
    assert [op.kind for op in qmodel.ops] == ["CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED", "SOFTMAX"]
    xs = int8ref.quantize_input(qmodel, task16.decode(task16.x_eval))
    _assert_bit_exact(tflm, path.read_bytes(), qmodel, xs)


def test_softmax_probabilities_are_close_to_float() -> None:
    """The int8 SOFTMAX is a faithful softmax (bit-exactness with TFLM is tested above)."""
    rng = np.random.default_rng(SEED)
    logits = rng.integers(-128, 128, (200, 10)).astype(np.int8)
    t_in = QTensor("x", (1, 10), "int8", np.array([0.07], np.float32), np.array([-4], np.int64))
    t_out = QTensor("p", (1, 10), "int8", np.array([1 / 256], np.float32), np.array([-128], np.int64))
    model = QModel("sm", (t_in, t_out), (QOp("SOFTMAX", (0,), (1,), SoftmaxOptions(1.0)),), (0,), (1,))
    probs = (int8ref.forward(model, logits)[-1].astype(np.float64) + 128) / 256
    z = 0.07 * logits.astype(np.float64)
    ref = np.exp(z - z.max(axis=1, keepdims=True))
    ref /= ref.sum(axis=1, keepdims=True)
    assert np.abs(probs - ref).max() <= 1 / 256 + 1e-9
    assert np.array_equal(probs[np.arange(len(probs)), ref.argmax(1)], probs.max(1))  # the winner keeps the top code
