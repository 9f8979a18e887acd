"""The report in a real headless browser: it renders, logs nothing to the console, and shows device text as text.

String checks on the HTML cannot tell whether a browser would parse something the template let through as markup;
Chromium's own DOM can. Chromium is a test dependency: `make test` installs Debian's package, so a missing browser
is a failure, not a skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image
from test_report import HOSTILE, make_results

from bench.report.html import write_report

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", "--hide-scrollbars", "--enable-logging=stderr",
    "--v=0",
)  # fmt: skip
WIDTH, HEIGHT = 1280, 3000


def _chromium() -> str:
    found = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not found:
        pytest.fail("chromium is not installed: `make test` installs it (Debian package 'chromium' in DEB_PACKAGES)")
    return found


def _browse(page: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [_chromium(), *FLAGS, f"--user-data-dir={tmp / 'profile'}", *extra, page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _console_problems(stderr: str) -> list[str]:
    """The page's one script logs nothing, so any console message at all is a problem (a CSP refusal included)."""
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One report with hostile device strings serves both checks: a render costs more than a browser run."""
    return write_report(make_results(tmp_path_factory.mktemp("results"), hostile=True))


def test_report_renders_in_chromium_without_console_errors(page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    proc = _browse(page, tmp_path, f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}")
    assert _console_problems(proc.stderr) == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(shot) as image:
        assert image.size == (WIDTH, HEIGHT)
        colours = image.convert("RGB").resize((320, 750)).getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 200  # text, tables and figures, not a blank page
    assert shot.stat().st_size > 100_000


def test_hostile_device_strings_are_text_in_the_dom(page: Path, tmp_path: Path) -> None:
    proc = _browse(page, tmp_path, "--dump-dom")
    dom = proc.stdout
    assert _console_problems(proc.stderr) == []
    assert "<body" in dom and 'id="provenance"' in dom  # the whole page was parsed
    assert dom.lower().count("<script") == 1  # ours (report.js); no element was created from device text
    assert HOSTILE.replace("<", "&lt;").replace(">", "&gt;").split('"')[0] in dom
    assert len(re.findall(r"<img ", dom)) >= 8


def test_a_missing_browser_fails_and_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(f"{__name__}.CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="`make test` installs it"):
        _chromium()


def test_filters_and_sorting_in_the_browser(tmp_path: Path) -> None:
    """A linked view (``#board=…&numerics=…&sort=…``) as Chromium shows it: only that board's fp32 runs are visible
    in the runs table, the overview and the figures' number tables, sorted by accuracy after training."""
    import math

    import pandas as pd

    results = make_results(tmp_path / "results")
    runs = pd.read_parquet(results / "runs.parquet")
    runs.loc[runs["technique"] == "bias-fp32", "technique"] = "bias-int8"
    runs.to_parquet(results / "runs.parquet")
    page = write_report(results)
    uri = page.resolve().as_uri() + "#board=rpi-pico&numerics=fp32&sort=Accuracy&order=desc"
    proc = subprocess.run([_chromium(), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", uri],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and _console_problems(proc.stderr) == [], proc.stderr[-2000:]
    dom = proc.stdout
    rows = re.findall(r'<tr data-board="([^"]*)" data-technique="([^"]*)"( hidden="")?>(.*?)</tr>', dom, re.S)
    assert len(rows) == len(runs)
    sort_keys = [re.search(r'data-sort="([^"]*)"', cells) for *_, cells in rows]
    shown = [(b, t, float(m.group(1)) if m and m.group(1) else math.nan)
             for (b, t, hidden, _), m in zip(rows, sort_keys, strict=True) if not hidden]
    expected = runs[(runs["board"] == "rpi-pico") & ~runs["technique"].str.contains("int8")]
    assert sorted((b, t) for b, t, _ in shown) == sorted(zip(expected["board"], expected["technique"], strict=True))
    accs = [a for _, _, a in shown if a == a]
    assert accs == sorted(accs, reverse=True) and len(accs) >= 1
    assert f"showing {len(shown)} of {len(runs)} runs in the tables" in dom
    matrix = dom[dom.index('class="matrix"'):].split("</table>")[0]
    assert re.search(r"<th hidden=\"\">bias-int8</th>", matrix) and "<th>full-fp32</th>" in matrix
    assert len(re.findall(r"<tr hidden=\"\"><th>", matrix)) == 2  # the two other boards' rows
    others = re.findall(r"<tr( hidden=\"\")?><td>(nucleo-f746zg|nrf52840-dk|rpi-pico)</td><td>([\w@-]+)</td>", dom)
    assert len(others) > 20  # the sections' number tables are filtered too
    assert all(bool(h) == (b != "rpi-pico" or "int8" in t) for h, b, t in others if t.endswith(("fp32", "int8")))
