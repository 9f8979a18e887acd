"""Benchmark: what the bench costs before it does anything — `bench --help` wall time, the pytest plugin's import
time (it loads in every pytest run of the environment), a venv's size and a report's size.

    .venv/bin/python benchmarks/startup.py [--venv DIR] [--report FILE]

Medians of several runs, measured side by side in this process (not a timed test).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 7


def _median_wall(cmd: list[str]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=None, help="a venv whose size to print (e.g. make demo's)")
    parser.add_argument("--report", type=Path, default=None, help="a report whose size to print")
    args = parser.parse_args()
    bench = Path(sys.executable).with_name("bench")
    help_s = _median_wall([str(bench), "--help"])
    bare = _median_wall([sys.executable, "-c", "import pytest"])
    plugin = _median_wall([sys.executable, "-c", "import pytest, bench.app.pytest_plugin"])
    print(f"bench --help: {help_s:.3f} s wall (median of {RUNS}; target < 1 s)")
    print(f"pytest plugin import: {plugin - bare:.3f} s over `import pytest` ({plugin:.3f} s vs {bare:.3f} s)")
    if args.venv:
        print(f"venv {args.venv}: {_size(args.venv) / 1e6:,.0f} MB")
    if args.report:
        print(f"report {args.report}: {_size(args.report):,} bytes")
    print(f"(python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
