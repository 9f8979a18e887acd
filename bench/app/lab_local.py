"""A whole labgrid lab on this machine: a coordinator on 127.0.0.1 and `bench twin-host` processes as its hosts.
What tests/test_lab.py and benchmarks/lab_overhead.py run against; a way to try a labgrid rack without a lab."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.target.lab import LabClient, LabError, wait_for
from bench.target.twinhost import free_port

BENCH = [sys.executable, "-c", "from bench.app.cli import entry; entry()"]


@dataclass
class LocalLab:
    address: str
    work: Path
    hosts: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    coordinator: subprocess.Popen[str] | None = None

    def start_coordinator(self) -> None:
        """The coordinator, state in ``work`` (a restart keeps the places and drops every lock), once it answers."""
        self.coordinator = subprocess.Popen([str(coordinator_binary()), "--listen", self.address], cwd=self.work,
                                            text=True, stdout=subprocess.DEVNULL,
                                            stderr=(self.work / "coordinator.log").open("a"))
        client = self.client("local-lab")
        deadline = time.monotonic() + 20
        while True:
            try:
                client.places()
                return
            except LabError:
                if time.monotonic() > deadline or self.coordinator.poll() is not None:
                    raise
                time.sleep(0.2)

    def wait_saved(self) -> None:
        """Until the coordinator has saved every place (it writes places.yaml every 15 s, and a restart keeps only
        what it saved)."""
        names = [p.name for p in self.client("local-lab").places()]
        state = self.work / "places.yaml"
        wait_for(lambda: state.is_file() and all(n in state.read_text() for n in names), 40,
                 f"the coordinator to save its places to {state}")

    def restart_coordinator(self) -> None:
        """Stop and start the coordinator, its places saved first."""
        self.wait_saved()
        if self.coordinator is not None:
            stop(self.coordinator)
        self.start_coordinator()

    def client(self, owner: str) -> LabClient:
        return LabClient(self.address, owner)

    def add_host(self, name: str, boards: list[str], timeout: float = 60.0) -> subprocess.Popen[str]:
        """Start `bench twin-host NAME` and wait until it says it is ready (exporter registered, places made)."""
        args = [arg for b in boards for arg in ("--board", b)]
        err = (self.work / f"{name}.err").open("w")
        proc = subprocess.Popen([*BENCH, "twin-host", "--name", name, "--coordinator", self.address, *args,
                                 "--work", str(self.work / name)], stdout=subprocess.PIPE, stderr=err, text=True,
                                start_new_session=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until ready, or EOF when it died
        if not line.startswith("ready"):
            stop(proc)
            raise LabError(f"twin host {name} did not start: {(self.work / f'{name}.err').read_text()[-2000:]}")
        self.hosts[name] = proc
        return proc


def stop(proc: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    """Terminate ``proc`` and wait; kill it if it does not go within ``timeout``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def coordinator_binary() -> Path:
    return Path(sys.executable).with_name("labgrid-coordinator")


@contextmanager
def local_lab(work: Path, hosts: dict[str, list[str]]) -> Iterator[LocalLab]:
    """A coordinator (state in ``work``) and one twin host per entry of ``hosts`` (name -> boards); every process is
    stopped on exit."""
    lab = LocalLab(f"127.0.0.1:{free_port()}", work)
    try:
        lab.start_coordinator()
        for name, boards in hosts.items():
            lab.add_host(name, boards)
        yield lab
    finally:
        for proc in lab.hosts.values():
            stop(proc)
        if lab.coordinator is not None:
            stop(lab.coordinator)
