"""What every blob the device loads shares: the CRC32 field, and the dataset blob (TDST, docs/plan-format.md).

Why one place: the fp32 and the int8 plans feed the same dataset reader on the device; the samples' dtype byte is
the only difference.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from bench.formats.blobs import TDST_HEADER

DATASET_MAGIC = 0x54534454  # "TDST"
DATASET_HEADER = TDST_HEADER.size
DTYPE_U8, DTYPE_I8 = 0, 1  # dataset header byte 44


def finish_blob(blob: bytes, crc_at: int) -> bytes:
    """Patch the blob's CRC32 field (computed with the field zeroed)."""
    crc = zlib.crc32(blob)
    return blob[:crc_at] + struct.pack("<I", crc) + blob[crc_at + 4:]


def dataset_blob(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray,
                 n_classes: int, scale: float, offset: float, dtype: int = DTYPE_U8) -> bytes:
    """The dataset blob: HWC samples (u8, or int8 codes the device copies into the input tensor as they are) and u8
    labels, each section 4-byte aligned. ``scale``/``offset`` give a sample's real value (``q·scale + offset``)."""
    sample = np.uint8 if dtype == DTYPE_U8 else np.int8
    x_eval = np.asarray(x_eval, sample)
    x_train = np.asarray(x_train, sample).reshape(len(y_train), *x_eval.shape[1:])
    h, w, c = x_eval.shape[1:]
    parts = [np.ascontiguousarray(a).view(np.uint8).tobytes()
             for a in (x_train, np.asarray(y_train, np.uint8), x_eval, np.asarray(y_eval, np.uint8))]
    body = bytearray()
    for part in parts:
        body += part + b"\0" * (-len(part) % 4)
    header = TDST_HEADER.pack({
        "magic": DATASET_MAGIC, "version": 1, "header_bytes": DATASET_HEADER, "blob_bytes": DATASET_HEADER + len(body),
        "crc32": 0, "n_train": len(y_train), "n_eval": len(y_eval), "h": h, "w": w, "c": c, "n_classes": n_classes,
        "scale": scale, "offset": offset, "x_train_off": DATASET_HEADER, "dtype": dtype, "shift": 0,
    })
    return finish_blob(header + bytes(body), crc_at=12)


def int8_dataset_blob(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray,
                      n_classes: int, scale: float, zero_point: int) -> bytes:
    """A dataset blob of int8 codes quantised with (``scale``, ``zero_point``); feature vectors [n, features] (an
    FC-only model's input) are stored as [n, 1, features, 1]."""
    x_train, x_eval = (x.reshape(len(x), 1, -1, 1) if x.ndim == 2 else x for x in (x_train, x_eval))
    return dataset_blob(x_train, y_train, x_eval, y_eval, n_classes, scale, -zero_point * scale, DTYPE_I8)


def validation_split(n_train: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) indices into a device-train split of ``n_train`` samples: a seeded permutation, so every run of
    a sweep holds out the same samples. Learning rates are tuned on the held-out part; the eval split the bench
    reports on is a different split and is never used to choose."""
    if n_train < 2:
        raise ValueError(f"a validation split needs at least 2 training samples, the task has {n_train}")
    order = np.random.default_rng([seed, 0x7A1]).permutation(n_train)
    held = min(max(1, round(n_train * fraction)), n_train - 1)
    return np.sort(order[held:]), np.sort(order[:held])
