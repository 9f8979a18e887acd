"""Plan compiler: lifetimes never share bytes while both live, only what backward needs is kept, blobs parse."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from bench.boards import load_catalogue
from bench.image import DoesNotFit, Firmware, assemble
from bench.nn import Layer, Model
from bench.plan import DATASET_MAGIC, NONE, PLAN_MAGIC, compile_plan, dataset_blob
from bench.profile import parse_technique


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
