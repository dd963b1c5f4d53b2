"""One HTTP/1.1 connection of the lean transport: the request head it writes and the
answer it reads, parsed by ``httptools`` (llhttp, the parser of Node.js and uvicorn).

The request head is byte for byte what aiohttp's client writes for the same request
(``Host`` first, then ``User-Agent``, the request's headers in their order,
``Accept: */*``, ``Accept-Encoding: gzip, deflate`` and ``Content-Length`` unless the
request has them), so a receiver cannot tell the transports apart.

The answer is read with limits a hostile server cannot stretch: at most
:data:`MAX_HEAD` bytes before the end of the headers, :data:`MAX_FIELD` bytes per header
name or value, :data:`MAX_HEADERS` headers, and a body of at most ``max_body`` bytes
counted after decompression (gzip and deflate, the only encodings asked for).
"""

from __future__ import annotations

import asyncio
import os
import re
import zlib
from collections.abc import Mapping
from typing import Any

import httptools

MAX_HEAD = 1 << 20  # bytes of status line and headers
MAX_FIELD = 8190  # bytes of one header name or value (aiohttp's limit)
MAX_HEADERS = 128
ACCEPT_ENCODING = "gzip, deflate"

# the lengths of content-length, content-encoding and transfer-encoding
_FRAMING_SIZES = frozenset({14, 16, 17})
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "POST", "PUT", "PATCH", "DELETE"})

INVALID_REQUEST = "request could not be sent (invalid header or method)"
INVALID_ANSWER = "invalid HTTP response"
DISCONNECTED = "server disconnected without answering"
UNREADABLE_BODY = "response body could not be read"

# the status, the headers as received, the body (None: too large)
Answer = tuple[int, list[tuple[bytes, bytes]], bytes | None]


class ExchangeError(Exception):
    """The exchange failed; the message is for people and never holds the request."""


def request_head(
    method: str, target: str, host: str, headers: Mapping[str, str], body: bytes | None, agent: str
) -> tuple[bytes, bool]:
    """The request line and headers, encoded, and whether they ask for the connection to
    be closed; raises ValueError for a method or a header that cannot be sent (a
    non-token method, a line break in a header)."""
    if method not in _METHODS and not _TOKEN.fullmatch(method):
        raise ValueError(INVALID_REQUEST)
    method = method.upper()
    names = [name.lower() for name in headers]
    if len(set(names)) == len(names) and _SHAPING.isdisjoint(names):
        return _plain_head(method, target, host, headers, names, body, agent), False
    return _any_head(method, target, host, headers, body, agent)


def _any_head(
    method: str, target: str, host: str, headers: Mapping[str, str], body: bytes | None, agent: str
) -> tuple[bytes, bool]:
    """:func:`request_head` for any headers (``method`` checked and upper-cased)."""
    host_line = "Host: " + host
    lines: list[str] = []
    present: set[str] = set()
    close = False
    for name, value in _merged(headers, agent):
        lower = name.lower()
        if lower == "host":
            host_line = f"{name}: {value}"
            continue
        if lower == "connection":
            close = "close" in value.lower()
        lines.append(f"{name}: {value}")
        present.add(lower)
    if "accept" not in present:
        lines.append("Accept: */*")
    if "accept-encoding" not in present:
        lines.append("Accept-Encoding: " + ACCEPT_ENCODING)
    if "content-length" not in present:
        _add_length(lines, method, body)
    return _written(method, target, host_line, lines), close


def _add_length(lines: list[str], method: str, body: bytes | None) -> None:
    """The ``Content-Length`` line: of the body, or 0 for a method that has one."""
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    elif method not in _BODYLESS_METHODS:
        lines.append("Content-Length: 0")


def _written(method: str, target: str, host_line: str, lines: list[str]) -> bytes:
    """The head's bytes: request line, host line, then ``lines``. A line break inside a
    name or value would smuggle a header in: refused (ValueError), the joints added
    here being the only line breaks allowed."""
    fields = "\r\n".join(lines)
    joints = len(lines) - 1
    broken = fields.count("\n") != joints or fields.count("\r") != joints
    if broken or "\r" in host_line or "\n" in host_line:
        raise ValueError(INVALID_REQUEST)
    return f"{method} {target} HTTP/1.1\r\n{host_line}\r\n{fields}\r\n\r\n".encode()


# names whose header changes how the head is written; without them (and without two
# names differing only in case) a head is written straight through (_plain_head)
_SHAPING = frozenset({"host", "connection", "accept", "accept-encoding", "content-length"})


def _plain_head(
    method: str,
    target: str,
    host: str,
    headers: Mapping[str, str],
    names: list[str],
    body: bytes | None,
    agent: str,
) -> bytes:
    """:func:`request_head`'s head, the same bytes, for headers that shape nothing: the
    host, the agent (or the request's own ``User-Agent`` in its place), the headers in
    their order, then the defaults and the length."""
    fields = [f"{name}: {value}" for name, value in headers.items()]
    if "user-agent" in names:
        agent_line = fields.pop(names.index("user-agent"))
    else:
        agent_line = "User-Agent: " + agent
    fields.insert(0, agent_line)
    fields.append("Accept: */*")
    fields.append("Accept-Encoding: " + ACCEPT_ENCODING)
    _add_length(fields, method, body)
    return _written(method, target, "Host: " + host, fields)


def _merged(headers: Mapping[str, str], agent: str) -> list[tuple[str, str]]:
    """``User-Agent`` then the request's headers: a header replaces an earlier one of the
    same name (compared case-insensitively) in its place."""
    out: list[tuple[str, str]] = [("User-Agent", agent)]
    where = {"user-agent": 0}
    for name, value in headers.items():
        lower = name.lower()
        index = where.get(lower)
        if index is None:
            where[lower] = len(out)
            out.append((name, value))
        else:
            out[index] = (name, value)
    return out


