"""``run --events``: one execution per JSON line (placeholder until the batch runner lands)."""

from __future__ import annotations

from typing import Any

from flowrunner.errors import UsageError


def run_events(**options: Any) -> int:
    raise UsageError("--events is not available in this build")
