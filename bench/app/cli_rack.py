"""``bench rack …``: commands for a host with real boards attached."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape

from bench.app.cli_lab import release_cmd

if TYPE_CHECKING:  # pyocd and pyserial are imported when the command runs, not by `bench --help`
    from rich.table import Table

    from bench.target.scan import ScanResult

console = Console(stderr=True)


@click.group("rack")
def rack_group() -> None:
    """Real boards: discover probes and ports, write a rack file."""


def _tables(result: ScanResult) -> list[Table]:
    from rich.table import Table

    probes = Table(title="Debug probes (pyocd)")
    for col in ("unique id", "vendor / product", "board (pyocd)"):
        probes.add_column(col)
    for p in result.probes:
        probes.add_row(p.unique_id, f"{p.vendor} {p.product}", p.board_name or "–")
    ports = Table(title="USB serial ports (pyserial)")
    for col in ("device", "by-id path", "VID:PID", "serial number", "description"):
        ports.add_column(col)
    for port in result.ports:
        ports.add_row(port.device, port.by_id or "–", port.vid_pid or "–", port.serial_number or "–", port.description)
    rack = Table(title="Rack entries")
    for col in ("name", "board", "probe_uid", "port"):
        rack.add_column(col)
    for e in result.entries:
        rack.add_row(e.label, e.board, e.probe_uid or "–", e.port or "(set by hand)")
    return [t for t, rows in ((probes, result.probes), (ports, result.ports), (rack, result.entries)) if rows]


@rack_group.command("scan")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write the rack TOML here (loadable with --rack)")
@click.option("--name", default=None, help="rack name in the file (default: the file's stem)")
@click.option("--write-empty", is_flag=True, help="write the rack file even when no board was found")
def scan_cmd(out: Path | None, name: str | None, write_empty: bool) -> None:
    """List attached debug probes and USB serial ports, match them to boards/, optionally write a rack file."""
    from bench.config.boards import load_catalogue
    from bench.target.drivers import PYOCD_MISSING
    from bench.target.scan import rack_toml, scan

    try:
        result = scan(load_catalogue())
    except ImportError as exc:  # pyocd is the hardware extra
        raise click.ClickException(PYOCD_MISSING.format(exc=exc)) from None
    out_console = Console()
    for table in _tables(result):
        out_console.print(table)
    if not result.probes or not result.ports:
        found = [("no debug probes found" if not result.probes else f"{len(result.probes)} debug probe(s)"),
                 ("no serial ports found" if not result.ports else f"{len(result.ports)} serial port(s)")]
        console.print("; ".join(found))
    if result.ignored_ports:
        console.print(f"ignored non-USB ports: {', '.join(result.ignored_ports)}")
    for note in result.notes:
        console.print(f"note: {escape(note)}", soft_wrap=True)
    if out is None:
        return
    if not result.entries and not write_empty:
        console.print(f"no boards matched: {out} not written (--write-empty writes an empty rack)")
        return
    out.write_text(rack_toml(result.entries, name or out.stem))
    console.print(f"rack: {out} ({len(result.entries)} boards); use it with --rack {out}")

rack_group.add_command(release_cmd)
