"""``flowrunner demo`` runs the example project green against its embedded receiver."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_green() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flowrunner", "demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.rstrip().endswith("3 of 3 flows completed with their push delivered.")
    for flow in ("appointment-reminder", "lead-capture", "order-status"):
        assert f"\n== {flow}\n{flow}: COMPLETED in " in out
    assert out.count("signature valid") == 3 and "INVALID" not in out
    # the calendar answers the first confirmation 503: the step's retry policy tries again
    assert out.count("/calendar?method=confirmAppointment") == 3  # the step, two requests
    assert "-> 200 (2 attempts)" in out
    assert "Traceback" not in result.stderr
    assert out.startswith("Embedded receiver on http://127.0.0.1:")
    assert "(state in a temporary folder)" in out.splitlines()[0]
