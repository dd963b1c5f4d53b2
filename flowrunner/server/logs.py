"""Structured log lines of ``serve`` on stderr: one per request, one per execution end,
and one per server event (start, reload, stop).

``text``: ``time event key=value ...`` (values with spaces or quotes JSON-quoted);
``json``: one object per line. Lines never hold a header, a body or a secret: resolved
secrets are masked by :func:`flowrunner.secrets.scrub` as a last guard.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

from flowrunner.secrets import scrub


class Log:
    """Writes one line per event in the chosen format."""

    def __init__(self, fmt: str = "text", stream: IO[str] | None = None) -> None:
        self.fmt = fmt
        self.stream = stream if stream is not None else sys.stderr

    def event(self, event: str, **fields: Any) -> None:
        """Write one line for ``event`` with ``fields`` (None values left out)."""
        moment = datetime.now(UTC).isoformat(timespec="milliseconds")
        values = {k: v for k, v in fields.items() if v is not None}
        if self.fmt == "json":
            line = json.dumps({"time": moment, "event": event, **values}, default=str)
        else:
            parts = [moment, event] + [f"{k}={_text(v)}" for k, v in values.items()]
            line = " ".join(parts)
        try:
            self.stream.write(scrub(line) + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed: logging must never stop serving
            pass


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if not text or any(c in text for c in ' "=\n\t'):
        return json.dumps(text)
    return text


class LibraryLogs(logging.Handler):
    """Routes the log records of the HTTP library (a malformed request, an error in a
    handler) into :class:`Log` lines: one line, no traceback."""

    def __init__(self, log: Log) -> None:
        super().__init__(logging.WARNING)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        detail = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            detail = f"{detail}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        self.log.event("http-error", detail=detail[:300])

    @classmethod
    def install(cls, log: Log, names: tuple[str, ...]) -> None:
        """Send the records of the loggers ``names`` to ``log`` alone."""
        for name in names:
            logger = logging.getLogger(name)
            logger.handlers = [cls(log)]
            logger.propagate = False
