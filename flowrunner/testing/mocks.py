"""Mocked webhooks: answers given at the HTTP send seam, and test secrets.

:class:`MockTransport` has the ``send`` of :class:`flowrunner.net.http.HttpClient` and is
given to the engine in its place: the engine builds every request for real (URL, query,
body, headers, signatures) and the transport answers it from the case's mocks without
opening a socket. It never raises; a request nothing mocks gets a connection failure and
is remembered, so that the case fails naming it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from flowrunner.net.request import HttpRequest, HttpResponse
from flowrunner.plan.types import Plan
from flowrunner.secrets import Secrets
from flowrunner.source.model import SecretRef
from flowrunner.testing.suite import Answer

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class TestSecrets(Secrets):
    """Secrets of a test file: its ``secrets:`` values, else ``test-NAME``. Never reads
    the environment, and never marks a value for scrubbing (none of them is real)."""

    __test__ = False  # not a pytest class

    def __init__(self, given: Mapping[str, str]) -> None:
        super().__init__(env={}, extra=given)
        self._given = dict(given)

    def resolve(self, ref: SecretRef) -> str:
        """The listed value of ``ref``, or ``test-<NAME>``."""
        return self._given.get(ref.name, f"test-{ref.name}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SentRequest:
    """A request the engine sent, as ``expect.requests`` matches it."""

    to: str  # WEBHOOK.METHOD
    method: str
    url: str
    query: dict[str, str]
    headers: dict[str, str]  # names in lower case
    body: Any  # parsed JSON, the form fields, the text, or None

    def as_dict(self) -> dict[str, Any]:
        return {
            "to": self.to,
            "method": self.method,
            "url": self.url,
            "query": self.query,
            "headers": self.headers,
            "body": self.body,
        }


def parse_body(body: bytes | None, headers: Mapping[str, str]) -> Any:
    """A request body as data: JSON parsed, a form as its fields, else its text."""
    if not body:
        return None
    ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    text = body.decode("utf-8", errors="replace")
    if ctype.startswith("application/json"):
        try:
            return json.loads(text)
        except ValueError:
            return text
    if ctype.startswith("application/x-www-form-urlencoded"):
        return dict(parse_qsl(text, keep_blank_values=True))
    return text


def describe(request: HttpRequest, to: str) -> SentRequest:
    """What ``expect.requests`` sees of ``request`` sent to ``to``."""
    query = dict(parse_qsl(urlsplit(request.url).query, keep_blank_values=True))
    return SentRequest(
        to=to,
        method=request.method,
        url=request.url,
        query=query,
        headers={k.lower(): v for k, v in request.headers.items()},
        body=parse_body(request.body, request.headers),
    )


def step_targets(plan: Plan) -> dict[str, str]:
    """``WEBHOOK.METHOD`` of every webhook step, by step id."""
    out = {}
    for step in plan.steps:
        if step.webhook is not None and step.method is not None:
            out[step.step.id] = f"{step.webhook.webhook.name}.{step.method.name}"
    return out


def target_of(request: HttpRequest, targets: Mapping[str, str]) -> str:
    """The ``WEBHOOK.METHOD`` a request of the engine is for, from its idempotency key
    (``<execution_id>:<step_id>``), or ``?`` when it names no webhook step."""
    key = next((v for k, v in request.headers.items() if k.lower() == "idempotency-key"), "")
    return targets.get(key.rpartition(":")[2], "?")


@dataclass(slots=True)
class MockTransport:
    """Answers each request from ``mocks`` (``WEBHOOK.METHOD`` or ``WEBHOOK`` -> answers);
    records every request in :attr:`sent` and the unanswered ones in :attr:`unmocked`."""

    plan: Plan
    mocks: Mapping[str, tuple[Answer, ...]]
    sent: list[SentRequest] = field(default_factory=list)
    unmocked: list[str] = field(default_factory=list)
    _calls: dict[str, int] = field(default_factory=dict)
    _targets: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._targets = step_targets(self.plan)

    async def send(self, request: HttpRequest) -> HttpResponse:
        """The mocked answer to ``request``; a connection failure when none is mocked."""
        to = target_of(request, self._targets)
        self.sent.append(describe(request, to))
        answers = self.mocks.get(to) or self.mocks.get(to.partition(".")[0])
        if not answers:
            self.unmocked.append(to)
            return _failed("connection", f"no mock for {to}")
        used = self._calls.get(to, 0)
        self._calls[to] = used + 1
        return _response(answers[min(used, len(answers) - 1)])


def _response(answer: Answer) -> HttpResponse:
    if answer.error == "timeout":
        return _failed("timeout", "no answer (mocked timeout)")
    if answer.error is not None:
        return _failed("connection", "connection failed (mocked)")
    return HttpResponse(
        status=answer.status, body=answer.body, headers=dict(answer.headers), duration=0.0
    )


def _failed(kind: Any, message: str) -> HttpResponse:
    return HttpResponse(
        status=None, body=None, headers=_NO_HEADERS, duration=0.0, failure=kind, message=message
    )
