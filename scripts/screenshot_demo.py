"""Screenshots of a `cavmae demo` output folder as a reader sees it, taken with headless Chromium.

    python scripts/screenshot_demo.py /tmp/demo --out scripts/results/demo_screens

renders ``report.md`` to HTML (one page per ``##`` section, beside report.md so the figures' relative links hold,
removed afterwards), opens each page and the retrieval gallery (``gallery/index.html``) in headless Chromium
(driven as the test suite drives it, ``tests/browser.py``) and writes one full-height PNG per page into --out:
``report_<n>_<section>.png`` and ``gallery.png``. It exits 1 naming the page when a page logs an error, fails a
request or shows a broken image, so a screenshot of a broken page is never taken for a good one.
Needs chromium and websocket-client (the test extra), and markdown-it-py (installed with rich).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import find_chromium, load_page  # noqa: E402  (the suite's Chromium driver)

log = logging.getLogger("screenshot_demo")

MAX_HEIGHT = 16000  # Chromium's largest screenshot; a taller page is cut there (and says so in the log)
CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1240px;color:#222;
line-height:1.45;font-size:15px;padding:0 16px} img{max-width:100%;display:block;margin:12px 0}
table{border-collapse:collapse;margin:10px 0} td,th{border:1px solid #ccc;padding:4px 10px} th{background:#eee}
code{background:#f2f2f2;padding:1px 4px;border-radius:3px}
"""
CHECKS = {
    "height": "Math.ceil(document.body.getBoundingClientRect().bottom) + 24",
    "images": "document.images.length",
    "broken_images": "[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)",
}


def report_sections(markdown: str) -> list[tuple[str, str]]:
    """report.md -> [(slug, markdown)], one per ``##`` section; the title and text before the first ``##`` lead
    the first section."""
    parts = re.split(r"(?m)^(?=## )", markdown)
    if len(parts) > 1 and not parts[0].lstrip().startswith("## "):
        parts = [parts[0] + parts[1], *parts[2:]]
    out = []
    for part in parts:
        heading = re.search(r"(?m)^##? (.+)$", part)
        slug = re.sub(r"[^a-z0-9]+", "_", (heading.group(1) if heading else "report").lower()).strip("_")[:40]
        out.append((slug, part))
    return out


def to_html(markdown: str, title: str) -> str:
    try:
        from markdown_it import MarkdownIt
    except ImportError as e:
        raise SystemExit("screenshot_demo: needs markdown-it-py (pip install markdown-it-py)") from e
    body = MarkdownIt("commonmark").enable("table").render(markdown)
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        f"<title>{title}</title><style>{CSS}</style></head><body>{body}</body></html>\n"
    )


def screenshot(page: Path, png: Path, width: int) -> list[str]:
    """Write a full-height screenshot of `page` to `png`; returns what is wrong with the page (empty if nothing)."""
    first = load_page(page, CHECKS, viewport=(width, 1000))
    height = min(int(first.values["height"]), MAX_HEIGHT)
    if int(first.values["height"]) > MAX_HEIGHT:
        log.warning("%s is %d px tall: the screenshot stops at %d px", page, first.values["height"], MAX_HEIGHT)
    report = load_page(page, CHECKS, viewport=(width, height))
    png.write_bytes(report.screenshot)
    problems = [*report.console_errors, *report.exceptions, *report.failed_requests, *report.network_requests]
    problems += [f"broken image {src}" for src in report.values["broken_images"]]
    log.info("%s -> %s (%d x %d px, %d images)", page.name, png, width, height, report.values["images"])
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("demo", type=Path, help="the output folder of `cavmae demo` (holds report.md, figures/, gallery/)")
    p.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    p.add_argument("--width", type=int, default=1400, help="browser window width in px (default 1400)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if find_chromium() is None:
        log.error("chromium not found (apt-get install -y chromium)")
        return 1
    report_md = args.demo / "report.md"
    if not report_md.is_file():
        log.error("%s: no report.md (is it the output folder of `cavmae demo`?)", args.demo)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    failures = {}
    for n, (slug, text) in enumerate(report_sections(report_md.read_text()), 1):
        page = args.demo / f".screenshot_report_{n}.html"  # beside report.md: its figure links are relative
        page.write_text(to_html(text, f"cavmae demo report: {slug}"), encoding="utf-8")
        try:
            failures[page.name] = screenshot(page, args.out / f"report_{n}_{slug}.png", args.width)
        finally:
            page.unlink()
    gallery = args.demo / "gallery" / "index.html"
    if gallery.is_file():
        failures[str(gallery)] = screenshot(gallery, args.out / "gallery.png", args.width)
    else:
        log.warning("%s: no gallery (the demo writes one unless it failed)", gallery)
    bad = {page: problems for page, problems in failures.items() if problems}
    for page, problems in bad.items():
        log.error("%s: %s", page, "; ".join(problems[:5]))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
