"""Board descriptions and racks: passive data read from TOML, validated strictly.

A board file (``boards/<name>.toml``) says what the silicon is, how to reach it with a probe and a serial port, what
it draws (for the energy model) and which QEMU machine emulates it. A rack file says which boards are present and how
to reach each one. Neither contains code; unknown keys and missing fields are errors naming the file and the key.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

REPO_ROOT = Path(__file__).resolve().parents[2]
BOARDS_DIR = REPO_ROOT / "boards"
_M = TypeVar("_M", bound="BaseModel")
# pyserial's URL handlers (serial/urlhandler/protocol_*.py)
SERIAL_URL_SCHEMES = ("alt", "cp2110", "hwgrep", "loop", "rfc2217", "socket", "spy")


class ConfigError(ValueError):
    """A description file is malformed; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Memory(_Strict):
    flash_base: int
    sram_base: int
    plan_offset: int = Field(gt=0, description="offset of the plan blob from the flash base")


class Build(_Strict):
    port: str = Field(description="firmware/ports/<port> of the hardware image; twins always use mps2")
    cflags: str
    stack_bytes: int = Field(gt=0)


class Pyocd(_Strict):
    target: str
    pack: str | None = None


class Serial(_Strict):
    baudrate: int = Field(gt=0)
    usb_vid_pid: str | None = None


class Power(_Strict):
    run_current_ma: float = Field(gt=0)
    supply_v: float = Field(gt=0)
    source: str


class Twin(_Strict):
    machine: str
    flash_base: int
    sram_base: int
    counter_hz: int = Field(gt=0)
    icount_shift: int = Field(ge=0, le=10)


class Board(_Strict):
    """One kind of board (the resource); what is attached where lives in the rack."""

    name: str
    title: str
    mcu: str
    core: Literal["cortex-m7", "cortex-m4f", "cortex-m0plus"]
    sram_bytes: int = Field(gt=0)
    flash_bytes: int = Field(gt=0)
    cpu_hz: int = Field(gt=0)
    memory: Memory
    build: Build
    pyocd: Pyocd
    serial: Serial
    power: Power
    twin: Twin

    def plan_addr(self, emulated: bool) -> int:
        """Absolute address of the plan blob on the twin or on the real board."""
        base = self.twin.flash_base if emulated else self.memory.flash_base
        return base + self.memory.plan_offset


class LinkFaults(_Strict):
    """Faults to inject between a board's serial port and the host (`bench.link.faults.FaultProxy`): for tests and
    soaks of the bench itself, never for measurements. Rates are per bit (``ber``) or per byte (``drop``, ``insert``)
    of the device → host stream; ``stall_after``/``disconnect_after`` count device → host bytes."""

    ber: float = Field(default=0.0, ge=0.0, le=0.01)
    drop: float = Field(default=0.0, ge=0.0, le=0.01)
    insert: float = Field(default=0.0, ge=0.0, le=0.01)
    stall_after: int | None = Field(default=None, ge=0)
    stall_s: float = Field(default=0.0, ge=0.0, le=600.0)
    disconnect_after: int | None = Field(default=None, ge=0)
    seed: int = 0

    def describe(self) -> str:
        """A short text of what is injected ('none' when nothing)."""
        parts = [f"{k}={v:g}" for k, v in (("ber", self.ber), ("drop", self.drop), ("insert", self.insert)) if v]
        if self.stall_after is not None and self.stall_s:
            parts.append(f"stall {self.stall_s:g} s after {self.stall_after:,} B")
        if self.disconnect_after is not None:
            parts.append(f"disconnect after {self.disconnect_after:,} B")
        return ", ".join(parts) or "none"


