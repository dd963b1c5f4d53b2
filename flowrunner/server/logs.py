"""Structured log lines of ``serve`` on stderr: one per request, one per execution end,
and one per server event (start, reload, stop).

``text``: ``time event key=value ...`` (values with spaces or quotes JSON-quoted);
``json``: one object per line. Lines never hold a header, a body or a secret: resolved
secrets are masked by :func:`flowrunner.secrets.scrub` as a last guard.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

from flowrunner.jsoncodec import dumps
from flowrunner.secrets import scrub
from flowrunner.times import iso


class Log:
    """Writes one line per event in the chosen format.

    Lines logged in one pass of the event loop are written together, once the pass
    ends (one system call instead of one per line); outside a loop, at once.
    """

    def __init__(self, fmt: str = "text", stream: IO[str] | None = None) -> None:
        self.fmt = fmt
        self.stream = stream if stream is not None else sys.stderr
        self._pending: list[str] = []

    def event(self, event: str, **fields: Any) -> None:
        """Log one line for ``event`` with ``fields`` (None values left out)."""
        moment = iso(datetime.now(UTC))
        values = {k: v for k, v in fields.items() if v is not None}
        if self.fmt == "json":
            line = dumps({"time": moment, "event": event, **values}).decode()
        else:
            parts = [moment, event] + [f"{k}={_text(v)}" for k, v in values.items()]
            line = " ".join(parts)
        self._pending.append(line + "\n")
        if len(self._pending) > 1:
            return
        try:
            asyncio.get_running_loop().call_soon(self.flush)
        except RuntimeError:
            self.flush()

    def flush(self) -> None:
        """Write the lines logged so far."""
        text, self._pending = "".join(self._pending), []
        if not text:
            return
        try:
            self.stream.write(scrub(text))
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed: logging must never stop serving
            pass


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if not text or not text.isprintable() or any(c in text for c in ' "='):
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
