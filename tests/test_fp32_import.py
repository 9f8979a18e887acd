"""fp32 training of imported int8 graphs (`bench.tflite.fp32`): the dequantised chain, its float64 reference for the
new layer kinds (depthwise, global average pool, k×kw kernels, fused ReLU/ReLU6), and the runs on the twins through
`bench run` — the fp32 side of the fp32-vs-int8 comparison on a real backbone (MLPerf Tiny's KWS DS-CNN)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from bench.config.boards import load_catalogue
from bench.model import nn
from bench.numerics import fp32 as ref
from bench.numerics import int8ref
from bench.tflite.fp32 import Fp32ImportError, to_fp32
from bench.tflite.io import load_tflite


def _load(shared_models: Path, name: str):
    return load_tflite(shared_models / f"{name}.tflite")


def test_mlperf_backbones_dequantise_one_layer_per_op(shared_models: Path) -> None:
    """KWS, VWW and person_detect become chains within the device's 32 layers: RESHAPE and the final SOFTMAX drop,
    fused activations stay on their layer, KWS keeps its 10×4 kernel, person_detect's first depthwise conv (one input
    channel, depth multiplier 8) is a CONV_2D with in_c 1."""
    kws = to_fp32(_load(shared_models, "kws_ref_model"))
    assert [la.op for la in kws.model.layers] == ["conv2d"] + ["dwconv2d", "conv2d"] * 4 + ["gap", "dense"]
    first = kws.model.layers[0]
    assert (first.kernel, first.kw, first.stride, first.act) == (10, 4, 2, "relu")
    assert kws.op_layer[11] == 10 and 10 not in kws.op_layer and kws.model.n_classes == 12
    pd = to_fp32(_load(shared_models, "person_detect"))
    assert len(pd.model.layers) == 29 and pd.model.layers[0].op == "conv2d"
    w0 = pd.model.layers[0].weight
    assert w0 is not None and w0.shape == (8, 3, 3, 1)
    assert {la.act for la in pd.model.layers[:27]} == {"relu6"} and pd.model.layers[-1].act == "none"
    vww = to_fp32(_load(shared_models, "vww_96_int8"))
    assert len(vww.model.layers) == 29 and vww.model.layers[27].op == "gap"


def test_dequantised_first_conv_is_within_half_an_lsb_of_the_int8_graph(shared_models: Path) -> None:
    """The 10×4 stride-2 SAME conv of KWS, dequantised, gives the int8 graph's own output to about half a code (the
    int8 graph rounds once more in its fixed-point multiplier) wherever the int8 output is not clamped (fp32 has no
    clamp at the int8 range): kernel layout and padding are TFLite's, where a wrong one is off by many codes."""
    q = _load(shared_models, "kws_ref_model")
    imp = to_fp32(q)
    scale, zp = int8ref.input_qparams(q)
    codes = np.random.default_rng(3).normal(0, 20, size=(49, 10, 1)).clip(-128, 127).astype(np.int8)
    fp = ref.forward(imp.model, (codes.astype(np.float64) - zp) * scale)[0].reshape(-1)
    out = q.tensors[q.ops[0].outputs[0]]
    assert out.scale is not None and out.zero_point is not None
    real = (np.asarray(int8ref.forward(q, codes[None])[0], np.float64).reshape(-1) - out.zero_point[0]) * out.scale[0]
    inside = real < out.scale[0] * (126 - out.zero_point[0])
    assert inside.mean() > 0.9
    assert np.abs(fp[inside] - real[inside]).max() <= 0.55 * out.scale[0]


def test_dequantised_person_detect_agrees_with_the_int8_graph(shared_models: Path) -> None:
    q = _load(shared_models, "person_detect")
    imp = to_fp32(q)
    scale, zp = int8ref.input_qparams(q)
    codes = np.random.default_rng(0).integers(-128, 128, size=(4, 96, 96, 1)).astype(np.int8)
    logits = ref.logits(imp.model, (codes.astype(np.float64) - zp) * scale)
    out = q.tensors[q.ops[-1].inputs[0]]
    assert out.scale is not None and out.zero_point is not None
    real = np.stack([(np.asarray(int8ref.forward(q, c[None])[-2], np.float64).reshape(-1) - out.zero_point[0])
                     * out.scale[0] for c in codes])
    assert (logits.argmax(1) == real.argmax(1)).all() and np.abs(logits - real).max() < 0.1


