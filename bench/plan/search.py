"""Contribution analysis and scheme search for sparse update (MCUNetV3, Lin et al. 2022, section 3.2).

Host-side fine-tuning trials measure what each part of a sparse scheme is worth:

* Δacc_b[k]: updating the biases of the last k layers with parameters (plus the classifier) against updating the
  classifier only;
* Δacc_W[i, r]: additionally updating layer i's weights on a fraction r of its output channels (picked by weight
  magnitude, as the plan does) against the bias-only update of every layer (plus the classifier).

The classifier (last layer with parameters) always trains, weights and bias, as in MCUNetV3. Trials are batch-1 SGD
with the numpy reference (`bench.numerics.fp32.run_sgd`, which applies the same channel masks as the device) on the
task's *device-train* split, split once more into a trial-train part and a held-out part that scores the trials; the
eval split the bench reports on is never touched. Every trial of a repeat sees the same samples in the same order, so
differences are paired; the figures are means over repeats.

The search then assumes contributions add up, as the paper does, and maximises Δacc_b[k] + Σ_i Δacc_W[i, r_i] subject
to planned memory ≤ budget, where the memory is the plan compiler's own figure for the scheme (`bench.plan.fp32`). The
digits models have at most a few hundred schemes, so the search is exhaustive and exactly reproducible.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench.config.profile import RATIOS, Loss, Technique
from bench.model.nn import Model
from bench.model.tasks import DeviceDataset
from bench.numerics import fp32 as reference
from bench.plan.fp32 import Plan, compile_plan, sparse_channels

HOLDOUT = 0.3  # fraction of the device-train split held out to score trials
MAX_SCHEMES = 200_000  # exhaustive search limit


@dataclass(frozen=True)
class Contributions:
    """Measured Δaccuracy (fractions, not points) of each part of a sparse scheme, with how they were measured."""

    model: str
    classifier: int  # layer index of the classifier (always trained)
    base_acc: float  # classifier only, held-out accuracy
    bias_acc: dict[int, float]  # k -> held-out accuracy, biases of the last k layers + classifier
    weight_acc: dict[tuple[int, float], float]  # (layer, ratio) -> accuracy, all biases + classifier + W_i at r
    steps: int
    lr: float
    repeats: int
    n_train: int
    n_holdout: int
    seconds: float
    # "reconstruction" (an autoencoder's trials, int8): the *_acc fields hold minus the held-out reconstruction MSE,
    # so higher is better and each delta is an MSE reduction
    loss: Loss = "cross-entropy"

    @property
    def k_max(self) -> int:
        return max(self.bias_acc)

    def delta_bias(self, k: int) -> float:
        return self.bias_acc[k] - self.base_acc

    def delta_weight(self, layer: int, ratio: float) -> float:
        return self.weight_acc[(layer, ratio)] - self.bias_acc[self.k_max]


@dataclass(frozen=True)
class Scheme:
    """A candidate: biases of the last ``bias_k`` layers, weights of ``layers`` at their ratios, and the classifier."""

    bias_k: int
    layers: tuple[tuple[int, float], ...]  # non-classifier layers with a ratio > 0, ascending
    classifier: int
    gain: float  # Δacc_b[k] + Σ Δacc_W (expected gain over classifier-only, assuming additivity)
    memory: int  # planned bytes the budget is compared with
    numerics: str = "fp32"  # "int8" on an imported graph (layers are then op indices)

    def technique(self) -> Technique:
        return sparse_technique(self.bias_k, dict(self.layers), self.classifier, self.numerics)

    def toml(self) -> str:
        """A ready-to-paste ``[sparse]`` table."""
        entries = ", ".join(f"{i} = {r:g}" for i, r in (*self.layers, (self.classifier, 1.0)))
        return f"[sparse]\nbias_k = {self.bias_k}\nlayers = {{ {entries} }}"


def sparse_technique(bias_k: int, layers: dict[int, float], classifier: int, numerics: str = "fp32") -> Technique:
    """The sparse technique of a scheme: the classifier's weights always train, in full."""
    chosen = {**{i: r for i, r in layers.items() if r > 0}, classifier: 1.0}
    assert numerics in ("fp32", "int8")
    return Technique(scheme="sparse", numerics="int8" if numerics == "int8" else "fp32", k=bias_k,
                     layers=tuple(sorted(chosen.items())))


