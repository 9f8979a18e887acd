"""Contribution analysis and sparse-scheme search on an imported int8 graph (`bench.plan.search_int8`), and
`bench plan MODEL.tflite --budget`. The graph is the project's own digits CNN exported to .tflite and read back
through the importer (the path a third-party model takes), so the trials run in seconds."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.app.cli import main
from bench.app.runner import Bench, Int8Prepared, load_profile
from bench.config.profile import RATIOS
from bench.plan import search as contrib
from bench.plan import search_int8
from bench.plan.select import biased_ops, compile_imported_plan


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Int8Prepared:
    bench = Bench(tmp_path_factory.mktemp("graph"))
    return bench.int8(bench.prepare(load_profile("techniques")))


def fake(classifier: int, layers: list[int]) -> contrib.Contributions:
    """Contributions without trials: bigger ratios and lower ops are worth more, one trial refused by the planner."""
    weights = {(i, r): 0.80 + 0.01 * (len(layers) - n) * RATIOS.index(r) for n, i in enumerate(layers) for r in RATIOS}
    weights[(layers[0], 1.0)] = math.nan
    return contrib.Contributions(model="g", classifier=classifier, base_acc=0.7,
                                 bias_acc={k: 0.7 + 0.01 * k for k in range(1, len(layers) + 2)}, weight_acc=weights,
                                 steps=0, lr=0.01, repeats=1, n_train=1, n_holdout=1, seconds=0.0)


def test_trials_use_the_integer_reference_on_op_indices_and_repeat_exactly(graph: Int8Prepared) -> None:
    biased = biased_ops(graph.qmodel)
    c = search_int8.analyse_graph(graph.qmodel, graph.x_train, graph.y_train, seed=3, steps=15, lr=0.01, depth=3)
    assert c.classifier == biased[-1] and set(c.bias_acc) == {1, 2, 3}
    assert set(c.weight_acc) == {(i, r) for i in biased[-3:-1] for r in RATIOS}
    assert all(0.0 <= a <= 1.0 for a in [c.base_acc, *c.bias_acc.values(), *c.weight_acc.values()])
    assert c.n_train + c.n_holdout == len(graph.x_train)  # the device-train split only
    again = search_int8.analyse_graph(graph.qmodel, graph.x_train, graph.y_train, seed=3, steps=15, lr=0.01, depth=3)
    assert (again.bias_acc, again.weight_acc) == (c.bias_acc, c.weight_acc)


def test_search_stays_within_budget_and_evolution_finds_the_exhaustive_best(graph: Int8Prepared) -> None:
    biased = biased_ops(graph.qmodel)
    c = fake(biased[-1], biased[:-1])
    for budget in (17_000, 18_000, 30_000):
        exhaustive, rep = search_int8.search_graph(graph.qmodel, c, budget)
        evolved, rep_e = search_int8.search_graph(graph.qmodel, c, budget, force_evolutionary=True, seed=5)
        assert rep.method == "exhaustive" and rep_e.method == "evolutionary" and rep_e.generations > 0
        assert exhaustive and exhaustive[0] == evolved[0], budget
        for s in exhaustive:
            assert s.memory <= budget and s.numerics == "int8"
            assert compile_imported_plan(graph.qmodel, s.technique(), 0.01).arena_bytes == s.memory
            assert (biased[0], 1.0) not in s.layers  # its trial was refused: never proposed
        assert search_int8.search_graph(graph.qmodel, c, budget, force_evolutionary=True, seed=5)[0] == evolved
    none, rep = search_int8.search_graph(graph.qmodel, c, 1_000)
    assert none == [] and rep.evaluated == rep.schemes_possible  # nothing fits: every scheme was planned
    bias_only = compile_imported_plan(graph.qmodel, contrib.sparse_technique(1, {}, biased[-1], "int8"), 0.01)
    assert rep.smallest is not None and 1_000 < rep.smallest <= bias_only.arena_bytes  # what the budget must reach


def test_bench_plan_searches_a_tflite_graph_within_a_budget(graph: Int8Prepared) -> None:
    args = ["plan", str(graph.tflite), "--budget", "20KB", "--budget-of", "arena", "--profile", "techniques",
            "--steps", "10", "--depth", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "search: exhaustive" in result.output and 'techniques = ["sparse-int8"]' in result.output
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout[result.stdout.index("{"):])
    assert found["schemes"] and all(s["memory_bytes"] <= 20 * 1024 for s in found["schemes"])
    assert found["how"].startswith("planned")
    assert found["smallest_bytes"] <= min(s["memory_bytes"] for s in found["schemes"])  # the least of those planned
    bare = CliRunner().invoke(main, [*args[:6], "--task", "digits-drift", *args[8:]])  # no profile: --task's data
    assert bare.exit_code == 0, bare.output
    assert "search: exhaustive" in bare.output and "int8 (host integer reference)" in bare.output
    missing = subprocess.run([sys.executable, "-c", "from bench.app.cli import entry; entry()", "plan",
                              str(Path("nope.tflite")), "--budget", "20KB", "--profile", "quick"],
                             capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and "nope.tflite: no such file" in missing.stderr
    assert "Traceback" not in missing.stderr
