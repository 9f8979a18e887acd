"""fp32 training through residual ADDs (ResNet / MobileNetV2 blocks): the float64 reference's gradient through both
the branch and the skip, the import of residual .tflite graphs as fp32 layers, the plan's merge (the skip gradient
kept from the ADD's backward to the layer where the branch starts, docs/plan-format.md), and the runs on the twin
through `bench run`: the zoo's digits-resnet (profiles/residual.toml) in fp32 and int8, and an imported two-block
graph written with the project's exporter."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from bench.config.profile import parse_technique
from bench.model import nn
from bench.numerics import fp32 as ref
from bench.plan.fp32 import MERGE_FLAG, compile_plan
from bench.tflite.fp32 import Fp32ImportError, to_fp32
from bench.tflite.io import load_tflite
from tests.test_residual_backward import graph_profile, residual_graph, two_block_graph


def _nudged(model: nn.Model, x: np.ndarray, i: int, name: str, j: int, delta: float) -> float:
    layer = model.layers[i]
    arr = np.array(layer.weight if name == "w" else layer.bias, np.float64)
    arr.flat[j] += delta
    moved = dataclasses.replace(layer, weight=arr) if name == "w" else dataclasses.replace(layer, bias=arr)
    return ref.loss_and_grads(dataclasses.replace(model, layers=(*model.layers[:i], moved,
                                                                 *model.layers[i + 1:])), x, 3)[0]


def test_reference_gradients_through_two_residual_blocks_are_derivatives() -> None:
    """Central differences of the float64 loss at biases below, inside and above both merges of the two-block graph
    (a ReLU ADD, then MobileNetV2's linear one): the reference sums the skip's gradient where each branch starts."""
    model = to_fp32(two_block_graph()).model
    x = np.random.default_rng(3).uniform(-2, 2, model.input_shape)
    _, grads = ref.loss_and_grads(model, x, 3)
    for i in (0, 1, 2, 4, 5, 6, 9):
        g = grads[(i, "b")]
        for j in range(g.size):
            num = (_nudged(model, x, i, "b", j, 1e-5) - _nudged(model, x, i, "b", j, -1e-5)) / 2e-5
            assert abs(num - g.flat[j]) <= 1e-5 * max(1.0, abs(num)), (i, j, num, g.flat[j])


def test_residual_graphs_import_as_fp32_adds_and_x_plus_x_is_refused() -> None:
    """Either input order of the ADD (Keras writes both), and two blocks back to back; an ADD of a tensor with
    itself is no residual, and two ADDs of one skip are two merges at one branch start: both refused, naming the op."""
    for graph in (residual_graph(), residual_graph(skip_first=True)):
        layers = to_fp32(graph).model.layers
        assert [(la.op, la.skip, la.act) for la in layers][2:4] == [("conv2d", -1, "none"), ("add", 1, "relu")]
    two = to_fp32(two_block_graph()).model.layers
    assert [(i, la.skip, la.act) for i, la in enumerate(two) if la.op == "add"] == [(3, 1, "relu"), (7, 4, "none")]
    q = two_block_graph()
    b2 = q.ops[2].outputs[0]
    bad = dataclasses.replace(q, ops=(*q.ops[:3], dataclasses.replace(q.ops[3], inputs=(b2, b2)), *q.ops[4:]))
    with pytest.raises(Fp32ImportError, match=r"op 3 ADD: reads 2 activation\(s\)"):
        to_fp32(bad)
    one = residual_graph()  # a second ADD of the same skip r after the first: two merges at one branch start
    r, s = one.ops[0].outputs[0], one.ops[3].outputs[0]
    t = len(one.tensors)
    twice = dataclasses.replace(
        one, tensors=(*one.tensors, dataclasses.replace(one.tensors[s], name="again")),
        ops=(*one.ops[:4], dataclasses.replace(one.ops[3], inputs=(s, r), outputs=(t,)),
             dataclasses.replace(one.ops[4], inputs=(t, *one.ops[4].inputs[1:])), *one.ops[5:]))
    with pytest.raises(Fp32ImportError, match="op 4 ADD: its skip, the input of op 1, feeds another ADD"):
        to_fp32(twice)


def test_fp32_plan_keeps_the_skip_gradient_to_the_branch_start() -> None:
    """full-fp32 of the two-block graph: each branch start (layers 1 and 4) carries the merge flag, the ADD's
    skip-gradient buffer lives from the ADD's backward to that layer's, and the skip activation to the ADD; with only
    the head training nothing merges and no skip gradient exists."""
    model = to_fp32(two_block_graph()).model
    plan = compile_plan(model, parse_technique("full-fp32"))
    n = len(model.layers)
    assert [lp.index for lp in plan.layers if lp.merge] == [1, 4]
    for add, start in ((3, 1), (7, 4)):
        buf = next(b for b in plan.buffers if b.name == f"s{add}")
        assert (buf.start, buf.end, buf.size) == (2 * n - add, 2 * n - start, 4 * 6 * 6 * 8)
        assert plan.layers[add].scratch_off == buf.offset
    blob = plan.blob(0)
    flags = [blob[64 + 64 * i + 1] for i in range(n)]
    assert [i for i, f in enumerate(flags) if f & MERGE_FLAG] == [1, 4]
    assert [blob[64 + 64 * i + 3] for i in (3, 7)] == [1, 4]  # the ADD's k: the layer whose input is its skip
    head = compile_plan(model, parse_technique("last-fp32", 1))
    assert not any(lp.merge for lp in head.layers) and not any(b.name.startswith("s") for b in head.buffers)


def test_an_in_place_relu_where_a_branch_starts_gets_its_own_buffer() -> None:
    """conv → [relu → conv] + (the relu's input) → add: the ReLU would run in place over the skip, so the plan gives
    its output a buffer of its own; a skip that is not an earlier layer's input of the same shape is refused."""
    rng = np.random.default_rng(0)
    s = (4, 4, 2)
    w = rng.normal(0, 0.5, (2, 1, 1, 2)).astype(np.float32)
    layers = (nn.Layer("conv2d", s, s, w, np.zeros(2, np.float32), kernel=1), nn.Layer("relu", s, s),
              nn.Layer("conv2d", s, s, w, np.zeros(2, np.float32), kernel=1), nn.Layer("add", s, s, skip=1),
              nn.Layer("dense", (1, 1, 32), (1, 1, 3), rng.normal(0, 0.5, (3, 32)).astype(np.float32),
                       np.zeros(3, np.float32)))
    model = nn.Model("relu-start", s, 3, layers)
    plan = compile_plan(model, parse_technique("full-fp32"))
    assert plan.layers[1].out_off != plan.layers[1].in_off and plan.layers[1].merge
    bad = dataclasses.replace(model, layers=(*layers[:3], dataclasses.replace(layers[3], skip=3), layers[4]))
    with pytest.raises(ValueError, match="layer 3 add: skip 3"):
        compile_plan(bad, parse_technique("full-fp32"))


@pytest.mark.twin
def test_digits_resnet_trains_through_its_add_on_the_m7_twin(rack_entry, bench_run) -> None:
    """profiles/residual.toml: full and sparse fp32 (the stem and the branch's first conv, both below the merge) with
    streamed gradients within 1e-4 of the float64 reference and measured SRAM within 10% of the plan; full and
    sparse int8 with every gradient exactly the host integer reference's (sparse: four listed channels of convs 0
    and 1, recomputed by the forward pass in one call)."""
    entry = rack_entry("nucleo-f746zg")
    for technique in ("full-fp32", "sparse-fp32", "full-int8", "sparse-int8"):
        run = bench_run(entry, technique, profile="residual", steps=20, eval_samples=40, check_steps=2)
        assert run.status == "ok", run.error
        trained = set(run.grads.loc[run.grads["param"] == "w", "layer"])
        assert 0 in trained, trained  # the stem, below the ADD, trains through the merge
        if technique.endswith("fp32"):
            assert run.fidelity_max_rel_err <= 1e-4
            assert abs(run.summary.sram_peak - run.planned_sram_bytes) <= 0.1 * run.planned_sram_bytes
        else:
            assert run.fidelity_max_rel_err == 0.0


@pytest.mark.twin
def test_an_imported_two_block_graph_trains_in_fp32_on_the_m7_twin(tmp_path: Path, rack_entry, bench_run) -> None:
    """The two-block graph (a ResNet block, then MobileNetV2's inverted one with a depthwise conv and a linear ADD)
    written as a .tflite with the project's exporter and run through a profile: full-fp32 trains on the device with
    gradients within 1e-4 of the reference; before, its fp32 runs were planned only."""
    profile = graph_profile(tmp_path, two_block_graph(), 'head_classes = 10\ntechniques = ["full-fp32"]\nsteps = 10\n'
                            'lr = 0.01\nseed = 1\ncheck_steps = 2\neval_samples = 20\n')
    assert [op.kind for op in load_tflite(tmp_path / "two-blocks.tflite").ops].count("ADD") == 2
    run = bench_run(rack_entry("nucleo-f746zg"), "full-fp32", profile=profile)
    assert run.status == "ok", run.error
    assert run.fidelity_max_rel_err <= 1e-4
    assert {0, 1, 4, 5} <= set(run.grads.loc[run.grads["param"] == "w", "layer"])


@pytest.mark.parametrize("technique", ["full-fp32", "last-fp32", "bias-fp32"])
def test_residual_plans_never_share_bytes_between_live_buffers(technique: str) -> None:
    """The skip activation and the skip gradient are placed by lifetime like every other buffer: no two buffers
    that are live at the same time overlap, in every scheme of the two-block graph."""
    plan = compile_plan(to_fp32(two_block_graph()).model, parse_technique(technique, 1))
    for a in plan.buffers:
        for b in plan.buffers:
            if a is b or a.end < b.start or b.end < a.start:
                continue
            assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset, (a, b)
