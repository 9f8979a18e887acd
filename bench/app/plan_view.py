"""``bench plan``: print a training plan (per layer, arena buffers, totals, fit), or search a sparse scheme for a
memory budget by contribution analysis (MCUNetV3). fp32 plans only.

MODEL may also be an imported graph (a ``.tflite`` path): then the plan is `bench.plan.fp32mem`'s analytic figure of
what fp32 training of that graph would need on the board (per operator, totals, fit, the naive figure, and the ratio of
full backprop to the technique), since the fp32 engine itself trains `bench.model.nn` models only."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from bench.app.runner import CACHE_DIR, load_profile
from bench.config.boards import Board, ConfigError, load_catalogue
from bench.config.profile import SparseSpec, Technique, TechniqueError, parse_technique
from bench.image.firmware import BLOB_ALIGN, IMAGES_DIR, Firmware, build_id_for, read_manifest
from bench.model.nn import Model
from bench.plan.blob import dataset_blob
from bench.plan.fp32 import Plan, compile_plan
from bench.plan.fp32mem import Fp32MemError, Fp32Memory, fp32_weight_bytes, op_geometry, plan_fp32
from bench.plan.search import Contributions, Scheme, analyse, parse_bytes, search

if TYPE_CHECKING:
    from bench.model.qgraph import QModel

out = Console(width=150)


def built_firmware(board: Board) -> tuple[Firmware | None, str]:
    """The board's twin image if one was built (no build here), with a note on its state."""
    manifest = IMAGES_DIR / f"{board.name}-twin" / "manifest.json"
    if not manifest.exists():
        return None, "twin image not built (`bench build`)"
    fw = read_manifest(manifest)
    stale = fw.build_id != build_id_for(board, "twin")
    return fw, f"twin image {fw.build_id}" + (", out of date: rebuild with `bench build`" if stale else "")


def _shape(s: tuple[int, int, int]) -> str:
    return "×".join(map(str, s))


def _kept(plan: Plan, i: int) -> str:
    lp, layer = plan.layers[i], plan.model.layers[i]
    fused = layer.act != "none" and i >= plan.first_bwd
    if lp.train_w:
        mask = f" + {layer.act} output mask" if fused else ""
        return f"input {_shape(layer.in_shape)}{mask} ({lp.kept_bytes:,} B)"
    if fused:
        return f"{layer.act} output mask ({lp.kept_bytes:,} B)"
    if layer.op == "relu" and i >= plan.first_bwd:
        return f"output mask ({lp.kept_bytes:,} B)"
    if layer.op == "maxpool2d" and lp.kept_bytes:
        return f"input {_shape(layer.in_shape)}, for the window maxima ({lp.kept_bytes:,} B)"
    return "–"


def _trained(plan: Plan, i: int) -> str:
    lp, layer = plan.layers[i], plan.model.layers[i]
    parts = []
    if lp.train_w:
        assert layer.weight is not None
        n = len(lp.channels) if lp.channels else layer.weight.shape[0]
        parts.append(f"W {n}/{layer.weight.shape[0]} ch" if lp.channels else "W")
    if lp.train_b:
        parts.append("b")
    return " + ".join(parts) or ("frozen" if layer.has_params else "–")


def plan_tables(plan: Plan) -> tuple[Table, Table]:
    layers = Table(title=f"Plan {plan.model.name} / {plan.technique.name}: backward from layer {plan.first_bwd} "
                         f"(of {len(plan.layers)})")
    for col in ("layer", "op", "in → out", "trains", "kept for backward", "trainable in SRAM", "gradient buffers"):
        layers.add_column(col, justify="left" if col in ("op", "trains", "kept for backward") else "right")
    for row, lp in zip(plan.layer_memory(), plan.layers, strict=True):
        i, layer = lp.index, plan.model.layers[lp.index]
        grad = row["grad_bytes"] + row["scratch_bytes"]
        what = "skip gradient" if layer.op == "add" else "scratch"
        grad_note = f"{grad:,} B" + (f" ({what} {row['scratch_bytes']:,})" if row["scratch_bytes"] else "")
        op = f"add (+ input of {layer.skip})" if layer.op == "add" else layer.op + (" (merge)" if lp.merge else "")
        layers.add_row(str(i), op, f"{_shape(layer.in_shape)} → {_shape(layer.out_shape)}", _trained(plan, i),
                       _kept(plan, i), f"{row['weights_ram_bytes']:,} B", grad_note if grad else "–")
    n = len(plan.layers)
    buffers = Table(title=f"Arena buffers: {plan.arena_bytes:,} B planned")
    for col in ("buffer", "bytes", "offset", "live"):
        buffers.add_column(col, justify="right" if col != "buffer" else "left")
    for b in plan.buffer_table():
        buffers.add_row(str(b["name"]), f"{b['bytes']:,}", f"{b['offset']:,}", str(b["live"]))
    buffers.caption = (f"live: time -1 = before the forward pass, t = forward of layer t, {n} = loss, {2 * n} - i = "
                       f"backward of layer i, {2 * n + 1} = after the step.\na* activations, d* gradients, w*/b* "
                       "trainable parameters (compact for sparse weights), scratch* conv weight gradient")
    return layers, buffers


