"""Contribution analysis and sparse-scheme search on an imported int8 graph (MCUNetV3, Lin et al. 2022, 3.2).

The same method as `bench.plan.search` for the zoo models, on op indices and in the device's own arithmetic:

* trials fine-tune the graph with the host integer reference (`bench.numerics.int8train.Int8Trainer`, which the
  device's gradients equal exactly) for ``steps`` batch-1 steps on the task's int8 samples, and score the tuned codes
  with `bench.numerics.int8ref` on a held-out part of the device-train split (never the eval split);
* the candidates are the last ``depth`` ops with a bias: Δacc_b[k] for the biases of the last k of them, Δacc_W for
  one op's weights at a ratio of its largest-norm output channels on top of every candidate bias; the classifier
  (the last op with a bias) always trains in full;
* a scheme's memory is the int8 planner's arena (`bench.plan.select.imported_arena`, the blob not written), plus
  static and stack when the budget is of SRAM; a scheme the planner refuses (an accumulator bound) is never proposed.

The search maximises the summed contributions within the budget: exhaustive when the schemes are few, else an
evolutionary search (MCUNetV3 uses one): a seeded population evolved by mutation and crossover for a fixed budget of
scheme evaluations, printed with the result. Both are deterministic.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench.config.profile import RATIOS, Loss
from bench.model.qgraph import QModel
from bench.numerics import int8prep, int8ref
from bench.numerics.int8train import Int8Trainer
from bench.plan.int8 import QPlanError
from bench.plan.search import HOLDOUT, MAX_SCHEMES, Contributions, Scheme, sparse_technique
from bench.plan.select import biased_ops, compile_imported_plan, imported_arena

Progress = Callable[[str], None]
CHOICES = (0.0, *RATIOS)


@dataclass(frozen=True)
class SearchReport:
    """How the schemes were found: exhaustively, or by the evolutionary search with its evaluation budget."""

    method: str  # "exhaustive" | "evolutionary"
    schemes_possible: int
    evaluated: int  # schemes whose memory was planned
    generations: int = 0
    population: int = 0
    smallest: int | None = None  # the least memory of any scheme planned (none fitting: what the budget must reach)


def split(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_fit, y_fit, x_holdout, y_holdout) of the int8 device-train samples, as `bench.plan.search` splits."""
    order = np.random.default_rng(seed).permutation(len(x))
    n_hold = max(1, round(HOLDOUT * len(x)))
    hold, fit = order[:n_hold], order[n_hold:]
    return x[fit], y[fit], x[hold], y[hold]


def accuracy(model: QModel, x: np.ndarray, y: np.ndarray, chunk: int = 256) -> float:
    """Fraction of ``x`` (int8 samples) the graph classifies as ``y`` (argmax of its output)."""
    hits = 0
    for i in range(0, len(x), chunk):
        out = int8ref.forward(model, x[i:i + chunk])[-1]
        hits += int(np.sum(out.reshape(len(out), -1).argmax(axis=1) == y[i:i + chunk]))
    return hits / len(x)


def reconstruction_score(model: QModel, x: np.ndarray, chunk: int = 256) -> float:
    """Minus the mean squared error of the graph's dequantised output against its dequantised input ``x`` (int8
    samples): an autoencoder's held-out figure, higher is better like an accuracy."""
    (s_x, zp_x), (s_y, zp_y) = (int8prep.qparams(model.tensors[t]) for t in (model.inputs[0], model.outputs[0]))
    total = 0.0
    for i in range(0, len(x), chunk):
        xs = x[i:i + chunk].reshape(len(x[i:i + chunk]), -1).astype(np.float64)
        out = int8ref.forward(model, x[i:i + chunk])[-1].reshape(len(xs), -1).astype(np.float64)
        total += float(np.sum((s_y * (out - zp_y) - s_x * (xs - zp_x)) ** 2))
    return -total / x[0].size / len(x)


