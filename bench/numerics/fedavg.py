"""Federated averaging of trainable fp32 tensors, written for racks where boards train different parts.

A client's update is what WGET returned: for each tensor it trains, the rows (output channels) it trains — every row,
or a sparse scheme's listed channels. FedAvg (McMahan et al., 2017) weights each client by its sample count n_k; here
per row, over the clients that trained that row: row ← Σ n_k·row_k / Σ n_k. A row no client trained keeps the global
value (the plan's, in every board's flash), so last-layer, bias-only and sparse clients can share one federation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# (layer, param 0 weight / 1 bias) -> float32 [out, row] (bias: [out, 1])
Tensors = dict[tuple[int, int], np.ndarray]


@dataclass(frozen=True)
class ClientUpdate:
    """The rows a client trained (``rows[key]``: output channel indices) and their values after its local steps."""

    client: str
    n_samples: int
    values: Tensors  # key -> [len(rows[key]), row]
    rows: dict[tuple[int, int], tuple[int, ...]]


def fedavg(global_tensors: Tensors, updates: list[ClientUpdate]) -> Tensors:
    """The new global tensors: per row, the sample-weighted mean over the clients that trained it (float64
    accumulation, float32 result); untouched rows are copied."""
    new: Tensors = {}
    for key, old in global_tensors.items():
        num = np.zeros(old.shape, np.float64)
        den = np.zeros(old.shape[0], np.float64)
        for u in updates:
            if key in u.values:
                rows = np.asarray(u.rows[key], np.int64)
                num[rows] += u.n_samples * u.values[key].astype(np.float64)
                den[rows] += u.n_samples
        trained = den > 0
        out = old.copy()
        out[trained] = (num[trained] / den[trained, None]).astype(np.float32)
        new[key] = out
    return new


def weight_shares(updates: list[ClientUpdate]) -> dict[str, float]:
    """Each client's share of the sample weight of this round's average (what the report calls its contribution)."""
    total = sum(u.n_samples for u in updates)
    return {u.client: u.n_samples / total if total else 0.0 for u in updates}


def update_norm(global_tensors: Tensors, u: ClientUpdate) -> float:
    """L2 norm of the client's change to the rows it trained, against the global tensors it started from."""
    sq = 0.0
    for key, vals in u.values.items():
        delta = vals.astype(np.float64) - global_tensors[key][np.asarray(u.rows[key], np.int64)]
        sq += float(np.sum(delta * delta))
    return float(np.sqrt(sq))