def totals(plan: Plan, board: Board, fw: Firmware | None, note: str, dataset_bytes: int) -> list[str]:
    plan_len = len(plan.blob(0))
    fit = Fit(board, fw, note, plan.arena_bytes, _padded(plan_len) + dataset_bytes)
    lines = [f"planned arena: {plan.arena_bytes:,} B  (by kind at the peak: " +
             ", ".join(f"{k} {v:,}" for k, v in plan.composition().items()) + ")"]
    if fw is None:
        lines.append(f"static and stack: unknown ({note}); arena alone vs board SRAM: {plan.arena_bytes:,} / "
                     f"{board.sram_bytes:,} B")
    else:
        lines.append(f"SRAM: static {fw.static_bytes:,} B ({note}) + arena {plan.arena_bytes:,} B + stack reserve "
                     f"{fw.stack_bytes:,} B = required {fit.required_sram_bytes:,} B of {board.sram_bytes:,} B "
                     f"available")
    lines.append(f"flash: firmware region {board.memory.plan_offset:,} B + plan {plan_len:,} B (padded to "
                 f"{BLOB_ALIGN:,}) + dataset {dataset_bytes:,} B = {fit.flash_end_bytes:,} B of "
                 f"{board.flash_bytes:,} B")
    lines.append(fit.verdict())
    return lines


def _padded(blob_len: int) -> int:
    """A plan blob's flash footprint: the dataset blob starts at the next BLOB_ALIGN boundary."""
    return (blob_len + BLOB_ALIGN - 1) // BLOB_ALIGN * BLOB_ALIGN


def _sparse_option(text: str | None) -> SparseSpec | None:
    """The [sparse] table inline ('bias_k = 2, layers = { 0 = 0.25 }'), or a TOML file with a [sparse] table."""
    if text is None:
        return None
    try:
        if text.endswith(".toml") and Path(text).is_file():
            data = tomllib.loads(Path(text).read_text()).get("sparse")
            if data is None:
                raise ValueError(f"{text} has no [sparse] table")
        else:
            data = tomllib.loads(f"sparse = {{ {text} }}")["sparse"]
        return SparseSpec.model_validate({k: ({int(i): r for i, r in v.items()} if k == "layers" else v)
                                          for k, v in data.items()})
    except (tomllib.TOMLDecodeError, ValueError) as e:
        raise click.BadParameter(f"{e}", param_hint="--sparse") from None


def _score_name(loss: str) -> str:
    """What the trials and expected gains are measured in (JSON): held-out accuracy, or minus the held-out MSE."""
    return "minus held-out reconstruction MSE" if loss == "reconstruction" else "held-out accuracy"


def _score(value: float, loss: str) -> str:
    if value != value:
        return "refused by the planner"
    return f"{-value:.3f}" if loss == "reconstruction" else f"{value:.1%}"


def _gain(delta: float, loss: str) -> str:
    """A score difference: accuracy points, or the change of a reconstruction's MSE (negative: lower error)."""
    if delta != delta:
        return "–"
    return f"{-delta:+.3f} MSE" if loss == "reconstruction" else f"{delta * 100:+.1f} pt"


