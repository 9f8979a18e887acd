"""Plan compiler: lifetimes never share bytes while both live, only what backward needs is kept, blobs parse."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from bench.config.boards import load_catalogue
from bench.config.profile import parse_technique
from bench.image.firmware import DoesNotFit, Firmware, assemble
from bench.model.nn import Layer, Model
from bench.plan.blob import DATASET_MAGIC, dataset_blob
from bench.plan.fp32 import NONE, PLAN_MAGIC, compile_plan


def cnn(width: int = 8, hidden: int = 32) -> Model:
    rng = np.random.default_rng(0)
    f = np.float32
    out_hw = 6
    return Model("test-cnn", (8, 8, 1), 10, (
        Layer("conv2d", (8, 8, 1), (out_hw, out_hw, width), rng.normal(size=(width, 3, 3, 1)).astype(f),
              rng.normal(size=width).astype(f), kernel=3),
        Layer("relu", (6, 6, width), (6, 6, width)),
        Layer("dense", (6, 6, width), (1, 1, hidden), rng.normal(size=(hidden, 36 * width)).astype(f),
              rng.normal(size=hidden).astype(f)),
        Layer("relu", (1, 1, hidden), (1, 1, hidden)),
        Layer("dense", (1, 1, hidden), (1, 1, 10), rng.normal(size=(10, hidden)).astype(f),
              rng.normal(size=10).astype(f)),
    ))


@pytest.mark.parametrize("technique", ["full-fp32", "last-fp32", "bias-fp32"])
def test_live_buffers_never_overlap(technique: str):
    plan = compile_plan(cnn(), parse_technique(technique))
    for a in plan.buffers:
        assert a.offset % 8 == 0
        for b in plan.buffers:
            if a is b or a.end < b.start or b.end < a.start:
                continue
            assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset, (a, b)
    assert plan.arena_bytes == max(b.offset + b.size for b in plan.buffers)


def test_schemes_keep_only_what_backward_needs():
    model = cnn()
    full, last, bias = (compile_plan(model, parse_technique(t)) for t in ("full-fp32", "last-fp32", "bias-fp32"))
    # full: every weight in RAM, first layer computes no input gradient
    assert all(lp.w_ram != NONE for lp in full.layers if model.layers[lp.index].has_params)
    assert not full.layers[0].need_dx and full.layers[2].need_dx
    # last layer only: frozen weights stay in flash, backward visits only the last layer
    assert [lp.w_ram != NONE for lp in last.layers] == [False, False, False, False, True]
    assert last.first_bwd == 4 and not any(lp.need_dx for lp in last.layers)
    # bias only: no weight in RAM and no activation kept for backward (TinyTL)
    assert all(lp.w_ram == NONE for lp in bias.layers) and bias.layers[4].b_ram != NONE
    assert sum(lp.kept_bytes for lp in bias.layers) == 0
    params_full = sum(4 * (lay.weight.size + lay.bias.size) for lay in model.layers if lay.has_params)
    assert full.arena_bytes >= params_full
    assert bias.arena_bytes < last.arena_bytes < full.arena_bytes


def test_plan_blob_layout_and_crc():
    model = cnn()
    plan = compile_plan(model, parse_technique("full-fp32"))
    blob = plan.blob(dataset_addr=0x30000)
    magic, version, header, total, crc, phash, arena, ds_addr, n_layers, n_classes, layers_off = struct.unpack_from(
        "<IHHIIIIIHHI", blob)
    assert (magic, version, header, total, n_layers, n_classes) == (PLAN_MAGIC, 1, 64, len(blob), 5, 10)
    assert (phash, arena, ds_addr, layers_off) == (plan.plan_hash, plan.arena_bytes, 0x30000, 64)
    assert crc == zlib.crc32(blob[:12] + b"\0\0\0\0" + blob[16:])
    op, flags, stride, k, *shape = struct.unpack_from("<BBBB6H", blob, 64)
    assert (op, flags, stride, k, tuple(shape)) == (2, 0b0011, 1, 3, (8, 8, 1, 6, 6, 8))
    w_src = struct.unpack_from("<I", blob, 64 + 16)[0]
    stored = np.frombuffer(blob, "<f4", count=model.layers[0].weight.size, offset=w_src)
    np.testing.assert_array_equal(stored, model.layers[0].weight.ravel())
    assert plan.blob(0x30000) == blob and plan.blob(0x40000) != blob
    assert plan.plan_hash == compile_plan(model, parse_technique("full-fp32")).plan_hash


def test_dataset_blob_layout():
    rng = np.random.default_rng(1)
    x_tr, y_tr = rng.integers(0, 255, (5, 8, 8, 1), dtype=np.uint8), np.arange(5, dtype=np.uint8)
    x_ev, y_ev = rng.integers(0, 255, (3, 8, 8, 1), dtype=np.uint8), np.arange(3, dtype=np.uint8)
    blob = dataset_blob(x_tr, y_tr, x_ev, y_ev, 10, 0.5, -1.0)
    magic, _v, header, total, crc, n_tr, n_ev, h, w, c, ncls, scale, offset, x_off = struct.unpack_from(
        "<IHHIIIIHHHHffI", blob)
    assert (magic, header, total, n_tr, n_ev, h, w, c, ncls) == (DATASET_MAGIC, 48, len(blob), 5, 3, 8, 8, 1, 10)
    assert (scale, offset, x_off) == (0.5, -1.0, 48)
    assert crc == zlib.crc32(blob[:12] + b"\0\0\0\0" + blob[16:])
    y_ev_off = 48 + 320 + 8 + 192
    assert blob[48:48 + 320] == x_tr.tobytes() and blob[y_ev_off:y_ev_off + 3] == y_ev.tobytes()


def _firmware(static: int = 4000) -> Firmware:
    return Firmware(board="nrf52840-dk", variant="twin", build_id="0" * 16, protocol_version=1,
                    elf=Path("fw.elf"), bin=Path("fw.bin"), flash_bytes=30000, static_bytes=static,
                    stack_bytes=16384)


def test_plan_too_big_for_the_board_gives_required_vs_available(tmp_path: Path):
    board = load_catalogue()["nrf52840-dk"]
    model = cnn(width=16, hidden=256)  # 590 KB of fp32 weights: fits flash, not SRAM when all train
    plan = compile_plan(model, parse_technique("full-fp32"))
    with pytest.raises(DoesNotFit) as err:
        assemble(board, "emulated", _firmware(), plan, b"\0" * 64, tmp_path)
    required = 4000 + plan.arena_bytes + 16384
    assert err.value.required == required and err.value.available == board.sram_bytes
    assert f"needs {required:,} B of SRAM but the board has {board.sram_bytes:,} B" in str(err.value)
    last = compile_plan(model, parse_technique("last-fp32"))
    images = assemble(board, "emulated", _firmware(), last, b"\0" * 64, tmp_path)
    assert [b.what for b in images.blobs] == ["plan", "dataset"]
    assert images.blobs[0].addr == board.plan_addr(emulated=True)


def test_dataset_too_big_for_flash(tmp_path: Path):
    board = load_catalogue()["nucleo-f746zg"]
    plan = compile_plan(cnn(), parse_technique("last-fp32"))
    with pytest.raises(DoesNotFit, match="of flash"):
        assemble(board, "emulated", _firmware(), plan, b"\0" * board.flash_bytes, tmp_path)


# ---- sparse update (MCUNetV3) ------------------------------------------------------------------------------------

SPARSE = {"bias_k": 2, "layers": {0: 0.25, 2: 0.5}}


def test_channels_picked_by_weight_magnitude():
    from bench.plan.buffers import channel_count
    from bench.plan.fp32 import select_channels

    w = np.zeros((8, 3, 3, 1), np.float32)
    for c, scale in enumerate([0.1, 5.0, 0.2, 3.0, 3.0, 0.3, 4.0, 0.0]):
        w[c] = scale
    assert select_channels(w, 0.25) == (1, 6)  # the two largest L2 norms, ascending
    assert select_channels(w, 0.5) == (1, 3, 4, 6)  # ties (3.0, 3.0) both in
    assert select_channels(w, 0.125) == (1,)
    assert select_channels(np.ones((8, 4), np.float32), 0.25) == (0, 1)  # all equal: lower indices
    assert [channel_count(c, r) for c, r in [(8, 0.125), (10, 0.125), (32, 0.25), (3, 0.125), (7, 1.0)]] == \
        [1, 1, 8, 1, 7]


def test_sparse_plan_keeps_only_selected_channels():
    from bench.plan.fp32 import select_channels

    model = cnn()
    tech = parse_technique("sparse-fp32", sparse=SPARSE)
    plan = compile_plan(model, tech)
    sizes = {b.name: b.size for b in plan.buffers}
    assert plan.channels == {0: select_channels(model.layers[0].weight, 0.25),
                             2: select_channels(model.layers[2].weight, 0.5)}
    assert len(plan.channels[0]) == 2 and len(plan.channels[2]) == 16
    # compact copies only: 2 of 8 conv channels (3x3x1 each), 16 of 32 dense rows (288 each); no full weight copy
    assert sizes["w0"] == 2 * 9 * 4 and sizes["w2"] == 16 * 288 * 4 and "w4" not in sizes
    assert {(i, p) for i, p in plan.trainable} == {(0, "w"), (2, "w"), (2, "b"), (4, "b")}
    assert plan.first_bwd == 0 and not plan.layers[0].need_dx and plan.layers[2].need_dx
    # activations kept only where weights update (conv input, dense-2 input) plus the relu masks on the way
    assert [lp.kept_bytes > 0 for lp in plan.layers] == [True, True, True, True, False]
    full = compile_plan(model, parse_technique("full-fp32"))
    assert plan.arena_bytes < full.arena_bytes
    # bias-only up top, weights of the last layer only: backward stops at the lowest updated layer
    top = compile_plan(model, parse_technique("sparse-fp32", sparse={"bias_k": 1, "layers": {4: 0.5}}))
    assert top.first_bwd == 4 and top.channels == {4: select_channels(model.layers[4].weight, 0.5)}
    assert not any(lp.w_ram != NONE for lp in top.layers[:4])


def test_sparse_memory_monotonic_in_ratio():
    model = cnn()
    for layer in (0, 2, 4):
        arenas = [compile_plan(model, parse_technique("sparse-fp32", sparse={"bias_k": 1, "layers": {layer: r}}))
                  .arena_bytes for r in (0.125, 0.25, 0.5, 1.0)]
        assert arenas == sorted(arenas) and arenas[0] < arenas[-1], (layer, arenas)
    # ratio 1 is the layer's full weights: no list, same tensor sizes as training that layer fully
    one = compile_plan(model, parse_technique("sparse-fp32", sparse={"bias_k": 1, "layers": {4: 1.0}}))
    last = compile_plan(model, parse_technique("last-fp32"))
    assert one.channels == {} and one.arena_bytes == last.arena_bytes


def test_sparse_blob_channel_lists_and_compatibility():
    model = cnn()
    plan = compile_plan(model, parse_technique("sparse-fp32", sparse=SPARSE))
    blob = plan.blob(0x30000)
    assert struct.unpack_from("<H", blob, 46)[0] == 1  # header flag: channel lists present
    for i in range(5):
        ch_off, ch_n, reserved = struct.unpack_from("<IHH", blob, 64 + 64 * i + 56)
        listed = plan.channels.get(i, ())
        assert ch_n == len(listed) and reserved == 0
        if listed:
            assert ch_off % 4 == 0 and ch_off + 2 * ch_n <= len(blob)
            assert tuple(np.frombuffer(blob, "<u2", count=ch_n, offset=ch_off)) == listed
        else:
            assert ch_off == 0
    w_src = struct.unpack_from("<I", blob, 64 + 16)[0]  # the full tensor stays in flash
    np.testing.assert_array_equal(np.frombuffer(blob, "<f4", count=72, offset=w_src), model.layers[0].weight.ravel())
    # without lists: flag clear, the former reserved bytes 0 (earlier blobs read the same)
    full = compile_plan(model, parse_technique("full-fp32")).blob(0x30000)
    assert struct.unpack_from("<H", full, 46)[0] == 0
    assert all(full[64 + 64 * i + 56:64 + 64 * i + 64] == b"\0" * 8 for i in range(5))