def analyse_graph(model: QModel, x: np.ndarray, y: np.ndarray, seed: int = 1, steps: int = 100, lr: float = 0.01,
                  repeats: int = 1, depth: int = 6, progress: Progress | None = None,
                  loss: Loss = "cross-entropy") -> Contributions:
    """The contribution trials on the last ``depth`` ops with a bias (int8 samples ``x``, labels ``y``), scored by
    held-out accuracy, or (``loss`` "reconstruction") by minus the held-out reconstruction MSE."""
    started = time.monotonic()
    biased = biased_ops(model)
    if not biased:
        raise ValueError(f"{model.name}: no op with a bias to train")
    cands = biased[-max(1, depth):]
    classifier = cands[-1]
    x_fit, y_fit, x_hold, y_hold = split(x, y, seed)
    orders = [np.random.default_rng([seed, r]).integers(0, len(x_fit), steps) for r in range(repeats)]

    def trial(k: int, layers: dict[int, float]) -> float:
        tech = dataclasses.replace(sparse_technique(k, layers, classifier, "int8"), loss=loss)
        try:
            plan = compile_imported_plan(model, tech, lr)
        except QPlanError as e:
            if progress is not None:
                progress(f"{k} biases, weights {layers}: refused by the planner ({e})")
            return math.nan
        accs = []
        for order in orders:
            trainer = Int8Trainer(plan)
            for s in order:
                trainer.step(x_fit[s], int(y_fit[s]))
            trained = trainer.current_model()
            accs.append(reconstruction_score(trained, x_hold) if loss == "reconstruction"
                        else accuracy(trained, x_hold, y_hold))
        if progress is not None:
            progress(f"{k} biases, weights {layers}: {np.mean(accs):.3f}")
        return float(np.mean(accs))

    base = trial(1, {})
    bias = {1: base, **{k: trial(k, {}) for k in range(2, len(cands) + 1)}}
    weights = {(i, r): trial(len(cands), {i: r}) for i in cands[:-1] for r in RATIOS}
    return Contributions(model=model.name, classifier=classifier, base_acc=base, bias_acc=bias, weight_acc=weights,
                         steps=steps, lr=lr, repeats=repeats, n_train=len(x_fit), n_holdout=len(x_hold),
                         seconds=time.monotonic() - started, loss=loss)


Genome = tuple[int, tuple[float, ...]]  # (bias_k, a ratio per candidate weight op)


class _Schemes:
    """Gain (from the contributions, free) and planned memory (compiled, cached) of genomes."""

    def __init__(self, model: QModel, contrib: Contributions, lr: float, memory: Callable[[int], int]) -> None:
        self.model, self.contrib, self.lr, self.memory = model, contrib, lr, memory
        self.layers = sorted({i for i, _ in contrib.weight_acc})
        self.planned: dict[Genome, int | None] = {}

    def gain(self, g: Genome) -> float:
        c = self.contrib
        total = c.delta_bias(g[0]) + sum(c.delta_weight(i, r) for i, r in zip(self.layers, g[1], strict=True) if r)
        return total if math.isfinite(total) else -math.inf  # a refused trial never wins

    def bytes(self, g: Genome) -> int | None:
        """Planned memory of the genome's scheme, None when the planner refuses it."""
        if g not in self.planned:
            try:
                tech = dataclasses.replace(self.scheme(g, 0).technique(), loss=self.contrib.loss)
                self.planned[g] = self.memory(imported_arena(self.model, tech, self.lr))
            except QPlanError:
                self.planned[g] = None
        return self.planned[g]

    def smallest(self) -> int | None:
        return min((b for b in self.planned.values() if b is not None), default=None)

    def scheme(self, g: Genome, memory: int) -> Scheme:
        chosen = tuple((i, r) for i, r in zip(self.layers, g[1], strict=True) if r > 0)
        return Scheme(bias_k=g[0], layers=chosen, classifier=self.contrib.classifier, gain=self.gain(g),
                      memory=memory, numerics="int8")


