"""The fixed parts of the wire protocol's message bodies (docs/protocol.md), declared once.

`bench.link.protocol` builds its message types on these layouts; the firmware's message builders and START parser are
checked against the offsets `cheader.py` renders from them (firmware/tests/test_proto.c), and tests/test_protocol.py
checks the doc's table.
"""

from __future__ import annotations

from bench.formats.layout import Layout

HELLO = Layout((("proto_version", "H"), ("counter_kind", "H"), ("cpu_hz", "I"), ("counter_hz", "I"),
                ("sram_bytes", "I"), ("flash_bytes", "I"), ("static_bytes", "I"), ("arena_bytes", "I"),
                ("stack_bytes", "I")))  # then the counted strings board, build_id
STEP = Layout((("step", "I"), ("sample", "I"), ("label", "B"), ("pred", "B"), ("_", "H"), ("loss", "f"),
               ("t_fwd", "I"), ("t_bwd", "I"), ("t_upd", "I"), ("stack_hwm", "I"), ("arena_peak", "I"),
               ("sram_used", "I")))
GSTAT_HEAD = Layout((("step", "I"), ("n", "B"), ("", "3x")))
GSTAT_ENTRY = Layout((("layer", "B"), ("param", "B"), ("flags", "B"), ("e", "h"), ("l2", "f"), ("max_abs", "f")))
GRAD_HEAD = Layout((("step", "I"), ("layer", "B"), ("param", "B"), ("flags", "B"), ("", "x"), ("total", "I"),
                    ("offset", "I"), ("count", "H"), ("e", "h")))  # then count f32 (or int32) values
EVAL = Layout((("phase", "B"), ("", "3x"), ("n", "I"), ("correct", "I"), ("loss_sum", "f"), ("ticks", "Q")))
SUMMARY = Layout((("steps_done", "I"), ("status", "B"), ("", "3x"), ("final_loss", "f"), ("stack_hwm", "I"),
                  ("arena_peak", "I"), ("static_bytes", "I"), ("sram_peak", "I"), ("ticks_train", "Q")))
LOG = Layout((("level", "B"),))  # then text
FAULT = Layout((("code", "I"), ("pc", "I"), ("lr", "I"), ("cfsr", "I"), ("arg0", "I"), ("arg1", "I")))  # then text
PONG = Layout((("nonce", "I"),))
ACK = Layout((("cmd_type", "B"), ("status", "B"), ("_", "H"), ("plan_hash", "I")))
LAYERS_HEAD = Layout((("n", "B"), ("", "3x")))
LAYERS_ENTRY = Layout((("layer", "B"), ("op", "B"), ("_", "H"), ("fwd", "Q"), ("bwd", "Q"), ("upd", "Q")))
OUTPUT_HEAD = Layout((("sample", "I"), ("op", "B"), ("phase", "B"), ("_", "H"), ("total", "I"), ("offset", "I"),
                      ("count", "H"), ("_", "H")))  # then count int8 codes
# START: the device also takes the 20 bytes before prox_mu (a START of an older host: prox_mu 0)
START = Layout((("steps", "I"), ("lr", "f"), ("seed", "I"), ("grad_every", "H"), ("eval_samples", "H"),
                ("out_samples", "H"), ("out_flags", "H"), ("prox_mu", "f")))
# WSET (host→device) and WDATA (device→host) carry a slice of one trainable tensor, laid out as in GRAD; kind 0:
# f32 values (fp32 plans), 1: int32 words (int8 plans: Q16 weight values, bias code/residual pairs)
WPARAM_HEAD = Layout((("layer", "B"), ("param", "B"), ("kind", "B"), ("_", "B"), ("total", "I"), ("offset", "I"),
                      ("count", "H"), ("_", "H")))  # then count 32-bit values
WGET = Layout(())
STOP = Layout(())
PING = Layout((("nonce", "I"),))
SELFTEST = Layout((("kind", "I"),))

# C prefix -> layout (the fixed part the firmware writes or reads)
MESSAGES: dict[str, Layout] = {
    "MSG_HELLO": HELLO, "MSG_STEP": STEP, "MSG_GSTAT_HEAD": GSTAT_HEAD, "MSG_GSTAT_ENTRY": GSTAT_ENTRY,
    "MSG_GRAD_HEAD": GRAD_HEAD, "MSG_EVAL": EVAL, "MSG_SUMMARY": SUMMARY, "MSG_LOG": LOG, "MSG_FAULT": FAULT,
    "MSG_PONG": PONG, "MSG_ACK": ACK, "MSG_LAYERS_HEAD": LAYERS_HEAD, "MSG_LAYERS_ENTRY": LAYERS_ENTRY,
    "MSG_OUTPUT_HEAD": OUTPUT_HEAD, "MSG_START": START, "MSG_PING": PING, "MSG_SELFTEST": SELFTEST,
    "MSG_WPARAM_HEAD": WPARAM_HEAD,
}
