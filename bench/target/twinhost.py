"""Twins behind a labgrid exporter: the host side (`TwinHost`, run by `bench twin-host`) and the client side
(`RemoteTwinTarget`, what a labgrid place with a twin becomes in the bench).

Each hosted twin is a QEMU twin whose UART is a TCP server on 127.0.0.1 (a labgrid ``NetworkSerialPort``, raw) and a
small HTTP control endpoint (a ``BenchTwinControl`` resource) that takes the image set and resets the twin: what a
probe does for a real board. Files travel content-addressed (``PUT /files/<sha256>``, skipped when the host has
them), so a re-run uploads nothing new. To the bench a twin place differs from a board place only in its kind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.config.boards import Board
from bench.image.firmware import Blob, Firmware, ImageSet
from bench.target.drivers import Counting, QemuTarget, TargetError, twin_counting

log = logging.getLogger(__name__)
CONTROL_CLASS = "BenchTwinControl"
MAX_FILE_BYTES = 16 << 20  # an ELF or a blob; a twin's whole flash is at most a few MB
SHA_CHARS = set("0123456789abcdef")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (QEMU binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class HostedTwin:
    """One twin of a twin host: its place name, board, ports and QEMU."""

    place: str
    board: Board
    serial_port: int
    target: QemuTarget
    files: Path
    server: ThreadingHTTPServer | None = None
    # QEMU dies with the thread that started it (parent-death signal), and each request has a short-lived thread
    # of its own: every command runs on this one long-lived worker instead
    worker: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=1))

    @property
    def control_port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])


class TwinHost:
    """QEMU twins served on 127.0.0.1 for a labgrid exporter named ``name`` (a simulated lab host)."""

    def __init__(self, name: str, boards: list[Board], work: Path) -> None:
        self.name, self.work = name, work
        files = work / "files"
        files.mkdir(parents=True, exist_ok=True)
        counts: dict[str, int] = {}
        self.twins: list[HostedTwin] = []
        for board in boards:
            i = counts[board.name] = counts.get(board.name, -1) + 1
            place = f"{name}-{board.name}-{i}"
            port = free_port()
            target = QemuTarget(board, work / f"{place}.qemu.log", serial_port=port)
            self.twins.append(HostedTwin(place, board, port, target, files))

    def start(self) -> None:
        for twin in self.twins:
            twin.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(twin))
            threading.Thread(target=twin.server.serve_forever, name=f"control-{twin.place}", daemon=True).start()

    def exporter_yaml(self) -> str:
        """The labgrid exporter's configuration: one resource group per twin (group name = place name)."""
        lines = [f"## written by `bench twin-host` for exporter {self.name}"]
        for t in self.twins:
            lines += [f"{t.place}:", "  NetworkSerialPort:", "    host: 127.0.0.1", f"    port: {t.serial_port}",
                      "    protocol: raw", f"  {CONTROL_CLASS}:", "    host: 127.0.0.1", f"    port: {t.control_port}",
                      f"    board: {t.board.name}"]
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        for twin in self.twins:
            twin.worker.submit(twin.target.close).result()
            twin.worker.shutdown()
            if twin.server is not None:
                twin.server.shutdown()
                twin.server.server_close()


