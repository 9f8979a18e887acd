"""Plan stage: which tensors live in SRAM and when, for one technique on one model, and the blobs the device runs.

One entry, `compile`, whatever the numerics (fp32, int8) or the model source (a zoo model, an imported graph):
fp32 plans (`bench.plan.fp32`), int8 plans with their training section (`bench.plan.int8`), the fp32 memory of an
imported graph that the fp32 engine cannot train (`bench.plan.fp32mem`, planned only), and the sparse-scheme search
(`bench.plan.search`).
"""

from __future__ import annotations

from bench.config.profile import Technique
from bench.model.nn import Model
from bench.model.qgraph import QModel
from bench.plan.fp32 import Plan, compile_plan
from bench.plan.fp32mem import Fp32Memory, plan_fp32
from bench.plan.int8 import QPlan
from bench.plan.select import compile_imported_plan, compile_int8_plan

Runnable = Plan | QPlan


def compile(technique: Technique, lr: float, model: Model | None = None, qmodel: QModel | None = None
            ) -> Plan | QPlan | Fp32Memory:
    """The plan of ``technique``: a `Plan` (fp32 on a zoo ``model``), a `QPlan` (int8 on ``qmodel``: the zoo model's
    quantised graph, its layers mapped onto ops, or an imported graph by op index), or an `Fp32Memory` (fp32 on an
    imported graph: planned only, since the fp32 engine trains zoo models only)."""
    if technique.is_int8:
        if qmodel is None:
            raise ValueError(f"{technique.name}: an int8 technique needs the quantised graph")
        if model is not None:
            return compile_int8_plan(model, qmodel, technique, lr)
        return compile_imported_plan(qmodel, technique, lr)
    if model is not None:
        return compile_plan(model, technique)
    if qmodel is None:
        raise ValueError(f"{technique.name}: nothing to plan (no model and no graph)")
    return plan_fp32(qmodel, technique)


__all__ = ["Fp32Memory", "Plan", "QPlan", "Runnable", "compile"]
