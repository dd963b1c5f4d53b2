"""Traces with OpenTelemetry (the ``otel`` extra): the only folder that imports it, and
only once tracing is on.

Tracing is on when ``--trace-file FILE`` is given or ``OTEL_EXPORTER_OTLP_ENDPOINT``
(or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, unless ``OTEL_SDK_DISABLED=true``.
:func:`open_tracer` then loads :mod:`flowrunner.tracing.otel`; otherwise it returns None
and nothing of OpenTelemetry is imported. :func:`valid_traceparent` is for a server that
continues the trace of an incoming request (``Inputs(traceparent=...)``).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from flowrunner.errors import UsageError
from flowrunner.execution.context import Tracer

ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
INSTALL = "pip install 'flowrunner[otel]'"
# version 00: 32 hex trace id, 16 hex parent id, 2 hex flags; all-zero ids are invalid
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


def wanted(trace_file: Path | None, env: Mapping[str, str]) -> bool:
    """Whether tracing is on for these options and environment."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return trace_file is not None or any(env.get(name, "").strip() for name in ENDPOINTS)


def open_tracer(
    trace_file: Path | None, env: Mapping[str, str] | None = None, *, append: bool = False
) -> Tracer | None:
    """The tracer for ``--trace-file`` and the ``OTEL_*`` environment, or None when
    tracing is off. ``append`` adds to ``trace_file`` instead of starting it afresh.

    Raises UsageError when ``--trace-file`` is given but the ``otel`` extra is missing;
    with only the environment asking for traces, says so on stderr and returns None.
    """
    env = os.environ if env is None else env
    if not wanted(trace_file, env):
        return None
    try:
        from flowrunner.tracing.otel import build
    except ImportError:
        if trace_file is not None:
            raise UsageError(f"--trace-file needs OpenTelemetry: {INSTALL}") from None
        print(
            f"flowrunner: {ENDPOINTS[1]} is set but OpenTelemetry is not installed "
            f"({INSTALL}); no traces are sent",
            file=sys.stderr,
        )
        return None
    try:
        return build(trace_file, env, append=append)
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise UsageError(f"{trace_file}: cannot write spans ({reason})") from None


def valid_traceparent(value: str | None) -> str | None:
    """``value`` (spaces around it removed) when it is a W3C ``traceparent`` a trace can
    continue (version 00, lower-case ids not all zero), else None; never raises."""
    if value is None or len(value) > 64:
        return None
    value = value.strip()  # the ids are lower-case hex: upper case is not valid
    match = _TRACEPARENT.fullmatch(value)
    if match is None or set(match.group(1)) == {"0"} or set(match.group(2)) == {"0"}:
        return None
    return value
