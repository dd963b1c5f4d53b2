"""Open a batch report in a real headless browser and say what it drew.

    python bench/report_browser.py [--keep DIR]

Builds the figures of 5,000 synthetic executions (log-normal latencies, two webhooks,
three failure reasons, a throughput that rises then falls), writes the HTML report,
then asks Debian's ``chromium`` (headless, no network: the page must need none) for
the DOM it built and a screenshot. Prints what it counted: SVG charts, bars, the points
of the throughput line, the screenshot's size and how many of its pixels have the
colours of the bars. Exits 77 (skipped) when no chromium is installed.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flowrunner.batch.html import render  # noqa: E402
from flowrunner.batch.stats import BatchStats, Timeline  # noqa: E402

BAR = (0x4A, 0x7B, 0xD0)
FAIL = (0xD0, 0x57, 0x4A)
SIZE = (900, 1500)


def browser() -> str | None:
    return next((p for n in ("chromium", "chromium-browser") if (p := shutil.which(n))), None)


def figures(count: int = 5000) -> BatchStats:
    rng = random.Random(11)
    stats = BatchStats(timeline=Timeline(start=0.0))
    at = 0.0
    for i in range(count):
        at += 0.002 + 0.004 * abs(i - count / 2) / count  # faster in the middle
        crm, shop = rng.lognormvariate(2.5, 0.5), rng.lognormvariate(1.5, 0.8)
        reason = None
        if i % 50 == 0:
            reason = rng.choice(["SERVER_ERROR", "TIMEOUT", "CLIENT_ERROR", "SERVER_ERROR"])
        status = "FAILED" if reason else "COMPLETED"
        stats.add(status, reason, crm + shop + 0.3, at, [("crm", crm), ("shop", shop)])
    stats.seconds = at
    return stats


def chromium(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    command += ["--no-first-run", "--disable-extensions", "--proxy-server=127.0.0.1:9"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=120, check=False
    )


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the RGB(A) rows of an 8-bit, non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, chunks, header = 8, b"", b""
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        body = data[at + 8 : at + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks += body
        at += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    size = 3 if colour == 2 else 4
    raw = zlib.decompress(chunks)
    stride = width * size
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - size] if x >= size else 0
            up = previous[x]
            corner = previous[x - size] if x >= size else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[x] = (line[x] + pred) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, [bytes(r) for r in rows] if size == 3 else [_rgb(r) for r in rows]


def _rgb(row: bytes) -> bytes:
    return b"".join(row[i : i + 3] for i in range(0, len(row), 4))


def near(pixel: tuple[int, int, int], colour: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 12 for a, b in zip(pixel, colour, strict=True))


def look(folder: Path) -> dict[str, object] | None:
    """Write the report into ``folder``, open it; what was seen (None: no browser)."""
    binary = browser()
    if binary is None:
        return None
    stats = figures()
    page = folder / "report.html"
    page.write_text(render(stats, title="synthetic batch"), encoding="utf-8")
    dom = chromium(binary, "--dump-dom", page.as_uri())
    shot = folder / "report.png"
    chromium(binary, f"--screenshot={shot}", f"--window-size={SIZE[0]},{SIZE[1]}", page.as_uri())
    width, height, rows = png_pixels(shot.read_bytes())
    bar = fail = 0
    for row in rows:
        for x in range(0, len(row), 3):
            pixel = (row[x], row[x + 1], row[x + 2])
            bar += near(pixel, BAR)
            fail += near(pixel, FAIL)
    points = re.search(r'<polyline class="line" points="([^"]*)"', dom.stdout)
    return {
        "browser": subprocess.run(
            [binary, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip(),  # fmt: skip
        "dom_bytes": len(dom.stdout),
        "svg_charts": dom.stdout.count("<svg"),
        "histogram_bars": dom.stdout.count('<rect class="bar"'),
        "failure_bars": dom.stdout.count('<rect class="fail"'),
        "throughput_points": len(points.group(1).split()) if points else 0,
        "screenshot": [width, height],
        "bar_pixels": bar,
        "failure_pixels": fail,
        "executions": stats.total,
        "p50_p95_p99_ms": [round(stats.executions.percentile(p), 1) for p in (50, 95, 99)],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="write the page and screenshot here")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        seen = look(args.keep)
    else:
        with tempfile.TemporaryDirectory() as folder:
            seen = look(Path(folder))
    if seen is None:
        print("no chromium installed: skipped")
        return 77
    print(json.dumps(seen, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
