"""bench.plan.fp32mem: the fp32 training memory of an imported graph, against hand counts, against the fp32 plan
compiler,
and on person_detect (full backprop does not fit the NUCLEO-F746ZG; a sparse scheme does)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bench.app.cli import main
from bench.app.runner import CACHE_DIR
from bench.config.boards import load_catalogue
from bench.config.profile import load_profile, parse_technique
from bench.model import nn
from bench.model.qgraph import (
    AddOptions,
    ConvOptions,
    FullyConnectedOptions,
    MeanOptions,
    QModel,
    QOp,
    QTensor,
    SoftmaxOptions,
)
from bench.model.tasks import load_task
from bench.numerics.pretrain import build_model
from bench.plan.fp32 import compile_plan
from bench.plan.fp32mem import Fp32MemError, plan_fp32
from bench.tflite.io import load_tflite
from bench.tflite.quantize import quantize_model

NUCLEO_SRAM = 327_680
# static + stack reserve of the nucleo-f746zg twin image is 10,920 + 16,384 B today; the fit test allows a margin
STATIC_AND_STACK_ALLOWANCE = 32 * 1024
PERSON_SPARSE = {"bias_k": 7, "layers": {22: 0.125, 24: 0.125, 26: 0.125}}  # pointwise convs at 1/8


def _tiny_cnn() -> tuple[nn.Model, QModel]:
    """input 4×4×1 → conv 3×3 valid, 2 ch (+ReLU) → dense 8→3 → softmax."""
    rng = np.random.default_rng(0)
    conv = nn.Layer("conv2d", (4, 4, 1), (2, 2, 2), weight=rng.standard_normal((2, 3, 3, 1)).astype(np.float32),
                    bias=np.zeros(2, np.float32), kernel=3)
    dense = nn.Layer("dense", (1, 1, 8), (1, 1, 3), weight=rng.standard_normal((3, 8)).astype(np.float32),
                     bias=np.zeros(3, np.float32))
    model = nn.Model("tiny", (4, 4, 1), 3, (conv, nn.Layer("relu", (2, 2, 2), (2, 2, 2)), dense))
    return model, quantize_model(model, rng.standard_normal((8, 4, 4, 1)))


def test_tiny_cnn_matches_a_hand_count():
    model, q = _tiny_cnn()
    assert q.kinds() == ["CONV_2D", "FULLY_CONNECTED", "SOFTMAX"]
    full = plan_fp32(q, parse_technique("full-fp32"))
    # parameters in SRAM: w0 2·9·4 = 72, b0 8, w1 3·8·4 = 96, b1 12 → 16 (8-byte aligned): 192 B, live all step.
    # At the dense layer's backward (the peak): input 4·4·4 = 64 (kept: conv dW), conv output 32 (kept: dense dW),
    # d logits 16, d conv output 32  →  192 + 64 + 32 + 16 + 32 = 336 B.
    assert full.peak_live_bytes == 336
    # bench.plan.fp32's first-fit placement (largest first) leaves one 8-byte gap here, as it does for the nn model
    assert full.arena_bytes == compile_plan(model, parse_technique("full-fp32")).arena_bytes == 344
    assert full.composition() == {"weights": 192, "activations": 96, "gradients": 48, "optimizer": 0}
    assert [r.weights_ram_bytes for r in full.ops] == [80, 112]
    assert [r.kept_act_bytes for r in full.ops] == [64 + 32, 32]  # conv: input + ReLU mask; dense: input
    assert [(r.grad_bytes, r.scratch_bytes) for r in full.ops] == [(0, 40), (32, 0)]  # conv dW row 9·4 → 40
    # naive: parameters 192 + every activation (64 + 32 + 16) + activation gradients (16 + 32) + parameter grads 192
    assert full.naive_bytes == 544

    bias = plan_fp32(q, parse_technique("bias-fp32", 1))
    # only b1 (16) trains: nothing is kept, backward is the loss; the peak is the forward pass: 16 + 64 + 32
    assert bias.first_bwd == 1 and bias.arena_bytes == 112 and bias.peak_live_bytes == 112


def _t(name: str, shape: tuple[int, ...], data: np.ndarray | None = None, dtype: str = "int8") -> QTensor:
    """Quantisation is irrelevant to the fp32 planner: one per-tensor scale everywhere."""
    return QTensor(name, shape, dtype, np.array([0.05], np.float32), np.zeros(1, np.int64), 0, data)


def _branchy() -> QModel:
    """input 4×4×2 → DW 3×3 SAME (+ReLU) → CONV 1×1 → ADD(dw, conv) → MEAN(h, w) → FC 2→3 → SOFTMAX."""
    z8 = np.zeros
    tensors = (
        _t("x", (1, 4, 4, 2)),
        _t("dw/w", (1, 3, 3, 2), z8((1, 3, 3, 2), np.int8)), _t("dw/b", (2,), z8(2, np.int32), "int32"),
        _t("dw/out", (1, 4, 4, 2)),
        _t("pw/w", (2, 1, 1, 2), z8((2, 1, 1, 2), np.int8)), _t("pw/b", (2,), z8(2, np.int32), "int32"),
        _t("pw/out", (1, 4, 4, 2)),
        _t("add", (1, 4, 4, 2)),
        QTensor("axes", (2,), "int32", data=np.array([1, 2], np.int32)),
        _t("mean", (1, 2)),
        _t("fc/w", (3, 2), z8((3, 2), np.int8)), _t("fc/b", (3,), z8(3, np.int32), "int32"),
        _t("logits", (1, 3)), _t("probs", (1, 3)),
    )
    ops = (
        QOp("DEPTHWISE_CONV_2D", (0, 1, 2), (3,), ConvOptions("SAME", (1, 1), "RELU")),
        QOp("CONV_2D", (3, 4, 5), (6,), ConvOptions("SAME", (1, 1))),
        QOp("ADD", (3, 6), (7,), AddOptions()),
        QOp("MEAN", (7, 8), (9,), MeanOptions(False)),
        QOp("FULLY_CONNECTED", (9, 10, 11), (12,), FullyConnectedOptions()),
        QOp("SOFTMAX", (12,), (13,), SoftmaxOptions()),
    )
    return QModel("branchy", tensors, ops, (0,), (13,))


def test_branching_graph_with_depthwise_add_and_mean_matches_a_hand_count():
    q = _branchy()
    full = plan_fp32(q, parse_technique("full-fp32"))
    # parameters: dw 72 + 8, pw 16 + 8, fc 24 + 16 = 144 B. Peak at ADD's backward: x 128 (dw dW), dw output 128
    # (pw dW and its ReLU mask), d(add) 128, d(pw out) 128, d(dw out) 128 (it gathers both ADD's and pw's gradient)
    assert full.peak_live_bytes == 144 + 5 * 128
    assert full.arena_bytes >= full.peak_live_bytes
    rows = {r.kind: r for r in full.ops}
    assert rows["MEAN"].kept_act_bytes == 0 and rows["ADD"].kept_act_bytes == 0  # no activation for their backward
    assert rows["ADD"].grad_bytes == 2 * 128  # one input gradient per branch
    assert rows["DEPTHWISE_CONV_2D"].scratch_bytes == 40 and rows["CONV_2D"].scratch_bytes == 8
    # naive: 144 + activations (128·4 + 8 + 16) + activation gradients (16 + 8 + 128·3) + parameter gradients 144
    assert full.naive_bytes == 144 + 536 + 408 + 144

    sparse = plan_fp32(q, parse_technique("sparse-fp32", sparse={"bias_k": 1, "layers": {0: 0.5}}))
    dw = sparse.ops[0]
    assert (dw.channels, dw.out_channels, dw.weights_ram_bytes) == (1, 2, 40)  # one 3×3 channel row, 36 → 40 B
    with pytest.raises(Fp32MemError, match="sparse layer 2: ADD has no weights"):
        plan_fp32(q, parse_technique("sparse-fp32", sparse={"bias_k": 1, "layers": {2: 0.5}}))


@pytest.mark.parametrize(("name", "profile"), [("digits-cnn", "techniques"), ("digits-mlp", "techniques"),
                                             ("aifes-cnn", "aifes_cnn")])
def test_equals_the_fp32_plan_compiler_on_a_quantized_bench_model(name, profile):
    """The planner applied to a bench model's int8 export reproduces bench.plan.fp32's arena for every technique: the
    same memory design, so what it says about person_detect is what the engine would plan (aifes-cnn: through a
    MAX_POOL_2D, whose input is kept for its backward)."""
    prof = load_profile(profile)
    ds = load_task(prof.task, 1)
    model = build_model(name, ds, 1, CACHE_DIR)
    q = quantize_model(model, ds.decode(ds.x_train[:32]))
    weighted = [k for k, op in enumerate(q.ops) if op.kind in ("CONV_2D", "FULLY_CONNECTED")]
    op_of = dict(zip(model.param_layers(), weighted, strict=True))
    for tech_name in prof.techniques:
        if tech_name.startswith("sparse-") and name == "digits-mlp":
            continue
        tech = prof.technique(tech_name)
        planned = compile_plan(model, tech)
        mem = plan_fp32(q, dataclasses.replace(tech, layers=tuple((op_of[i], r) for i, r in tech.layers)))
        assert mem.arena_bytes == planned.arena_bytes, tech_name
        assert mem.composition() == planned.composition(), tech_name


@pytest.mark.shared
def test_person_detect_full_fp32_does_not_fit_and_sparse_does(shared_models: Path):
    q = load_tflite(shared_models / "person_detect.tflite")
    full = plan_fp32(q, parse_technique("full-fp32"))
    sparse = plan_fp32(q, parse_technique("sparse-fp32", sparse=PERSON_SPARSE))
    assert full.arena_bytes > 5 * NUCLEO_SRAM  # every weight in fp32 alone is 842,824 B
    assert full.composition()["weights"] == 842_824
    assert sparse.arena_bytes + STATIC_AND_STACK_ALLOWANCE <= NUCLEO_SRAM
    assert full.arena_bytes / sparse.arena_bytes > 5
    assert full.naive_bytes > full.arena_bytes > sparse.arena_bytes
    # the sparse scheme's peak is the fp32 forward pass (48×48×8 and 48×48×16 activations) plus the trained rows
    assert sparse.composition()["activations"] == 4 * 48 * 48 * (8 + 16)
    assert [r.channels for r in sparse.ops if r.train_w] == [16, 32, 32]


@pytest.mark.shared
def test_cli_plans_a_tflite_graph_with_required_vs_available(shared_models: Path):
    path = str(shared_models / "person_detect.tflite")
    sram = load_catalogue()["nucleo-f746zg"].sram_bytes
    res = CliRunner().invoke(main, ["plan", path, "--technique", "full-fp32", "--board", "nucleo-f746zg"],
                             terminal_width=200)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "does not fit" in text.lower()
    required = plan_fp32(load_tflite(path), parse_technique("full-fp32")).arena_bytes
    assert f"{sram:,} B" in text and (f"{required:,} B" in text)
    assert "naive" in text and "planned" in text

    spec = "bias_k = 7, layers = { 24 = 0.125, 26 = 0.125 }"  # 274,952 B: fits beside any image up to ~35 KB
    res = CliRunner().invoke(main, ["plan", path, "--technique", "sparse-fp32", "--sparse", spec], terminal_width=200)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "fits nucleo-f746zg" in text and "does not fit nucleo-f746zg" not in text.lower()
    assert "DOES NOT FIT nrf52840-dk (SRAM)" in text  # the every-board table: 256 KB is too little for this scheme
    assert "full-fp32 / sparse-fp32" in text


def test_cli_names_a_missing_tflite_before_a_budget_search(tmp_path: Path):
    res = CliRunner().invoke(main, ["plan", str(tmp_path / "m.tflite"), "--budget", "64KB"])
    assert "m.tflite: no such file" in str(res.exception)  # `bench` prints it and exits 2 (test_contrib_int8.py)
    both = CliRunner().invoke(main, ["plan", str(tmp_path / "m.tflite"), "--budget", "64KB", "--technique",
                                     "full-int8"])
    assert both.exit_code == 2 and "takes --technique" in both.output


def test_runner_records_an_unplannable_fp32_technique_as_an_error(tmp_path: Path):
    """The plan stage's Fp32MemError on an imported graph is that run's record, not a crash of the bench."""
    from bench.app.runner import Bench, Int8Prepared, Prepared
    from bench.config.boards import RackEntry
    from bench.config.profile import Profile

    q = _branchy()
    x = np.zeros((1, 4, 4, 2), np.int8)
    y = np.zeros(1, np.int64)
    profile = Profile(name="branchy", task="digits-drift", model="branchy.tflite", techniques=["sparse-fp32"],
                      sparse={"bias_k": 1, "layers": {2: 0.5}})
    prepared = Prepared(profile=profile, model=None, dataset=b"", x_train=x, y_train=y,
                        int8=Int8Prepared(q, tmp_path / "branchy.tflite", b"", x, y))
    bench = Bench(tmp_path)
    record = bench.run(prepared, RackEntry(board="nucleo-f746zg"), profile.parsed_techniques()[0])
    assert record.status == "error"
    assert record.error.startswith("Fp32MemError: ") and "ADD has no weights" in record.error


def test_runner_records_an_unplannable_int8_technique_as_an_error(tmp_path: Path):
    """The int8 planner's refusal is that run's record too, naming the op (this graph's SOFTMAX is not the int8
    engine's)."""
    from bench.app.runner import Bench, Int8Prepared, Prepared
    from bench.config.boards import RackEntry
    from bench.config.profile import Profile

    q = _branchy()
    x = np.zeros((1, 4, 4, 2), np.int8)
    y = np.zeros(1, np.int64)
    profile = Profile(name="branchy", task="digits-drift", model="branchy.tflite", techniques=["full-int8"])
    prepared = Prepared(profile=profile, model=None, dataset=b"", x_train=x, y_train=y,
                        int8=Int8Prepared(q, tmp_path / "branchy.tflite", b"", x, y))
    record = Bench(tmp_path).run(prepared, RackEntry(board="nucleo-f746zg"), profile.parsed_techniques()[0])
    assert record.status == "error"
    assert record.error.startswith("QPlanError: operator 5: SOFTMAX: "), record.error


def test_cli_gives_a_tflite_plans_fit_on_every_board(shared_models: Path):
    """`bench plan MODEL.tflite`: besides the chosen board, one fit row per board of the catalogue, in the text and the
    JSON, naming what does not fit (full-fp32 of person_detect: SRAM on every board)."""
    path = str(shared_models / "person_detect.tflite")
    boards = list(load_catalogue())
    res = CliRunner().invoke(main, ["plan", path, "--technique", "full-fp32", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)["boards"]
    assert [r["board"] for r in rows] == boards and not any(r["fits_sram"] for r in rows)
    res = CliRunner().invoke(main, ["plan", path, "--technique", "sparse-int8", "--profile", "person_detect"],
                             terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "on every board" in res.output and all(f"fits {b}" in res.output for b in boards)
