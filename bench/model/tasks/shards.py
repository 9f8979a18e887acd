"""Client shards of a task's training split for federated rounds: IID, or non-IID by label skew (Dirichlet α).

Label skew as in Hsu et al. (2019), the usual federated benchmark: for each class, the proportions of its samples
that go to each client are drawn from Dir(α·1); small α gives each client few classes, α → ∞ approaches IID. Shards
are disjoint, cover the split and depend only on (labels, clients, α, seed).
"""

from __future__ import annotations

import numpy as np


class ShardError(ValueError):
    """Shards that cannot be made (too few samples for the clients, a bad α)."""


def shard_indices(labels: np.ndarray, clients: int, alpha: float | None, seed: int,
                  min_samples: int = 1) -> list[np.ndarray]:
    """Sample indices per client, each ascending. ``alpha`` None: IID (a seeded permutation dealt evenly). Every
    client gets at least ``min_samples`` samples: the Dirichlet draw is repeated (with the next seed) until it does,
    up to 100 times."""
    y = np.asarray(labels).astype(np.int64)
    if clients < 1:
        raise ShardError(f"federation needs at least one client, got {clients}")
    if len(y) < clients * min_samples:
        raise ShardError(f"{len(y)} training samples cannot give {clients} clients {min_samples} each")
    if alpha is None:
        order = np.random.default_rng(seed).permutation(len(y))
        return [np.sort(part) for part in np.array_split(order, clients)]
    if not alpha > 0:
        raise ShardError(f"Dirichlet alpha must be > 0, got {alpha}")
    for attempt in range(100):
        shards = _dirichlet(y, clients, alpha, np.random.default_rng([seed, attempt]))
        if min(len(s) for s in shards) >= min_samples:
            return shards
    raise ShardError(f"alpha {alpha}: no Dirichlet draw in 100 gave every one of {clients} clients {min_samples} "
                     f"samples; raise alpha")


def _dirichlet(y: np.ndarray, clients: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    parts: list[list[np.ndarray]] = [[] for _ in range(clients)]
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        cuts = (np.cumsum(rng.dirichlet(np.full(clients, alpha))) * len(idx)).astype(int)[:-1]
        for k, part in enumerate(np.split(idx, cuts)):
            parts[k].append(part)
    return [np.sort(np.concatenate(p)) for p in parts]


def label_histogram(labels: np.ndarray, shards: list[np.ndarray], n_classes: int) -> np.ndarray:
    """[client, class] sample counts: what the docs and the report show of a split's skew."""
    y = np.asarray(labels).astype(np.int64)
    return np.stack([np.bincount(y[s], minlength=n_classes) for s in shards])
