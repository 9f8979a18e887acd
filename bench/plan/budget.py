"""Schemes at one memory budget: the largest last-k and bias-k, and the best sparse scheme, whose plans fit.

Why: "sparse update reaches the same accuracy at less memory than last-k" (MCUNetV3, Fig. 9) is a claim about schemes
*at equal memory*. A profile's ``[compare] budget`` adds one technique per family, each the one with the most
training a budget allows: for last-k and bias-k the largest k whose planned arena fits; for sparse update the
scheme the contribution analysis ranks first within it (`bench.plan.search`, host fine-tuning trials on the
device-train split only). The planned arena (board-independent; static data and stack are the firmware's) is what
the budget is compared with. fp32 only: the search plans fp32.
"""

from __future__ import annotations

import dataclasses

from bench.config.profile import CompareSpec, Technique, parse_technique
from bench.model.nn import Model
from bench.model.tasks import DeviceDataset
from bench.plan.fp32 import compile_plan
from bench.plan.search import analyse, parse_bytes, search


class BudgetError(ValueError):
    """Nothing of a family fits the budget, or the budget cannot be read; the message names the profile key."""


def at_budget(model: Model, task: DeviceDataset, spec: CompareSpec, seed: int, lr: float) -> list[Technique]:
    """last-k, bias-k and sparse at ``spec.budget``, labelled ``<scheme>-fp32@<budget>``; a family of which nothing
    fits is left out (a `BudgetError` when none fits at all)."""
    if spec.numerics != "fp32":
        raise BudgetError(f"[compare] numerics = {spec.numerics!r}: equal-budget schemes are searched with fp32 plans "
                          f"only (bench.plan.search); use \"fp32\"")
    try:
        budget = parse_bytes(spec.budget)
    except ValueError as e:
        raise BudgetError(f"[compare] budget: {e}") from None
    label = f"@{spec.budget}"
    chosen = [t for t in (_largest_k(model, "last", budget), _largest_k(model, "bias", budget)) if t is not None]
    schemes = search(model, analyse(model, task, seed=seed, lr=lr), budget, top=1)
    if schemes:
        chosen.append(schemes[0].technique())
    if not chosen:
        raise BudgetError(f"[compare] budget = {spec.budget!r}: no last-k, bias-k or sparse scheme of {model.name} "
                          f"fits {budget:,} B of planned arena")
    return [dataclasses.replace(t, label=f"{t.scheme}-fp32{label}") for t in chosen]


def _largest_k(model: Model, scheme: str, budget: int) -> Technique | None:
    best = None
    for k in range(1, len(model.param_layers()) + 1):
        technique = parse_technique(f"{scheme}-fp32", k)
        if compile_plan(model, technique).arena_bytes <= budget:
            best = technique
    return best


def describe(technique: Technique) -> str:
    """What a budget technique trains, in words, for tables."""
    if technique.scheme == "sparse":
        weights = ", ".join(f"{i}: {r:g}" for i, r in technique.layers)
        return f"sparse: biases of the last {technique.k}, weights {{{weights}}}"
    return f"{technique.scheme}-k, k = {technique.k}"