def print_contributions(c: Contributions, unit: str = "layer", how: str = "SGD") -> None:
    recon = c.loss == "reconstruction"
    score = "held-out MSE" if recon else "held-out acc"
    t = Table(title=f"Contribution analysis, {c.model}: {score} of host fine-tuning trials")
    for col in ("trial", score, "ΔMSE" if recon else "Δacc"):
        t.add_column(col, justify="right" if col != "trial" else "left")
    t.add_row(f"{'last op' if recon else 'classifier'} only ({unit} {c.classifier})", _score(c.base_acc, c.loss), "–")
    for k, acc in c.bias_acc.items():
        if k > 1:
            t.add_row(f"biases of last {k} {unit}s (+ {unit} {c.classifier})", _score(acc, c.loss),
                      _gain(c.delta_bias(k), c.loss))
    for (i, r), acc in c.weight_acc.items():
        t.add_row(f"+ {unit} {i} weights at {r:g} (all biases)", _score(acc, c.loss),
                  _gain(c.delta_weight(i, r), c.loss))
    t.caption = (f"{c.steps} batch-1 {how} steps at lr {c.lr:g} on {c.n_train} samples of the device-train split, "
                 f"scored on {c.n_holdout} held-out ones (not the eval split); mean of {c.repeats} sample orders")
    out.print(t)


def print_schemes(schemes: list[Scheme], budget: int, what: str, loss: str = "cross-entropy") -> None:
    if not schemes:
        out.print(f"no sparse scheme fits {budget:,} B of {what}")
        return
    best = schemes[0]
    base = "the last op alone" if loss == "reconstruction" else "classifier-only"
    out.print(f"\nbest scheme within {budget:,} B of {what}: {best.memory:,} B, expected "
              f"{_gain(best.gain, loss)} over {base} (contributions assumed additive)\n")
    out.print(f"techniques = [\"sparse-{best.numerics}\"]\n" + best.toml(), highlight=False, markup=False)
    t = Table(title="Runner-up schemes")
    unit = "op" if best.numerics == "int8" else "layer"
    gain = "expected ΔMSE" if loss == "reconstruction" else "expected gain"
    for col in ("rank", "bias_k", f"weights ({unit}: ratio)", "memory", gain):
        t.add_column(col, justify="right")
    for n, s in enumerate(schemes, 1):
        w = ", ".join(f"{i}: {r:g}" for i, r in (*s.layers, (s.classifier, 1.0)))
        t.add_row(str(n), str(s.bias_k), w, f"{s.memory:,} B", _gain(s.gain, loss))
    out.print(t)


def show_plan(model_name: str, technique: str | None, board_name: str, task: str, seed: int,
             profile_spec: str | None, last_k: int | None, sparse_text: str | None, budget: str | None,
             steps: int | None, lr: float | None, repeats: int | None, budget_of: str, as_json: bool = False,
             depth: int = 6) -> None:
    """`bench plan` (bench.app.cli_plan): the plan of a technique, or the sparse scheme search of --budget;
    ``as_json``: the same figures as one JSON object on stdout (the search's progress goes to stderr)."""
    from bench.model.tasks import load_task
    from bench.model.zoo import model_names
    from bench.numerics.pretrain import build_model

    catalogue = load_catalogue()
    if board_name not in catalogue:
        raise ConfigError(f"unknown board '{board_name}'; known: {', '.join(catalogue)}")
    board = catalogue[board_name]
    if model_name.endswith(".tflite"):
        if (technique is None) == (budget is None):
            raise click.UsageError("a .tflite MODEL takes --technique (its int8 plan or fp32 training memory) or "
                                   "--budget (search its int8 sparse scheme on --task, or on --profile's task)")
        if budget is not None:
            _tflite_budget(Path(model_name), board, profile_spec, task, seed, budget, steps, lr, repeats, depth,
                           budget_of, as_json)
        else:
            assert technique is not None
            _tflite_plan(Path(model_name), technique, board, profile_spec, last_k, sparse_text, as_json)
        return
    if model_name not in model_names():
        raise ConfigError(f"unknown model '{model_name}'; known: {', '.join(model_names())}")
    if (technique is None) == (budget is None):
        raise click.UsageError("give either --technique (print a plan) or --budget (search a sparse scheme)")
    ds = load_task(task, seed)
    model = build_model(model_name, ds, seed, CACHE_DIR)
    fw, note = built_firmware(board)
    if budget is not None:
        limit = _budget_bytes(budget)
        with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():  # tables aside
            found = _budget(model, ds, board, fw if budget_of == "sram" else None,
                            note if budget_of == "sram" else "by request", limit, seed, steps or 300, lr or 0.02,
                            repeats or 3)
        if as_json:
            click.echo(json.dumps(found, indent=1))
        return
    assert technique is not None
    profile = load_profile(profile_spec) if profile_spec else None
    k = last_k if last_k is not None else (profile.last_k if profile else 1)
    sparse = _sparse_option(sparse_text) or (profile.sparse if profile else None)
    try:
        tech = parse_technique(technique, k, sparse)
        plan = compile_plan(model, tech)
    except ValueError as e:
        raise TechniqueError(str(e)) from None
    data = dataset_blob(ds.x_train, ds.y_train, ds.x_eval, ds.y_eval, ds.n_classes, ds.scale, ds.offset)
    if as_json:
        fit = Fit(board, fw, note, plan.arena_bytes, _padded(len(plan.blob(0))) + len(data))
        click.echo(json.dumps({"model": model_name, "technique": tech.name, **fit.row(),
                               "composition": plan.composition(), "layers": plan.layer_memory(),
                               "channels": {str(i): list(ch) for i, ch in plan.channels.items()}}, indent=1))
        return
    layers, buffers = plan_tables(plan)
    out.print(layers)
    if plan.channels:
        for i, ch in plan.channels.items():
            out.print(f"layer {i}: trained output channels (largest weight L2 norm) {list(ch)}")
    out.print(buffers)
    for line in totals(plan, board, fw, note, len(data)):
        out.print(line)


