"""The HTTP layer: the only module that imports aiohttp. Egress policy is enforced here.

:class:`HttpClient` sends :class:`HttpRequest` objects through one ``aiohttp`` session
(one connection pool per run or batch) and turns every outcome into an
:class:`HttpResponse`; network trouble never raises. The session ignores proxy settings
from the environment, always verifies TLS, never follows redirects, keeps no cookies
and adds no ``Authorization`` header of its own.

Egress (:mod:`flowrunner.net.egress`) is checked on the addresses actually connected to:
IP-literal hosts in :meth:`HttpClient.send` (aiohttp does not resolve them), names in a
resolver that filters every DNS answer before aiohttp connects or caches it.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from flowrunner.net.egress import EgressPolicy
from flowrunner.net.request import MAX_BODY, USER_AGENT, FailureKind, HttpRequest, HttpResponse
from flowrunner.source.model import HttpPolicy

_NO_CONTENT_TYPE = ("Content-Type",)
_CACHE_SIZE = 1024  # distinct (scheme, host) decisions kept before starting over

__all__ = ["HttpClient", "HttpRequest", "HttpResponse", "MAX_BODY"]


class _Refused(Exception):
    """Raised inside the resolver when no resolved address may be connected to."""


class _EgressResolver(AbstractResolver):
    """The default threaded resolver, with every answer filtered by the egress policy."""

    def __init__(self, egress: EgressPolicy) -> None:
        self._egress = egress
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed, reason = self._egress.check_addresses(host, [r["host"] for r in results])
        if reason is not None:
            raise _Refused(reason)
        return [r for r in results if r["host"] in allowed]

    async def close(self) -> None:
        await self._inner.close()


class HttpClient:
    """One connection pool for a run or a batch. ``send`` never raises for network trouble.

    Building a client raises ValueError when the policy's allowlist has a bad entry.
    """

    def __init__(self, policy: HttpPolicy, *, limit: int = 100) -> None:
        self.policy = policy
        self.limit = limit
        self._egress = EgressPolicy(policy)
        self._session: aiohttp.ClientSession | None = None
        self._targets: dict[tuple[str, str | None], str | None] = {}
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the pool; a later ``send`` opens a new one."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Send request and return the answer, or the failure, with its duration."""
        start = time.perf_counter()
        if not self.policy.enabled:
            return HttpResponse.failed("disabled", "HTTP is disabled (http.enabled: false)", start)
        try:
            url = URL(request.url)
        except (ValueError, TypeError):
            return HttpResponse.failed("connection", "invalid URL", start)
        refusal = self._check_target(url)
        if refusal is not None:
            return HttpResponse.failed("refused", refusal, start)
        try:
            return await self._exchange(url, request, start)
        except _Refused as exc:
            return HttpResponse.failed("refused", str(exc), start)
        except (aiohttp.ClientError, OSError, ValueError) as exc:  # TimeoutError is an OSError
            kind, message = _describe(exc, request.timeout)
            return HttpResponse.failed(kind, message, start)

    def _check_target(self, url: URL) -> str | None:
        """The egress verdict on the URL before resolution, cached per scheme and host."""
        if url.raw_user is not None or url.raw_password is not None:
            return self._egress.check_target(url.scheme, url.raw_host, userinfo=True)
        key = (url.scheme, url.raw_host)
        try:
            return self._targets[key]
        except KeyError:
            pass
        if len(self._targets) >= _CACHE_SIZE:
            self._targets.clear()
        verdict = self._targets[key] = self._egress.check_target(*key, userinfo=False)
        return verdict

    async def _exchange(self, url: URL, request: HttpRequest, start: float) -> HttpResponse:
        session = self._session or self._open()
        async with session.request(
            request.method,
            url,
            headers=request.headers,
            data=request.body,
            timeout=self._timeout(request.timeout),
            allow_redirects=False,
            skip_auto_headers=_skipped_headers(request),
        ) as resp:
            body = await _read_capped(resp)
            duration = time.perf_counter() - start
            if body is None:
                resp.close()  # do not drain the rest of a large answer
                message = f"response body over {MAX_BODY} bytes"
                return HttpResponse(
                    status=resp.status,
                    body=None,
                    headers=resp.headers,
                    duration=duration,
                    failure="too_large",
                    message=message,
                )
            return HttpResponse(
                status=resp.status, body=body, headers=resp.headers, duration=duration
            )

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.limit,
            resolver=_EgressResolver(self._egress),
            use_dns_cache=True,  # answers are cached after the resolver has filtered them
            ssl=True,  # verified against the system's CAs; nothing turns it off
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": USER_AGENT},
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )
        return self._session

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            # aiohttp reads total=0 as "no limit": never let a zero slip through as that
            total = max(seconds, 0.001)
            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(total=total)
        return timeout


def _skipped_headers(request: HttpRequest) -> tuple[str, ...] | None:
    """Keep aiohttp from labelling POST/PUT/PATCH ``application/octet-stream`` on its own."""
    headers = request.headers
    if "Content-Type" in headers or any(k.lower() == "content-type" for k in headers):
        return None
    return _NO_CONTENT_TYPE


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes | None:
    """The body, read as it streams in; None as soon as it exceeds MAX_BODY."""
    if resp.content_length is not None and resp.content_length > MAX_BODY:
        return None
    chunks: list[bytes] = []
    size = 0
    while chunk := await resp.content.readany():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _describe(exc: Exception, timeout: float) -> tuple[FailureKind, str]:
    """A failure kind and a short message; never the URL, headers or body of the request."""
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout", f"no answer within {timeout:g} s"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        detail = getattr(exc.certificate_error, "verify_message", "") or ""
        return "connection", "TLS certificate verify failed" + (f" ({detail})" if detail else "")
    if isinstance(exc, aiohttp.ClientSSLError):
        reason = getattr(exc.os_error, "reason", None) or type(exc.os_error).__name__
        return "connection", f"TLS error ({reason.lower().replace('_', ' ')})"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "connection", "name not resolved"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if exc.os_error.errno == errno.ECONNREFUSED:
            return "connection", "connection refused"
        return "connection", f"cannot connect ({_os_reason(exc.os_error)})"
    return "connection", _generic(exc)


# checked in order: the first class the error is an instance of gives the message
_MESSAGES: tuple[tuple[type[Exception], str], ...] = (
    (aiohttp.ServerDisconnectedError, "server disconnected without answering"),
    (aiohttp.ClientPayloadError, "response body could not be read"),
    (aiohttp.ClientResponseError, "invalid HTTP response"),
    (aiohttp.InvalidURL, "invalid URL"),
)


def _generic(exc: Exception) -> str:
    message = next((m for cls, m in _MESSAGES if isinstance(exc, cls)), None)
    if message is not None:
        return message
    if isinstance(exc, OSError):  # ClientOSError and plain socket errors
        return f"connection error ({_os_reason(exc)})"
    if isinstance(exc, aiohttp.ClientError):
        return f"connection error ({type(exc).__name__})"
    # a ValueError: aiohttp refuses to send a control character in a header or method
    return "request could not be sent (invalid header or method)"


def _os_reason(exc: OSError) -> str:
    if exc.errno is not None:
        return (exc.strerror or os.strerror(exc.errno)).lower()
    return type(exc).__name__
