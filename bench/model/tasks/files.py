"""Tasks from a user's own files (docs/datasets.md): an ``.npz`` with the splits, a folder of images per class, or a
CSV table with a label column. Splits are deterministic by seed; features are normalised on the host's pretraining
split (as a deployment would fit them), an optional drift is applied to the device splits only, and the result is a
`DeviceDataset` like the built-in tasks' (u8 samples with one scale/offset).
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np

from bench.config.boards import REPO_ROOT, ConfigError
from bench.config.profile import DatasetSpec
from bench.model.tasks.digits import DeviceDataset, frozen, rotate

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg")
MAX_CLASSES = 256
MAX_SAMPLES = 200_000


class DatasetError(ConfigError):
    """A dataset file that cannot be used; the message names the file and what is wrong."""


def is_file_task(task: str) -> bool:
    """Whether a profile's ``task`` names a file or folder rather than a built-in task."""
    return task.endswith((".npz", ".csv")) or "/" in task or task_path(task).exists()


def task_path(task: str) -> Path:
    """A task file: absolute, else relative to the working directory, else to the repository root."""
    path = Path(task)
    if path.is_absolute() or path.exists():
        return path
    return REPO_ROOT / path


_CACHE_SIZE = 4
_cache: dict[tuple[object, ...], DeviceDataset] = {}