@dataclass(frozen=True)
class Fit:
    """A planned arena and flash blobs on a board: what the text and the JSON of `bench plan` both report."""

    board: Board
    fw: Firmware | None
    note: str
    arena_bytes: int
    flash_blobs: int

    @property
    def required_sram_bytes(self) -> int:
        """Static + arena + stack reserve (the arena alone when the image is not built)."""
        return self.arena_bytes + (self.fw.static_bytes + self.fw.stack_bytes if self.fw is not None else 0)

    @property
    def flash_end_bytes(self) -> int:
        return self.board.memory.plan_offset + self.flash_blobs

    @property
    def fits_sram(self) -> bool:
        return self.required_sram_bytes <= self.board.sram_bytes

    @property
    def fits_flash(self) -> bool:
        return self.flash_end_bytes <= self.board.flash_bytes

    def verdict(self) -> str:
        """``fits BOARD``, or ``DOES NOT FIT BOARD (SRAM and flash)`` naming what does not."""
        why = [w for w, ok in (("SRAM", self.fits_sram), ("flash", self.fits_flash)) if not ok]
        return f"fits {self.board.name}" if not why else f"DOES NOT FIT {self.board.name} ({' and '.join(why)})"

    def row(self) -> dict[str, object]:
        """As `bench plan --json` prints it (all planned)."""
        fw = self.fw
        return {"how": "planned", "board": self.board.name, "arena_bytes": self.arena_bytes,
                "static_bytes": fw.static_bytes if fw else None, "stack_reserve_bytes": fw.stack_bytes if fw else None,
                "firmware": self.note, "required_sram_bytes": self.required_sram_bytes,
                "board_sram_bytes": self.board.sram_bytes, "flash_end_bytes": self.flash_end_bytes,
                "board_flash_bytes": self.board.flash_bytes, "fits_sram": self.fits_sram,
                "fits_flash": self.fits_flash}


def board_fits(arena_bytes: int, flash_blobs: int) -> list[Fit]:
    """The same plan on every board of the catalogue (each with its own built twin image, if any)."""
    return [Fit(b, *built_firmware(b), arena_bytes, flash_blobs) for b in load_catalogue().values()]


def fit_table(fits: list[Fit], title: str) -> Table:
    """One row per board: required SRAM and flash against the board's, and which one fails (planned)."""
    t = Table(title=title)
    for col in ("board", "required SRAM", "board SRAM", "flash end", "board flash", "verdict"):
        t.add_column(col, justify="right" if col != "verdict" and col != "board" else "left")
    for f in fits:
        sram = f"{f.required_sram_bytes:,} B" + ("" if f.fw is not None else " (arena only: no image)")
        t.add_row(f.board.name, sram, f"{f.board.sram_bytes:,} B", f"{f.flash_end_bytes:,} B",
                  f"{f.board.flash_bytes:,} B", f.verdict())
    return t


