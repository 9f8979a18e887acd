"""The digits96-drift task: digits-drift's drifted device digits scaled up to 96×96×1, for person_detect-sized models.

The samples are the first ``N_DEVICE_TRAIN`` / ``N_DEVICE_EVAL`` of digits-drift's device splits (same seed, same
rotation and noise), stretched to 0..255 and scaled up 12× by `digits96`. Stored as u8 pixels; an imported
int8 model is fed those bytes reinterpreted as int8 codes, as TFLM's person_detection example feeds its images. The
splits are small because each sample is 9,216 B of flash: with person_detect's plan (about 310 KB) the image stage must
fit firmware region + plan + dataset within the NUCLEO-F746ZG's 1 MB. There is no host pretraining data (the model is
pretrained elsewhere).
"""

from __future__ import annotations

import numpy as np

from bench.model.tasks import digits
from bench.model.tasks.digits import DeviceDataset, frozen

NAME = "digits96-drift"
N_DEVICE_TRAIN = 40
N_DEVICE_EVAL = 20
SIDE = 96


def digits96(x_u8: np.ndarray) -> np.ndarray:
    """Device digits (u8 [n, 8, 8, 1]) stretched to 0..255, scaled up 12× to 96×96, as int8 codes [n, 96, 96, 1]
    (the pixel bytes reinterpreted, as TFLM's person_detection example feeds its images)."""
    out = []
    for digit in np.asarray(x_u8):
        img = digit.reshape(digit.shape[0], digit.shape[1]).astype(np.float64)
        img = np.kron(img * (255.0 / max(float(img.max()), 1.0)), np.ones((12, 12)))
        out.append(np.clip(np.rint(img), 0, 255).astype(np.uint8))
    return np.stack(out).view(np.int8).reshape(-1, 96, 96, 1)


def load(seed: int = 0) -> DeviceDataset:
    base = digits.load(seed)
    x_train = digits96(base.x_train[:N_DEVICE_TRAIN]).view(np.uint8)
    x_eval = digits96(base.x_eval[:N_DEVICE_EVAL]).view(np.uint8)
    clean = np.kron(base.x_eval_clean[:N_DEVICE_EVAL, ..., 0], np.ones((12, 12), np.float32))[..., None]
    return DeviceDataset(
        name=NAME,
        n_classes=base.n_classes,
        x_train=frozen(x_train),
        y_train=frozen(base.y_train[:N_DEVICE_TRAIN]),
        x_eval=frozen(x_eval),
        y_eval=frozen(base.y_eval[:N_DEVICE_EVAL]),
        scale=1.0 / 255.0,
        offset=0.0,
        x_pretrain=frozen(np.zeros((0, SIDE, SIDE, 1), np.float32)),
        y_pretrain=frozen(np.zeros(0, np.uint8)),
        x_eval_clean=frozen(clean.astype(np.float32)),
        seed=seed,
    )