class RackEntry(_Strict):
    """One board present in a rack: either its QEMU twin or real hardware reached by probe and port."""

    board: str
    kind: Literal["emulated", "hardware"] = "emulated"
    name: str | None = None
    probe_uid: str | None = None
    port: str | None = None
    swd_frequency: int | None = None
    connect_mode: Literal["halt", "pre-reset", "under-reset", "attach"] | None = None
    flash_retries: int = Field(default=3, ge=0, le=10)
    meter: Literal["ppk2", "joulescope"] | None = None  # energy meter on this board's supply
    meter_port: str | None = None  # PPK2 serial port (default: the only one attached)
    meter_channel: int = Field(default=0, ge=0, le=7)  # meter digital input wired to the board's marker GPIO
    faults: LinkFaults | None = None  # inject link faults (tests and `bench soak` only)
    # a labgrid place (set when the place is acquired, see bench.app.lab): its name, the exporter that serves it,
    # and for a twin the control endpoint of `bench twin-host` (http://HOST:PORT) that loads and resets it
    place: str | None = None
    exporter: str | None = None
    control: str | None = None

    @field_validator("port", "meter_port")
    @classmethod
    def _serial_url(cls, value: str | None) -> str | None:
        """A device path, or a URL pyserial can open (its ``serial.urlhandler`` schemes), with a port when it needs
        one: refused when the rack file is read, not when a night's run first opens it."""
        if value is None or "://" not in value:
            if value is not None and not value.startswith("/"):
                raise ValueError(f"{value!r} is neither an absolute device path nor a pyserial URL")
            return value
        scheme, _, rest = value.partition("://")
        if scheme not in SERIAL_URL_SCHEMES:
            raise ValueError(f"URL scheme {scheme!r} is not one pyserial opens ({', '.join(SERIAL_URL_SCHEMES)})")
        if scheme in ("rfc2217", "socket"):
            host, _, port = rest.partition("/")[0].rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{value!r}: a {scheme} URL needs host:port with a port in 1..65535")
        return value

    @property
    def label(self) -> str:
        return self.name or self.board


class LabSpec(_Strict):
    """A rack on labgrid: the coordinator, and which of its places a run may use (by name, or every place whose tags
    include ``tags``; a place needs a ``board`` tag naming a board of the catalogue)."""

    coordinator: str = Field(pattern=r"^[A-Za-z0-9_.-]+:\d{1,5}$")
    places: tuple[str, ...] = ()
    tags: dict[str, str] = Field(default_factory=dict)
    wait_s: float = Field(default=600.0, gt=0)  # how long to wait for a place someone else holds
    owner: str | None = None  # who holds the places (LG_USERNAME); default: bench-<user>-<pid>, or $BENCH_LAB_OWNER
    only: tuple[str, ...] = ()  # `--board` filters: place or board names to keep of the selected places


class Rack(_Strict):
    name: str
    boards: tuple[RackEntry, ...] = ()
    labgrid: LabSpec | None = None  # boards come from the coordinator's places when set


def _format_errors(path: Path, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        what = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{path}: key '{key}': {what}")
    return "\n".join(lines)


def read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def validate_file(cls: type[_M], path: Path, data: dict) -> _M:
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(path, e)) from None


def load_board_file(path: Path) -> Board:
    board = validate_file(Board, path, read_toml(path))
    if board.name != path.stem:
        raise ConfigError(f"{path}: key 'name': '{board.name}' must match the file name '{path.stem}'")
    return board


def load_catalogue(boards_dir: Path = BOARDS_DIR) -> dict[str, Board]:
    """All boards described in ``boards_dir``, by name."""
    return {p.stem: load_board_file(p) for p in sorted(boards_dir.glob("*.toml"))}


def boards_named(catalogue: dict[str, Board], names: list[str]) -> list[Board]:
    """The catalogue's boards of ``names``, in order; a ConfigError naming the unknown ones and the known ones."""
    unknown = [b for b in names if b not in catalogue]
    if unknown:
        raise ConfigError(f"unknown board {', '.join(unknown)}; known: {', '.join(catalogue)}")
    return [catalogue[b] for b in names]


