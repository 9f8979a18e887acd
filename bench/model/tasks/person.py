"""person_detect's own test images (person.bmp, no_person.bmp) with scaled-up digits, as int8 codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.model.tasks.digits96 import digits96


def grayscale_bmp(path: str | Path) -> np.ndarray:
    """An 8-bit palettised grayscale BMP as [h, w] uint8, top row first."""
    raw = Path(path).read_bytes()
    if raw[:2] != b"BM" or int.from_bytes(raw[28:30], "little") != 8:
        raise ValueError(f"{path}: not an 8-bit BMP")
    offset, width, height = (int.from_bytes(raw[a:b], "little", signed=True) for a, b in ((10, 14), (18, 22), (22, 26)))
    stride = (width + 3) // 4 * 4
    rows = np.frombuffer(raw[offset: offset + stride * abs(height)], np.uint8).reshape(abs(height), stride)[:, :width]
    return rows[::-1] if height > 0 else rows


def person_detect_samples(models_dir: str | Path, digits_u8: np.ndarray, n_digits: int = 4
                          ) -> tuple[np.ndarray, np.ndarray]:
    """person.bmp (label 1), no_person.bmp (0), then ``n_digits`` digits scaled up to 96x96 (label 0).

    TFLM's person_detection example feeds the image bytes reinterpreted as int8 (its generated arrays declare the
    0..255 pixels int8_t); the digits (u8, stretched to 0..255) get the same treatment.
    """
    d = Path(models_dir)
    images = [grayscale_bmp(d / "person.bmp"), grayscale_bmp(d / "no_person.bmp")]
    x = np.concatenate([np.stack(images).view(np.int8).reshape(-1, 96, 96, 1),
                        digits96(np.asarray(digits_u8)[:n_digits])])
    y = np.array([1, 0] + [0] * (len(x) - 2), np.uint8)
    return x, y
