"""``bench verify``: the options; the work is in `bench.app.verify`, imported when the command runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.command("verify")
@click.argument("model_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--board", "board_name", default="nucleo-f746zg", show_default=True, help="board (or label) of the rack")
@click.option("--rack", "rack_spec", default=None, help="rack TOML file (default: the emulated rack)")
@click.option("--inputs", default=4, show_default=True, help="seeded random int8 inputs to compare on")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/verify"), show_default=True,
              help="images, the QEMU log and the link journal")
@click.option("--json", "as_json", is_flag=True, help="print the per-op comparison as JSON on stdout")
def verify_cmd(model_path: Path, board_name: str, rack_spec: str | None, inputs: int, seed: int, out: Path,
               as_json: bool) -> None:
    """Run MODEL (an int8 .tflite) on the board and on tflite-micro's interpreter with the same inputs and compare every
    op's output, code by code. Exit codes: 0 bit-exact, 1 some op differs (named), 2 the model or board cannot be
    verified (named)."""
    from rich.table import Table

    from bench.app.cli_report import wide_console
    from bench.app.verify import verify
    from bench.config.boards import load_catalogue, load_rack

    catalogue = load_catalogue()
    result = verify(model_path, load_rack(rack_spec, catalogue), catalogue, board_name, inputs, seed, out)
    if as_json:
        click.echo(json.dumps({"model": result.model, "board": result.board, "inputs": result.inputs,
                               "ok": result.ok, "ops": [{**op.__dict__, "ok": op.ok} for op in result.ops]}))
    else:
        table = Table(title=f"{result.model} on {result.board} vs tflite-micro, {inputs} random inputs (measured)")
        for col in ("op", "kind", "output tensor", "shape", "codes compared", "differ", "max |Δ|", ""):
            table.add_column(col, justify="right")
        for op in result.ops:
            table.add_row(str(op.index), op.kind, op.tensor, "×".join(map(str, op.shape)), f"{op.compared:,}",
                          f"{op.mismatched:,}", str(op.max_abs_diff), "ok" if op.ok else "[red]DIFFERS[/]")
        console = wide_console(stderr=False)
        console.print(table)
        console.print(f"{result.instructions_per_inference:,.0f} instructions per inference, SRAM peak "
                      f"{result.sram_peak_bytes:,} B (measured)")
    if not result.ok:
        bad = [f"op {op.index} {op.kind}" for op in result.ops if not op.ok]
        click.echo(f"not bit-exact: {', '.join(bad[:10])}", err=True)
        sys.exit(1)