def split_device_train(task: DeviceDataset, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_fit, y_fit, x_holdout, y_holdout) from the device-train split only, as float inputs the device decodes."""
    x = task.decode(task.x_train)
    y = task.y_train.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_hold = max(1, round(HOLDOUT * len(x)))
    hold, fit = order[:n_hold], order[n_hold:]
    return x[fit], y[fit], x[hold], y[hold]


def analyse(model: Model, task: DeviceDataset, seed: int = 1, steps: int = 300, lr: float = 0.02,
            repeats: int = 3, progress: Callable[[str], None] | None = None) -> Contributions:
    """Run the contribution trials (classifier only, K − 1 more bias depths, 4 ratios per non-classifier layer with
    weights; each ``repeats`` times)."""
    started = time.monotonic()
    params = model.param_layers()
    if not params:
        raise ValueError(f"model '{model.name}' has no layers with parameters")
    classifier = params[-1]
    x_fit, y_fit, x_hold, y_hold = split_device_train(task, seed)
    orders = [np.random.default_rng([seed, r]).integers(0, len(x_fit), steps) for r in range(repeats)]

    def trial(technique: Technique) -> float:
        keys = technique.trainable(params)
        channels = sparse_channels(model, technique)
        accs = []
        for order in orders:
            _, tuned = reference.run_sgd(model, x_fit[order], y_fit[order], lr, keys, channels)
            accs.append(reference.accuracy(tuned, x_hold, y_hold))
        if progress is not None:
            progress(f"{technique.k} biases, weights {dict(technique.layers)}: {np.mean(accs):.3f}")
        return float(np.mean(accs))

    base = trial(sparse_technique(1, {}, classifier))  # classifier weights and bias
    bias = {1: base, **{k: trial(sparse_technique(k, {}, classifier)) for k in range(2, len(params) + 1)}}
    weights = {(i, r): trial(sparse_technique(len(params), {i: r}, classifier))
               for i in params[:-1] for r in RATIOS}
    return Contributions(model=model.name, classifier=classifier, base_acc=base, bias_acc=bias, weight_acc=weights,
                         steps=steps, lr=lr, repeats=repeats, n_train=len(x_fit), n_holdout=len(x_hold),
                         seconds=time.monotonic() - started)


def search(model: Model, contrib: Contributions, budget: int, memory: Callable[[Plan], int] | None = None,
           top: int = 5) -> list[Scheme]:
    """The best ``top`` schemes within ``budget`` bytes, best first (exhaustive; ties: less memory, then fewer
    biases, then the lexicographically smaller layer choice). ``memory`` maps a plan to the bytes compared with the
    budget (default: the planned arena)."""
    measure = memory or (lambda plan: plan.arena_bytes)
    layers = [i for i in model.param_layers() if i != contrib.classifier]
    choices = (0.0, *RATIOS)
    n_schemes = contrib.k_max * len(choices) ** len(layers)
    if n_schemes > MAX_SCHEMES:
        raise ValueError(f"{n_schemes:,} schemes: too many for the exhaustive search (limit {MAX_SCHEMES:,})")
    found: list[Scheme] = []
    for k in range(1, contrib.k_max + 1):
        for ratios in itertools.product(choices, repeat=len(layers)):
            chosen = tuple((i, r) for i, r in zip(layers, ratios, strict=True) if r > 0)
            plan = compile_plan(model, sparse_technique(k, dict(chosen), contrib.classifier))
            used = measure(plan)
            if used > budget:
                continue
            gain = contrib.delta_bias(k) + sum(contrib.delta_weight(i, r) for i, r in chosen)
            found.append(Scheme(bias_k=k, layers=chosen, classifier=contrib.classifier, gain=gain, memory=used))
    found.sort(key=lambda s: (-round(s.gain, 12), s.memory, s.bias_k, s.layers))
    return found[:top]


def parse_bytes(text: str) -> int:
    """'64KB' / '64k' / '1.5MB' / '65536' → bytes (KB = 1024 B)."""
    t = text.strip().upper().replace(" ", "").removesuffix("B").removesuffix("I")
    scale = 1
    if t and t[-1] in "KM":
        scale = 1024 if t[-1] == "K" else 1024 * 1024
        t = t[:-1]
    try:
        value = float(t)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (e.g. 64KB, 48K, 1.5MB, 65536)") from None
    if value <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return int(value * scale)