class _Decoder:
    """Decompresses a gzip or deflate body as it arrives, never past ``limit`` bytes."""

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding == "gzip"
        self._inner: Any = zlib.decompressobj(47) if self._gzip else None

    def feed(self, data: bytes, limit: int) -> tuple[bytes, bool]:
        """The decompressed bytes (at most ``limit``) and whether more were left over.
        Raises zlib.error for a damaged body."""
        if self._inner is None:  # deflate: zlib-wrapped, or raw as some servers send it
            wrapped = len(data) > 0 and data[0] & 0x0F == 8
            self._inner = zlib.decompressobj(15 if wrapped else -15)
        out: bytes = self._inner.decompress(data, limit + 1)
        return out[:limit], len(out) > limit or bool(self._inner.unconsumed_tail)


class Connection(asyncio.Protocol):
    """A keep-alive connection: :meth:`exchange` writes a request and awaits the answer.

    ``reusable`` says whether the connection may serve another request after an answer.
    """

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the transport's
        self.reusable = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[Answer] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._head_size = 0  # bytes fed before the end of the answer's head (interim heads too)
        self._reset()

    def _reset(self) -> None:
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_done = False
        self._interim = False
        self._until_eof = False
        self._chunks: list[bytes] = []
        self._size = 0
        self._decoder: _Decoder | None = None

    def exchange(self, data: bytes, deadline: float) -> asyncio.Future[Answer]:
        """Write one request (head and body); the future holds the answer, or an
        :class:`ExchangeError`, or TimeoutError once the loop's clock passes
        ``deadline`` (a timer on the future: cheaper than cancelling the caller)."""
        loop = self._loop
        assert self.transport is not None and loop is not None
        waiter = self._waiter = loop.create_future()
        self._timer = loop.call_at(deadline, self._expire)
        self.reusable = False
        self._head_size = 0
        self._reset()
        self.transport.write(data)
        return waiter

    def close(self) -> None:
        """Close the connection at once, without waiting for anything."""
        self.reusable = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.abort()

    def _expire(self) -> None:
        self._timer = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(TimeoutError())
            self.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # asked once: Python 3.11 makes a system call (getpid) for every asking
        self._loop = asyncio.get_running_loop()

    def eof_received(self) -> bool | None:
        self.reusable = False  # the server hung up: never hand this connection out again
        return None  # let the transport close; connection_lost settles a waiting answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        if self._waiter is None or self._waiter.done():
            return
        if self._head_done and self._until_eof and not self._interim:
            self._finish()  # an answer without a length ends with the connection
        elif isinstance(exc, OSError):
            self._fail(f"connection error ({describe_os_error(exc)})")
        else:
            self._fail(UNREADABLE_BODY if self._head_done else DISCONNECTED)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # nothing was asked: a server talking out of turn is not reused
            return
        if not self._head_done:
            self._head_size += len(data)
            if self._head_size > MAX_HEAD:
                self._fail(INVALID_ANSWER)
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if not self._waiter.done():
                self._fail(INVALID_ANSWER)
            self.close()

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        headers.append((name, value))  # as bytes: most are never read
        if len(headers) > MAX_HEADERS:
            raise ValueError(INVALID_ANSWER)  # feed_data raises a parser error

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self._status = status
        self._interim = 100 <= status < 200
        headers = self._headers
        # a field longer than MAX_FIELD needs a head that long (the bytes fed so far)
        if self._head_size > MAX_FIELD and any(
            len(name) > MAX_FIELD or len(value) > MAX_FIELD for name, value in headers
        ):
            raise ValueError(INVALID_ANSWER)
        if self._interim:
            return
        self._head_done = True
        length: bytes | None = None
        encoding, chunked = b"", False
        for name, value in headers:
            if len(name) not in _FRAMING_SIZES:
                continue  # not one of the three names below: spare the lower()
            lower = name.lower()
            if lower == b"content-length":
                length = value.strip()
            elif lower == b"content-encoding":
                encoding = value.strip().lower()
            elif lower == b"transfer-encoding":
                chunked = True
        if length is not None and length.isdigit() and int(length) > self.max_body:
            self._answer(None)
            return
        self._until_eof = length is None and not chunked and status not in (204, 304)
        if encoding in (b"gzip", b"deflate"):
            self._decoder = _Decoder(encoding.decode())

    def on_body(self, body: bytes) -> None:
        if self._interim or self._waiter is None or self._waiter.done():
            return
        room = self.max_body - self._size
        if self._decoder is not None:
            try:
                body, over = self._decoder.feed(body, room)
            except zlib.error:
                self._fail(UNREADABLE_BODY)
                return
        else:
            over = len(body) > room
        if over:
            self._answer(None)
            return
        self._size += len(body)
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if self._interim:  # 100 Continue and its kind: the real answer follows
            self._reset()
            return
        if self._waiter is not None and not self._waiter.done():
            self._finish()
            self.reusable = self._parser.should_keep_alive()

    # the outcome

    def _finish(self) -> None:
        chunks = self._chunks
        self._answer(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def _answer(self, body: bytes | None) -> None:
        assert self._waiter is not None
        self._waiter.set_result((self._status, self._headers, body))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if body is None:  # too large: do not read the rest
            self.close()

    def _fail(self, message: str) -> None:
        assert self._waiter is not None
        self._waiter.set_exception(ExchangeError(message))
        self.close()


def describe_os_error(exc: OSError) -> str:
    """``connection refused``, ``connection reset by peer``...: the OS's words, lower case."""
    if exc.errno is not None:
        return (exc.strerror or os.strerror(exc.errno)).lower()
    return type(exc).__name__
