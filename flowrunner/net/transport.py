"""The transport seam: what sends one HTTP request for the engine and the on-complete sender.

A :class:`Transport` turns a :class:`~flowrunner.net.request.HttpRequest` into an
:class:`~flowrunner.net.request.HttpResponse` and never raises for network trouble: a
timeout, a refused connection, an answer over the size cap or an address the egress
policy forbids come back as a response with ``failure`` set. The aiohttp implementation
is :class:`flowrunner.net.http.HttpClient`; tests and ``flowrunner test`` plug in their own.
"""

from __future__ import annotations

from typing import Protocol

from flowrunner.net.request import HttpRequest, HttpResponse


class Transport(Protocol):
    """Sends one request; the egress policy, timeout, size cap and no-redirect rule are its
    own. ``send`` never raises for anything the peer or the network does."""

    async def send(self, request: HttpRequest) -> HttpResponse:
        """The answer (any status), or the failure to get one, with its duration."""
        ...
