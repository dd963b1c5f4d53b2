"""The JSON Lines of ``run --events``: input lines read in a thread and checked one by one,
records encoded for output.

Input is read from a file descriptor with ``os.read`` in a daemon thread, split into
lines there and handed to the event loop a chunk at a time, at most :data:`AHEAD`
chunks ahead of the loop: a slow pipe never blocks the loop, memory stays flat, and a
reader stuck on an idle stdin never delays exit. A line over :data:`MAX_LINE` bytes is
skipped without being held in memory; only its size is handed on.

:func:`parse_line` turns one line into execution inputs, or into an :class:`Invalid`
whose message names the problem without echoing the line. Lines are decoded with orjson
(the standard ``json`` module where orjson cannot be imported; both accept the same
lines).
"""

from __future__ import annotations

import json
import os
import re
import select
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from flowrunner.jsoncodec import dumps, loads

MAX_LINE = 1 << 20  # bytes of one input line, newline excluded
READ_SIZE = 1 << 16
AHEAD = 4  # chunks read ahead of the event loop
MEMBERS = ("call", "keys", "user_keys")
_MEMBER_SET = frozenset(MEMBERS)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Oversize:
    """A line that was skipped because it is longer than :data:`MAX_LINE` bytes."""

    size: int


Line = bytes | Oversize


