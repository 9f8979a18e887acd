"""The federation report: one self-contained HTML page from rounds.parquet and federation.json.

Accuracy against round (the global model, measured on a board, and each client's local model), bytes on the links
against round, and each client's contribution (its share of the average's sample weight and the size of its update).
Every figure says how it was obtained; every value that came from a device is escaped (jinja2 autoescape).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bench.records.rounds import read_rounds
from bench.report.html import figure_png

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>Federation · {{ meta.profile }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:auto;padding:1rem 1.5rem;font-size:15px}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #d0d7de;padding:2px 7px;text-align:right}
th{background:#f6f8fa}.muted{color:#57606a}img{max-width:100%}</style></head><body>
<h1>Federated rounds · {{ meta.profile }}</h1>
<p>{{ meta.model }} on {{ meta.task }}: {{ meta.rounds }} rounds × {{ meta.local_steps }} local steps,
{{ meta.split }} shards (seed {{ meta.seed }}), aggregated by {{ meta.aggregator }}.
Accuracy is <b>measured</b> on the twins (the global model on one board, over the eval split), bytes are
<b>measured</b> on the links (framed wire bytes), energy is <b>modelled</b> from instruction counts.</p>
<h2>Clients</h2>
<table><tr><th>client</th><th>board</th><th>technique</th><th>samples</th><th>trained values</th>
<th>labels per class</th></tr>
{% for name, c in meta.clients.items() %}<tr><td>{{ name }}</td><td>{{ c.board }}</td><td>{{ c.technique }}</td>
<td>{{ c.samples }}</td><td>{{ "{:,}".format(c.trained_values) }}</td><td>{{ c.labels | join(" ") }}</td></tr>
{% endfor %}</table>
{% for p in plots %}<h2>{{ p.title }}</h2><img alt="{{ p.title }}" src="data:image/png;base64,{{ p.png }}">
<p class="muted">{{ p.caption }}</p>{% endfor %}
<h2>Rounds</h2>
<table><tr>{% for c in columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}</table>
</body></html>
"""

COLUMNS = ("round", "client", "board", "technique", "status", "acc_global", "acc_before", "acc_local", "local_loss",
           "weight_share", "update_norm", "bytes_up", "bytes_down", "counts_per_step", "energy_round_uj", "wall_s",
           "error")


def _cell(value: Any, col: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "–"
    if col.startswith("acc_") or col == "weight_share":
        return f"{float(value):.1%}"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)[:300]


def _panel(title: str, ylabel: str, caption: str, lines: list[tuple[pd.Series, pd.Series, str, dict[str, Any]]]
           ) -> dict[str, str]:
    """One figure of (x, y, label, style) lines against round."""
    fig = Figure(figsize=(8, 3.2))
    ax = fig.add_subplot()
    for x, y, label, style in lines:
        ax.plot(x, y.astype(float), label=label, **style)
    ax.set(xlabel="round", ylabel=ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return {"title": title, "png": _png(fig), "caption": caption}


def _plots(rounds: pd.DataFrame) -> list[dict[str, str]]:
    clients = list(rounds[rounds["role"] == "client"].groupby("client", observed=True))
    glob = rounds[rounds["role"] == "global"]
    acc = [(glob["round"], glob["acc_global"] * 100, "global model (measured on one board)", {"color": "k",
                                                                                             "marker": "o"})]
    acc += [(g["round"], g["acc_local"] * 100, f"{name}: local model after its steps", {"ls": "--", "marker": "."})
            for name, g in clients]
    link = [line for name, g in clients for line in (
        (g["round"], g["bytes_up"], f"{name} up (WDATA)", {"marker": "o"}),
        (g["round"], g["bytes_down"], f"{name} down (WSET)", {"marker": "x", "ls": ":"}))]
    norms = [(g["round"], g["update_norm"], str(name), {"marker": "o"}) for name, g in clients]
    return [
        _panel("Accuracy against round", "accuracy, %",
               "Eval split; a client's local accuracy uses the first local_eval samples.", acc),
        _panel("Bytes per round", "bytes on the link",
               "Round 1 sends nothing down: every board starts from the plan in its flash; nor does the board "
               "that measured the last global model (it holds it).", link),
        _panel("Per-client contribution", "‖local − global‖₂ of trained rows",
               "Update size per round; the sample weight of each client is in the table (weight_share).", norms),
    ]


def _png(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    return figure_png(fig)


def write_federation_report(out_dir: Path, out: Path | None = None) -> Path:
    """Render ``out_dir``'s federation into ``out`` (default ``out_dir/federation.html``)."""
    rounds, meta = read_rounds(out_dir)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    rows = [[_cell(r.get(c), c) for c in COLUMNS] for r in rounds.to_dict("records")]
    html = env.from_string(_PAGE).render(meta=meta, plots=_plots(rounds), columns=COLUMNS, rows=rows)
    target = out or out_dir / "federation.html"
    target.write_text(html, encoding="utf-8")
    return target