def _budget(model: Model, ds, board: Board, fw: Firmware | None, note: str, budget: int, seed: int, steps: int,
            lr: float, repeats: int) -> dict[str, object]:
    """Print the contribution analysis and the schemes within ``budget``; return them for `bench plan --json`."""
    contrib = analyse(model, ds, seed=seed, steps=steps, lr=lr, repeats=repeats)
    print_contributions(contrib)
    out.print(f"trials: {len(contrib.weight_acc) + len(contrib.bias_acc)} × {repeats} fine-tuning runs of {steps} "
              f"steps took {contrib.seconds:.1f} s on the host")
    what, memory = _budget_memory(board, fw, note)
    schemes = search(model, contrib, budget, None if memory is None else (lambda plan: memory(plan.arena_bytes)))
    print_schemes(schemes, budget, what)
    return {"how": "planned (host fine-tuning trials)", "board": board.name, "budget_bytes": budget,
            "budget_of": what, "trial_seconds": round(contrib.seconds, 2), "schemes": _schemes_json(schemes)}


def _budget_memory(board: Board, fw: Firmware | None, note: str) -> tuple[str, Callable[[int], int] | None]:
    """What a budget is compared with, and the bytes it counts for a planned arena: the required SRAM with the
    board's built image, or (``fw`` None) the planned arena itself, the search's default."""
    if fw is None:
        return f"planned arena ({note}: static and stack not counted)", None
    return (f"required SRAM on {board.name} (static {fw.static_bytes:,} + arena + stack {fw.stack_bytes:,}; {note})",
            lambda arena: fw.static_bytes + arena + fw.stack_bytes)


def _schemes_json(schemes: list[Scheme]) -> list[dict[str, object]]:
    return [{"bias_k": sc.bias_k, "layers": [list(x) for x in sc.layers], "classifier": sc.classifier,
             "memory_bytes": sc.memory, "expected_gain": sc.gain} for sc in schemes]



# ---- imported graphs (.tflite): fp32 training memory, planned ----------------------------------------------------


def _profile_settings(spec: str | None) -> tuple[int | None, SparseSpec | None]:
    """last_k and [sparse] of a profile, read as plain TOML (its layers name the graph's ops, not its bench model)."""
    data, path = _profile_table(spec)
    try:
        sparse = SparseSpec.model_validate(data["sparse"]) if "sparse" in data else None
    except ValueError as e:
        raise ConfigError(f"{path}: key 'sparse': {e}") from None
    return data.get("last_k"), sparse


def _profile_table(spec: str | None) -> tuple[dict, Path | None]:
    """A profile as plain TOML, and its path (nothing when no profile is given)."""
    if spec is None:
        return {}, None
    from bench.config.boards import read_toml
    from bench.config.profile import PROFILES_DIR

    path = Path(spec)
    if not path.exists() and not path.suffix:
        path = PROFILES_DIR / f"{spec}.toml"
    return read_toml(path), path


def _kib(n: int) -> str:
    return f"{n:,} B ({n / 1024:,.1f} KB)"


def fp32mem_table(mem: Fp32Memory, model: QModel, label: str) -> Table:
    t = Table(title=f"fp32 training memory of {label} / {mem.technique.name} (planned): backward "
                    f"from op {mem.first_bwd} (of {len(mem.ops)})")
    for col in ("op", "kind", "in → out", "trains", "kept for backward", "trainable in SRAM", "gradient buffers"):
        t.add_column(col, justify="left" if col in ("kind", "trains", "kept for backward") else "right")
    for r in mem.ops:
        trains = []
        if r.train_w:
            trains.append("W" if r.channels == r.out_channels else f"W {r.channels}/{r.out_channels} ch")
        if r.train_b:
            trains.append("b")
        geo = op_geometry(model.ops[r.index])
        grad = r.grad_bytes + r.scratch_bytes
        grad_note = f"{grad:,} B" + (f" (scratch {r.scratch_bytes:,})" if r.scratch_bytes else "")
        t.add_row(str(r.index), r.kind + (f" {geo}" if geo else ""),
                  f"{'×'.join(map(str, r.in_shape[1:]))} → {'×'.join(map(str, r.out_shape[1:]))}",
                  " + ".join(trains) or ("frozen" if r.out_channels else "–"),
                  f"{r.kept_act_bytes:,} B" if r.kept_act_bytes else "–",
                  f"{r.weights_ram_bytes:,} B" if r.weights_ram_bytes else "–", grad_note if grad else "–")
    t.caption = ("kept for backward: the op's input (weights train) and its output (fused RELU/RELU6 mask); gradient "
                 "buffers: the input gradient it writes, and a conv's one-channel weight-gradient row")
    return t


