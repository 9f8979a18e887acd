"""Which driver a rack entry gets: a QEMU twin here, a twin on a twin host (a labgrid place), or a real board."""

from __future__ import annotations

from pathlib import Path

from bench.config.boards import Board, RackEntry
from bench.target.drivers import Identify, PyocdTarget, QemuTarget, Target
from bench.target.twinhost import RemoteTwinTarget


def make_target(entry: RackEntry, board: Board, log_dir: Path, identify: Identify | None = None
                ) -> Target:
    """The driver for a rack entry: a QEMU twin (here, or on a twin host behind a labgrid place), or a real board over
    pyocd (``identify`` asks a running board which build it runs, so unchanged firmware is not programmed again)."""
    if entry.control is not None:
        assert entry.port is not None, entry
        return RemoteTwinTarget(board, entry.place or entry.label, entry.control, entry.port)
    if entry.kind == "emulated":
        return QemuTarget(board, log_dir / f"{entry.label}.qemu.log")
    return PyocdTarget(board, entry, journal_dir=log_dir, retries=entry.flash_retries, identify=identify)
