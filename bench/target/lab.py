"""labgrid as the rack: a thin client over ``labgrid-client`` (the [labgrid] extra), the tool a lab already runs.

The bench talks to the coordinator through labgrid's own command line rather than its Python internals: the CLI is
labgrid's stable interface, and each call is a separate short process, so a coordinator that hangs or restarts
cannot wedge the bench. Everything runs as one owner (``LG_USERNAME``), so a janitor can ``release-from`` the places
of a job that was killed.

A place is one board (or twin): tags ``board=<catalogue name>`` and ``kind=emulated|hardware``; its resources are a
``NetworkSerialPort`` (the UART: raw TCP or RFC2217) and either ``BenchTwinControl`` (a `bench twin-host` twin) or
``BenchPyocdServer`` (``pyocd server`` beside a real probe).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
PLACE_RE = re.compile(r"^Place '(?P<name>[^']*)':$")


class LabError(RuntimeError):
    """labgrid said no (or could not be reached); the message has its words."""


class LabUnreachable(LabError):
    """The coordinator does not answer."""


class PlaceBusy(LabError):
    """A place stayed held by someone else for longer than the bench was told to wait."""


@dataclass(frozen=True)
class Place:
    name: str
    tags: dict[str, str] = field(default_factory=dict)
    acquired: str | None = None  # "host/user" of whoever holds it
    matches: tuple[str, ...] = ()  # "exporter/group/class" patterns

    @property
    def exporter(self) -> str:
        """The exporter (lab host) its first match names."""
        return self.matches[0].split("/", 1)[0] if self.matches else ""


def labgrid_client() -> str:
    """The labgrid-client of this environment (beside this Python), else the one on PATH."""
    local = Path(sys.executable).with_name("labgrid-client")
    found = str(local) if local.exists() else shutil.which("labgrid-client")
    if found is None:
        raise LabError("labgrid-client not found: a labgrid rack needs the labgrid extra, "
                       "`pip install 'mcu-train-bench[labgrid]'`")
    return found


def default_owner() -> str:
    """Who holds the places: $BENCH_LAB_OWNER, else a name for this job (CI run id when there is one)."""
    if os.environ.get("BENCH_LAB_OWNER"):
        return os.environ["BENCH_LAB_OWNER"]
    run = os.environ.get("GITHUB_RUN_ID")
    user = re.sub(r"[^\w.-]", "_", os.environ.get("USER", "user"))
    return f"bench-ci-{run}" if run else f"bench-{user}-{os.getpid()}"


class LabClient:
    """Commands to one coordinator, as ``owner`` on this host."""

    def __init__(self, coordinator: str, owner: str, timeout: float = 30.0) -> None:
        self.coordinator, self.owner, self.timeout = coordinator, owner, timeout
        self.host = os.environ.get("LG_HOSTNAME") or socket.gethostname()
        self.client = labgrid_client()

    @property
    def holder(self) -> str:
        """How labgrid names this owner: ``host/user``."""
        return f"{self.host}/{self.owner}"

    def run(self, *args: str, token: str | None = None, timeout: float | None = None) -> str:
        env = {**os.environ, "LG_USERNAME": self.owner, "LG_HOSTNAME": self.host}
        env.pop("LG_PLACE", None)
        env.pop("LG_ENV", None)
        if token:
            env["LG_TOKEN"] = token
        cmd = [self.client, "-x", self.coordinator, *args]
        log.debug("labgrid: %s", " ".join(cmd[1:]))
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout or self.timeout,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise LabError(f"labgrid-client {' '.join(args)}: no answer from {self.coordinator} within "
                           f"{timeout or self.timeout:g} s") from None
        if done.returncode != 0:
            words = " ".join((done.stderr + done.stdout).split())[-600:]
            if "Could not connect to coordinator" in words or "coordinator is unavailable" in words:
                raise LabUnreachable(f"labgrid coordinator {self.coordinator} is unreachable: {words}")
            raise LabError(f"labgrid-client {' '.join(args)}: {words}")
        return done.stdout

    # -- places ---------------------------------------------------------------------------------------------

    def places(self) -> list[Place]:
        """Every place the coordinator knows, with its tags and holder."""
        found: list[Place] = []
        tags: dict[str, str] = {}
        matches: list[str] = []
        name, acquired, section = "", None, ""
        for raw in [*self.run("-v", "places").splitlines(), "Place '':"]:
            line = raw.strip()
            match = PLACE_RE.match(line)
            if match:
                if name:
                    found.append(Place(name, tags, acquired, tuple(matches)))
                name, tags, acquired, matches, section = match["name"], {}, None, [], ""
            elif line.startswith("tags:"):
                tags = dict(t.split("=", 1) for t in line.split(":", 1)[1].replace(" ", "").split(",") if "=" in t)
            elif line.startswith("acquired:"):
                value = line.split(":", 1)[1].strip()
                acquired = None if value == "None" else value
            elif line.endswith(":"):
                section = line[:-1]
            elif section == "matches" and line:
                matches.append(line.split()[0])
        return found

    def create_place(self, name: str, match: str, tags: dict[str, str]) -> None:
        """A place for one resource group (what `bench twin-host` does for its twins); kept when it exists."""
        if name not in {p.name for p in self.places()}:
            self.run("-p", name, "create")
            self.run("-p", name, "add-match", match)
        self.run("-p", name, "set-tags", *(f"{k}={v}" for k, v in tags.items()))

    # -- holding one ----------------------------------------------------------------------------------------

    def reserve(self, place: str, wait_s: float, say: Callable[[str], None]) -> str:
        """A reservation of ``place`` that the coordinator has allocated to us; waits up to ``wait_s`` for a holder
        to let go (saying so once), then a `PlaceBusy` naming the holder. Returns the token."""
        token = self.run("reserve", "--shell", f"name={place}").strip().removeprefix("export LG_TOKEN=")
        holder = next((p.acquired for p in self.places() if p.name == place), None)
        if holder and holder != self.holder:
            say(f"labgrid place {place} is held by {holder}; waiting up to {wait_s:g} s")
        try:
            self.run("wait", token=token, timeout=wait_s)
        except LabError as exc:
            self.cancel(token)
            if isinstance(exc, LabUnreachable):
                raise
            raise PlaceBusy(f"labgrid place {place} is still held by {holder or 'someone'} after {wait_s:g} s "
                            f"(its holder can release it; a killed job's: `bench rack release --coordinator "
                            f"{self.coordinator} --owner {holder or 'HOST/USER'}`)") from None
        return token

    def acquire(self, place: str, token: str) -> None:
        self.run("-p", f"+{token}", "acquire")

    def resources(self, place: str) -> dict[str, dict[str, Any]]:
        """The acquired place's resources: class -> parameters (from ``labgrid-client env``)."""
        import yaml

        env = yaml.safe_load(self.run("-p", place, "env")) or {}
        found: dict[str, dict[str, Any]] = {}
        for item in env.get("targets", {}).get(place, {}).get("resources", []):
            for cls, params in item.items():
                found[str(cls)] = dict(params or {})
        return found

    def release(self, place: str) -> None:
        self.run("-p", place, "release")

    def release_from(self, place: str, holder: str) -> None:
        self.run("-p", place, "release-from", holder)

    def cancel(self, token: str) -> None:
        try:
            self.run("cancel-reservation", token=token)
        except LabError as exc:  # gone already (a restarted coordinator forgets reservations)
            log.info("%s", exc)

    def held_by(self, holder: str) -> list[str]:
        """The places ``holder`` (``host/user``) has acquired."""
        return [p.name for p in self.places() if p.acquired == holder]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.2)