def fp32mem_totals(mem: Fp32Memory, model: QModel, board: Board, fw: Firmware | None, note: str,
                   full: Fp32Memory | None) -> list[str]:
    """Totals, the fit verdict with required vs available SRAM, the naive figure and the ratio to full backprop."""
    lines = [f"planned arena: {_kib(mem.arena_bytes)}  (by kind at the peak: " +
             ", ".join(f"{k} {v:,}" for k, v in mem.composition().items()) + ")"]
    flash_w = fp32_weight_bytes(model)
    fit = Fit(board, fw, note, mem.arena_bytes, flash_w)
    required = fit.required_sram_bytes
    if fw is None:
        lines.append(f"static and stack: unknown ({note}); arena alone vs board SRAM")
    else:
        lines.append(f"SRAM: static {fw.static_bytes:,} B ({note}) + arena {mem.arena_bytes:,} B + stack reserve "
                     f"{fw.stack_bytes:,} B = required {required:,} B")
    lines.append(f"flash: firmware region {board.memory.plan_offset:,} B + every weight and bias as fp32 "
                 f"{flash_w:,} B = {fit.flash_end_bytes:,} B of {board.flash_bytes:,} B (plan header and "
                 f"dataset not counted)")
    what = " and ".join([w for w, ok in (("SRAM", fit.fits_sram), ("flash", fit.fits_flash)) if not ok])
    if not what:
        lines.append(f"fits {board.name}: required SRAM {required:,} B of {board.sram_bytes:,} B available")
    else:
        lines.append(f"DOES NOT FIT {board.name} ({what}): {mem.technique.name} does not fit: required SRAM "
                     f"{_kib(required)} vs {_kib(board.sram_bytes)} available")
    parts = ", ".join(f"{k} {v:,}" for k, v in mem.naive_parts.items())
    lines.append(f"naive (every activation kept, every gradient buffer coexisting, no sharing): "
                 f"{_kib(mem.naive_bytes)} = {parts}; {mem.naive_bytes / mem.arena_bytes:.1f}× the planned arena")
    if full is not None and full is not mem:
        lines.append(f"full-fp32 / {mem.technique.name}: planned arena {full.arena_bytes:,} / {mem.arena_bytes:,} B = "
                     f"{full.arena_bytes / mem.arena_bytes:.1f}×; naive full-fp32 {full.naive_bytes:,} B / planned "
                     f"{mem.technique.name} = {full.naive_bytes / mem.arena_bytes:.1f}× (MCUNetV3 reports 20–21× for "
                     "sparse update with its engine vs full update)")
    return lines


def _tflite_plan(path: Path, technique: str, board: Board, profile_spec: str | None, last_k: int | None,
                 sparse_text: str | None, as_json: bool = False) -> None:
    from bench.tflite.io import load_tflite

    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    model = dataclasses.replace(load_tflite(path), name=path.stem)
    prof_k, prof_sparse = _profile_settings(profile_spec)
    k = last_k if last_k is not None else (prof_k or 1)
    sparse = _sparse_option(sparse_text) or prof_sparse
    try:
        tech = parse_technique(technique, k, sparse)
    except ValueError as e:
        raise TechniqueError(str(e)) from None
    if tech.numerics != "fp32":
        _tflite_int8_plan(path, model, tech, board, profile_spec, as_json)
        return
    try:
        mem = plan_fp32(model, tech)
        full = mem if tech.scheme == "full" else plan_fp32(model, parse_technique("full-fp32"))
    except Fp32MemError as e:
        raise TechniqueError(f"{path.name}: {e}") from None
    except ValueError as e:
        raise TechniqueError(str(e)) from None
    fw, note = built_firmware(board)
    every = board_fits(mem.arena_bytes, fp32_weight_bytes(model))
    device, why = _device_fp32_plan(model, tech)
    if as_json:
        click.echo(json.dumps({"model": path.name, "technique": tech.name,
                               **Fit(board, fw, note, mem.arena_bytes, fp32_weight_bytes(model)).row(),
                               "composition": mem.composition(), "naive_bytes": mem.naive_bytes,
                               "full_fp32_arena_bytes": full.arena_bytes, "boards": [f.row() for f in every],
                               "device_arena_bytes": device.arena_bytes if device else None,
                               "device_refusal": why}, indent=1))
        return
    if device is not None:
        out.print(plan_tables(device)[0])
        out.print(f"The fp32 engine trains this graph on the device (bench.tflite.fp32, one layer per op): the plan "
                  f"it loads needs an arena of {_kib(device.arena_bytes)}, planned. The analysis below "
                  f"(bench.plan.fp32mem) is the same memory design on the graph itself.", highlight=False)
    else:
        out.print(f"The fp32 engine cannot train this graph on the device ({why}); `bench run` records its fp32 "
                  f"techniques from the analysis below.", highlight=False)
    out.print(fp32mem_table(mem, model, path.name))
    for line in fp32mem_totals(mem, model, board, fw, note, full):
        out.print(line, highlight=False)
    out.print(fit_table(every, f"{path.name} · {tech.name} on every board (planned; flash: every weight as fp32)"))
    out.print("All figures are planned (bench.plan.fp32mem: host analysis with the engine's memory design), "
              "not measured.",
              highlight=False)


