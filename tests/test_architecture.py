"""The tree keeps the data path's shape: each stage imports only stages before it (import-linter's layers contract in
pyproject.toml), and the check really fails when a module reaches up a layer or closes a cycle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).parent / "lint-imports"


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT), "--config", str(tree / "pyproject.toml"), "--no-cache"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture()
def tree_copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "bench", tmp_path / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_its_layers(tree_copy: Path) -> None:
    proc = _lint(tree_copy)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout


@pytest.mark.parametrize(("module", "line"), [
    ("config/boards.py", "from bench.app import runner  # noqa: F401"),  # a passive description reaching the top
    ("link/session.py", "from bench.records import run  # noqa: F401"),  # the old session -> records cycle
    ("numerics/int8train.py", "import bench.plan.int8  # noqa: F401"),  # a reference importing the plan it checks
])
def test_an_upward_import_or_cycle_breaks_the_contract(tree_copy: Path, module: str, line: str) -> None:
    path = tree_copy / "bench" / module
    path.write_text(path.read_text() + f"\n\ndef _late() -> None:\n    {line}\n")  # inside a function: still seen
    proc = _lint(tree_copy)
    assert proc.returncode != 0
    assert "BROKEN" in proc.stdout and "1 broken" in proc.stdout, proc.stdout
