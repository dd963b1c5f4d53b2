"""The lean HTTP transport: asyncio connections, ``httptools`` parsing, a keep-alive pool.

:class:`FastClient` has the send seam of :class:`flowrunner.net.http.HttpClient` (``send``
returns an :class:`~flowrunner.net.http.HttpResponse` and never raises for network trouble)
and the same rules, at a fraction of aiohttp's CPU cost per request:

* egress: the URL is judged before resolution; a name is resolved by the event loop's
  resolver, every answer is judged, and only an allowed address is connected to (the
  filtered answer is cached for :data:`DNS_TTL` seconds, as aiohttp does);
* TLS always verified against the system's CAs, ``server_hostname`` set to the URL's host;
* no redirects (a 3xx is an answer), no proxy from the environment, no cookies;
* one deadline for the whole call (resolution, connection, request and answer);
* the answer's body capped at :data:`~flowrunner.net.http.MAX_BODY` bytes after
  decompression; ``Accept-Encoding`` names only gzip and deflate, which it decodes;
* connections kept alive per scheme, host and port, at most ``limit`` requests at once;
* the same request bytes as aiohttp's client (:mod:`flowrunner.net.connection`).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass

from yarl import URL

from flowrunner.net.connection import (
    INVALID_REQUEST,
    Answer,
    Connection,
    ExchangeError,
    describe_os_error,
    request_head,
)
from flowrunner.net.egress import EgressPolicy, host_address
from flowrunner.net.request import (
    MAX_BODY,
    USER_AGENT,
    AnswerHeaders,
    FailureKind,
    HttpRequest,
    HttpResponse,
)
from flowrunner.source.model import HttpPolicy

DNS_TTL = 10.0  # seconds an allowed DNS answer is reused
KEEPALIVE = 15.0  # seconds an idle connection is kept
_CACHE_SIZE = 1024  # distinct URLs or DNS answers kept before starting over
_DEFAULT_PORTS = {"http": 80, "https": 443}

Key = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class _Target:
    """A URL the policy lets through to resolution: its pool key, the request target
    (path and query) and the ``Host`` header."""

    key: Key
    path: str
    host: str


class _Refused(Exception):
    """No address of the host may be connected to; the message says why."""


class FastClient:
    """One keep-alive pool for a run or a batch. ``send`` never raises for network trouble.

    Building a client raises ValueError when the policy's allowlist has a bad entry.
    """

    def __init__(self, policy: HttpPolicy, *, limit: int = 100) -> None:
        self.policy = policy
        self.limit = max(1, limit)
        self._egress = EgressPolicy(policy)
        self._urls: dict[str, _Target | tuple[FailureKind, str]] = {}
        self._dns: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._idle: dict[Key, list[Connection]] = {}
        self._idle_count = 0
        self._busy = 0
        self._queue: deque[asyncio.Future[None]] = deque()
        self._ssl: ssl.SSLContext | None = None
        # the event loop of the first send, which its connections belong to: asked
        # once, as Python 3.11 makes a system call (getpid) for every asking
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> FastClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the idle connections; a later ``send`` opens new ones."""
        idle, self._idle, self._idle_count = self._idle, {}, 0
        for connections in idle.values():
            for connection in connections:
                connection.close()
        if idle:
            await asyncio.sleep(0)  # let the closed transports let go of their sockets

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Send request and return the answer, or the failure, with its duration."""
        start = time.perf_counter()
        if not self.policy.enabled:
            return HttpResponse.failed("disabled", "HTTP is disabled (http.enabled: false)", start)
        target = self._target(request.url)
        if not isinstance(target, _Target):
            return HttpResponse.failed(target[0], target[1], start)
        loop = self._loop or self._bind()
        deadline = loop.time() + max(request.timeout, 0.001)
        try:
            status, headers, body = await self._exchange(target, request, deadline)
        except TimeoutError:
            return HttpResponse.failed("timeout", f"no answer within {request.timeout:g} s", start)
        except _Refused as exc:
            return HttpResponse.failed("refused", str(exc), start)
        except ExchangeError as exc:
            return HttpResponse.failed("connection", str(exc), start)
        except ValueError:
            return HttpResponse.failed("connection", INVALID_REQUEST, start)
        except OSError as exc:
            return HttpResponse.failed(
                "connection", f"connection error ({describe_os_error(exc)})", start
            )
        view = AnswerHeaders(headers)
        duration = time.perf_counter() - start
        if body is None:
            message = f"response body over {MAX_BODY} bytes"
            return HttpResponse(
                status=status, body=None, headers=view, duration=duration,
                failure="too_large", message=message,
            )  # fmt: skip
        return HttpResponse(status=status, body=body, headers=view, duration=duration)

    def _target(self, text: str) -> _Target | tuple[FailureKind, str]:
        """Where the URL ``text`` leads, or the failure (kind, message) of sending to it:
        the URL is parsed and judged (before resolution) once, then cached."""
        found = self._urls.get(text)
        if found is not None:
            return found
        try:
            url = URL(text)
            port = url.port
        except (ValueError, TypeError):
            return ("connection", "invalid URL")
        userinfo = url.raw_user is not None or url.raw_password is not None
        host = url.raw_host
        refusal = self._egress.check_target(url.scheme, host, userinfo=userinfo)
        result: _Target | tuple[FailureKind, str]
        if refusal is not None or host is None:
            result = ("refused", refusal or "the URL has no host")
        else:
            key = (url.scheme, host, port or _DEFAULT_PORTS[url.scheme])
            result = _Target(key, url.raw_path_qs, url.host_port_subcomponent or host)
        if len(self._urls) >= _CACHE_SIZE:
            self._urls.clear()
        self._urls[text] = result
        return result

    def _bind(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        return self._loop

    async def _exchange(self, target: _Target, request: HttpRequest, deadline: float) -> Answer:
        """The answer; raises TimeoutError once the loop's clock passes ``deadline``."""
        body = request.body
        head, close = request_head(
            request.method, target.path, target.host, request.headers, body, USER_AGENT
        )
        key = target.key
        if self._busy < self.limit and not self._queue:
            self._busy += 1  # a free slot at once: no waiting to put a deadline on
        else:
            async with asyncio.timeout_at(deadline):
                await self._take_slot()
        try:
            connection = self._pooled(key)
            if connection is None:
                async with asyncio.timeout_at(deadline):
                    connection = await self._connect(key)
            answered = False
            try:
                answer = await connection.exchange(head + body if body else head, deadline)
                answered = True
            finally:
                if answered and connection.reusable and not close:
                    self._park(key, connection)
                else:
                    connection.close()
            return answer
        finally:
            self._give_slot()

    # the pool

    async def _take_slot(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        try:
            await waiter  # the slot is handed over by _give_slot
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._give_slot()
            raise

    def _give_slot(self) -> None:
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._busy -= 1

    def _pooled(self, key: Key) -> Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            transport = connection.transport
            fresh = now - connection.idle_since < KEEPALIVE
            if connection.reusable and fresh and transport and not transport.is_closing():
                return connection
            connection.close()
        return None

    def _park(self, key: Key, connection: Connection) -> None:
        if self._idle_count >= self.limit:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        self._idle.setdefault(key, []).append(connection)
        self._idle_count += 1

    # connecting

    async def _connect(self, key: Key) -> Connection:
        """A new connection to an allowed address of the key's host; raises
        :class:`ExchangeError` or :class:`_Refused`."""
        scheme, host, port = key
        addresses = await self._addresses(host, port)
        context = self._context() if scheme == "https" else None
        loop = asyncio.get_running_loop()
        error: Exception | None = None
        for address in addresses:
            connection = Connection(MAX_BODY)
            try:
                await loop.create_connection(
                    lambda c=connection: c,
                    address, port, ssl=context,
                    server_hostname=host.strip("[]") if context else None,
                )  # fmt: skip
                return connection
            except (OSError, ssl.SSLError) as exc:
                error = exc
        raise ExchangeError(_connect_error(error))

    async def _addresses(self, host: str, port: int) -> list[str]:
        """The addresses host may be connected to: a literal as it is (already judged),
        a name's DNS answer filtered by the egress policy; raises :class:`_Refused`."""
        if host_address(host) is not None:
            return [host.strip("[]")]
        now = time.monotonic()
        cached = self._dns.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:  # socket.gaierror and its kind
            raise ExchangeError("name not resolved") from None
        found = list(dict.fromkeys(str(info[4][0]) for info in infos))
        allowed, reason = self._egress.check_addresses(host, found)
        if reason is not None:
            raise _Refused(reason)
        if len(self._dns) >= _CACHE_SIZE:
            self._dns.clear()
        self._dns[(host, port)] = (now + DNS_TTL, allowed)
        return allowed

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()  # verified; nothing turns it off
        return self._ssl


def _connect_error(exc: Exception | None) -> str:
    """Why no connection could be made, in aiohttp's client's words."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or ""
        return "TLS certificate verify failed" + (f" ({detail})" if detail else "")
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or type(exc).__name__
        return f"TLS error ({reason.lower().replace('_', ' ')})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError):
        return f"cannot connect ({describe_os_error(exc)})"
    return "cannot connect"
