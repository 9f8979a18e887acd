"""The records of the blobs the device reads (docs/plan-format.md, docs/qplan-format.md), declared once.

The host packers (`bench.plan`) write them through these layouts, the firmware reads them at the offsets of the
generated firmware/engine/formats.h, and tests/test_formats.py checks both, and the docs' tables, against them.
"""

from __future__ import annotations

from bench.formats.layout import Layout

# fp32 plan "TPLN" (docs/plan-format.md)
TPLN_HEADER = Layout((
    ("magic", "I"), ("version", "H"), ("header_bytes", "H"), ("blob_bytes", "I"), ("crc32", "I"),
    ("plan_hash", "I"), ("arena_bytes", "I"), ("dataset_addr", "I"), ("n_layers", "H"), ("n_classes", "H"),
    ("layers_offset", "I"), ("input_off", "I"), ("dlogits_off", "I"), ("first_bwd", "H"), ("flags", "H"),
    ("f_seed", "I"), ("f_bound", "f"), ("mod_a_off", "I"), ("mod_b_off", "I"),
))
TPLN_LAYER = Layout((
    ("op", "B"), ("flags", "B"), ("stride", "B"), ("k", "B"), ("in_h", "H"), ("in_w", "H"), ("in_c", "H"),
    ("out_h", "H"), ("out_w", "H"), ("out_c", "H"), ("w_src", "I"), ("b_src", "I"), ("w_ram", "I"), ("b_ram", "I"),
    ("in_off", "I"), ("out_off", "I"), ("dout_off", "I"), ("din_off", "I"), ("scratch_off", "I"), ("pad_top", "H"),
    ("pad_left", "H"), ("ch_off", "I"), ("ch_count", "H"), ("kw", "H"),
))

# dataset "TDST" (docs/plan-format.md), shared by both plan kinds
TDST_HEADER = Layout((
    ("magic", "I"), ("version", "H"), ("header_bytes", "H"), ("blob_bytes", "I"), ("crc32", "I"), ("n_train", "I"),
    ("n_eval", "I"), ("h", "H"), ("w", "H"), ("c", "H"), ("n_classes", "H"), ("scale", "f"), ("offset", "f"),
    ("x_train_off", "I"), ("dtype", "B"), ("reserved", "B"), ("shift", "h"),
))

# int8 plan "TQPL" (docs/qplan-format.md)
TQPL_HEADER = Layout((
    ("magic", "I"), ("version", "H"), ("header_bytes", "H"), ("blob_bytes", "I"), ("crc32", "I"),
    ("plan_hash", "I"), ("arena_bytes", "I"), ("dataset_addr", "I"), ("n_tensors", "H"), ("n_ops", "H"),
    ("tensors_offset", "I"), ("ops_offset", "I"), ("input", "H"), ("output", "H"), ("n_classes", "H"),
    ("flags", "H"), ("train_offset", "I"), ("tail", "12x"),
))
TQPL_TENSOR = Layout((
    ("kind", "B"), ("flags", "B"), ("rank", "B"), ("reserved", "B"), ("dims0", "H"), ("dims1", "H"), ("dims2", "H"),
    ("dims3", "H"), ("offset", "I"), ("bytes", "I"), ("zero_point", "i"), ("scale", "f"), ("scales_offset", "I"),
))
TQPL_OP = Layout((
    ("op", "B"), ("flags", "B"), ("stride_h", "B"), ("stride_w", "B"), ("k_h", "B"), ("k_w", "B"), ("dm", "B"),
    ("padding", "B"), ("in0", "H"), ("in1", "H"), ("in2", "H"), ("out", "H"), ("pad_top", "H"), ("pad_left", "H"),
    ("act_min", "h"), ("act_max", "h"), ("rq_offset", "I"), ("bias_eff_offset", "I"), ("param0", "i"),
    ("macs", "I"), ("tail", "24x"),
))
TQPL_TRAIN_HEADER = Layout((
    ("first_bwd", "H"), ("qas", "B"), ("loss", "B"), ("lr", "f"), ("dlogits", "I"), ("records", "I"),
    ("gstat", "I"), ("recon_mult", "i"), ("recon_shift", "h"), ("tail", "6x"),
))
TQPL_TRAIN_RECORD = Layout((
    ("flags", "B"), ("h_down", "B"), ("ch_count", "H"), ("ch_off", "I"), ("w_ram", "I"), ("wres_ram", "I"),
    ("b_ram", "I"), ("bres_ram", "I"), ("eff_ram", "I"), ("dout", "I"), ("din", "I"), ("scratch", "I"),
    ("scratch_bytes", "I"), ("m_off", "I"), ("upd_off", "I"), ("fwd_tmp", "I"), ("skip", "I"), ("merge", "I"),
))

# C prefix, layout, and the doc section (file, heading) whose table describes it
RECORDS: dict[str, tuple[Layout, str, str]] = {
    "TPLN_H": (TPLN_HEADER, "docs/plan-format.md", "## Plan blob"),
    "TPLN_L": (TPLN_LAYER, "docs/plan-format.md", "Layer record, 64 bytes each:"),
    "TDST_H": (TDST_HEADER, "docs/plan-format.md", "## Dataset blob"),
    "TQPL_H": (TQPL_HEADER, "docs/qplan-format.md", "## Header (64 bytes)"),
    "TQPL_T": (TQPL_TENSOR, "docs/qplan-format.md", "## Tensor record (32 bytes)"),
    "TQPL_O": (TQPL_OP, "docs/qplan-format.md", "## Op record (64 bytes)"),
    "TQPL_TH": (TQPL_TRAIN_HEADER, "docs/qplan-format.md", "### Training header (32 bytes at train_offset)"),
    "TQPL_TR": (TQPL_TRAIN_RECORD, "docs/qplan-format.md", "### Training record"),
}
