"""The nightly self-hosted workflow, which nothing here can run, is at least checked: valid against GitHub's
workflow schema (check-jsonschema's vendored copy, offline), and every bench or make command it runs exists."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "nightly.yml"


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("check-jsonschema") or str(Path(sys.executable).with_name("check-jsonschema"))
    if not Path(exe).exists():
        pytest.fail("check-jsonschema is not installed (it is in the [test] extra: make bootstrap)")
    return subprocess.run([exe, "--builtin-schema", "vendor.github-workflows", str(path)], capture_output=True,
                          text=True, check=False, timeout=120)


def test_nightly_workflow_matches_the_github_workflow_schema() -> None:
    proc = _check(WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_schema_check_fails_on_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "nightly.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on:", "runs_on:", 1))
    proc = _check(broken)
    assert proc.returncode != 0 and "runs-on" in proc.stdout + proc.stderr


def test_every_bench_and_make_command_of_the_workflow_exists() -> None:
    from bench.app.cli import main

    text = WORKFLOW.read_text()
    bench_cmds = set(re.findall(r"\.venv/bin/bench (\w[\w-]*)", text))
    assert bench_cmds and bench_cmds <= set(main.commands), sorted(bench_cmds - set(main.commands))
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    make_cmds = set(re.findall(r"\bmake ([a-z][\w-]*)", text))
    assert make_cmds and make_cmds <= targets, sorted(make_cmds - targets)
