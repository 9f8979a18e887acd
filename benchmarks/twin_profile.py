"""Where a firmware's instructions go on a twin, per function (or per instruction of one function): a development
aid for kernel work, not a measurement the bench reports. QEMU logs each translated block once (`-d in_asm`) and
each execution of a block (`-d exec,nochain`); a function's count is the sum over its blocks of executions × block
length. A block left early (an exception, an I/O rewind) still counts whole, so the figures are approximate; the
exact counts are the SysTick figures of `bench bench --kernels` and the runs.

    .venv/bin/python benchmarks/twin_profile.py reports/bench/kernels/nucleo-f746zg/kbench.elf
    .venv/bin/python benchmarks/twin_profile.py ELF --machine mps2-an500 --function conv_pointwise

The log is large (about 20 bytes per executed block): the kernel benchmark writes ~500 MB to a temporary file.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import re
import subprocess
import sys
import tempfile
from pathlib import Path

INSN = re.compile(r"0x([0-9a-f]{8}):\s+(?:[0-9a-f]{4} ?){1,2}\s+(.*)")
TRACE = re.compile(r"\[[0-9a-f]+/([0-9a-f]{8})/[0-9a-f]+/([0-9a-f]{8})\]")  # [cs_base/pc/flags/cflags]
COUNT_MASK = 0x1FF  # cflags' instruction limit: a block re-translated to run 1 instruction (icount I/O) says so


def run_logged(elf: Path, machine: str, log: Path, timeout: float) -> None:
    """Run the ELF to its semihosting exit with block translation and execution logged."""
    cmd = ["qemu-system-arm", "-M", machine, "-nographic", "-monitor", "none", "-serial", "none",
           "-semihosting-config", "enable=on,target=native", "-icount", "shift=8,align=off,sleep=off",
           "-d", "in_asm,exec,nochain", "-D", str(log), "-kernel", str(elf)]
    subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)


Runs = collections.Counter[tuple[int, int]]  # (start address, instruction limit or 0) -> executions


def parse_log(log: Path) -> tuple[dict[int, list[tuple[int, str]]], Runs]:
    """The instructions of each block start's longest translation, and how often each (start, limit) ran."""
    blocks: dict[int, list[tuple[int, str]]] = {}
    runs: Runs = collections.Counter()
    start: int | None = None
    current: list[tuple[int, str]] = []
    with log.open(errors="replace") as f:
        for line in f:
            m = INSN.match(line)
            if m:
                addr = int(m.group(1), 16)
                start = addr if start is None else start
                current.append((addr, m.group(2).strip()))
                continue
            if start is not None and len(current) > len(blocks.get(start, ())):
                blocks[start] = current
            start, current = None, []
            t = TRACE.search(line) if line.startswith("Trace") else None
            if t:
                runs[(int(t.group(1), 16), int(t.group(2), 16) & COUNT_MASK)] += 1
    return blocks, runs


def executed(blocks: dict[int, list[tuple[int, str]]], start: int, limit: int) -> list[tuple[int, str]]:
    """The instructions one execution of a block ran: all of them, or the first `limit`."""
    insns = blocks.get(start, [])
    return insns[:limit] if limit else insns


def symbols(elf: Path) -> list[tuple[int, str]]:
    """Code symbols of the ELF, ascending by address."""
    out = subprocess.run(["arm-none-eabi-nm", "-n", str(elf)], capture_output=True, text=True, check=True).stdout
    syms = [(int(p[0], 16) & ~1, p[2]) for p in (ln.split() for ln in out.splitlines())
            if len(p) == 3 and p[1] in "tTwW"]
    return sorted(syms)


def per_function(blocks: dict[int, list[tuple[int, str]]], runs: Runs,
                 syms: list[tuple[int, str]]) -> collections.Counter[str]:
    """Instructions executed per function: block executions × block length, by the block's start address."""
    addrs = [a for a, _ in syms]
    totals: collections.Counter[str] = collections.Counter()
    for (start, limit), n in runs.items():
        i = bisect.bisect_right(addrs, start) - 1
        totals[syms[i][1] if i >= 0 else "?"] += n * len(executed(blocks, start, limit))
    return totals


def per_instruction(blocks: dict[int, list[tuple[int, str]]], runs: Runs,
                    syms: list[tuple[int, str]], name: str) -> list[tuple[int, int, str]]:
    """(address, executions, text) of every executed instruction of one function."""
    spans = [(a, syms[k + 1][0] if k + 1 < len(syms) else 1 << 32) for k, (a, s) in enumerate(syms) if s == name]
    if not spans:
        raise SystemExit(f"no function {name!r} in the ELF's symbols")
    lo, hi = spans[0]
    counts: collections.Counter[int] = collections.Counter()
    text: dict[int, str] = {}
    for (start, limit), n in runs.items():
        if lo <= start < hi:
            for addr, insn in executed(blocks, start, limit):
                counts[addr] += n
                text[addr] = insn
    return [(a, counts[a], text[a]) for a in sorted(counts)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("elf", type=Path)
    ap.add_argument("--machine", default="mps2-an500", help="QEMU machine (the board's [twin].machine)")
    ap.add_argument("--function", help="instead: per-instruction counts of this function")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args(argv)
    if not args.elf.is_file():
        print(f"{args.elf}: no such ELF (`bench bench --kernels` builds the kernel benchmark's)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "qemu.log"
        run_logged(args.elf, args.machine, log, args.timeout)
        blocks, runs = parse_log(log)
    syms = symbols(args.elf)
    if args.function:
        for addr, n, insn in per_instruction(blocks, runs, syms, args.function):
            print(f"{addr:08x} {n:>10,} {insn}")
        return 0
    totals = per_function(blocks, runs, syms)
    total = sum(totals.values()) or 1
    print(f"approximate instructions per function ({args.elf.name} on {args.machine}; blocks × executions)")
    for name, n in totals.most_common(args.top):
        print(f"{n:>12,} {100 * n / total:5.1f}% {name}")
    print(f"{total:>12,} total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
