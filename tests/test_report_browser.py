"""The HTML report opened in a real headless browser (Debian's ``chromium``): the page
needs no network, and the browser draws its three charts. Skipped without a browser."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import report_browser  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(report_browser.browser() is None, reason="no chromium installed"),
]


def test_the_browser_draws_the_report(tmp_path: Path) -> None:
    seen = report_browser.look(tmp_path)
    assert seen is not None
    assert seen["svg_charts"] == 3
    assert seen["histogram_bars"] >= 20  # type: ignore[operator]
    assert seen["failure_bars"] == 3  # SERVER_ERROR, CLIENT_ERROR, TIMEOUT
    assert seen["throughput_points"] >= 100  # type: ignore[operator]
    assert seen["screenshot"] == list(report_browser.SIZE)
    # the bars were painted: thousands of pixels in the colours of the stylesheet
    assert seen["bar_pixels"] > 5000  # type: ignore[operator]
    assert seen["failure_pixels"] > 1000  # type: ignore[operator]
