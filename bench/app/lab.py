"""A rack on labgrid, held for one bench session: select the places, reserve and acquire them as this job's owner,
turn each into a rack entry, and always release them — on success, failure, Ctrl-C and SIGTERM. (A job killed with
SIGKILL leaves them held: `bench rack release --owner HOST/USER` is the janitor.)"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from bench.config.boards import Board, ConfigError, LabSpec, Rack, RackEntry
from bench.target.lab import LabClient, LabError, Place, default_owner

log = logging.getLogger(__name__)


def select_places(places: list[Place], spec: LabSpec, catalogue: dict[str, Board]) -> list[Place]:
    """The places ``spec`` names, or those whose tags include its tags; each must name a catalogue board."""
    by_name = {p.name: p for p in places}
    if spec.places:
        unknown = [n for n in spec.places if n not in by_name]
        if unknown:
            raise ConfigError(f"labgrid {spec.coordinator} has no place {', '.join(unknown)} (it has: "
                              f"{', '.join(sorted(by_name)) or 'none'})")
        chosen = [by_name[n] for n in spec.places]
    else:
        chosen = [p for p in places if "board" in p.tags and spec.tags.items() <= p.tags.items()]
    if spec.only:
        chosen = [p for p in chosen if p.name in spec.only or p.tags.get("board") in spec.only]
    bad = [p.name for p in chosen if p.tags.get("board") not in catalogue]
    if bad:
        raise ConfigError(f"labgrid places {', '.join(bad)} have no board tag naming a board of the catalogue "
                          f"({', '.join(sorted(catalogue))})")
    if not chosen:
        wanted = ", ".join(f"{k}={v}" for k, v in spec.tags.items()) or "a board tag"
        raise ConfigError(f"no labgrid place on {spec.coordinator} matches {wanted}"
                          f"{' and ' + ', '.join(spec.only) if spec.only else ''} (places there: "
                          f"{', '.join(sorted(by_name)) or 'none'})")
    return chosen


def entry_for(place: Place, resources: dict[str, dict[str, Any]]) -> RackEntry:
    """The rack entry of an acquired place: its UART, and its twin control or its remote pyocd probe."""
    serial = resources.get("NetworkSerialPort")
    if serial is None:
        raise LabError(f"labgrid place {place.name} has no NetworkSerialPort (resources: {', '.join(resources)})")
    scheme = "socket" if serial.get("protocol", "rfc2217") == "raw" else "rfc2217"
    common: dict[str, Any] = {"board": place.tags["board"], "name": place.name, "place": place.name,
                              "exporter": place.exporter, "port": f"{scheme}://{serial['host']}:{serial['port']}"}
    control = resources.get("BenchTwinControl")
    if control is not None:
        return RackEntry(kind="emulated", control=f"http://{control['host']}:{control['port']}", **common)
    probe = resources.get("BenchPyocdServer")
    if probe is None:
        raise LabError(f"labgrid place {place.name} has neither a BenchTwinControl nor a BenchPyocdServer resource")
    return RackEntry(kind="hardware", probe_uid=f"remote:{probe['host']}:{probe['port']}", **common)


def listed_rack(rack: Rack, catalogue: dict[str, Board]) -> Rack:
    """A labgrid rack's selected places as entries (named after the place, not yet acquired, no endpoints): what
    pytest parametrizes over before any place is held."""
    spec = rack.labgrid
    assert spec is not None
    places = select_places(LabClient(spec.coordinator, spec.owner or default_owner()).places(), spec, catalogue)
    entries = tuple(RackEntry(board=p.tags["board"], name=p.name, place=p.name, exporter=p.exporter,
                              kind="emulated" if p.tags.get("kind") == "emulated" else "hardware") for p in places)
    return Rack(name=rack.name, boards=entries, labgrid=spec)


@contextmanager
def held_rack(rack: Rack, catalogue: dict[str, Board], say: Callable[[str], None]) -> Iterator[Rack]:
    """``rack`` with its labgrid places acquired for the duration (any other rack as it is)."""
    spec = rack.labgrid
    if spec is None:
        yield rack
        return
    client = LabClient(spec.coordinator, spec.owner or default_owner())
    places = select_places(client.places(), spec, catalogue)
    if rack.boards:  # listed already (pytest): those places, not a new selection
        listed = {e.place for e in rack.boards}
        places = [p for p in places if p.name in listed]
    say(f"labgrid {spec.coordinator}: holding {len(places)} place(s) as {client.holder} (if this job is killed: "
        f"`bench rack release --coordinator {spec.coordinator} --owner {client.holder}`)")
    held: list[str] = []
    lock = threading.Lock()

    def take(place: Place) -> RackEntry:
        token = client.reserve(place.name, spec.wait_s, say)
        client.acquire(place.name, token)
        with lock:
            held.append(place.name)
        client.cancel(token)  # the lock is what holds the place; the reservation has done its part
        return entry_for(place, client.resources(place.name))

    with sigterm_as_interrupt():
        try:
            with ThreadPoolExecutor(max_workers=max(len(places), 1)) as pool:
                entries = list(pool.map(take, places))
            yield Rack(name=rack.name, boards=tuple(entries))
        finally:
            _release(client, held)


def _release(client: LabClient, held: list[str]) -> None:
    """Release every place this session acquired; one that is gone (a restarted coordinator drops every lock) is
    a warning, not an error that would hide the run's own outcome."""
    def one(place: str) -> None:
        try:
            client.release(place)
        except LabError as exc:
            log.warning("labgrid: could not release %s: %s", place, exc)

    with ThreadPoolExecutor(max_workers=max(len(held), 1)) as pool:
        list(pool.map(one, held))


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a cancelled CI job) unwinds like Ctrl-C, so the places are released."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def release_owner(coordinator: str, holder: str) -> list[str]:
    """The janitor: release every place ``holder`` (``host/user``) has acquired; returns their names."""
    client = LabClient(coordinator, holder.split("/", 1)[-1])
    places = client.held_by(holder)
    for place in places:
        client.release_from(place, holder)
    return places
