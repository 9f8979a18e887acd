"""The fault-injecting link (bench.link.faults): its books must match what the host's decoder sees, exactly, and
a whole run through it on a real twin ends ok or as a clean failure with every lost frame counted."""

from __future__ import annotations

import socket

import pytest

from bench.app.runner import Bench, load_profile
from bench.app.soak import CLEAN_FAILURES, soak, soak_profile
from bench.config.boards import LinkFaults, load_catalogue, load_rack
from bench.link import protocol as proto
from bench.link.faults import FaultProxy, Injector


def _stream(n: int, first: int = 0) -> bytes:
    """n STEP frames with consecutive seqs from ``first``, a lone 0x00 (as after PING) every 50 frames."""
    out = bytearray()
    for k in range(first, first + n):
        step = proto.Step(step=k, sample=k, label=1, pred=2, loss=0.5, t_fwd=1, t_bwd=2, t_upd=3, stack_hwm=4,
                          arena_peak=5, sram_used=6)
        out += proto.encode_message(step, k % proto.SEQ_MOD)
        if k % 50 == 0:
            out += b"\x00"
    return bytes(out)


@pytest.mark.parametrize("faults", [
    LinkFaults(ber=1e-4, seed=1), LinkFaults(ber=1e-3, seed=2), LinkFaults(drop=1e-3, seed=3),
    LinkFaults(insert=1e-3, seed=4), LinkFaults(ber=1e-3, drop=1e-3, insert=1e-3, seed=5), LinkFaults(seed=6),
], ids=lambda f: f.describe())
def test_injector_books_match_the_decoder_exactly(faults: LinkFaults) -> None:
    # whole frames before and after the faulty stretch: a loss is seen as a gap between two received seqs
    head, data, tail = _stream(1), _stream(5000, first=1), _stream(1, first=5001)
    injector = Injector(faults)
    hurt = b"".join(injector.apply(data[i:i + 777]) for i in range(0, len(data), 777))
    decoder = proto.FrameDecoder()
    frames = list(decoder.feed(head + hurt + tail))
    got = [proto.decode_message(f) for f in frames[1:-1]]
    stats = injector.stats
    assert decoder.stats.frames_ok - 2 == stats.frames_intact == len(got)  # no corrupt frame accepted
    assert decoder.stats.lost_frames == stats.frames_damaged  # every lost frame counted
    assert stats.frames == 5000
    assert [s.step for s in got] == sorted(s.step for s in got)
    if faults.ber or faults.drop or faults.insert:
        assert stats.frames_damaged > 0
    print(f"{faults.describe()}: {stats.frames_damaged} of {stats.frames} frames damaged, all counted by the host")


def test_proxy_forwards_both_ways_and_disconnects_where_told(tmp_path) -> None:
    """Over a real pyserial loop:// upstream: host bytes reach the port, port bytes reach the host up to the cut."""
    with FaultProxy("loop://", LinkFaults(disconnect_after=10)) as proxy:
        host, port = proxy.url.removeprefix("socket://").split(":")
        with socket.create_connection((host, int(port)), timeout=2) as client:
            client.sendall(b"0123456789abcdef")  # loop:// echoes: the proxy sends it back, cut after 10 bytes
            got = b""
            while True:
                chunk = client.recv(100)
                if not chunk:
                    break
                got += chunk
        assert got == b"0123456789" and proxy.stats.disconnected


@pytest.mark.twin
def test_a_run_through_the_proxy_at_ber_1e4_is_ok_or_clean_and_counts_every_lost_frame(tmp_path) -> None:
    profile = load_profile("quick").model_copy(update={"steps": 80, "eval_samples": 30, "check_steps": 0,
                                                       "grad_every": 0, "stall_timeout_s": 3.0})
    entry = next(e for e in load_rack(None, load_catalogue()).boards if e.board == "nucleo-f746zg")
    bench = Bench(tmp_path)
    prepared = bench.prepare(profile)
    outcomes = []
    for seed in (1, 2, 3):
        faulty = entry.model_copy(update={"faults": LinkFaults(ber=1e-4, seed=seed)})
        record = bench.run(prepared, faulty, profile.technique("last-fp32"))
        assert record.status in ("ok", *CLEAN_FAILURES), record.error
        assert record.injected is not None and record.link_faults == "ber=0.0001"
        if record.status == "ok":  # every frame the proxy damaged is counted lost by the host, no more, no less
            assert record.lost_frames == record.injected.frames_damaged
            assert len(record.steps) <= 80
        outcomes.append((record.status, record.lost_frames, record.injected.frames_damaged))
    print(outcomes)
    assert any(status == "ok" and lost > 0 for status, lost, _ in outcomes), outcomes  # faults hit, runs survived


@pytest.mark.twin
def test_a_small_soak_keeps_its_books(tmp_path) -> None:
    """Six runs with random faults on one twin: every run recorded, statuses clean, ok runs counted exactly, no
    twin left running (the same checks `bench soak` prints)."""
    profile = soak_profile(load_profile("quick"))
    rack = load_rack(None, load_catalogue())
    rack = rack.model_copy(update={"boards": [e for e in rack.boards if e.board == "nrf52840-dk"]})
    result = soak(profile, rack, tmp_path / "soak", runs=6, seed=7)
    assert result.records == 6 and result.records_lost == 0 and result.orphans == 0
    assert result.passed, (result.unexpected, result.ok_mismatches)


@pytest.mark.twin
def test_bench_soak_json_prints_its_books(tmp_path) -> None:
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-c", "from bench.app.cli import entry; entry()", "soak", "--runs", "2", "--board",
           "rpi-pico", "--seed", "3", "--out", str(tmp_path / "soak"), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    books = json.loads(done.stdout)
    assert done.returncode == (0 if books["passed"] else 1), done.stderr
    assert books["runs"] == books["records"] == 2 and books["records_lost"] == 0 and books["orphans"] == 0
    assert sum(books["statuses"].values()) == 2


@pytest.mark.twin
def test_the_soak_orphan_count_sees_a_running_twin(tmp_path) -> None:
    """The orphan check is not one that cannot fail: a twin whose command line names the directory is counted."""
    from bench.app.soak import twin_processes
    from bench.image.firmware import Blob, ImageSet, build_firmware
    from bench.target.drivers import QemuTarget

    board = load_catalogue()["rpi-pico"]
    blob = tmp_path / "out" / "images" / "marker.bin"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"\\0" * 16)
    images = ImageSet(board=board, kind="emulated", firmware=build_firmware(board, "twin"),
                      blobs=(Blob("plan", board.plan_addr(emulated=True), blob, 16),), plan_hash=0, arena_bytes=0)
    target = QemuTarget(board, tmp_path / "qemu.log")
    target.load(images)
    target.reset()
    try:
        assert twin_processes(str(tmp_path / "out")) == 1
    finally:
        target.close()
    assert twin_processes(str(tmp_path / "out")) == 0