@pytest.mark.parametrize("name", ["kws_ref_model", "person_detect", "vww_96_int8"])
def test_device_plan_of_the_chain_equals_the_analytic_plan_of_the_graph(shared_models: Path, name: str) -> None:
    """Two planners, one memory design: `bench.plan.fp32` on the dequantised chain (what the device loads) and
    `bench.plan.fp32mem` on the graph give the same arena and composition for every scheme, so a fused activation's
    output dies once its mask is applied (the input gradient may take its bytes)."""
    from bench.config.profile import SparseSpec, parse_technique
    from bench.plan.fp32 import compile_plan
    from bench.plan.fp32mem import plan_fp32
    from bench.tflite.fp32 import layer_technique_map

    q = _load(shared_models, name)
    imp = to_fp32(q)
    weighted = [i for i, op in enumerate(q.ops) if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    sparse = SparseSpec(bias_k=4, layers={weighted[-3]: 0.25, weighted[-2]: 0.5, weighted[-1]: 1.0})
    for scheme in ("full", "last", "bias", "sparse"):
        tech = parse_technique(f"{scheme}-fp32", 2, sparse)
        mem = plan_fp32(q, tech)
        chain = dataclasses.replace(tech, layers=layer_technique_map(imp, tech.layers)) if scheme == "sparse" else tech
        plan = compile_plan(imp.model, chain)
        assert (plan.arena_bytes, plan.composition()) == (mem.arena_bytes, mem.composition()), scheme


def test_graphs_the_fp32_engine_cannot_train_are_refused_naming_every_op(shared_models: Path) -> None:
    from tests.test_residual_backward import residual_graph

    with pytest.raises(Fp32ImportError, match="640 outputs"):
        to_fp32(_load(shared_models, "ad01_int8"))
    q = residual_graph()  # its ADD made x + x, which no residual is (a real residual imports: test_residual_fp32)
    b2 = q.ops[2].outputs[0]
    x_plus_x = dataclasses.replace(q, ops=(*q.ops[:3], dataclasses.replace(q.ops[3], inputs=(b2, b2)), *q.ops[4:]))
    with pytest.raises(Fp32ImportError) as e:
        to_fp32(x_plus_x)
    assert "op 3 ADD: reads 2 activation(s)" in str(e.value) and "op 3 ADD: no fp32 kernel" in str(e.value)
    assert "op 4 MEAN" not in str(e.value)  # a MEAN over h, w is the global average pool


def _tiny_model(seed: int) -> nn.Model:
    """conv 5×3 stride 2 SAME (ReLU6) → depthwise 3×3 SAME (ReLU) → global average pool → dense: every new kind."""
    rng = np.random.default_rng(seed)
    layers = (
        nn.Layer("conv2d", (7, 6, 2), (4, 3, 3), rng.normal(0, 0.8, (3, 5, 3, 2)).astype(np.float32),
                 rng.normal(0, 0.5, 3).astype(np.float32), kernel=5, stride=2, padding="same", kernel_w=3,
                 act="relu6"),
        nn.Layer("dwconv2d", (4, 3, 3), (4, 3, 3), rng.normal(0, 0.8, (3, 3, 3)).astype(np.float32),
                 rng.normal(0, 0.2, 3).astype(np.float32), kernel=3, padding="same", act="relu"),
        nn.Layer("gap", (4, 3, 3), (1, 1, 3)),
        nn.Layer("dense", (1, 1, 3), (1, 1, 4), rng.normal(0, 0.8, (4, 3)).astype(np.float32),
                 rng.normal(0, 0.1, 4).astype(np.float32)),
    )
    return nn.Model("tiny", (7, 6, 2), 4, layers)


def _nudged_loss(model: nn.Model, x: np.ndarray, i: int, name: str, j: int, delta: float, label: int = 2) -> float:
    """The reference loss with element j of layer i's weight ("w") or bias ("b") moved by delta."""
    layer = model.layers[i]
    arr = np.array(layer.weight if name == "w" else layer.bias, np.float64)
    arr.flat[j] += delta
    moved = dataclasses.replace(layer, weight=arr) if name == "w" else dataclasses.replace(layer, bias=arr)
    layers = (*model.layers[:i], moved, *model.layers[i + 1:])
    return ref.loss_and_grads(dataclasses.replace(model, layers=layers), x, label)[0]


def test_reference_gradients_of_the_new_kinds_are_derivatives() -> None:
    """Central differences of the float64 loss at every weight and bias of the new layer kinds (depthwise, k×kw conv,
    global average pool, fused ReLU/ReLU6), the input drawn so that both ReLU6 edges occur."""
    model = _tiny_model(5)
    x = np.random.default_rng(1).uniform(-3, 3, (7, 6, 2))
    acts = ref.forward(model, x)
    assert (acts[0] >= 6.0).any() and (acts[0] <= 0.0).any()  # both edges of the ReLU6 occur
    loss, grads = ref.loss_and_grads(model, x, 2)
    h = 1e-5
    for i in model.param_layers():
        for name in ("w", "b"):
            g = grads[(i, name)]
            for j in range(g.size):
                num = (_nudged_loss(model, x, i, name, j, h) - _nudged_loss(model, x, i, name, j, -h)) / (2 * h)
                assert abs(num - g.flat[j]) <= 1e-4 * max(1.0, abs(num)), (i, name, j, num, g.flat[j])
    assert loss > 0


@pytest.mark.twin
def test_kws_fp32_schemes_train_on_the_m7_twin(shared_models: Path, rack_entry, bench_run) -> None:
    """profiles/kws.toml in fp32 through `bench run`: last and sparse (a depthwise conv's channels included) train
    on the F746 twin with streamed gradients within 1e-4 of the float64 reference and measured SRAM within 10% of the
    plan; full fp32 backprop needs about 474 KB and is a does-not-fit record with the figures."""
    entry = rack_entry("nucleo-f746zg")
    sram = load_catalogue()["nucleo-f746zg"].sram_bytes
    for technique in ("last-fp32", "sparse-fp32"):
        run = bench_run(entry, technique, profile="kws", steps=3, eval_samples=4, check_steps=1)
        assert run.status == "ok", run.error
        assert run.fidelity_max_rel_err <= 1e-4
        assert abs(run.summary.sram_peak - run.planned_sram_bytes) <= 0.1 * run.planned_sram_bytes
        if technique == "sparse-fp32":
            trained = set(run.grads.loc[run.grads["param"] == "w", "layer"])
            assert {6, 7, 8, 10} == trained  # ops 6, 7 (depthwise), 8 and the head (op 11, layer 10)
    full = bench_run(entry, "full-fp32", profile="kws", steps=3, eval_samples=4, check_steps=1)
    assert full.status == "does-not-fit" and full.required_sram_bytes > sram
    assert f"needs {full.required_sram_bytes:,} B of SRAM but the board has {sram:,} B" in full.error


@pytest.mark.twin
def test_kws_report_compares_fp32_with_int8_per_scheme(shared_models: Path, tmp_path: Path) -> None:
    """`bench run kws` with last-fp32 and last-int8 on one board: the report's numerics section puts both
    accuracies of the imported backbone side by side."""
    from click.testing import CliRunner

    from bench.app.cli import main

    out = tmp_path / "kws"
    res = CliRunner().invoke(main, ["run", "kws", "--board", "nucleo-f746zg", "--technique", "last-fp32",
                                    "--technique", "last-int8", "--steps", "4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    html = (out / "index.html").read_text()
    section = html[html.index("Numerics: fp32 vs int8"):]
    assert "int8 − fp32 (pt)" in section and ">last<" in section.split("</table>")[0]


def test_autoencoder_dequantises_with_the_reconstruction_loss(shared_models: Path) -> None:
    """MLPerf Tiny's AD autoencoder becomes ten dense layers whose loss is the MSE against the input; its reference
    gradient is the derivative of that loss (central differences at a few weights of the last layer)."""
    imp = to_fp32(_load(shared_models, "ad01_int8"), "reconstruction")
    m = imp.model
    assert m.loss == "reconstruction" and m.n_classes == 640 and [la.op for la in m.layers] == ["dense"] * 10
    x = np.random.default_rng(2).normal(0, 1, 640)
    loss, grads = ref.loss_and_grads(m, x, 0)
    out = ref.forward(m, x)[-1].reshape(-1)
    assert loss == pytest.approx(float(np.mean((out - x) ** 2)))
    h = 1e-4
    for j in (0, 77, 5000):
        num = (_nudged_loss(m, x, 9, "w", j, h, 0) - _nudged_loss(m, x, 9, "w", j, -h, 0)) / (2 * h)
        assert num == pytest.approx(grads[(9, "w")].flat[j], rel=1e-4, abs=1e-9)


def test_reconstruction_plans_keep_the_input_to_the_loss(shared_models: Path) -> None:
    from bench.config.profile import parse_technique
    from bench.plan.fp32 import PLAN_F_RECON, compile_plan

    m = to_fp32(_load(shared_models, "ad01_int8"), "reconstruction").model
    plan = compile_plan(m, parse_technique("bias-fp32", 1))
    a0 = next(b for b in plan.buffers if b.name == "a0")
    assert a0.end >= len(m.layers)  # alive at the loss (time n)
    blob = plan.blob(0)
    assert int.from_bytes(blob[46:48], "little") & PLAN_F_RECON and int.from_bytes(blob[30:32], "little") == 640


@pytest.mark.twin
def test_autoencoder_fine_tunes_in_fp32_on_the_pico_twin(shared_models: Path, rack_entry, bench_run) -> None:
    """profiles/ad.toml in fp32: the dequantised autoencoder's 1.1 MB of fp32 weights fit only the Pico's 2 MB flash;
    there its biases train on the reconstruction loss with gradients within 1e-4 of the float64 reference, and the
    record has no accuracy (a reconstruction has no classes)."""
    import math

    run = bench_run(rack_entry("rpi-pico"), "bias-fp32", profile="ad", steps=2, eval_samples=4, check_steps=1)
    assert run.status == "ok", run.error
    assert run.loss_kind == "reconstruction" and math.isnan(run.accuracy(1))
    assert run.fidelity_max_rel_err <= 1e-4 and run.eval_loss(0) > 0


def test_a_run_whose_loss_leaves_the_finite_numbers_is_diverged_not_ok() -> None:
    """AD's sparse-fp32 at lr 0.01 passes its gradient check and then blows up (inf norms, NaN eval loss): such a
    record is ``diverged`` with a reason, a finite one stays ``ok``, and a run that already failed keeps its status."""
    from bench.app.runner import _check_diverged
    from bench.link.protocol import Eval, Step
    from bench.records.run import RunRecord

    board = load_catalogue()["rpi-pico"]

    def record(losses: list[float], eval_after: float, status: str = "ok") -> RunRecord:
        r = RunRecord(run_id="r", board=board, target_kind="emulated", technique="sparse-fp32", model="m", lr=0.01)
        r.status = status
        r.steps = [Step(i, 0, 0, 0, v, 1, 1, 1, 0, 0, 0) for i, v in enumerate(losses)]
        r.evals = {0: Eval(0, 4, 0, 98.0, 1), 1: Eval(1, 4, 0, eval_after, 1)}
        return r

    fine = record([24.0, 23.5], 90.0)
    _check_diverged(fine)
    assert fine.status == "ok"
    inf_step = record([24.0, float("inf"), float("nan")], float("nan"))
    _check_diverged(inf_step)
    assert inf_step.status == "diverged" and "loss inf at step 1" in inf_step.error and "lr 0.01" in inf_step.error
    late = record([24.0, 30.0], float("nan"))
    _check_diverged(late)
    assert late.status == "diverged" and "eval loss not finite" in late.error
    hung = record([float("nan")], float("nan"), status="hang")
    _check_diverged(hung)
    assert hung.status == "hang"