def _device_fp32_plan(model: QModel, tech: Technique) -> tuple[Plan | None, str]:
    """The fp32 plan a run of ``tech`` loads for an imported graph, or None and why the engine cannot train it."""
    from bench.tflite.fp32 import Fp32ImportError, layer_technique_map, to_fp32

    try:
        imp = to_fp32(model)
        if tech.scheme == "sparse":
            tech = dataclasses.replace(tech, layers=layer_technique_map(imp, tech.layers))
        return compile_plan(imp.model, tech), ""
    except (Fp32ImportError, ValueError) as e:
        return None, str(e)


def _tflite_int8_plan(path: Path, model: QModel, tech: Technique, board: Board, profile_spec: str | None,
                      as_json: bool) -> None:
    """An int8 technique on an imported graph: the TQPL training plan the device would load (the profile's
    head_classes applied), per op and in total, and its fit on the board (SRAM and flash)."""
    from bench.plan.int8 import QPlanError
    from bench.plan.select import compile_imported_plan
    from bench.tflite.head import HeadError, replace_head

    data, _ = _profile_table(profile_spec)
    if data.get("loss") == "reconstruction":
        tech = dataclasses.replace(tech, loss="reconstruction")
    try:
        if data.get("head_classes"):
            model = replace_head(model, int(data["head_classes"]), int(data.get("seed", 1)))
        plan = compile_imported_plan(model, tech, float(data.get("lr_int8") or data.get("lr") or 0.01))
    except (QPlanError, HeadError) as e:
        raise TechniqueError(f"{path.name}: {tech.name}: {e}") from None
    fw, note = built_firmware(board)
    fit = Fit(board, fw, note, plan.arena_bytes, len(plan.blob(0)))
    every = board_fits(plan.arena_bytes, len(plan.blob(0)))
    if as_json:
        click.echo(json.dumps({"model": path.name, "technique": tech.name, **fit.row(),
                               "composition": plan.composition(), "layers": plan.layer_memory(),
                               "boards": [f.row() for f in every]}, indent=1))
        return
    trained = set(plan.train.ops) if plan.train else set()
    table = Table(title=f"{path.name} · {tech.name}: int8 training plan (planned)")
    for col in ("op", "kind", "output", "weights in SRAM", "kept for backward", "input gradient", "scratch"):
        table.add_column(col, justify="right")
    for row in plan.layer_memory():
        i = row["layer"]
        op = model.ops[i]
        shape = "×".join(map(str, model.tensors[op.outputs[0]].shape[1:]))
        table.add_row(str(i), op.kind + (" (trains)" if i in trained and row["weights_ram_bytes"] else ""), shape,
                      *[f"{row[k]:,}" for k in ("weights_ram_bytes", "kept_act_bytes", "grad_bytes", "scratch_bytes")])
    out.print(table)
    lines = [f"planned arena: {plan.arena_bytes:,} B  (by kind at the peak: "
             + ", ".join(f"{k} {v:,}" for k, v in plan.composition().items()) + ")"]
    if fw is None:
        lines.append(f"static and stack: unknown ({note}); arena alone vs board SRAM")
    else:
        lines.append(f"SRAM: static {fw.static_bytes:,} B ({note}) + arena {plan.arena_bytes:,} B + stack reserve "
                     f"{fw.stack_bytes:,} B = required {fit.required_sram_bytes:,} B of {board.sram_bytes:,} B")
    lines.append(f"flash: firmware region {board.memory.plan_offset:,} B + plan {len(plan.blob(0)):,} B (weights "
                 f"stay in it) = {fit.flash_end_bytes:,} B of {board.flash_bytes:,} B (the dataset not counted)")
    lines.append(fit.verdict())
    for line in lines:
        out.print(line, highlight=False)
    out.print(fit_table(every, f"{path.name} · {tech.name} on every board (planned; the dataset not counted)"))
    out.print("All figures are planned (bench.plan.int8: the plan the device loads), not measured.", highlight=False)


