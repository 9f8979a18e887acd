"""Forward-only training (PEPITA, MEMPEPITA): techniques, plans, the host reference and its fidelity check, and real
runs on a twin checked against that reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.app import runner
from bench.config.boards import load_catalogue, load_rack
from bench.config.profile import TechniqueError, parse_technique
from bench.formats.blobs import TPLN_HEADER
from bench.link.protocol import Step
from bench.model.tasks import load_task
from bench.numerics import pepita
from bench.numerics.pretrain import build_model
from bench.plan.fp32 import F_SEED, FWD_MEMPEPITA, FWD_PEPITA, compile_plan, projection_bound
from bench.records.fidelity import check_forward_only
from bench.records.run import RunRecord


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    task = load_task("digits-drift", 1)
    return build_model("digits-cnn", task, 1, tmp_path_factory.mktemp("cache")), task


def test_forward_only_techniques_train_every_weight_and_int8_is_refused_by_name() -> None:
    tech = parse_technique("mempepita-fp32")
    assert tech.forward_only and tech.trainable([0, 2, 4]) == {(0, "w"), (2, "w"), (4, "w")}
    with pytest.raises(TechniqueError, match="'pepita-int8' is not implemented"):
        parse_technique("pepita-int8")


def test_forward_only_plans_compute_no_input_gradient_and_keep_what_their_mode_needs(cnn) -> None:  # type: ignore[no-untyped-def]
    model, _ = cnn
    pep, mem = (compile_plan(model, parse_technique(t)) for t in ("pepita-fp32", "mempepita-fp32"))
    assert (pep.fwd_mode, mem.fwd_mode) == (FWD_PEPITA, FWD_MEMPEPITA)
    for plan in (pep, mem):
        assert not any(lp.need_dx for lp in plan.layers)
        assert plan.layers[-1].dout_off == plan.dlogits_off  # the last layer's update uses e' there
        header = TPLN_HEADER.unpack_from(plan.blob(0x1000))
        assert header["flags"] & (2 | 4) and header["f_seed"] == F_SEED
        assert header["f_bound"] == pytest.approx(projection_bound(model)) and 0 < header["f_bound"] < 1
    # PEPITA keeps h_0 and h_2 through the modulated pass: both live at once, so apart; MEMPEPITA's differences share
    live = {b.name: b for b in pep.buffers}
    assert live["d0"].end > live["d2"].start and live["d0"].offset != live["d2"].offset
    mem_live = {b.name: b for b in mem.buffers}
    assert mem_live["d0"].end < mem_live["d2"].start


def test_the_fidelity_check_of_a_forward_only_run_can_fail(cnn) -> None:  # type: ignore[no-untyped-def]
    """Streamed directions equal to the reference pass; the same with one step's sign flipped fails."""
    model, task = cnn
    plan = compile_plan(model, parse_technique("pepita-fp32"))
    x, y = task.decode(task.x_train), task.y_train.astype(np.int64)
    samples = [5, 17, 3]
    grads, _, _ = pepita.run_pepita(model, x[samples], y[samples], 0.02, set(plan.trainable), F_SEED,
                                    projection_bound(model))
    record = RunRecord(run_id="r", board=load_catalogue()["nrf52840-dk"], target_kind="emulated",
                       technique="pepita-fp32", model=model.name)
    record.steps = [Step(k, s, int(y[s]), 0, 1.0, 0, 0, 0, 0, 0, 0) for k, s in enumerate(samples)]
    record.grads = {(k, layer, 0): g.ravel().astype(np.float32) for k, step in enumerate(grads)
                    for (layer, _), g in step.items()}
    assert max(c.rel_err for c in check_forward_only(record, plan, x, y, 0.02)) < 1e-5
    big = max(range(3), key=lambda k: float(np.abs(grads[k][(2, "w")]).max()))  # the step with the largest directions
    record.grads[(big, 2, 0)] = -record.grads[(big, 2, 0)]
    assert max(c.rel_err for c in check_forward_only(record, plan, x, y, 0.02)) > 1.0


@pytest.mark.twin
def test_pepita_and_mempepita_train_on_a_twin_as_the_reference_does(tmp_path: Path) -> None:
    """Both pass their fidelity check (3 steps streaming every direction, replayed on the host); MEMPEPITA computes
    the very same numbers as PEPITA (it recomputes h_j instead of keeping it), so their losses are equal step by
    step; the measured arena stays within the planned one."""
    profile = runner.load_profile("quick").model_copy(update={"techniques": ("pepita-fp32", "mempepita-fp32"),
                                                              "steps": 60})
    rack = load_rack(None, load_catalogue())
    rack = rack.model_copy(update={"boards": [e for e in rack.boards if e.board == "nrf52840-dk"]})
    records = {r.technique: r for r in runner.run_profile(profile, rack, tmp_path)}
    for r in records.values():
        assert r.status == "ok", r.error
        assert r.fidelity_max_rel_err < 1e-4
        assert r.summary is not None and r.summary.arena_peak <= r.planned_sram_bytes - r.summary.static_bytes
    pep, mem = records["pepita-fp32"], records["mempepita-fp32"]
    assert [s.loss for s in pep.steps] == [s.loss for s in mem.steps]
    assert pep.accuracy(1) == mem.accuracy(1)
    steps = pd.read_parquet(tmp_path / "steps.parquet")
    assert set(steps["run_id"].str.split(".").str[1]) == {"pepita-fp32", "mempepita-fp32"}
