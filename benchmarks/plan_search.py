"""Benchmark: how fast the int8 scheme search plans a scheme's memory — `bench plan MODEL.tflite --budget` plans
every scheme of an exhaustive search (18,750 on the AD autoencoder at --depth 6). Side by side on the same schemes:
the whole plan compiled (`compile_imported_plan`, blob written) and the arena alone (`imported_arena`, what the
search calls), which must agree byte for byte.

    .venv/bin/python benchmarks/plan_search.py [MODEL.tflite]   (default ../shared/models/ad01_int8.tflite)
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import time
from pathlib import Path

from bench.config.profile import RATIOS, SparseSpec, parse_technique
from bench.plan.int8 import QPlanError
from bench.plan.select import biased_ops, compile_imported_plan, imported_arena
from bench.tflite.io import load_tflite

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "models" / "ad01_int8.tflite"
    if not path.is_file():
        sys.exit(f"{path}: no such file (the default needs ../shared beside the repository)")
    model = load_tflite(path)
    loss = "cross-entropy" if model.ops[-1].kind == "SOFTMAX" else "reconstruction"
    ops = biased_ops(model)[-3:]
    schemes = [dataclasses.replace(parse_technique("sparse-int8", 1, SparseSpec(bias_k=k, layers=dict(
        (i, r) for i, r in zip(ops, rs, strict=True) if r))), loss=loss)
        for k in (1, len(ops)) for rs in itertools.product((0.0, *RATIOS), repeat=len(ops)) if any(rs)]
    figures = {}
    for name, arena in (("whole plan", lambda t: compile_imported_plan(model, t, 0.01).arena_bytes),
                        ("arena only", lambda t: imported_arena(model, t, 0.01))):
        t0, got = time.perf_counter(), []
        for t in schemes:
            try:
                got.append(arena(t))
            except QPlanError:
                got.append(None)
        figures[name] = ((time.perf_counter() - t0) / len(schemes) * 1e3, got)
    (whole, a), (only, b) = figures["whole plan"], figures["arena only"]
    assert a == b, "the arena alone differs from the compiled plan's"
    print(f"{path.name}: {len(schemes)} sparse schemes (ops {ops}), measured on this host")
    print(f"  whole plan compiled: {whole:.2f} ms per scheme")
    print(f"  arena only (search): {only:.2f} ms per scheme ({whole / only:.1f}x faster, same bytes)")


if __name__ == "__main__":
    main()
