"""The digits-drift task: pretrain on clean 8x8 digits on the host, adapt on the device to drifted digits.

The drift is a fixed rotation plus sensor noise (concept drift a deployed model could plausibly meet). It
is strong enough that a pretrained network loses a clear chunk of accuracy, and consistent enough that a few
hundred batch-1 SGD steps on the device win much of it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

# The UCI optical-recognition digits (1,797 8×8 images, pixel values 0..16; Alpaydin & Kaynak, UCI ML Repository,
# CC BY 4.0) as scikit-learn ships them, stored here as u8 so the bench does not need scikit-learn at run time;
# tests/test_digits.py checks the copy against sklearn.datasets.load_digits when it is installed.
DIGITS_FILE = Path(__file__).with_name("data") / "digits.npz"

NAME = "digits-drift"
DRIFT_ANGLE_DEG = 20.0
NOISE_STD = 0.06  # in units of full intensity (clean pixels are 0..1)
N_DEVICE_TRAIN = 700
N_DEVICE_EVAL = 300
# u8 -> float: value = u8 * SCALE + OFFSET covers [-0.25, 1.25], clean 0..1 plus noise headroom.
OFFSET = -0.25
SCALE = 1.5 / 255.0


def frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class DeviceDataset:
    """What goes to the device (u8 HWC samples, u8 labels), plus the host-only clean data for pretraining.

    ``x_pretrain``/``y_pretrain`` are disjoint from the device sets; ``x_eval_clean`` is ``x_eval`` before
    drift, so clean-vs-drifted accuracy is measured on the very same digits.
    """

    name: str
    n_classes: int
    x_train: np.ndarray  # uint8 [n, h, w, c], drifted
    y_train: np.ndarray  # uint8 [n]
    x_eval: np.ndarray  # uint8 [n, h, w, c], drifted
    y_eval: np.ndarray  # uint8 [n]
    scale: float
    offset: float
    x_pretrain: np.ndarray = field(repr=False)  # float32 [n, h, w, c], clean
    y_pretrain: np.ndarray = field(repr=False)  # uint8 [n]
    x_eval_clean: np.ndarray = field(repr=False)  # float32 [n, h, w, c], clean version of x_eval
    seed: int = 0
    source: str = ""  # the file or folder a user's task came from (empty for a built-in task)
    provenance: tuple[str, ...] = ()  # how it was split, normalised and drifted; adaptations are added to it

    @property
    def input_shape(self) -> tuple[int, int, int]:
        h, w, c = self.x_train.shape[1:]
        return int(h), int(w), int(c)

    def decode(self, x_u8: np.ndarray) -> np.ndarray:
        """The float32 values the device computes from stored bytes (same formula, in float32)."""
        u8 = np.asarray(x_u8, np.uint8)
        return u8.astype(np.float32) * np.float32(self.scale) + np.float32(self.offset)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Nearest u8 code of float values, clipped to the representable range."""
        return _encode(x, self.scale, self.offset)


def _encode(x: np.ndarray, scale: float, offset: float) -> np.ndarray:
    return np.clip(np.rint((np.asarray(x, np.float64) - offset) / scale), 0, 255).astype(np.uint8)


def drift(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate each [n, h, w, 1] image by the fixed angle (same canvas size) and add Gaussian noise."""
    return rotate(x, DRIFT_ANGLE_DEG) + rng.normal(0.0, NOISE_STD, size=x.shape)


def rotate(x: np.ndarray, degrees: float) -> np.ndarray:
    """[n, h, w, c] images rotated about their centre on the same canvas, bilinear, zero outside: the same numbers
    as ``scipy.ndimage.rotate(x, degrees, axes=(1, 2), reshape=False, order=1, mode="constant")`` (tested against
    it), in numpy alone, so no scipy at run time for one 8×8 rotation."""
    _, h, w = x.shape[:3]
    a = np.deg2rad(degrees)
    cos, sin = np.cos(a), np.sin(a)
    cr, cc = (h - 1) / 2, (w - 1) / 2
    r, q = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    src_r = cos * (r - cr) + sin * (q - cc) + cr  # the input pixel each output pixel samples
    src_c = -sin * (r - cr) + cos * (q - cc) + cc
    r0, c0 = np.floor(src_r).astype(np.int64), np.floor(src_c).astype(np.int64)
    fr, fc = (src_r - r0)[None, ..., None], (src_c - c0)[None, ..., None]

    def pixel(rr: np.ndarray, cc_: np.ndarray) -> np.ndarray:
        valid = (rr >= 0) & (rr < h) & (cc_ >= 0) & (cc_ < w)
        return np.where(valid[None, ..., None], x[:, np.clip(rr, 0, h - 1), np.clip(cc_, 0, w - 1)], 0.0)

    value = (pixel(r0, c0) * (1 - fr) * (1 - fc) + pixel(r0, c0 + 1) * (1 - fr) * fc
             + pixel(r0 + 1, c0) * fr * (1 - fc) + pixel(r0 + 1, c0 + 1) * fr * fc)
    inside = (src_r >= 0) & (src_r <= h - 1) & (src_c >= 0) & (src_c <= w - 1)
    return np.where(inside[None, ..., None], value, 0.0)


@cache
def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """(images [1797, 8, 8] u8 in 0..16, labels u8) of the bundled digits file."""
    with np.load(DIGITS_FILE) as data:
        return frozen(data["images"]), frozen(data["target"])


def load(seed: int = 0) -> DeviceDataset:
    """Deterministic split of the digits (1797 images) into pretrain / device-train / device-eval."""
    images, target = digits_images()
    x = (images / 16.0)[..., None]  # [n, 8, 8, 1] in 0..1
    y = target.astype(np.uint8)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    tr, ev = order[:N_DEVICE_TRAIN], order[N_DEVICE_TRAIN : N_DEVICE_TRAIN + N_DEVICE_EVAL]
    pre = order[N_DEVICE_TRAIN + N_DEVICE_EVAL :]
    return DeviceDataset(
        name=NAME,
        n_classes=10,
        x_train=frozen(_encode(drift(x[tr], rng), SCALE, OFFSET)),
        y_train=frozen(y[tr]),
        x_eval=frozen(_encode(drift(x[ev], rng), SCALE, OFFSET)),
        y_eval=frozen(y[ev]),
        scale=SCALE,
        offset=OFFSET,
        x_pretrain=frozen(x[pre].astype(np.float32)),
        y_pretrain=frozen(y[pre]),
        x_eval_clean=frozen(x[ev].astype(np.float32)),
        seed=seed,
    )
