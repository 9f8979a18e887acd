"""The digits16-drift task: digits-drift scaled up 2× to 16×16×1 (each pixel a 2×2 block), the input size of the
AIfES CNN workload (1×16×16 → conv 3×3×8 → maxpool 2 → dense 10, ../shared/ANCHORS.md).

Same digits, splits, drift and byte encoding as digits-drift (same seed), so its accuracy figures compare with the
8×8 task's; only the resolution differs. The host pretraining data is scaled the same way.
"""

from __future__ import annotations

import numpy as np

from bench.model.tasks import digits
from bench.model.tasks.digits import DeviceDataset, frozen

NAME = "digits16-drift"
FACTOR = 2


def upscale(x: np.ndarray) -> np.ndarray:
    """[n, h, w, c] → [n, 2h, 2w, c], every value repeated over a 2×2 block (dtype kept)."""
    return np.repeat(np.repeat(np.asarray(x), FACTOR, axis=1), FACTOR, axis=2)


def load(seed: int = 0) -> DeviceDataset:
    base = digits.load(seed)
    return DeviceDataset(
        name=NAME,
        n_classes=base.n_classes,
        x_train=frozen(upscale(base.x_train)),
        y_train=base.y_train,
        x_eval=frozen(upscale(base.x_eval)),
        y_eval=base.y_eval,
        scale=base.scale,
        offset=base.offset,
        x_pretrain=frozen(upscale(base.x_pretrain)),
        y_pretrain=base.y_pretrain,
        x_eval_clean=frozen(upscale(base.x_eval_clean)),
        seed=seed,
    )
