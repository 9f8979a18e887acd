"""The machine-drift task: log-mel feature windows of a running machine whose operating point moves after
deployment, for anomaly-detection autoencoders (MLPerf Tiny's AD reference, ../shared/models/ad01_int8.tflite).

The samples are *synthetic*, generated here from a seed, not recorded sound: no ToyADMOS/MIMII audio ships with the
bench. Each sample is what the AD reference feeds its autoencoder: 5 consecutive frames of 128 log-mel energies in
dB (640 values, frame-major). A frame is a spectral tilt plus the harmonics of the machine's rotation (a peak every
``f0`` mel bins, falling off with the harmonic's order), with a gain, a slight wobble of f0 and per-bin noise per
sample. Pretraining conditions run at f0 = 9 bins; on the device the machine runs at another speed and load (f0 =
12.5 bins, a steeper tilt), so the autoencoder's reconstruction error on *normal* sound rises, and fine-tuning on the
new normal brings it down: the on-device adaptation an anomaly detector needs before its threshold means anything.
Every label is 0 (normal); a reconstruction trains without classes.
"""

from __future__ import annotations

import numpy as np

from bench.model.tasks.digits import DeviceDataset, frozen

NAME = "machine-drift"
FRAMES, MELS = 5, 128
N_DEVICE_TRAIN, N_DEVICE_EVAL, N_PRETRAIN = 160, 80, 200
OFFSET, SCALE = -85.0, 100.0 / 255.0  # u8 -> dB: [-85, 15], the range of the AD reference's input codes
CLEAN = {"f0": 9.0, "tilt": 25.0}
DRIFTED = {"f0": 12.5, "tilt": 32.0}


def spectra(n: int, rng: np.random.Generator, f0: float, tilt: float) -> np.ndarray:
    """``n`` samples [n, 1, 640, 1] in dB under one operating point (see the module docstring)."""
    bins = np.arange(MELS, dtype=np.float64)
    gain = rng.normal(0.0, 1.5, (n, 1, 1))
    wobble = f0 * (1.0 + rng.normal(0.0, 0.02, (n, FRAMES, 1)))
    frames = -20.0 - tilt * bins / (MELS - 1) + gain + np.zeros((n, FRAMES, MELS))
    for h in range(1, 8):
        centre = h * wobble
        frames += 18.0 / h * np.exp(-0.5 * ((bins - centre) / 1.5) ** 2)
    frames += rng.normal(0.0, 2.0, frames.shape)
    return np.clip(frames, OFFSET, OFFSET + 255 * SCALE).reshape(n, 1, FRAMES * MELS, 1)


def _u8(x: np.ndarray) -> np.ndarray:
    return frozen(np.clip(np.rint((x - OFFSET) / SCALE), 0, 255).astype(np.uint8))


def load(seed: int = 0) -> DeviceDataset:
    rng = np.random.default_rng(seed)
    pretrain = spectra(N_PRETRAIN, rng, **CLEAN)
    train = spectra(N_DEVICE_TRAIN, rng, **DRIFTED)
    state = rng.bit_generator.state  # the clean eval twins draw the very same noise as the drifted eval samples
    eval_drifted = spectra(N_DEVICE_EVAL, rng, **DRIFTED)
    rng.bit_generator.state = state
    eval_clean = spectra(N_DEVICE_EVAL, rng, **CLEAN)
    zeros = np.zeros
    return DeviceDataset(
        name=NAME, n_classes=1, x_train=_u8(train), y_train=frozen(zeros(N_DEVICE_TRAIN, np.uint8)),
        x_eval=_u8(eval_drifted), y_eval=frozen(zeros(N_DEVICE_EVAL, np.uint8)), scale=SCALE, offset=OFFSET,
        x_pretrain=frozen(pretrain.astype(np.float32)), y_pretrain=frozen(zeros(N_PRETRAIN, np.uint8)),
        x_eval_clean=frozen(eval_clean.astype(np.float32)), seed=seed,
        provenance=(f"synthetic log-mel windows ({FRAMES} frames x {MELS} mel bins, dB), seed {seed}: harmonics "
                    f"every {DRIFTED['f0']} bins on the device, {CLEAN['f0']} in pretraining",))
