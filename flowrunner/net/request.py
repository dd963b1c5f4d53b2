"""One HTTP request and its answer as plain values, and the wire format of webhook
requests (auth headers, flattening, form bodies). Nothing here sends anything: a
:class:`~flowrunner.net.transport.Transport` does."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlencode

from flowrunner import __version__
from flowrunner.jsoncodec import compact
from flowrunner.secrets import Secrets
from flowrunner.source import model as m

USER_AGENT = f"flowrunner/{__version__}"
MAX_BODY = 1 << 20  # bytes of an answer's body, counted after decompression

FailureKind = Literal["timeout", "connection", "refused", "too_large", "disabled"]
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class AnswerHeaders(Mapping[str, str]):
    """An answer's headers as received, looked up without regard to case (``get``
    gives the first of a repeated name). Built on every answer, so it only keeps the
    received bytes: the few lookups ever made (``Retry-After``, ``Content-Type``) scan
    them, and only what is read is decoded (UTF-8, undecodable bytes kept as escapes)."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: list[tuple[bytes, bytes]]) -> None:
        self._pairs = pairs

    def __getitem__(self, name: str) -> str:
        lower = name.lower().encode("utf-8", "surrogateescape")
        for key, value in self._pairs:
            if key.lower() == lower:
                return value.decode("utf-8", "surrogateescape")
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return (key.decode("utf-8", "surrogateescape") for key, _ in self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def __repr__(self) -> str:
        return f"AnswerHeaders({self._pairs!r})"


@dataclass(slots=True, kw_only=True)
class HttpRequest:
    """A request to send. Defined away from any HTTP library, so that building one imports
    none. Treated as immutable (not frozen: a frozen class's ``__init__`` costs three
    times as much, and two are made per webhook call)."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    timeout: float = 10.0


@dataclass(slots=True, kw_only=True)
class HttpResponse:
    """An answer (any status) or a failure to get one (``failure`` set, ``status`` maybe None).

    ``headers`` is case-insensitive for an answer (``headers.get("retry-after")``).
    Treated as immutable, like :class:`HttpRequest`.
    """

    status: int | None
    body: bytes | None
    headers: Mapping[str, str]
    duration: float  # seconds
    failure: FailureKind | None = None
    message: str = ""  # why it failed, for people; never holds a secret

    @classmethod
    def failed(cls, kind: FailureKind, message: str, start: float) -> HttpResponse:
        """No answer, for ``kind``, after what passed since ``start`` (perf_counter)."""
        return cls(
            status=None,
            body=None,
            headers=_NO_HEADERS,
            duration=time.perf_counter() - start,
            failure=kind,
            message=message,
        )


def auth_headers(webhook: m.Webhook, secrets: Secrets) -> dict[str, str]:
    """The ``Authorization`` header of ``webhook`` and its secret-valued headers."""
    out: dict[str, str] = {}
    for name, value in webhook.headers.items():
        if isinstance(value, m.SecretRef):
            out[name] = secrets.resolve(value)
    auth = webhook.auth
    if isinstance(auth, m.BasicAuth):
        pair = f"{auth.username}:{secrets.resolve(auth.password)}".encode()
        out["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    elif isinstance(auth, m.BearerAuth):
        out["Authorization"] = "Bearer " + secrets.resolve(auth.token)
    return out


def flat_value(value: Any) -> str:
    """Strings as they are, numbers and booleans as JSON, null as "", others as JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return compact(value)


def flatten(groups: Iterable[tuple[str, Mapping[str, Any]]]) -> list[tuple[str, str]]:
    """``[("call.cli", "..."), ("flow.key.attempts", "1"), ...]`` for each group."""
    return [
        (f"{prefix}.{name}", flat_value(value))
        for prefix, values in groups
        for name, value in values.items()
    ]


def form_pairs(
    method: str, groups: Iterable[tuple[str, Mapping[str, Any]]], params: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """The flat names of ``body: none`` and ``body: form``, in the documented order."""
    pairs = [("method", method)]
    pairs += flatten(groups)
    pairs += [(name, flat_value(value)) for name, value in params.items()]
    return pairs


def encode_form(pairs: list[tuple[str, str]]) -> str:
    return urlencode(pairs)
