"""Live progress of `bench run`: one rich progress bar per board, fed by the runner's progress callbacks."""

from __future__ import annotations

import threading

from rich.markup import escape
from rich.progress import Progress

from bench.app import runner
from bench.link.protocol import Step
from bench.records.run import RunRecord


class LiveProgress(runner.Progress):
    """One progress bar per board, advancing with every training step the device reports."""

    def __init__(self, progress: Progress, runs: dict[str, int], steps: int) -> None:
        """``runs``: board label -> runs it is expected to make (an estimate when boards share a queue)."""
        self.progress, self.steps = progress, steps
        self.tasks = {label: progress.add_task(label, total=steps * n) for label, n in runs.items()}
        self.done = dict.fromkeys(runs, 0)
        self.lock = threading.Lock()

    def run_started(self, label: str, technique: str, steps: int) -> None:
        with self.lock:
            self.progress.update(self.tasks[label], description=f"{label} · {technique}")

    def step(self, label: str, technique: str, step: Step) -> None:
        with self.lock:
            self.progress.update(self.tasks[label], completed=self.done[label] * self.steps + step.step + 1,
                                 description=f"{label} · {technique} · loss {step.loss:.3f}")

    def waiting(self, label: str, what: str) -> None:
        with self.lock:
            self.progress.console.print(f"{label}: waiting for {escape(what)}")

    def run_finished(self, label: str, record: RunRecord) -> None:
        with self.lock:
            self.done[label] += 1
            self.progress.update(self.tasks[label], completed=self.done[label] * self.steps,
                                 description=f"{label} · {record.technique} · {record.status}")
