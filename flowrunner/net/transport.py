"""The transport seam: what sends one HTTP request for the engine and the on-complete sender,
and which implementation does.

A :class:`Transport` turns a :class:`~flowrunner.net.request.HttpRequest` into an
:class:`~flowrunner.net.request.HttpResponse` and never raises for network trouble: a
timeout, a refused connection, an answer over the size cap or an address the egress
policy forbids come back as a response with ``failure`` set. Tests and ``flowrunner test``
plug in their own.

Two implementations keep the same rules (egress on the address connected to, no
redirects, no proxy from the environment, TLS verified, the deadline, the 1 MiB cap after
decompression) and write the same request bytes: ``fast``
(:class:`flowrunner.net.fast.FastClient`: asyncio connections, answers parsed by
httptools) costs a fraction of aiohttp's CPU per request; ``aiohttp``
(:class:`flowrunner.net.http.HttpClient`) is the fallback. The choice: the
``--transport`` option of the commands that send, else the ``FLOWRUNNER_TRANSPORT``
environment variable, else ``fast`` when ``httptools`` is installed, else ``aiohttp``.
Importing this module imports neither implementation.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # the --transport option reads this module: --help must stay light
    from flowrunner.net.request import HttpRequest, HttpResponse
    from flowrunner.source.model import HttpPolicy


class Transport(Protocol):
    """Sends one request; the egress policy, timeout, size cap and no-redirect rule are its
    own. ``send`` never raises for anything the peer or the network does."""

    async def send(self, request: HttpRequest) -> HttpResponse:
        """The answer (any status), or the failure to get one, with its duration."""
        ...


TRANSPORTS = ("fast", "aiohttp")
ENV_VAR = "FLOWRUNNER_TRANSPORT"


class Client(Transport, Protocol):
    """A transport with its own connection pool, as both implementations are: ``send``
    (see :class:`Transport`), ``close`` closes the pool."""

    policy: HttpPolicy
    limit: int

    async def close(self) -> None: ...

    async def __aenter__(self) -> Client: ...

    async def __aexit__(self, *exc: object) -> None: ...


def default_transport() -> str:
    """``fast`` when its parser (httptools) can be imported, else ``aiohttp``."""
    return "fast" if importlib.util.find_spec("httptools") is not None else "aiohttp"


def transport_name(choice: str | None = None) -> str:
    """The transport to use: ``choice``, else the environment variable, else the default.

    Raises ValueError for a name that is not one of :data:`TRANSPORTS`.
    """
    name = (choice or os.environ.get(ENV_VAR, "")).strip().lower() or default_transport()
    if name not in TRANSPORTS:
        given = choice if choice else f"{ENV_VAR}={os.environ.get(ENV_VAR)}"
        raise ValueError(f"unknown HTTP transport {given!r} (choose fast or aiohttp)")
    return name


def open_client(policy: HttpPolicy, *, limit: int = 100, transport: str | None = None) -> Client:
    """A new client of the chosen transport (see :func:`transport_name`), with a pool
    of ``limit`` connections.

    Raises ValueError for an unknown transport or a bad allowlist entry.
    """
    if transport_name(transport) == "fast":
        from flowrunner.net.fast import FastClient

        return FastClient(policy, limit=limit)
    from flowrunner.net.http import HttpClient

    return HttpClient(policy, limit=limit)
