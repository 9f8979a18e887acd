"""The tabular-drift task: a sensor table whose calibration drifts after deployment — not only images.

The data is the Breast Cancer Wisconsin (Diagnostic) table (569 rows, 30 features computed from cell-nucleus
images, label malignant/benign; Wolberg, Street & Mangasarian, UCI ML Repository, CC BY 4.0), bundled as a CSV
(``data/wdbc.csv``, the copy scikit-learn ships) and read by the same loader as a user's own CSV. The host
pretrains on 40% of the rows; on the device a replaced sensor board delivers 40% of the feature columns in another
order and 30% with inverted polarity, plus noise: the pretrained model loses accuracy that on-device training wins
back.
"""

from __future__ import annotations

from pathlib import Path

from bench.config.profile import DatasetSpec
from bench.model.tasks.digits import DeviceDataset
from bench.model.tasks.files import load_file_task

NAME = "tabular-drift"
DATA_FILE = Path(__file__).with_name("data") / "wdbc.csv"
SPEC = DatasetSpec(label_column="diagnosis", eval_fraction=0.25, pretrain_fraction=0.4, swap_features=0.4,
                   flip_features=0.3, noise_std=0.1)


def load(seed: int = 0) -> DeviceDataset:
    ds = load_file_task(str(DATA_FILE), seed, SPEC)
    return DeviceDataset(**{**ds.__dict__, "name": NAME, "source": ""})