def search_graph(model: QModel, contrib: Contributions, budget: int, lr: float = 0.01,
                 memory: Callable[[int], int] | None = None, top: int = 5, evaluations: int = 1500, seed: int = 1,
                 force_evolutionary: bool = False) -> tuple[list[Scheme], SearchReport]:
    """The best ``top`` schemes within ``budget`` bytes, best first (ties: less memory, fewer biases, the smaller
    layer choice); exhaustive up to `MAX_SCHEMES` schemes, else evolutionary within ``evaluations`` plans."""
    space = _Schemes(model, contrib, lr, memory or (lambda arena: arena))
    possible = contrib.k_max * len(CHOICES) ** len(space.layers)
    if possible <= MAX_SCHEMES and not force_evolutionary:
        genomes = [(k, r) for k in range(1, contrib.k_max + 1)
                   for r in itertools.product(CHOICES, repeat=len(space.layers))]
        # plan the most promising first, and only while a scheme can still enter the top
        genomes.sort(key=lambda g: -space.gain(g))
        found: list[Scheme] = []
        for g in genomes:
            if len(found) >= top and space.gain(g) < found[-1].gain - 1e-12:
                break
            used = space.bytes(g)
            if used is not None and used <= budget:
                found = _ranked([*found, space.scheme(g, used)], top)
        return found, SearchReport("exhaustive", possible, len(space.planned), smallest=space.smallest())
    return _evolve(space, budget, top, evaluations, seed, possible)


def _ranked(schemes: list[Scheme], top: int) -> list[Scheme]:
    unique = {(s.bias_k, s.layers): s for s in schemes}
    return sorted(unique.values(), key=lambda s: (-round(s.gain, 12), s.memory, s.bias_k, s.layers))[:top]


def _evolve(space: _Schemes, budget: int, top: int, evaluations: int, seed: int, possible: int
            ) -> tuple[list[Scheme], SearchReport]:
    """Evolutionary search: a population of genomes within the budget, the best half kept, children by uniform
    crossover of two kept parents and mutation (each gene redrawn with probability 1/genes), until ``evaluations``
    schemes have been planned."""
    rng = np.random.default_rng(seed)
    n = len(space.layers)
    k_max = space.contrib.k_max
    pop_size = 32

    def random_genome() -> Genome:
        sparse = rng.random(n) < 0.5  # about half the candidate ops without weights: most budgets are tight
        return int(rng.integers(1, k_max + 1)), tuple(0.0 if z else float(rng.choice(RATIOS)) for z in sparse)

    def fitness(g: Genome) -> float:
        used = space.bytes(g)
        return space.gain(g) if used is not None and used <= budget else -math.inf

    def mutate(g: Genome) -> Genome:
        k, r = g[0], list(g[1])
        p = 1.0 / (n + 1)
        if rng.random() < p:
            k = int(rng.integers(1, k_max + 1))
        for j in range(n):
            if rng.random() < p:
                r[j] = float(rng.choice(CHOICES))
        return k, tuple(r)

    pop = [(1, (0.0,) * n)] + [random_genome() for _ in range(pop_size - 1)]  # classifier-only: a valid start
    generations = 0
    while len(space.planned) < evaluations:
        ranked = sorted(set(pop), key=lambda g: (-fitness(g), g))
        keep = ranked[:pop_size // 2]
        children: list[Genome] = []
        while len(keep) + len(children) < pop_size:
            a, b = (keep[int(i)] for i in rng.integers(0, len(keep), 2))
            mix = rng.random(n) < 0.5
            child = (a[0] if rng.random() < 0.5 else b[0],
                     tuple(x if m else y for x, y, m in zip(a[1], b[1], mix, strict=True)))
            children.append(mutate(child))
        before = len(space.planned)
        pop = keep + children
        for g in children:
            fitness(g)
        generations += 1
        if len(space.planned) == before and generations > 200:  # nothing new to plan: the population has settled
            break
    found = [space.scheme(g, used) for g, used in space.planned.items()
             if used is not None and used <= budget and math.isfinite(space.gain(g))]
    return _ranked(found, top), SearchReport("evolutionary", possible, len(space.planned), generations, pop_size,
                                            space.smallest())
