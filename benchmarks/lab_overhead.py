"""Benchmark: the techniques profile on 3 labgrid places across 2 exporters (a real coordinator and two
`bench twin-host` processes on this machine) against the same profile on the local emulated rack, measured side by
side in one run; and what holding places costs (reserve + acquire + release, through labgrid-client).

    .venv/bin/python benchmarks/lab_overhead.py [--profile techniques]

Target: lab wall time <= 1.1x local. Twins are the same QEMU twins either way; what differs is the labgrid
bookkeeping, the uploads to the twin hosts and TCP instead of a pty.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.app.lab import held_rack
from bench.app.lab_local import BENCH, local_lab
from bench.config.boards import load_catalogue, load_rack

HOSTS = {"hostA": ["rpi-pico", "nrf52840-dk"], "hostB": ["nucleo-f746zg"]}


def _timed_run(args: list[str], out: Path) -> float:
    start = time.perf_counter()
    subprocess.run([*BENCH, "run", *args, "--out", str(out)], check=True, capture_output=True)
    return time.perf_counter() - start


def _hold_cost(address: str) -> tuple[float, float]:
    """Seconds to reserve and acquire the 3 places (in parallel), and to release them."""
    catalogue = load_catalogue()
    rack = load_rack(f"labgrid://{address}", catalogue)
    start = time.perf_counter()
    with held_rack(rack, catalogue, lambda m: None):
        held = time.perf_counter()
    return held - start, time.perf_counter() - held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="techniques")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        local = _timed_run([args.profile], work / "local")
        (work / "lab").mkdir()
        with local_lab(work / "lab", HOSTS) as lab:
            remote = _timed_run([args.profile, "--rack", f"labgrid://{lab.address}"], work / "lab-out")
            acquire, release = _hold_cost(lab.address)
        runs = len(pd.read_parquet(work / "local" / "runs.parquet"))
    print(f"profile {args.profile}: local emulated rack {local:.1f} s, 3 labgrid places on 2 exporters "
          f"{remote:.1f} s: ratio {remote / local:.2f}x (target <= 1.1x)")
    print(f"holding 3 places: reserve + acquire {acquire:.2f} s, release {release:.2f} s, once per session "
          f"({(acquire + release) / max(runs, 1):.3f} s per run over its {runs} runs)")
    print(f"(python {sys.version.split()[0]}, measured side by side in one process tree)")


if __name__ == "__main__":
    main()
