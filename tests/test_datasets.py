"""A user's own data as a task: CSV tables, .npz splits, folders of images; their errors name the file, row and
column; samples are adapted to an imported model's input; the built-in tabular-drift task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.config.profile import DatasetSpec
from bench.model.tasks import DatasetError, load_task
from bench.model.tasks.files import adapt


def _csv(path: Path, n: int = 90, bad_row: int | None = None) -> Path:
    rng = np.random.default_rng(0)
    lines = ["temp,vibration,current,rpm,kind"]
    for i in range(n):
        kind = ("ok", "worn", "broken")[i % 3]
        x = rng.normal(size=4) + (i % 3)
        cells = [f"{v:.4f}" for v in x]
        if i == bad_row:
            cells[1] = "n/a"
        lines.append(",".join([*cells, kind]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_csv_table_becomes_a_deterministic_task_with_its_provenance(tmp_path: Path) -> None:
    path = _csv(tmp_path / "machines.csv")
    spec = DatasetSpec(label_column="kind", eval_fraction=0.2, pretrain_fraction=0.3, noise_std=0.1)
    ds = load_task(str(path), 1, spec)
    assert ds.input_shape == (1, 4, 1) and ds.n_classes == 3
    assert (len(ds.x_pretrain), len(ds.x_train), len(ds.x_eval)) == (27, 45, 18)
    again, other = load_task(str(path), 1, spec), load_task(str(path), 2, spec)
    assert np.array_equal(ds.x_train, again.x_train) and not np.array_equal(ds.x_train, other.x_train)
    assert "3 classes (broken, ok, worn)" in ds.provenance[0] and "sha256" in ds.provenance[0]
    assert ds.provenance[1] == "features z-scored on the pretraining split" and "noise_std" in ds.provenance[2]
    assert ds.source == str(path)


def test_csv_errors_name_the_file_the_row_and_the_column(tmp_path: Path) -> None:
    path = _csv(tmp_path / "m.csv", bad_row=4)
    with pytest.raises(DatasetError, match=r"m\.csv: row 6, column 'vibration': 'n/a' is not a number"):
        load_task(str(path), 1, DatasetSpec(label_column="kind"))
    with pytest.raises(DatasetError, match=r"no label column 'label' \(columns: temp, vibration, current, rpm, kind"):
        load_task(str(_csv(tmp_path / "ok.csv")), 1, DatasetSpec(label_column="label"))
    one = tmp_path / "one.csv"
    one.write_text("a,b\n1,x\n2,x\n3,x\n")
    with pytest.raises(DatasetError, match=r"has 1 classes; the engine trains 2\.\.256"):
        load_task(str(one), 1)


def test_an_npz_keeps_its_splits_any_sample_shape(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    path = tmp_path / "spectra.npz"
    np.savez(path, x_train=rng.random((40, 5, 4)), y_train=rng.integers(3, 6, 40), x_eval=rng.random((10, 5, 4)),
             y_eval=rng.integers(3, 6, 10))
    ds = load_task(str(path), 1)
    assert ds.input_shape == (5, 4, 1) and ds.n_classes == 3 and set(ds.y_train) <= {0, 1, 2}
    assert len(ds.x_train) == 40 and len(ds.x_eval) == 10 and len(ds.x_pretrain) == 0
    np.savez(tmp_path / "bad.npz", x_train=rng.random((4, 3)), y_train=np.arange(4))
    with pytest.raises(DatasetError, match=r"bad\.npz: missing array\(s\) x_eval, y_eval"):
        load_task(str(tmp_path / "bad.npz"), 1)


def test_a_folder_of_images_per_class(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for label in ("cat", "dog"):
        (tmp_path / "pets" / label).mkdir(parents=True)
        for i in range(8):
            pixels = rng.integers(0, 256, (10, 12, 3)).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "pets" / label / f"{i}.png")
    ds = load_task(str(tmp_path / "pets"), 1, DatasetSpec(image_size=(6, 8), pretrain_fraction=0.25))
    assert ds.input_shape == (6, 8, 3) and ds.n_classes == 2
    assert len(ds.x_train) + len(ds.x_eval) + len(ds.x_pretrain) == 16
    with pytest.raises(DatasetError, match="no images"):
        (tmp_path / "empty" / "a").mkdir(parents=True)
        load_task(str(tmp_path / "empty"), 1)


def test_samples_are_adapted_to_a_model_input_or_refused_naming_both_shapes() -> None:
    x = np.random.default_rng(3).random((5, 16, 16, 3)).astype(np.float32)
    y, done = adapt(x, (8, 8, 1), "pets")
    assert y.shape == (5, 8, 8, 1) and done == ["resized 16x16 -> 8x8 (bilinear)", "3 channels -> 1 (mean)"]
    assert abs(float(y.mean()) - float(x.mean())) < 0.02
    gray = adapt(x[..., :1], (16, 16, 3), "pets")
    assert gray[0].shape == (5, 16, 16, 3) and gray[1] == ["1 channel -> 3 (replicated)"]
    with pytest.raises(DatasetError, match=r"samples \(1, 30, 1\) cannot be adapted to the model's input \(8, 8, 1\)"):
        adapt(np.zeros((2, 1, 30, 1), np.float32), (8, 8, 1), "table")


def test_the_tabular_drift_task_loses_accuracy_that_training_wins_back() -> None:
    """Built in, not an image: the pretrained MLP loses accuracy to the re-wired columns; 300 batch-1 SGD steps of
    the host reference win most of it back (seed 1)."""
    from bench.numerics import fp32 as reference
    from bench.numerics.pretrain import build_model

    ds = load_task("tabular-drift", 1)
    assert ds.input_shape == (1, 30, 1) and ds.n_classes == 2 and ds.source == ""
    model = build_model("digits-mlp", ds, 1, None)
    x_eval = ds.decode(ds.x_eval)
    clean, drifted = (reference.accuracy(model, x, ds.y_eval) for x in (ds.x_eval_clean, x_eval))
    x = np.concatenate([ds.decode(ds.x_train)] * 2)[:300]
    y = np.concatenate([ds.y_train] * 2)[:300]
    _, adapted = reference.run_sgd(model, x, y, 0.02, reference.param_keys(model))
    after = reference.accuracy(adapted, x_eval, ds.y_eval)
    assert clean > 0.9 and drifted < clean - 0.15 and after > drifted + 0.15, (clean, drifted, after)


@pytest.mark.twin
def test_a_users_csv_and_image_folder_train_on_a_twin_through_profiles(tmp_path: Path) -> None:
    """A profile naming a CSV trains digits-mlp on the twin; a folder of 16x16 RGB images feeds the project's
    int8 digits model (8x8x1, head replaced for 2 classes), adapted and quantised, with the adaptation in meta.json."""
    import subprocess
    import sys

    import pandas as pd

    from bench.model.tasks import load_task as task
    from bench.numerics.pretrain import build_model
    from bench.tflite.quantize import export_digits_tflite

    csv_profile = tmp_path / "mine.toml"
    csv_profile.write_text(f'task = "{_csv(tmp_path / "machines.csv", n=150)}"\nmodel = "digits-mlp"\n'
                           'techniques = ["full-fp32"]\nsteps = 30\n[dataset]\nlabel_column = "kind"\n')
    rng = np.random.default_rng(4)
    for label in ("dark", "light"):
        (tmp_path / "pics" / label).mkdir(parents=True)
        for i in range(20):
            level = 40 if label == "dark" else 200
            pixels = np.clip(rng.normal(level, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "pics" / label / f"{i}.png")
    digits = task("digits-drift", 1)
    export_digits_tflite(build_model("digits-mlp", digits, 1, None), digits, tmp_path / "digits.tflite")
    img_profile = tmp_path / "pics.toml"
    img_profile.write_text(f'task = "{tmp_path / "pics"}"\nmodel = "{tmp_path / "digits.tflite"}"\nhead_classes = 2\n'
                           'techniques = ["last-int8"]\nsteps = 30\n')
    bench = [sys.executable, "-c", "from bench.app.cli import entry; entry()"]
    for profile, out in ((csv_profile, tmp_path / "o1"), (img_profile, tmp_path / "o2")):
        done = subprocess.run([*bench, "run", str(profile), "--board", "nucleo-f746zg", "--out", str(out)],
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        (run,) = pd.read_parquet(out / "runs.parquet").to_dict("records")
        assert run["status"] == "ok" and run["steps"] == 30
    meta = json.loads((tmp_path / "o2" / "meta.json").read_text())
    assert meta["task"]["provenance"][-1].startswith("adapted to the model: resized 16x16 -> 8x8 (bilinear); "
                                                     "3 channels -> 1 (mean); quantised with the model's input")


def test_a_task_folder_is_read_once_until_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The profile check and the bench's preparation both load the task: an image folder is decoded once; a new
    image, another seed or another [dataset] table reads it again."""
    from bench.model.tasks import files

    reads: list[Path] = []
    real = files._folder
    monkeypatch.setattr(files, "_folder", lambda path, spec: (reads.append(path), real(path, spec))[1])
    rng = np.random.default_rng(3)
    for label in ("a", "b"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (5, 5)).astype(np.uint8)).save(tmp_path / "imgs" / label / f"{i}.png")
    spec = DatasetSpec(image_size=(5, 5))
    first = load_task(str(tmp_path / "imgs"), 1, spec)
    assert load_task(str(tmp_path / "imgs"), 1, spec) is first and len(reads) == 1
    assert not first.x_train.flags.writeable  # shared, so read-only
    load_task(str(tmp_path / "imgs"), 2, spec)
    load_task(str(tmp_path / "imgs"), 1, DatasetSpec(image_size=(4, 4)))
    assert len(reads) == 3
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "imgs" / "a" / "new.png")
    again = load_task(str(tmp_path / "imgs"), 1, spec)
    assert len(reads) == 4 and len(again.x_train) + len(again.x_eval) + len(again.x_pretrain) == 13