def _handler(twin: HostedTwin) -> type[BaseHTTPRequestHandler]:
    class Control(BaseHTTPRequestHandler):
        """HEAD/PUT /files/<sha256>, POST /load, /reset, /close, GET / (status)."""

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s: %s", twin.place, format % args)

        def _reply(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _file(self) -> Path | None:
            sha = self.path.removeprefix("/files/")
            ok = self.path.startswith("/files/") and len(sha) == 64 and set(sha) <= SHA_CHARS
            return twin.files / sha if ok else None

        def do_HEAD(self) -> None:
            path = self._file()
            self.send_response(200 if path is not None and path.is_file() else 404)
            self.end_headers()

        def do_PUT(self) -> None:
            path = self._file()
            size = int(self.headers.get("Content-Length") or -1)
            if path is None or not 0 <= size <= MAX_FILE_BYTES:
                return self._reply(400, {"error": f"bad upload {self.path} ({size} bytes)"})
            data = self.rfile.read(size)
            if hashlib.sha256(data).hexdigest() != path.name:
                return self._reply(400, {"error": f"{self.path}: content does not match its sha256"})
            fd, tmp = tempfile.mkstemp(dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
            return self._reply(200, {"stored": path.name})

        def do_GET(self) -> None:
            self._reply(200, {"place": twin.place, "board": twin.board.name, "serial_port": twin.serial_port,
                              "running": twin.target.running})

        def do_POST(self) -> None:
            try:
                size = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(min(size, 1 << 20)) or b"{}")
                body = twin.worker.submit(self._command, request).result()
            except (TargetError, ValueError, KeyError, TypeError) as exc:
                return self._reply(500, {"error": f"{twin.place}: {type(exc).__name__}: {exc}"})
            return self._reply(200, body)

        def _command(self, request: dict[str, Any]) -> dict[str, Any]:
            if self.path == "/load":
                twin.target.load(_image_set(twin, request))
                return {"loaded": request["build_id"]}
            if self.path == "/reset":
                twin.target.reset()
                return {"serial": twin.target.url}
            if self.path == "/close":
                twin.target.close()
                return {"closed": twin.place}
            raise ValueError(f"no command {self.path}")

    return Control


def _image_set(twin: HostedTwin, request: dict[str, Any]) -> ImageSet:
    """The image set of a ``/load`` request, from files the host already holds (the client uploaded them)."""
    shas = [str(request["elf"]), *(str(b["sha"]) for b in request["blobs"])]
    bad = [sha for sha in shas if len(sha) != 64 or not set(sha) <= SHA_CHARS]  # names, never paths
    if bad:
        raise ValueError(f"not sha256 names: {', '.join(bad[:3])}")
    missing = [sha for sha in shas if not (twin.files / sha).is_file()]
    if missing:
        raise ValueError(f"files not uploaded: {', '.join(missing)}")
    elf = twin.files / request["elf"]
    firmware = Firmware(board=twin.board.name, variant="twin", build_id=str(request["build_id"]), protocol_version=0,
                        elf=elf, bin=elf, flash_bytes=0, static_bytes=0, stack_bytes=0)
    blobs = tuple(Blob(str(b["what"]), int(b["addr"]), twin.files / b["sha"], int(b["size"])) for b in request["blobs"])
    return ImageSet(board=twin.board, kind="emulated", firmware=firmware, blobs=blobs, plan_hash=0, arena_bytes=0)


# ---------------------------------------------------------------------------------------------------------------
# The client side


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class RemoteTwinTarget:
    """A twin on a twin host, reached through a labgrid place: loads by upload, resets over the control endpoint,
    and its UART is the place's NetworkSerialPort (``serial_url``)."""

    kind = "emulated"

    def __init__(self, board: Board, place: str, control: str, serial_url: str, timeout: float = 30.0) -> None:
        self.board, self.place, self.control, self.serial_url, self.timeout = board, place, control, serial_url, timeout
        self._running = False

    def _call(self, method: str, path: str, body: bytes | None = None) -> dict[str, Any]:
        request = urllib.request.Request(self.control + path, data=body, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                return json.loads(reply.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode(errors="replace")
            raise TargetError(f"{self.place}: twin host said {exc.code} to {method} {path}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise TargetError(f"{self.place}: twin host at {self.control} unreachable ({method} {path}): "
                              f"{exc}") from None

    def _has(self, sha: str) -> bool:
        try:
            self._call("HEAD", f"/files/{sha}")
        except TargetError as exc:
            if "said 404" in str(exc):
                return False
            raise
        return True

    def load(self, images: ImageSet) -> None:
        if images.kind != self.kind:
            raise TargetError(f"{self.place}: a {images.kind} image set cannot load into a twin")
        shas = {}
        for path in (images.firmware.elf, *(b.path for b in images.blobs)):
            sha = shas[path] = _sha256(path)
            if not self._has(sha):
                self._call("PUT", f"/files/{sha}", path.read_bytes())
        self._call("POST", "/load", json.dumps({
            "build_id": images.firmware.build_id, "elf": shas[images.firmware.elf],
            "blobs": [{"what": b.what, "addr": b.addr, "sha": shas[b.path], "size": b.size} for b in images.blobs],
        }).encode())

    def reset(self) -> None:
        self._call("POST", "/reset", b"{}")
        self._running = True

    @property
    def url(self) -> str:
        if not self._running:
            raise TargetError(f"{self.place}: twin not running")
        return self.serial_url

    def counting(self, counter_hz: int, counter_kind: int) -> Counting:
        return twin_counting(self.board, counter_hz, counter_kind)

    def close(self) -> None:
        """Stop the twin; a host that is already gone has nothing left to stop."""
        if self._running:
            self._running = False
            try:
                self._call("POST", "/close", b"{}")
            except TargetError as exc:
                log.info("%s", exc)
