"""The batch report: one self-contained HTML page (inline CSS and SVG, no script, nothing
fetched) with the counts, the latency percentiles, a latency histogram, the throughput
over time and the failures by reason of a :class:`~flowrunner.batch.stats.BatchStats`.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime

from flowrunner.batch.stats import PERCENTILES, BatchStats, Histogram

W, H = 640, 220  # the drawing area of a chart, in SVG units
PAD = 44
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:760px;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse}td,th{padding:2px 10px;text-align:right}
td:first-child,th:first-child{text-align:left}tr:nth-child(even){background:#f4f4f4}
svg{background:#fafafa;border:1px solid #ddd}.bar{fill:#4a7bd0}.fail{fill:#d0574a}
.line{fill:none;stroke:#4a7bd0;stroke-width:2}.axis{stroke:#888}
text{font-size:11px;fill:#444}.muted{color:#777}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def render(stats: BatchStats, *, title: str, generated: datetime | None = None) -> str:
    """The whole page for ``stats``; ``title`` names what was run (escaped)."""
    when = (generated or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")
    rate = stats.total / stats.seconds if stats.seconds > 0 else None
    head = f"{stats.total:,} executions" + (
        f" in {stats.seconds:,.1f} s ({rate:,.0f}/s)" if rate is not None else ""
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p>{_e(head)}. <span class="muted">Written {_e(when)}.</span></p>',
        "<h2>Executions by status</h2>",
        _table(["status", "count"], [[k, f"{n:,}"] for k, n in stats.statuses.most_common()]),
        "<h2>Latency (ms)</h2>",
        _latency_table(stats),
        "<h2>Execution latency histogram</h2>",
        _histogram_svg(stats.executions),
        "<h2>Throughput over time</h2>",
        _throughput_svg(stats),
        "<h2>Failures by reason</h2>",
        _reasons_svg(stats),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return '<p class="muted">none</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _latency_table(stats: BatchStats) -> str:
    rows = []
    named = [("executions", stats.executions)]
    named += [(f"webhook {n}", h) for n, h in sorted(stats.webhooks.items())]
    for label, h in named:
        if h.count:
            values = [f"{h.percentile(p):,.1f}" for p in PERCENTILES]
            rows.append([label, f"{h.count:,}", *values, f"{h.high:,.1f}", f"{h.mean:,.1f}"])
    return _table(["", "count", "p50", "p95", "p99", "max", "mean"], rows)


def _svg(body: list[str], label: str, height: float = H + 2 * PAD) -> str:
    return (
        f'<svg role="img" aria-label="{_e(label)}" width="{W + 2 * PAD}" '
        f'height="{height:.0f}" viewBox="0 0 {W + 2 * PAD} {height:.0f}">'
        + "".join(body)
        + "</svg>"
    )


def _axes() -> list[str]:
    return [
        f'<line class="axis" x1="{PAD}" y1="{PAD + H}" x2="{PAD + W}" y2="{PAD + H}"/>',
        f'<line class="axis" x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{PAD + H}"/>',
    ]


def _text(x: float, y: float, text: str, anchor: str = "middle") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{_e(text)}</text>'


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.2g}"


def _histogram_svg(hist: Histogram) -> str:
    bins = hist.bins(40)
    if not bins:
        return '<p class="muted">no executions</p>'
    top = max(n for _, _, n in bins)
    width = W / len(bins)
    body = _axes()
    for i, (low, _, n) in enumerate(bins):
        height = H * n / top
        x = PAD + i * width
        body.append(
            f'<rect class="bar" x="{x:.1f}" y="{PAD + H - height:.1f}" width="{width - 1:.1f}" '
            f'height="{height:.1f}"><title>{_e(_ms(low))} ms and up: {n:,}</title></rect>'
        )
        if i % max(1, len(bins) // 8) == 0:
            body.append(_text(x, PAD + H + 14, _ms(low)))
    body.append(_text(PAD + W / 2, PAD + H + 32, "milliseconds (log scale)"))
    body.append(_text(PAD - 6, PAD + 4, f"{top:,}", "end"))
    return _svg(body, "execution latency histogram")


def _throughput_svg(stats: BatchStats) -> str:
    rates = stats.timeline.rates()[:-1]  # the last bin is cut short by the end
    if len(rates) < 2:
        return '<p class="muted">too short to draw</p>'
    top = max(r for _, r in rates) or 1.0
    span = rates[-1][0] or 1.0
    points = " ".join(f"{PAD + W * t / span:.1f},{PAD + H - H * r / top:.1f}" for t, r in rates)
    body = [*_axes(), f'<polyline class="line" points="{points}"/>']
    for i in range(5):
        t = span * i / 4
        body.append(_text(PAD + W * i / 4, PAD + H + 14, f"{t:,.0f} s"))
    body.append(_text(PAD - 6, PAD + 4, f"{top:,.0f}/s", "end"))
    body.append(_text(PAD + W / 2, PAD + H + 32, "executions per second, by time since the start"))
    return _svg(body, "throughput over time")


def _reasons_svg(stats: BatchStats) -> str:
    reasons = stats.reasons.most_common(12)
    if not reasons:
        return '<p class="muted">no failures</p>'
    top = reasons[0][1]
    row = min(28.0, H / len(reasons))
    body: list[str] = []
    for i, (reason, n) in enumerate(reasons):
        y = PAD + i * row
        length = max(1.0, (W - 180) * n / top)
        body.append(_text(PAD + 150, y + row * 0.65, reason, "end"))
        body.append(
            f'<rect class="fail" x="{PAD + 160}" y="{y + 3:.1f}" width="{length:.1f}" '
            f'height="{row - 6:.1f}"><title>{_e(reason)}: {n:,}</title></rect>'
        )
        body.append(_text(PAD + 166 + length, y + row * 0.65, f"{n:,}", "start"))
    return _svg(body, "failures by reason", height=2 * PAD + row * len(reasons))
