"""``bench soak``: many short runs through the fault-injecting link, checking that the bench survives what racks do.

Why: a nightly bench must turn every link failure into a clean record and lose nothing. Each run here gets random
faults between its board's port and the host (`bench.link.faults`): bit errors, dropped and inserted bytes, stalls
shorter and longer than the stall timeout, disconnects. The soak then checks its own books, from what is on disk:
every run has a record (records lost must be 0), no twin outlives the soak (orphans must be 0), every status is ok
or a clean failure, and in every run that ended ok the host counted exactly the frames the proxy damaged.
"""

from __future__ import annotations

import random
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from bench.app.runner import Bench, run_meta, session_lock
from bench.config.boards import LinkFaults, Rack, RackEntry
from bench.config.profile import Profile
from bench.records.run import ResultsWriter, RunRecord

CLEAN_FAILURES = ("hang", "disconnected", "error")  # what link faults may turn a run into; anything else is a bug
FAULT_KINDS = ("none", "ber", "drop", "insert", "mixed", "short-stall", "long-stall", "disconnect")


def soak_profile(base: Profile) -> Profile:
    """Short runs, a one-step fidelity check, a 3 s stall timeout: many runs per minute, hangs found quickly."""
    return base.model_copy(update={"steps": 40, "eval_samples": 30, "check_steps": 1, "grad_every": 0,
                                   "stall_timeout_s": 3.0, "timeout_s": 120.0})


def random_faults(rng: random.Random, stall_timeout_s: float) -> LinkFaults:
    """One run's faults: a kind drawn uniformly, its rates and byte positions drawn from ``rng``."""
    kind = rng.choice(FAULT_KINDS)
    seed = rng.randrange(2**31)
    rate = rng.choice((1e-6, 1e-5, 1e-4))
    where = rng.randrange(200, 6_000)  # inside every run: a short last-layer run sends about 6 KB
    if kind == "ber":
        return LinkFaults(ber=rate, seed=seed)
    if kind == "drop":
        return LinkFaults(drop=rate, seed=seed)
    if kind == "insert":
        return LinkFaults(insert=rate, seed=seed)
    if kind == "mixed":
        return LinkFaults(ber=rate, drop=rate, insert=rate, seed=seed)
    if kind == "short-stall":
        return LinkFaults(stall_after=where, stall_s=stall_timeout_s / 3, seed=seed)
    if kind == "long-stall":
        return LinkFaults(stall_after=where, stall_s=stall_timeout_s + 2, seed=seed)
    if kind == "disconnect":
        return LinkFaults(disconnect_after=where, seed=seed)
    return LinkFaults(seed=seed)


@dataclass
class SoakResult:
    """The soak's books, from the records on disk."""

    runs: int
    records: int
    statuses: Counter[str]
    frames_damaged: int  # by the proxy, over all runs
    frames_counted: int  # lost frames the host counted, over all runs
    ok_mismatches: list[str] = field(default_factory=list)  # ok runs where the two differ (must be none)
    unexpected: list[str] = field(default_factory=list)  # runs with a status link faults cannot explain
    orphans: int = 0
    wall_s: float = 0.0

    @property
    def records_lost(self) -> int:
        return self.runs - self.records

    @property
    def passed(self) -> bool:
        return not (self.records_lost or self.orphans or self.ok_mismatches or self.unexpected)


def twin_processes(marker: str) -> int:
    """QEMU processes whose command line names ``marker`` (the soak's out directory)."""
    out = subprocess.run(["pgrep", "-f", f"qemu-system-arm.*{marker}"], capture_output=True, text=True, check=False)
    return len(out.stdout.split())


def soak(profile: Profile, rack: Rack, out: Path, runs: int, seed: int,
         on_record: Callable[[RunRecord, int], None] | None = None) -> SoakResult:
    """``runs`` runs of ``profile``'s techniques spread over the rack's boards (in parallel), each with random link
    faults; results written to ``out`` as they land, then the books checked from disk."""
    started = datetime.now(UTC)
    with session_lock(out):
        rng = random.Random(seed)
        plan = [(rack.boards[i % len(rack.boards)], random_faults(rng, profile.stall_timeout_s)) for i in range(runs)]
        _run_all(profile, rack, out, plan, on_record)
    result = books(out, runs)
    result.orphans = twin_processes(str(out))  # the path as the twins' command lines name their blobs
    result.wall_s = (datetime.now(UTC) - started).total_seconds()
    return result


def _run_all(profile: Profile, rack: Rack, out: Path, plan: list[tuple[RackEntry, LinkFaults]],
             on_record: Callable[[RunRecord, int], None] | None) -> None:
    bench = Bench(out)
    prepared = bench.prepare(profile)
    techniques = profile.parsed_techniques()
    writer = ResultsWriter(out, run_meta(f"soak of {profile.name}", rack) | {"soak_runs": len(plan)})
    lock = threading.Lock()
    done = [0]

    def worker(label: str) -> None:
        for i, (entry, faults) in enumerate(plan):
            if entry.label != label:
                continue
            record = bench.run(prepared, entry.model_copy(update={"faults": faults}), techniques[i % len(techniques)])
            with lock:
                writer.add(record)
                done[0] += 1
                if on_record is not None:
                    on_record(record, done[0])

    threads = [threading.Thread(target=worker, args=(e.label,)) for e in rack.boards]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.finish(finished=datetime.now(UTC).isoformat())


def books(out: Path, runs: int) -> SoakResult:
    """Check what ``out/runs.parquet`` holds against what the soak started."""
    table = pd.read_parquet(out / "runs.parquet") if (out / "runs.parquet").is_file() else pd.DataFrame(
        columns=["run_id", "status", "lost_frames", "frames_damaged_injected"])
    damaged = table["frames_damaged_injected"].fillna(0).astype(int)
    counted = table["lost_frames"].fillna(0).astype(int)
    ok = table["status"] == "ok"
    mismatched = table.loc[ok & (damaged != counted), "run_id"].tolist()
    unexpected = table.loc[~table["status"].isin(("ok", *CLEAN_FAILURES)), "run_id"].tolist()
    return SoakResult(runs=runs, records=len(table), statuses=Counter(table["status"]),
                      frames_damaged=int(damaged.sum()), frames_counted=int(counted.sum()),
                      ok_mismatches=mismatched, unexpected=unexpected)