# ---- imported graphs (.tflite): the int8 sparse-scheme search ------------------------------------------------------


def _budget_bytes(budget: str) -> int:
    try:
        return parse_bytes(budget)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--budget") from None


def _tflite_budget(path: Path, board: Board, profile_spec: str | None, task: str, seed: int, budget: str,
                   steps: int | None, lr: float | None, repeats: int | None, depth: int, budget_of: str,
                   as_json: bool) -> None:
    """`bench plan MODEL.tflite --budget`: contribution trials with the host integer reference on the profile's task
    (adapted to the graph, its head_classes and loss applied), or without a profile on --task (a built-in task or a
    file, the graph's own classes), then the scheme search within the budget."""
    from bench.app.runner import Bench
    from bench.config.profile import Profile
    from bench.plan.search_int8 import analyse_graph, search_graph

    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    limit = _budget_bytes(budget)
    if profile_spec is None:
        profile = Profile(name=f"{path.stem}-budget", task=task, model=str(path.resolve()),
                          techniques=("full-int8",), seed=seed)
    else:
        profile = load_profile(profile_spec).model_copy(update={"model": str(path.resolve())})
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        bench = Bench(CACHE_DIR / "plan-budget")
        i8 = bench.int8(bench.prepare(profile))
        trial_lr = lr or profile.lr_for(profile.technique("sparse-int8" if profile.sparse else "full-int8"))
        n = [0]

        def progress(line: str) -> None:
            n[0] += 1
            print(f"  trial {n[0]}: {line}", file=sys.stderr, flush=True)

        contrib = analyse_graph(i8.qmodel, i8.x_train, i8.y_train, profile.seed, steps or 100, trial_lr,
                                repeats or 1, depth, progress, profile.loss)
        print_contributions(contrib, "op", "int8 (host integer reference)")
        what, memory = _budget_memory(board, *(built_firmware(board) if budget_of == "sram" else (None, "by request")))
        schemes, report = search_graph(i8.qmodel, contrib, limit, trial_lr, memory)
        out.print(f"trials: {len(contrib.weight_acc) + len(contrib.bias_acc)} × {contrib.repeats} int8 fine-tuning "
                  f"runs of {contrib.steps} steps took {contrib.seconds:.1f} s on the host", highlight=False)
        out.print(f"search: {report.method}, {report.evaluated:,} of {report.schemes_possible:,} schemes planned"
                  + (f" ({report.generations} generations of {report.population})"
                     if report.method == "evolutionary" else ""), highlight=False)
        print_schemes(schemes, limit, what, contrib.loss)
        if not schemes and report.smallest is not None:
            every = report.method == "exhaustive"  # it plans every scheme when none fits
            out.print(f"the smallest {'scheme' if every else 'scheme of those planned'} needs {report.smallest:,} B"
                      + ("" if every else " (a smaller one may exist)"), highlight=False)
    if as_json:
        click.echo(json.dumps({"how": "planned (host int8 fine-tuning trials)", "score": _score_name(contrib.loss),
                               "model": path.name,
                               "board": board.name, "budget_bytes": limit, "budget_of": what,
                               "search": report.method, "schemes_possible": report.schemes_possible,
                               "schemes_planned": report.evaluated, "trial_seconds": round(contrib.seconds, 2),
                               "smallest_bytes": report.smallest, "schemes": _schemes_json(schemes)}, indent=1))
