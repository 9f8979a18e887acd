"""Regenerate the README's figure, docs/report.png: a headless-Chromium screenshot of the report of `make demo`.

    .venv/bin/python scripts/docs_figures.py [--results DIR]   (make docs-figures)

Without --results it first runs the demo's job (`bench run quick`) into reports/docs, so the picture always shows
what the current code produces, not a hand-made capture.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 1280, 2200


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        sys.exit("chromium not found: `make bootstrap` installs Debian's chromium")
    return found


def screenshot(page: Path, out: Path) -> None:
    """The top of ``page`` at WIDTH × HEIGHT, saved as an optimised PNG."""
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "shot.png"
        subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={tmp}/profile", f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={shot}",
                        page.resolve().as_uri()], check=True, capture_output=True, timeout=120)
        with Image.open(shot) as image:
            image.convert("RGB").quantize(colors=256).save(out, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=None, help="a results directory (default: run the demo)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "report.png")
    args = parser.parse_args()
    results = args.results
    if results is None:
        results = ROOT / "reports" / "docs"
        bench = Path(sys.executable).with_name("bench")
        subprocess.run([str(bench), "run", "quick", "--out", str(results)], check=True, cwd=ROOT)
    page = results / "index.html"
    if not page.is_file():
        sys.exit(f"{page}: no report there (`bench report {results}` writes one)")
    screenshot(page, args.out)
    print(f"{args.out}: {args.out.stat().st_size:,} bytes, from {page}")


if __name__ == "__main__":
    main()
