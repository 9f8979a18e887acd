"""The digits-drift task and the model zoo: data contract, pretraining quality, drift, adaptation, caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.model import nn
from bench.model import zoo as models
from bench.model.tasks import DeviceDataset, load_task
from bench.numerics import fp32 as reference
from bench.numerics import pretrain

SEED = 0
LR = 0.02  # recommended device lr for batch-1 SGD
STEPS = 300
# Measured at SEED 0: last-layer gains are +0.25 (mlp) and +0.13 (cnn) after 300 steps at LR.
MIN_GAIN = 0.08


@pytest.fixture(scope="module")
def task() -> DeviceDataset:
    return load_task("digits-drift", SEED)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="module")
def pretrained(task: DeviceDataset, cache_dir: Path) -> dict[str, nn.Model]:
    return {name: pretrain.build_model(name, task, SEED, cache_dir) for name in ("digits-mlp", "digits-cnn")}


# ------------------------------------------------------------------------------------------ task


def test_device_dataset_contract(task: DeviceDataset) -> None:
    assert task.name == "digits-drift" and task.n_classes == 10 and task.input_shape == (8, 8, 1)
    assert task.x_train.dtype == task.y_train.dtype == task.x_eval.dtype == task.y_eval.dtype == np.uint8
    assert 600 <= len(task.x_train) <= 900 and 250 <= len(task.x_eval) <= 350
    assert task.x_train.shape[1:] == task.x_eval.shape[1:] == (8, 8, 1)
    assert len(task.y_train) == len(task.x_train) and len(task.y_eval) == len(task.x_eval)
    assert task.x_pretrain.dtype == task.x_eval_clean.dtype == np.float32
    assert task.x_pretrain.shape[1:] == (8, 8, 1) and task.x_eval_clean.shape == task.x_eval.shape
    assert len(task.x_pretrain) + len(task.x_train) + len(task.x_eval) == 1797  # disjoint split of all digits
    for y in (task.y_train, task.y_eval, task.y_pretrain):
        assert set(np.unique(y)) == set(range(10))
    assert not task.x_train.flags.writeable


def test_decode_matches_scale_offset_and_covers_clean_range(task: DeviceDataset) -> None:
    codes = np.arange(256, dtype=np.uint8)
    decoded = task.decode(codes)
    assert decoded.dtype == np.float32
    np.testing.assert_allclose(decoded, codes * task.scale + task.offset, rtol=1e-6, atol=1e-6)
    assert decoded[0] <= 0.0 and decoded[-1] >= 1.0  # clean 0..1 intensities are representable
    roundtrip = task.decode(task.encode(task.x_eval_clean))
    assert np.abs(roundtrip - task.x_eval_clean).max() <= task.scale / 2 + 1e-6


def test_drift_changes_the_eval_images(task: DeviceDataset) -> None:
    diff = np.abs(task.decode(task.x_eval) - task.x_eval_clean).mean()
    assert diff > 0.1


def test_task_is_deterministic_per_seed(task: DeviceDataset) -> None:
    again, other = load_task("digits-drift", SEED), load_task("digits-drift", SEED + 1)
    assert np.array_equal(again.x_train, task.x_train) and np.array_equal(again.y_eval, task.y_eval)
    assert np.array_equal(again.x_pretrain, task.x_pretrain)
    assert not np.array_equal(other.y_train, task.y_train)


def test_unknown_task_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="digits-drift"):
        load_task("mnist", 0)


# ------------------------------------------------------------------------------------------ models


@pytest.mark.parametrize("name", models.model_names())
def test_model_shapes_chain(name: str, task: DeviceDataset, cache_dir: Path) -> None:
    model = pretrain.build_model(name, task, SEED, cache_dir)
    assert model.input_shape == task.input_shape and model.n_classes == task.n_classes
    prev = model.input_shape
    for layer in model.layers:
        assert nn.numel(layer.in_shape) == nn.numel(prev)
        if layer.op == "dense":
            assert layer.in_shape[:2] == layer.out_shape[:2] == (1, 1)
            assert layer.weight is not None and layer.weight.shape == (layer.out_shape[2], layer.in_shape[2])
        elif layer.op == "conv2d":
            assert layer.in_shape == prev
            assert layer.weight is not None
            assert layer.weight.shape == (layer.out_shape[2], layer.kernel, layer.kernel, layer.in_shape[2])
        if layer.weight is not None and layer.bias is not None:
            assert layer.weight.dtype == layer.bias.dtype == np.float32 and layer.bias.shape == (layer.out_shape[2],)
        prev = layer.out_shape
    assert prev == (1, 1, task.n_classes)
    acts = reference.forward(model, task.decode(task.x_eval[0]))
    assert [a.shape for a in acts] == [layer.out_shape for layer in model.layers]


def test_zoo_architectures(pretrained: dict[str, nn.Model], task: DeviceDataset) -> None:
    mlp, cnn = pretrained["digits-mlp"], pretrained["digits-cnn"]
    assert [layer.op for layer in mlp.layers] == ["dense", "relu", "dense"]
    assert [layer.op for layer in cnn.layers] == ["conv2d", "relu", "dense", "relu", "dense"]
    assert cnn.layers[0].out_shape == (6, 6, 8) and cnn.layers[2].out_shape == (1, 1, 32)
    wide = pretrain.build_model("digits-mlp-wide", task, SEED, None)
    # too big to train fully in any board's SRAM (320 KB at most), small enough for its flash after the firmware
    assert 320 * 1024 < wide.n_params() * 4 < 1024 * 1024 - 128 * 1024 and wide.meta["pretrained"] == "no"


def test_unknown_model_lists_valid_names(task: DeviceDataset) -> None:
    with pytest.raises(ValueError, match="digits-cnn"):
        pretrain.build_model("resnet", task, SEED, None)


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn"])
def test_pretraining_is_good_on_clean_and_worse_on_drift(
    name: str, pretrained: dict[str, nn.Model], task: DeviceDataset
) -> None:
    model = pretrained[name]
    clean = reference.accuracy(model, task.x_eval_clean, task.y_eval)
    drifted = reference.accuracy(model, task.decode(task.x_eval), task.y_eval)
    assert clean >= 0.90
    assert drifted <= clean - 0.15


def test_cache_hit_returns_identical_weights(
    task: DeviceDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = pretrain.build_model("digits-mlp", task, SEED, tmp_path)
    (entry,) = tmp_path.glob("*.npz")
    with monkeypatch.context() as m:
        m.setattr(reference, "train_host", lambda *a, **k: pytest.fail("cache miss: pretrained again"))
        second = pretrain.build_model("digits-mlp", task, SEED, tmp_path)
    for a, b in zip(first.layers, second.layers, strict=True):
        assert (a.weight is None) == (b.weight is None)
        if a.weight is not None:
            assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
    entry.write_bytes(b"not an npz")  # a broken entry is rebuilt, not trusted
    third = pretrain.build_model("digits-mlp", task, SEED, tmp_path)
    assert np.array_equal(third.layers[0].weight, first.layers[0].weight)
    other = pretrain.build_model("digits-mlp", task, SEED + 1, tmp_path)
    assert not np.array_equal(other.layers[0].weight, first.layers[0].weight)


# ------------------------------------------------------------------------------------------ adaptation


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn"])
@pytest.mark.parametrize("technique", ["last-layer", "full"])
def test_batch1_sgd_on_drift_recovers_accuracy(
    name: str, technique: str, pretrained: dict[str, nn.Model], task: DeviceDataset
) -> None:
    model = pretrained[name]
    keys = reference.last_layer_keys(model) if technique == "last-layer" else reference.param_keys(model)
    x_eval = task.decode(task.x_eval)
    before = reference.accuracy(model, x_eval, task.y_eval)
    _, adapted = reference.run_sgd(model, task.decode(task.x_train[:STEPS]), task.y_train[:STEPS], LR, keys)
    after = reference.accuracy(adapted, x_eval, task.y_eval)
    assert after >= before + MIN_GAIN, f"{name}/{technique}: {before:.3f} -> {after:.3f}"


def test_bundled_digits_are_sklearns_digits() -> None:
    """The bench ships the digits as u8 so it needs no scikit-learn at run time; the copy must be exact."""
    datasets = pytest.importorskip("sklearn.datasets")
    from bench.model.tasks.digits import digits_images

    images, target = digits_images()
    ref = datasets.load_digits()
    assert images.shape == (1797, 8, 8) and np.array_equal(images, ref.images) and np.array_equal(target, ref.target)


def test_numpy_rotation_is_scipys_bilinear_rotation() -> None:
    """The drift's rotation, without scipy at run time, gives scipy.ndimage.rotate's numbers (order 1, constant)."""
    ndimage = pytest.importorskip("scipy.ndimage")  # a test dependency (through scikit-learn), not a run-time one
    from bench.model.tasks.digits import rotate

    x = np.random.default_rng(0).random((20, 8, 9, 2))
    for degrees in (20.0, -33.0, 90.0, 13.7):
        expected = ndimage.rotate(x, degrees, axes=(1, 2), reshape=False, order=1, mode="constant", cval=0.0)
        assert np.abs(rotate(x, degrees) - expected).max() < 1e-12, degrees


def test_the_demo_task_data_is_unchanged_byte_for_byte() -> None:
    """digits-drift seed 1, the data every figure in the README comes from (sha256 pinned when scipy was dropped)."""
    import hashlib

    ds = load_task("digits-drift", 1)
    digest = hashlib.sha256(ds.x_train.tobytes() + ds.x_eval.tobytes()).hexdigest()
    assert digest == "fed5e733ddeb5344b560c7af7f260ced4a0f5d8baf56972e9fc6e7c7cc756908"