def _fingerprint(path: Path) -> tuple[object, ...]:
    """What identifies a task file's contents without reading them: size and mtime of the file, or of every file
    in the folder (a changed, added or removed image changes it)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return tuple((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    st = path.stat()
    return (st.st_size, st.st_mtime_ns)


def load_file_task(task: str, seed: int, spec: DatasetSpec | None = None) -> DeviceDataset:
    """The task in a user's file or folder. The result is cached by path, contents fingerprint, seed and
    ``[dataset]`` table: the early profile check and the bench's preparation read a large image folder once (its
    arrays are read-only, so sharing them is safe)."""
    spec = spec or DatasetSpec()
    path = task_path(task)
    if not path.exists():
        raise DatasetError(f"task file {path} not found (profile key 'task' = {task!r})")
    key = (str(path.resolve()), _fingerprint(path), seed, spec.model_dump_json())
    if key not in _cache:
        if len(_cache) >= _CACHE_SIZE:
            del _cache[next(iter(_cache))]
        _cache[key] = _read_file_task(path, seed, spec)
    return _cache[key]


def _read_file_task(path: Path, seed: int, spec: DatasetSpec) -> DeviceDataset:
    rng = np.random.default_rng(seed)
    if path.is_dir():
        x, y, classes = _folder(path, spec)
        parts = _split(x, y, rng, spec, path)
    elif path.suffix == ".csv":
        x, y, classes = _csv(path, spec)
        parts = _split(x, y, rng, spec, path)
    elif path.suffix == ".npz":
        parts, classes = _npz(path)
    else:
        raise DatasetError(f"{path}: a task file is .npz, .csv or a folder of images per class")
    return _device(path, parts, classes, spec, rng, seed)


# ---------------------------------------------------------------------------------------------------- readers

Parts = dict[str, np.ndarray]  # x_pretrain, y_pretrain, x_train, y_train, x_eval, y_eval


def _labels(raw: list[str] | np.ndarray, path: Path, what: str) -> tuple[np.ndarray, list[str]]:
    """Class indices 0..k-1 from labels as written (ints keep their order, other labels are sorted)."""
    values = [str(v).strip() for v in raw]
    names = sorted(set(values), key=lambda v: (0, int(v)) if v.lstrip("-").isdigit() else (1, v))
    if not 2 <= len(names) <= MAX_CLASSES:
        raise DatasetError(f"{path}: {what} has {len(names)} classes; the engine trains 2..{MAX_CLASSES}")
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[v] for v in values], np.int64), names


def _csv(path: Path, spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray, list[str]]:
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 3:
        raise DatasetError(f"{path}: a header row and at least two data rows are needed")
    header, body = [h.strip() for h in rows[0]], rows[1 : MAX_SAMPLES + 1]
    label = spec.label_column or header[-1]
    if label not in header:
        raise DatasetError(f"{path}: no label column {label!r} (columns: {', '.join(header)}; set [dataset] "
                           f"label_column)")
    li = header.index(label)
    features = [i for i in range(len(header)) if i != li]
    x = np.empty((len(body), len(features)), np.float32)
    for r, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DatasetError(f"{path}: row {r} has {len(row)} fields, the header {len(header)}")
        try:
            x[r - 2] = [float(row[i]) for i in features]
        except ValueError:
            bad = next(header[i] for i in features if not _is_number(row[i]))
            raise DatasetError(f"{path}: row {r}, column {bad!r}: {row[header.index(bad)]!r} is not a number") from None
    y, names = _labels([row[li] for row in body], path, f"label column {label!r}")
    return x, y, names


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _folder(path: Path, spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``path/<class>/<image>``: every image read with Pillow, gray if all are, resized to ``image_size`` (default:
    the first image's size), values 0..1."""
    from PIL import Image, UnidentifiedImageError

    classes = sorted(d.name for d in path.iterdir() if d.is_dir())
    files = [(c, f) for c in classes for f in sorted((path / c).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DatasetError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in class folders {path}/<class>/")
    images = []
    for _, f in files[:MAX_SAMPLES]:
        try:
            with Image.open(f) as im:
                images.append(im.convert("RGB") if im.mode not in ("L", "1") else im.convert("L"))
        except (UnidentifiedImageError, OSError) as exc:
            raise DatasetError(f"{f}: not an image Pillow can read ({exc})") from None
    mode = "L" if all(im.mode == "L" for im in images) else "RGB"
    size = (spec.image_size[1], spec.image_size[0]) if spec.image_size else images[0].size
    x = np.stack([np.asarray(im.convert(mode).resize(size, Image.Resampling.BILINEAR), np.float32) / 255.0
                  for im in images])
    x = x[..., None] if mode == "L" else x
    y, names = _labels([c for c, _ in files[:MAX_SAMPLES]], path, "the class folders")
    return x, y, [classes[int(n)] if n.isdigit() and int(n) < len(classes) else n for n in names]


def _npz(path: Path) -> tuple[Parts, list[str]]:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable .npz ({exc})") from None
    with data:
        missing = [k for k in ("x_train", "y_train", "x_eval", "y_eval") if k not in data.files]
        if missing:
            raise DatasetError(f"{path}: missing array(s) {', '.join(missing)} (has: {', '.join(data.files)})")
        parts = {k: np.asarray(data[k]) for k in data.files
                 if k in ("x_train", "y_train", "x_eval", "y_eval", "x_pretrain", "y_pretrain")}
    for split in ("train", "eval", "pretrain"):
        x, y = parts.get(f"x_{split}"), parts.get(f"y_{split}")
        if (x is None) != (y is None):
            raise DatasetError(f"{path}: x_{split} and y_{split} come together")
        if x is not None and y is not None and len(x) != len(y):
            raise DatasetError(f"{path}: x_{split} has {len(x)} samples but y_{split} {len(y)}")
        if y is not None and not np.issubdtype(y.dtype, np.integer):
            raise DatasetError(f"{path}: y_{split} is {y.dtype}; labels are integers (regression targets are not "
                               f"supported yet)")
    every = np.concatenate([parts[k] for k in ("y_train", "y_eval", "y_pretrain") if k in parts])
    _, names = _labels(every, path, "its labels")
    index = {int(n): i for i, n in enumerate(names)}
    for k in ("y_train", "y_eval", "y_pretrain"):
        if k in parts:
            parts[k] = np.array([index[int(v)] for v in parts[k]], np.int64)
    for k in ("x_train", "x_eval", "x_pretrain"):
        if k in parts:
            parts[k] = parts[k].astype(np.float32)
    if "x_pretrain" not in parts:
        parts["x_pretrain"] = parts["x_train"][:0]
        parts["y_pretrain"] = parts["y_train"][:0]
    return parts, names


def _split(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, spec: DatasetSpec, path: Path) -> Parts:
    """Shuffled by seed into pretrain / device-train / eval by the spec's fractions."""
    n = len(x)
    order = rng.permutation(n)
    n_eval, n_pre = round(n * spec.eval_fraction), round(n * spec.pretrain_fraction)
    if n - n_eval - n_pre < 1 or n_eval < 1:
        raise DatasetError(f"{path}: {n} samples cannot be split into eval {spec.eval_fraction:g}, pretrain "
                           f"{spec.pretrain_fraction:g} and a device-train rest")
    ev, pre, tr = order[:n_eval], order[n_eval:n_eval + n_pre], order[n_eval + n_pre:]
    return {"x_pretrain": x[pre], "y_pretrain": y[pre], "x_train": x[tr], "y_train": y[tr], "x_eval": x[ev],
            "y_eval": y[ev]}


# ---------------------------------------------------------------------------------------------------- to the device


def _hwc(x: np.ndarray) -> np.ndarray:
    """Samples as [n, h, w, c]: a feature vector is one row of one channel."""
    if x.ndim == 2:
        return x[:, None, :, None]
    if x.ndim == 3:
        return x[..., None]
    if x.ndim == 4:
        return x
    raise ValueError(f"samples of {x.ndim - 1} dimensions")


def _device(path: Path, parts: Parts, classes: list[str], spec: DatasetSpec, rng: np.random.Generator,
            seed: int) -> DeviceDataset:
    try:
        x = {k: _hwc(parts[k]) for k in ("x_pretrain", "x_train", "x_eval")}
    except ValueError as exc:
        raise DatasetError(f"{path}: {exc}; samples are feature vectors, images [h, w] or [h, w, c]") from None
    shapes = {k: v.shape[1:] for k, v in x.items() if len(v)}
    if len(set(shapes.values())) > 1:
        raise DatasetError(f"{path}: the splits' sample shapes differ: {shapes}")
    fit = x["x_pretrain"] if len(x["x_pretrain"]) else x["x_train"]
    tabular = x["x_train"].shape[1] == 1 and x["x_train"].shape[3] == 1
    if tabular:  # z-score per feature on the fit split
        mean, std = fit.mean(axis=0), fit.std(axis=0) + 1e-6
        x = {k: (v - mean) / std for k, v in x.items()}
    clean_eval = x["x_eval"].copy()
    wiring = _rewiring(x["x_train"].shape[2], spec, rng)
    for k in ("x_train", "x_eval"):  # concept drift on what the device sees, never on the pretraining data
        x[k] = _drift(x[k][:, :, wiring[0], :] * wiring[1][None, None, :, None], spec, rng)
    lo = float(min(v.min() for v in x.values() if len(v)))
    hi = float(max(v.max() for v in x.values() if len(v)))
    scale, offset = max(hi - lo, 1e-6) / 255.0, lo

    def u8(v: np.ndarray) -> np.ndarray:
        return np.clip(np.rint((v - offset) / scale), 0, 255).astype(np.uint8)

    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else _folder_digest(path)
    return DeviceDataset(
        name=f"{path.name}@{digest}", n_classes=len(classes),
        x_train=frozen(u8(x["x_train"])), y_train=frozen(parts["y_train"].astype(np.uint8)),
        x_eval=frozen(u8(x["x_eval"])), y_eval=frozen(parts["y_eval"].astype(np.uint8)),
        scale=scale, offset=offset,
        x_pretrain=frozen(x["x_pretrain"].astype(np.float32)), y_pretrain=frozen(parts["y_pretrain"].astype(np.uint8)),
        x_eval_clean=frozen(clean_eval.astype(np.float32)), seed=seed, source=str(path),
        provenance=_provenance(path, digest, parts, classes, spec, tabular),
    )


def _provenance(path: Path, digest: str, parts: Parts, classes: list[str], spec: DatasetSpec,
                tabular: bool) -> tuple[str, ...]:
    sizes = ", ".join(f"{k[2:]} {len(parts[k])}" for k in ("y_pretrain", "y_train", "y_eval"))
    drift = {k: v for k, v in spec.model_dump().items() if k.endswith(("_drift", "_std", "_deg", "_features")) and v}
    return (f"{path} (sha256 {digest}): {len(classes)} classes ({', '.join(classes[:10])}"
            f"{', ...' if len(classes) > 10 else ''}); samples {sizes}",
            "features z-scored on the pretraining split" if tabular else "values as read (images 0..1)",
            f"drift on the device splits: {drift}" if drift else "no drift")


def _rewiring(width: int, spec: DatasetSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A replaced sensor board: ``swap_features`` of the feature columns in another order, ``flip_features`` of
    them with inverted polarity (fixed for the deployment, from the seed)."""
    order, sign = np.arange(width), np.ones(width, np.float32)
    moved = rng.choice(width, round(width * spec.swap_features), replace=False)
    if len(moved) > 1:
        order[moved] = moved[rng.permutation(len(moved))]
    if spec.flip_features:
        sign[rng.choice(width, round(width * spec.flip_features), replace=False)] = -1.0
    return order, sign


def _drift(x: np.ndarray, spec: DatasetSpec, rng: np.random.Generator) -> np.ndarray:
    out = x
    if spec.rotate_deg:
        out = rotate(out, spec.rotate_deg)
    if spec.gain_drift:  # per-feature sensor gain drift, fixed for the whole deployment
        out = out * (1.0 + rng.uniform(-spec.gain_drift, spec.gain_drift, size=out.shape[1:]))
    if spec.shift_drift:  # per-feature offset drift (a sensor's zero moved)
        out = out + rng.uniform(-spec.shift_drift, spec.shift_drift, size=out.shape[1:])
    if spec.noise_std:
        out = out + rng.normal(0.0, spec.noise_std, size=out.shape)
    return out.astype(np.float32)


def _folder_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------- adaptation


def adapt(x: np.ndarray, shape: tuple[int, ...], task: str) -> tuple[np.ndarray, list[str]]:
    """Float samples [n, h, w, c] made to fit a model input of ``shape`` (h, w, c): resized (bilinear, per channel)
    and channels replicated (1 -> c) or averaged (c -> 1). Returns them and what was done, for the provenance; a
    mismatch nothing can bridge is a `DatasetError` naming both shapes."""
    from PIL import Image

    if len(shape) == 1:  # a feature-vector input (an FC-only model): [1, features, 1] samples of the same length
        if x.shape[1:] != (1, shape[0], 1):
            raise DatasetError(f"task {task}: samples {x.shape[1:]} cannot feed the model's input {shape} (it takes "
                               f"feature vectors: [1, {shape[0]}, 1] samples)")
        return x.astype(np.float32), []
    if len(shape) != 3:
        raise DatasetError(f"task {task}: the model's input is {shape}; samples are adapted to [h, w, c] inputs only")
    (h, w, c), (mh, mw, mc) = x.shape[1:], shape
    done: list[str] = []
    if (h == 1 and c == 1) != (mh == 1 and mc == 1) or (h == 1 and c == 1 and w != mw):
        raise DatasetError(f"task {task}: samples {x.shape[1:]} cannot be adapted to the model's input {shape} "
                           f"(feature vectors feed models whose input is [1, features, 1] of the same length)")
    if (h, w) != (mh, mw):
        x = np.stack([np.stack([np.asarray(Image.fromarray(s[..., k], mode="F").resize((mw, mh),
                                                                                          Image.Resampling.BILINEAR))
                                for k in range(c)], axis=-1) for s in x.astype(np.float32)])
        done.append(f"resized {h}x{w} -> {mh}x{mw} (bilinear)")
    if c != mc:
        if c == 1:
            x = np.repeat(x, mc, axis=-1)
            done.append(f"1 channel -> {mc} (replicated)")
        elif mc == 1:
            x = x.mean(axis=-1, keepdims=True)
            done.append(f"{c} channels -> 1 (mean)")
        else:
            raise DatasetError(f"task {task}: {c}-channel samples cannot be adapted to a {mc}-channel input {shape}")
    return x.astype(np.float32), done