@dataclass(frozen=True, slots=True)
class Chunk:
    """Lines read together; ``size`` is the bytes they took in the input."""

    lines: list[Line]
    size: int


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why a line cannot be run: an upper-case ``reason`` and a message for people."""

    reason: str
    message: str


Parsed = tuple[dict[str, Any], dict[str, Any], dict[str, Any]]  # call, keys, user_keys


# ---- reading -----------------------------------------------------------------------


class LineReader:
    """Reads the lines of ``fd`` in a daemon thread; ``deliver`` gets each :class:`Chunk`
    in the thread, then ``None`` at the end, or the ``OSError`` that stopped reading.

    ``deliver`` must hand the item over to the consumer (``loop.call_soon_threadsafe``);
    the consumer calls :meth:`taken` once per chunk it has taken, which lets the thread
    read on.
    """

    def __init__(
        self, fd: int, deliver: Callable[[Chunk | OSError | None], None], *, skip_bom: bool = True
    ) -> None:
        self._fd = fd
        self._skip_bom = skip_bom
        self._deliver = deliver
        self._room = threading.Semaphore(AHEAD)
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="flowrunner-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def taken(self) -> None:
        self._room.release()

    def stop(self) -> None:
        """Read no further (a read in progress finishes and is dropped)."""
        self._stopped = True
        self._room.release()

    def _run(self) -> None:
        try:
            for chunk in self._chunks():
                self._room.acquire()
                if self._stopped:
                    return
                self._deliver(chunk)
            end: OSError | None = None
        except OSError as exc:
            end = exc
        except RuntimeError:  # the event loop closed under us: nobody is listening
            return
        if not self._stopped:
            try:
                self._deliver(end)
            except RuntimeError:
                return

    def _chunks(self) -> Iterator[Chunk]:
        splitter = LineSplitter()
        size = 0  # bytes read and not yet handed on
        first = self._skip_bom
        while not self._stopped:
            data = self._read()
            if not data:
                break
            size += len(data)
            if first:
                data, first = data.removeprefix(_BOM), False
            lines = splitter.feed(data)
            if lines:
                yield Chunk(lines, size)
                size = 0
        last = splitter.end()
        if last:
            yield Chunk(last, size)

    def _read(self) -> bytes:
        while True:
            try:
                return os.read(self._fd, READ_SIZE)
            except BlockingIOError:  # a pipe someone made non-blocking: wait for data
                select.select([self._fd], [], [])


class LineSplitter:
    """Splits bytes into lines as they arrive. A line longer than :data:`MAX_LINE` is
    not kept: it becomes an :class:`Oversize` holding its length."""

    def __init__(self) -> None:
        self._partial = b""
        self._skipped = -1  # bytes of an oversize line so far; -1 when none

    def feed(self, data: bytes) -> list[Line]:
        """The lines that ``data`` completes."""
        parts = data.split(b"\n")
        if len(parts) == 1:
            self._grow(parts[0])
            return []
        if self._skipped >= 0:
            lines: list[Line] = [Oversize(self._skipped + len(parts[0]))]
        else:
            lines = [_sized(self._partial + parts[0])]
        lines.extend(_sized(p) for p in parts[1:-1])
        self._partial, self._skipped = b"", -1
        self._grow(parts[-1])
        return lines

    def end(self) -> list[Line]:
        """The last line, when the input does not end with a newline."""
        if self._skipped >= 0:
            return [Oversize(self._skipped)]
        return [self._partial] if self._partial else []

    def _grow(self, piece: bytes) -> None:
        if self._skipped >= 0:
            self._skipped += len(piece)
        elif len(self._partial) + len(piece) > MAX_LINE:
            self._skipped, self._partial = len(self._partial) + len(piece), b""
        else:
            self._partial += piece


def _sized(line: bytes) -> Line:
    return Oversize(len(line)) if len(line) > MAX_LINE else line


# ---- checking ----------------------------------------------------------------------


def parse_line(raw: Line) -> Parsed | Invalid:
    """The ``(call, keys, user_keys)`` of one input line, or why it cannot be run."""
    if isinstance(raw, Oversize):
        return Invalid(
            "LINE_TOO_LONG", f"line of {raw.size} bytes, over the limit of {MAX_LINE} bytes"
        )
    try:
        data = loads(raw)
    except (ValueError, RecursionError) as exc:
        return _not_json(raw, exc)
    if not isinstance(data, dict):
        return Invalid("NOT_AN_OBJECT", f"expected a JSON object, got {_kind(data)}")
    if not _MEMBER_SET.issuperset(data):
        member = next(m for m in data if m not in _MEMBER_SET)
        return Invalid(
            "UNKNOWN_MEMBER", f"unknown member {_shown(member)} (expected call, keys or user_keys)"
        )
    groups: list[dict[str, Any]] = []
    for member in MEMBERS:
        value = data.get(member)
        if value is None:
            groups.append({})
            continue
        if not isinstance(value, dict):
            return Invalid("WRONG_TYPE", f"'{member}' must be an object, got {_kind(value)}")
        problem = _bad_name(member, value)
        if problem is not None:
            return problem
        groups.append(value)
    return groups[0], groups[1], groups[2]


def _not_json(raw: bytes, exc: BaseException) -> Invalid:
    if not raw.strip():
        return Invalid("EMPTY_LINE", "empty line (every line must hold one JSON object)")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return Invalid("INVALID_UTF8", f"not valid UTF-8 (byte {bad.start + 1})")
    if isinstance(exc, RecursionError):
        return Invalid("INVALID_JSON", "not valid JSON (nested too deeply)")
    if isinstance(exc, json.JSONDecodeError):
        return Invalid("INVALID_JSON", f"not valid JSON: {exc.msg} (column {exc.colno})")
    if isinstance(exc, UnicodeEncodeError):
        return Invalid("INVALID_JSON", "not valid JSON: a lone surrogate escape")
    return Invalid("INVALID_JSON", f"not valid JSON: {_short(str(exc))}")


_GOOD_NAMES: set[str] = set()  # names seen valid: the same few come on every line
_GOOD_NAMES_MAX = 4096


def _bad_name(member: str, values: Mapping[str, Any]) -> Invalid | None:
    if _GOOD_NAMES.issuperset(values):
        return None  # every name seen before (one call, not one test per name)
    for name in values:
        if name in _GOOD_NAMES:
            continue
        if _NAME.match(name):
            if len(_GOOD_NAMES) < _GOOD_NAMES_MAX:
                _GOOD_NAMES.add(name)
        else:
            return Invalid(
                "INVALID_NAME",
                f"{_shown(name)} in '{member}' is not a valid name "
                "(letters, digits and _, not starting with a digit)",
            )
    return None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    names = {str: "a string", int: "a number", float: "a number", list: "an array"}
    return names.get(type(value), "an object")


def _shown(name: str) -> str:
    """A name from the input, quoted, cut short: messages never echo much input."""
    text = json.dumps(name[:32], ensure_ascii=True)
    return text[:-1] + '…"' if len(name) > 32 else text


def _short(message: str) -> str:
    return message if len(message) <= 80 else message[:79] + "…"


# ---- writing -----------------------------------------------------------------------


def dumps_line(data: Mapping[str, Any]) -> bytes:
    """One output line: compact JSON, UTF-8, newline-terminated."""
    return dumps(data) + b"\n"
