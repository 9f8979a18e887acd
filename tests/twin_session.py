"""A plan and its dataset on one board's twin, for tests that drive the link themselves (the plain API: assemble,
QemuTarget, Link, session)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.app.runner import board_lock
from bench.config.boards import Board
from bench.image.firmware import assemble, build_firmware
from bench.link import session
from bench.link.link import Link
from bench.plan import Runnable
from bench.target.drivers import QemuTarget


@contextmanager
def plan_on_twin(board: Board, plan: Runnable, data: bytes, work: Path, name: str) -> Iterator[Link]:
    """The board locked, its twin running ``plan`` on ``data``, reset and greeted: the link, closed with the twin on
    exit (its raw bytes journaled in ``work``)."""
    images = assemble(board, "emulated", build_firmware(board), plan, data, work / "images")
    with board_lock(board.name):
        target = QemuTarget(board, work / "qemu.log")
        target.load(images)
        target.reset()
        try:
            with Link.open(target.url, board.serial.baudrate, work, name=name) as link:
                session.hello(link)
                yield link
        finally:
            target.close()