def default_rack(catalogue: dict[str, Board]) -> Rack:
    """The built-in rack: one QEMU twin of every catalogued board."""
    entries = tuple(RackEntry(board=name, kind="emulated") for name in sorted(catalogue))
    return Rack(name="emulated", boards=entries)


def load_rack(spec: str | None, catalogue: dict[str, Board]) -> Rack:
    """``None`` or "emulated" gives the default rack; ``labgrid://HOST:PORT[?tag=value&...|?places=a,b]`` a rack on
    a labgrid coordinator; otherwise ``spec`` is a rack TOML file (with ``[[boards]]``, or a ``[labgrid]`` table)."""
    if spec in (None, "emulated"):
        return default_rack(catalogue)
    if spec.startswith("labgrid://"):
        return Rack(name=spec, labgrid=lab_spec(spec))
    path = Path(spec)
    data = read_toml(path)
    data.setdefault("name", path.stem)
    rack = validate_file(Rack, path, data)
    for i, entry in enumerate(rack.boards):
        if entry.board not in catalogue:
            raise ConfigError(
                f"{path}: key 'boards.{i}.board': unknown board '{entry.board}' "
                f"(known: {', '.join(sorted(catalogue))})"
            )
    if rack.labgrid is not None and rack.boards:
        raise ConfigError(f"{path}: a rack has either [[boards]] or a [labgrid] table, not both")
    labels = [e.label for e in rack.boards]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{path}: two rack entries share a name; set 'name' to tell them apart")
    return rack


def lab_spec(url: str) -> LabSpec:
    """``labgrid://HOST:PORT?board=rpi-pico&wait_s=60`` or ``...?places=a,b``: query keys are tags to match, except
    ``places``, ``wait_s`` and ``owner``."""
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    fields: dict[str, object] = {"coordinator": parts.netloc}
    if "places" in query:
        fields["places"] = tuple(p for p in query.pop("places").split(",") if p)
    for key in ("wait_s", "owner"):
        if key in query:
            fields[key] = query.pop(key)
    fields["tags"] = query
    try:
        return LabSpec.model_validate(fields)
    except ValidationError as e:
        raise ConfigError(_format_errors(Path(url), e)) from None


def filter_rack(rack: Rack, names: list[str] | None) -> Rack:
    """Keep the entries whose label or board name is in ``names`` (all when empty)."""
    if not names:
        return rack
    if rack.labgrid is not None and not rack.boards:  # its places are known once the coordinator is asked
        return Rack(name=rack.name, labgrid=rack.labgrid.model_copy(update={"only": tuple(names)}))
    kept = tuple(e for e in rack.boards if e.label in names or e.board in names)
    unknown = set(names) - {e.label for e in kept} - {e.board for e in kept}
    if unknown:
        known = ", ".join(e.label for e in rack.boards)
        raise ConfigError(f"rack '{rack.name}' has no board {', '.join(sorted(unknown))} (it has: {known})")
    return Rack(name=rack.name, boards=kept, labgrid=rack.labgrid)


def lock_dir() -> Path:
    """Where board and session locks live: $BENCH_LOCK_DIR, else per user ($XDG_RUNTIME_DIR/bench-locks, or
    bench-locks-<uid> in the temp directory), so clones of one user share them and other users are not blocked."""
    configured = os.environ.get("BENCH_LOCK_DIR")
    if configured:
        return Path(configured)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / "bench-locks" if runtime else Path(tempfile.gettempdir()) / f"bench-locks-{os.getuid()}"


def lock_key(entry: RackEntry) -> str:
    """The physical thing a run holds: a labgrid place by its name, a real board by its probe (or its port), a twin
    by its rack label."""
    if entry.place is not None:
        return "place-" + re.sub(r"[^A-Za-z0-9_.-]", "_", entry.place)
    if entry.kind == "hardware":
        ident = entry.probe_uid or entry.port or entry.label
        return "board-" + re.sub(r"[^A-Za-z0-9_.-]", "_", ident)
    return "twin-" + entry.label
