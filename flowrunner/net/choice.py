"""Which HTTP transport sends the webhook calls and pushes: ``fast`` or ``aiohttp``.

Both keep the same rules (egress on the address connected to, no redirects, no proxy
from the environment, TLS verified, the deadline, the 1 MiB cap after decompression) and
write the same request bytes. ``fast`` (:mod:`flowrunner.net.fast`) costs a fraction
of aiohttp's CPU per request; ``aiohttp`` (:mod:`flowrunner.http`) is the fallback.

The choice: the ``--transport`` option of the commands that send, else the
``FLOWRUNNER_TRANSPORT`` environment variable, else ``fast`` when ``httptools`` is
installed, else ``aiohttp``. Importing this module imports neither transport.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from flowrunner.model import HttpPolicy
    from flowrunner.wire import HttpRequest, HttpResponse

TRANSPORTS = ("fast", "aiohttp")
ENV_VAR = "FLOWRUNNER_TRANSPORT"


class Client(Protocol):
    """What both transports offer: ``send`` returns the answer or the failure and never
    raises for network trouble; ``close`` closes the pool."""

    policy: HttpPolicy
    limit: int

    async def send(self, request: HttpRequest) -> HttpResponse: ...

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
    from flowrunner.http import HttpClient

    return HttpClient(policy, limit=limit)
